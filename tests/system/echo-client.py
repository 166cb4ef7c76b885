#!/usr/bin/env python3
"""Usage: echo-client.py tcp|udp|udp-once HOST PORT [BYTES]

Sends BYTES (default 65536 for TCP, 512 for UDP) of random data to an echo
server and exits 0 only if exactly the same bytes come back. TCP reads and
writes at once (a thread reads), since a server that applies back-pressure
stops reading from a client that does not read; then it half-closes and
reads to the end. UDP retries, as a datagram may be lost; udp-once sends
one datagram and waits for it, as a user's first probe of a service that
this very datagram starts. Copied into the system test's container.

Exit status: 0 echoed, 1 any failure, 3 the connection was refused (so a
test that wants a closed port can tell it from any other error).
"""
import os
import socket
import sys
import threading

TIMEOUT = 10


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp(host, port, size):
    payload = os.urandom(size)
    received = bytearray()
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        errors = []

        def reader():
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    received.extend(chunk)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(TIMEOUT)
        if errors:
            print(f"tcp: {errors[0]} after {len(received)} of {size} bytes")
            return False
        if t.is_alive():
            print(f"tcp: no end of echo after {len(received)} of {size} bytes")
            return False
    if bytes(received) != payload:
        print(f"tcp: sent {size} bytes, got {len(received)} that differ")
        return False
    return True


def udp(host, port, size, tries=3):
    payload = os.urandom(size)
    with socket.socket(family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT / tries)
        s.bind((host, 0))  # an ephemeral, hence unprivileged, source port
        for _ in range(tries):
            s.sendto(payload, (host, port))
            try:
                data = s.recvfrom(65536)[0]
            except socket.timeout:
                continue
            if data == payload:
                return True
            print(f"udp: sent {size} bytes, got {len(data)} that differ")
            return False
    print("udp: no answer")
    return False


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("tcp", "udp", "udp-once"):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) == 5 else (65536 if proto == "tcp" else 512)
    try:
        if proto == "tcp":
            ok = tcp(host, port, size)
        else:
            ok = udp(host, port, size, tries=1 if proto == "udp-once" else 3)
    except ConnectionRefusedError as e:
        print(f"{proto} {host} {port}: {e}")
        return 3
    except OSError as e:
        print(f"{proto} {host} {port}: {e}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
