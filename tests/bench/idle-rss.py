#!/usr/bin/env python3
"""Usage: idle-rss.py PORT N PROCS PID

Memory for idle connections: opens N connections to 127.0.0.1:PORT from
PROCS client processes (each from its own source address, 127.0.0.2,
127.0.0.3, ..., so that no process needs more fds than a shell's limit
nor more than one address's ephemeral ports), waits, then prints the
resident memory (VmRSS) of PID and all its descendants (a running echod
supervisor: its workers, fork's connection processes); then echoes one
byte on every connection and exits 0 only if each came back.

    build/src/echod -c /dev/null --listen 127.0.0.1:7301 -w 3 &
    tests/bench/idle-rss.py 7301 50000 3 $!
"""
import os
import socket
import sys
import time


def tree(pid):
    pids = [pid]
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        for child in f.read().split():
            pids += tree(int(child))
    return pids


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def client(k, n, port, ready, go):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + k}", 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
    os.write(ready, b"r")
    os.read(go, 1)
    for s in socks:
        s.sendall(b"x")
    ok = 0
    for s in socks:
        s.settimeout(30)
        ok += s.recv(1) == b"x"
    os._exit(0 if ok == len(socks) else 1)


def main():
    port, n, procs, pid = (int(a) for a in sys.argv[1:5])
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    kids = []
    for k in range(procs):
        share = n // procs + (k < n % procs)
        child = os.fork()
        if child == 0:
            client(k, share, port, ready_w, go_r)
        kids.append(child)
    for _ in kids:
        os.read(ready_r, 1)
    time.sleep(3)  # let echod accept the backlog
    total = 0
    for p in tree(pid):
        kib = rss_kib(p)
        total += kib
        print(f"pid {p}: {kib} KiB")
    print(f"{n} idle connections: {total / 1024:.1f} MiB total RSS, "
          f"{total * 1024 / n:.0f} bytes per connection")
    os.write(go_w, b"g" * procs)
    failed = sum(os.waitpid(child, 0)[1] != 0 for child in kids)
    print(f"client processes with a connection not echoed: {failed}")
    sys.exit(1 if failed else 0)


main()
