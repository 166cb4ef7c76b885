#!/usr/bin/env python3
"""Usage: connect-loop.py HOST PORT DIR

Connects to an echo server over and over (a new TCP connection each time,
a few bytes echoed, then closed) until DIR/stop exists, and counts what a
client would see: connections refused, and connections that failed in any
other way (reset, timeout, wrong echo). Copied into the system test's
container, where the package is upgraded underneath it: the socket must
never refuse a connection.

Writes DIR/ready after the first good connection, prints one summary line
and exits 0 only if no connection was refused or failed.
"""
import os
import socket
import sys
import time

TIMEOUT = 10


def one(host, port, payload):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(len(payload) - len(got))
            if not chunk:
                raise OSError(f"closed after {len(got)} of {len(payload)} bytes")
            got += chunk
        if got != payload:
            raise OSError("echo differs")


def main():
    if len(sys.argv) != 4:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    host, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    good = refused = failed = 0
    first_failure = None
    ready = os.path.join(folder, "ready")
    stop = os.path.join(folder, "stop")
    while not os.path.exists(stop):
        payload = b"probe %d\n" % good
        try:
            one(host, port, payload)
            good += 1
            if good == 1:
                open(ready, "w").close()
        except ConnectionRefusedError as e:
            refused += 1
            first_failure = first_failure or f"refused: {e}"
        except OSError as e:
            failed += 1
            first_failure = first_failure or f"failed: {e}"
        time.sleep(0.01)
    print(f"{good} connections echoed, {refused} refused, {failed} failed"
          + (f" (first: {first_failure})" if first_failure else ""))
    return 0 if refused == 0 and failed == 0 and good > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
