#!/usr/bin/env python3
"""Usage: restart-clients.py HOST PORT CLIENTS DIR

Keeps CLIENTS TCP connections to an echo server busy until DIR/stop exists,
then checks that every byte sent came back, in order, on the same
connection, and that the server ends each connection cleanly (EOF after the
last byte). Copied into the system test's container, where echod is
restarted underneath it.

One client in ten is "stalled": it sends several megabytes and reads
nothing until the end, so the server's buffers fill and echod holds bytes
it has read but cannot write back (it owes them). The others send a few
kilobytes at a time and read the echo as it comes.

Writes DIR/ready once every connection is open and has echoed something,
prints one summary line, and exits 0 only if every connection came through
byte-exact; otherwise it names the first failure and exits 1.
"""
import os
import random
import selectors
import socket
import sys
import time

BLOCK = random.Random(862).randbytes(1 << 20)
STALLED_BYTES = 8 << 20
IN_FLIGHT_MAX = 256 << 10
CHUNK = 4096
FINISH_TIMEOUT = 90


def pattern(shift, offset, length):
    """length bytes of client stream starting at offset (a rotating block)."""
    out = bytearray()
    pos = (offset + shift) % len(BLOCK)
    while len(out) < length:
        take = min(length - len(out), len(BLOCK) - pos)
        out += BLOCK[pos:pos + take]
        pos = 0
    return bytes(out)


class Client:
    def __init__(self, index, host, port):
        self.index = index
        self.stalled = index % 10 == 9
        self.shift = index * 7919
        self.sent = 0
        self.received = 0
        self.eof = False
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setblocking(False)

    def send_some(self, budget):
        limit = STALLED_BYTES if self.stalled else self.received + IN_FLIGHT_MAX
        length = min(budget, limit - self.sent)
        if length <= 0:
            return
        try:
            n = self.sock.send(pattern(self.shift, self.sent, length))
        except BlockingIOError:
            return
        self.sent += n

    def read_some(self):
        data = self.sock.recv(1 << 16)
        if not data:
            self.eof = True
            return
        if self.received + len(data) > self.sent:
            raise ValueError("more bytes came back than were sent")
        if data != pattern(self.shift, self.received, len(data)):
            raise ValueError(f"wrong bytes at offset {self.received}")
        self.received += len(data)


def main():
    host, port, count, directory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    clients = [Client(i, host, port) for i in range(count)]
    sel = selectors.DefaultSelector()
    stop = os.path.join(directory, "stop")
    ready = False
    failures = []

    def fail(c, why):
        failures.append(f"client {c.index}{' (stalled)' if c.stalled else ''}: {why}")
        sel.unregister(c.sock)

    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)

    # Busy until told to stop: stalled clients only send.
    while not os.path.exists(stop):
        for c in clients:
            c.send_some(CHUNK if not c.stalled else 1 << 16)
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            if c.stalled:
                continue
            try:
                c.read_some()
                if c.eof:
                    fail(c, f"connection closed by the server after {c.received} bytes")
            except (OSError, ValueError) as e:
                fail(c, f"{e} (after {c.received} of {c.sent} bytes)")
        if not ready and all(c.received > 0 or c.stalled for c in clients):
            open(os.path.join(directory, "ready"), "w").close()
            ready = True
        if failures:
            break

    # The end: every byte back, then EOF for our half-close.
    deadline = time.monotonic() + FINISH_TIMEOUT
    pending = {c for c in clients if c.sock in sel.get_map()}
    while pending and time.monotonic() < deadline and not failures:
        for c in list(pending):
            if c.received == c.sent and not getattr(c, "shut", False):
                c.sock.shutdown(socket.SHUT_WR)
                c.shut = True
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            try:
                c.read_some()
            except (OSError, ValueError) as e:
                fail(c, f"{e} (after {c.received} of {c.sent} bytes)")
                pending.discard(c)
                continue
            if c.eof:
                sel.unregister(c.sock)
                pending.discard(c)
                if c.received != c.sent:
                    failures.append(f"client {c.index}: EOF after {c.received} of {c.sent} bytes")
    for c in pending:
        failures.append(f"client {c.index}: timed out with {c.received} of {c.sent} bytes back")
    total = sum(c.received for c in clients)
    stalled = sum(c.sent for c in clients if c.stalled)
    print(f"{count} clients, {total} bytes echoed ({stalled} by stalled clients), "
          f"{len(failures)} failed")
    for f in failures[:10]:
        print(f)
    return 0 if not failures and ready else 1


if __name__ == "__main__":
    sys.exit(main())
