#!/usr/bin/python3
"""A stand-in for echod, for testing the system test itself.

NOT echod. It implements just enough of echod's interface (man/echod.8) for
tests/system/system-test.sh to exercise its checks and the units' sandbox
before the real daemon exists: sockets from systemd, the prefork model with
one connection per worker at a time, per-connection mode, Workers=,
reload by SIGHUP and --reload with $RUNTIME_DIRECTORY/reload-status,
sd_notify (READY, RELOADING, STOPPING, STATUS, WATCHDOG) and native journal
messages with echod's MESSAGE_IDs and fields. Run the system test with
ECHOD_SYSTEST_FAKE=1 to put it in place of /usr/sbin/echod in the container.
"""
import os
import select
import signal
import socket
import sys
import time

CONF = "/etc/echod/echod.conf"
KEYS = {"model", "workers", "workerconnections", "maxconnections", "idletimeoutsec",
        "shutdowntimeoutsec", "loglevel", "listen", "datagramratelimit"}
MID = {"started": "756418ebc6cd4ea7be59bfa840eea8f6", "stopped": "d7ae218fccb24fc195fa354f6c43eef9",
       "reloaded": "1dbe40775eb04e2bb98741d49b4270d4", "rejected": "50cb68a85e144ba29d97027468e93550",
       "crashed": "f2b0fd16c8dc4655befb4286f3b469f0"}


def notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(msg.encode(), "\0" + path[1:] if path[0] == "@" else path)


def journal(priority, message, **fields):
    fields.update(MESSAGE=message, PRIORITY=str(priority), ECHOD_MODEL="prefork")
    data = "".join(f"{k}={v}\n" for k, v in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(data, "/run/systemd/journal/socket")
    except OSError:
        print(message, file=sys.stderr)


def read_config():
    conf = {"workers": str(os.cpu_count())}
    with open(CONF) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line[0] in "#;" or line == "[echod]":
                continue
            key, _, value = line.partition("=")
            if key.lower() not in KEYS:
                raise ValueError(f"{CONF}:{n}: unknown key {key}")
            conf[key.lower()] = value
    w = conf["workers"]
    conf["workers"] = os.cpu_count() if w == "auto" else int(w)
    return conf


def echo_connection(c):
    with c:
        while True:
            data = c.recv(65536)
            if not data:
                break
            c.sendall(data)
        c.shutdown(socket.SHUT_WR)


def worker(socks):
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for s in socks:
        s.setblocking(False)
    while True:
        for s in select.select(socks, [], [])[0]:
            try:
                if s.type == socket.SOCK_STREAM:
                    c, _ = s.accept()
                    c.setblocking(True)
                    echo_connection(c)
                else:
                    data, peer = s.recvfrom(65536)
                    if peer[1] >= 1024:
                        s.sendto(data, peer)
            except (BlockingIOError, ConnectionError):
                pass


def reload_client(pid):
    status = os.path.join(os.environ.get("RUNTIME_DIRECTORY", "/run/echod"), "reload-status")
    try:
        os.unlink(status)
    except FileNotFoundError:
        pass
    os.kill(pid, signal.SIGHUP)
    for _ in range(300):
        try:
            with open(status) as f:
                verdict = f.read().strip()
        except FileNotFoundError:
            time.sleep(0.1)
            continue
        if verdict.startswith("ok"):
            return 0
        print(f"echod: reload rejected: {verdict}", file=sys.stderr)
        return 1
    print("echod: no answer to the reload", file=sys.stderr)
    return 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--reload":
        return reload_client(int(sys.argv[2]))
    n = int(os.environ.get("LISTEN_FDS", "0"))
    socks = [socket.socket(fileno=3 + i) for i in range(n)]
    if not socks:
        print("echod: no sockets", file=sys.stderr)
        return 1
    if len(socks) == 1 and socks[0].type == socket.SOCK_STREAM and \
            not socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        echo_connection(socks[0])
        return 0
    try:
        conf = read_config()
    except (OSError, ValueError) as e:
        print(f"echod: {e}", file=sys.stderr)
        return 2

    sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    workers, gen = {}, 1

    def spawn():
        pid = os.fork()
        if pid == 0:
            worker(socks)
            os._exit(0)
        workers[pid] = gen

    def status():
        notify(f"STATUS=prefork: {len(workers)}/{conf['workers']} workers, 0 connections, "
               f"0 served, 0 refused, gen {gen}")

    for _ in range(conf["workers"]):
        spawn()
    journal(6, f"started, {conf['workers']} workers", MESSAGE_ID=MID["started"])
    notify("READY=1")
    status()
    wd = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6 or None
    while True:
        sig = signal.sigtimedwait(sigs, wd or 3600)
        if wd:
            notify("WATCHDOG=1")
        if sig is None:
            continue
        if sig.si_signo in (signal.SIGTERM, signal.SIGINT):
            notify("STOPPING=1")
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            journal(6, "stopped", MESSAGE_ID=MID["stopped"])
            return 0
        if sig.si_signo == signal.SIGHUP:
            notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            verdict = "ok"
            try:
                conf = read_config()
                gen += 1
                for pid in list(workers):
                    os.kill(pid, signal.SIGTERM)
                    os.waitpid(pid, 0)
                    del workers[pid]
                for _ in range(conf["workers"]):
                    spawn()
                journal(5, f"reloaded, gen {gen}", MESSAGE_ID=MID["reloaded"])
            except (OSError, ValueError) as e:
                verdict = f"rejected: {e}"
                journal(3, f"reload rejected: {e}", MESSAGE_ID=MID["rejected"])
            rs = os.path.join(os.environ.get("RUNTIME_DIRECTORY", "/run/echod"), "reload-status")
            with open(rs + ".tmp", "w") as f:
                f.write(verdict + "\n")
            os.rename(rs + ".tmp", rs)
            notify("READY=1")
            status()
        if sig.si_signo == signal.SIGCHLD:
            while workers:
                pid, st = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                workers.pop(pid, None)
                journal(3, f"worker {pid} crashed", MESSAGE_ID=MID["crashed"], ECHOD_WORKER=pid)
                spawn()
            status()


if __name__ == "__main__":
    sys.exit(main())
