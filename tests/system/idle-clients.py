#!/usr/bin/env python3
"""Usage: idle-clients.py HOST PORT N STATUS-COMMAND...

Opens N TCP connections to an echo server and holds them all, idle; then
runs STATUS-COMMAND (echod status --json), which must report at least N
active connections (a connection still in the listen backlog is open on
the client's side only); then sends one byte on each and exits 0 only if
every one comes back. Copied into the system test's container.
"""
import json
import resource
import selectors
import socket
import subprocess
import sys
import time

TIMEOUT = 60


def main():
    host, port, n, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 64:
        sys.exit(f"the open-files limit ({hard}) is too low for {n} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=10)
        socks.append(s)
    # echod accepts them at its own pace: wait until it holds them all.
    until = time.monotonic() + TIMEOUT
    active, report = -1, {}
    while time.monotonic() < until:
        report = json.loads(subprocess.run(status, check=True, capture_output=True,
                                           text=True).stdout)
        active = report["active"]
        if active >= n:
            break
        time.sleep(0.5)
    print(f"{n} idle clients connected; echod reports {active} active, "
          f"MaxConnections={report.get('max_connections')}")
    if active < n:
        sys.exit(f"echod holds {active} of the {n} connections")
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        s.send(b"x")
        sel.register(s, selectors.EVENT_READ)
    echoed = 0
    until = time.monotonic() + TIMEOUT
    while echoed < n and time.monotonic() < until:
        for key, _ in sel.select(1):
            if key.fileobj.recv(1) == b"x":
                echoed += 1
            sel.unregister(key.fileobj)
    print(f"{echoed} of {n} echoed")
    sys.exit(0 if echoed == n else 1)


main()
