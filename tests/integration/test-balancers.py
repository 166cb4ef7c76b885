#!/usr/bin/python3
"""Real load balancers in front of two echod instances (model $ECHOD_MODEL),
all on loopback: HAProxy (send-proxy-v2 and send-proxy, option tcp-check
health checks that send and expect an echo, balance leastconn, its stats
socket read with `show stat`) and nginx's stream module (proxy_protocol
on, least_conn). Every byte echoed through each; the echods see the real
clients (distinct 127.x addresses): their logs name them, DenyFrom= and
MaxConnectionsPerSource= apply to them; an echod stopped is taken out of
rotation and, started again, back in. No fixed ports, a temporary
directory, bounded waits; everything started is killed at the end.
Usage: test-balancers.py ECHOD HAPROXY NGINX"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ECHOD, HAPROXY, NGINX = sys.argv[1:4]
MODEL = os.environ.get("ECHOD_MODEL", "prefork")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
DENIED = "127.0.0.66"
PROCS = []


def log(msg):
    print(f"# {msg}", flush=True)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=15.0):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if check():
            return
        time.sleep(0.1)
    fail(f"timed out waiting for {what}")


def accepting(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def connect(port, src, timeout=5.0):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def roundtrip(s, data):
    """Sends data in chunks, reading each chunk's echo back; True when
    every byte came back, in order."""
    got = bytearray()
    for off in range(0, len(data), 8192):
        chunk = data[off:off + 8192]
        s.sendall(chunk)
        want = off + len(chunk)
        while len(got) < want:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return False
            if not b:
                return False
            got += b
    return bytes(got) == data


def refused(s):
    """The connection is closed without an echo."""
    try:
        s.sendall(b"anyone there?")
        return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


class Echod:
    def __init__(self, tmp, name):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proxy_port = free_port()
        self.plain_port = free_port()
        self.conf = os.path.join(self.dir, "echod.conf")
        self.logpath = os.path.join(self.dir, "echod.log")
        with open(self.conf, "w") as f:
            f.write(f"""[echod]
Model={MODEL}
Workers=2
Listen=127.0.0.1:{self.plain_port}
ProxyListen=127.0.0.1:{self.proxy_port}
ProxyFrom=127.0.0.1
ProxyHeaderTimeoutSec=3
MaxConnectionsPerSource=1
DenyFrom={DENIED}
LogLevel=debug
""")
        self.proc = None

    def start(self):
        self.log = open(self.logpath, "a")
        self.proc = subprocess.Popen([ECHOD, "--config", self.conf,
                                      "--runtime-dir", self.dir],
                                     stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        PROCS.append(self.proc)
        wait_for(f"echod {self.name}", lambda: accepting(self.plain_port))
        wait_for(f"echod {self.name}'s status", lambda: self.status() is not None)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            fail(f"echod {self.name} did not stop")
        self.log.close()

    def status(self):
        r = subprocess.run([ECHOD, "status", "--json", "--runtime-dir", self.dir],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def logged(self, needle):
        with open(self.logpath, errors="replace") as f:
            return needle in f.read()


def start_haproxy(tmp, echods):
    sock = os.path.join(tmp, "haproxy.sock")
    fe2, fe1 = free_port(), free_port()
    servers2 = "\n".join(
        f"    server {e.name} 127.0.0.1:{e.proxy_port} check send-proxy-v2 check-send-proxy"
        for e in echods)
    servers1 = "\n".join(
        f"    server {e.name} 127.0.0.1:{e.proxy_port} check send-proxy check-send-proxy"
        for e in echods)
    # The check sends "ping\r\n" and expects it back: an echo, through
    # the same PROXY header as the traffic (LOCAL in v2; an explicit
    # "tcp-check connect" would need its own send-proxy).
    check = """    option tcp-check
    tcp-check send-binary 70696e670d0a
    tcp-check expect binary 70696e670d0a
    default-server inter 300ms fall 2 rise 2"""
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    stats socket {sock} mode 600 level admin
    maxconn 512
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    timeout check 2s
frontend fe_v2
    bind 127.0.0.1:{fe2}
    default_backend be_v2
frontend fe_v1
    bind 127.0.0.1:{fe1}
    default_backend be_v1
backend be_v2
    balance leastconn
{check}
{servers2}
backend be_v1
    balance leastconn
{check}
{servers1}
""")
    r = subprocess.run([HAPROXY, "-c", "-f", cfg], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"haproxy -c: {r.stdout}{r.stderr}")
    p = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, "haproxy.log"), "w"),
                         start_new_session=True)
    PROCS.append(p)
    wait_for("haproxy", lambda: accepting(fe2) and accepting(fe1))
    return sock, fe2, fe1


def show_stat(sock):
    """{(backend, server): (status, check_status)} from the stats socket."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(b"show stat\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    lines = out.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    i_status, i_check = head.index("status"), head.index("check_status")
    stats = {}
    for line in lines[1:]:
        f = line.split(",")
        if len(f) > i_check and f[1] not in ("FRONTEND", "BACKEND"):
            stats[(f[0], f[1])] = (f[i_status], f[i_check])
    return stats


def servers_are(sock, want):
    """Every server of both backends in the status want says."""
    st = show_stat(sock)
    return all(st.get((be, name), ("?",))[0] == status
               for be in ("be_v2", "be_v1") for name, status in want.items())


def start_nginx(tmp, echods):
    port = free_port()
    upstream = "\n".join(f"        server 127.0.0.1:{e.proxy_port} max_fails=1 fail_timeout=2s;"
                         for e in echods)
    cfg = os.path.join(tmp, "nginx.conf")
    with open(cfg, "w") as f:
        f.write(f"""load_module {STREAM_MODULE};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 256; }}
stream {{
    upstream echods {{
        least_conn;
{upstream}
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_pass echods;
        proxy_protocol on;
        proxy_connect_timeout 2s;
        proxy_timeout 20s;
    }}
}}
""")
    args = [NGINX, "-p", tmp, "-e", f"{tmp}/nginx-error.log", "-c", cfg]
    r = subprocess.run(args + ["-t"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"nginx -t: {r.stderr}")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    PROCS.append(p)
    wait_for("nginx", lambda: accepting(port))
    return port


def clients_echo(port, prefix, n, size, what):
    """n clients from distinct addresses prefix.1 .. prefix.n, open at
    once, each echoing size random bytes."""
    socks = [connect(port, f"{prefix}.{i + 1}") for i in range(n)]
    for i, s in enumerate(socks):
        data = random.randbytes(size)
        if not roundtrip(s, data):
            fail(f"{what}: client {prefix}.{i + 1} did not get its {size} bytes back")
        s.close()


def served(echods):
    return [e.status()["served"] for e in echods]


def main():
    random.seed(862)
    tmp = tempfile.mkdtemp(prefix="echod-balancers-")
    try:
        echods = [Echod(tmp, "a"), Echod(tmp, "b")]
        for e in echods:
            e.start()
        sock, hp2, hp1 = start_haproxy(tmp, echods)
        ng = start_nginx(tmp, echods)

        log("health checks green: both servers UP after an echo check")
        wait_for("haproxy's checks", lambda: servers_are(sock, {"a": "UP", "b": "UP"}))
        for key, (status, check) in show_stat(sock).items():
            if check != "L7OK":
                fail(f"{key}: check_status {check}, not L7OK (an echo seen)")

        before = served(echods)
        # Each balancer's clients have addresses of their own: with
        # MaxConnectionsPerSource=1, a client that just closed may still
        # be counted for a moment.
        balancers = ((hp2, "haproxy v2", 1), (hp1, "haproxy v1", 2), (ng, "nginx", 3))
        for port, what, k in balancers:
            log(f"{what}: 8 clients at once, 100 KB each, every byte echoed")
            clients_echo(port, f"127.1.{k}", 8, 100 * 1024, what)
            # Header and first bytes in one packet, and small writes.
            clients_echo(port, f"127.2.{k}", 3, 10, what)
        after = served(echods)
        if not all(a > b for a, b in zip(after, before)):
            fail(f"leastconn should have used both echods: served {before} -> {after}")
        # The real clients: named in the log beside their balancer.
        for e in echods:
            if not e.logged("connection from 127.1.") or not e.logged("via 127.0.0.1:"):
                fail(f"echod {e.name}'s log names no real client via the balancer")
        # v2 and v1 both arrived.
        if not any(e.logged("(PROXY v2)") for e in echods) or \
           not any(e.logged("(PROXY v1)") for e in echods):
            fail("not both PROXY versions were seen")

        for port, what, k in balancers:
            log(f"{what}: DenyFrom= and MaxConnectionsPerSource=1 for the real client")
            refused_before = sum(e.status()["refused"] for e in echods)
            s = connect(port, DENIED)
            if not refused(s):
                fail(f"{what}: {DENIED} (DenyFrom=) was served")
            s.close()
            # Three at once from one client over two echods: one of them
            # holds two, over the limit, though the balancer's own address
            # holds many more.
            socks = [connect(port, f"127.3.{k}.1") for _ in range(3)]
            time.sleep(0.3)
            results = [roundtrip(s, b"mine") for s in socks]
            for s in socks:
                s.close()
            if results.count(True) < 1 or results.count(False) < 1:
                fail(f"{what}: per-source limit on the real client: {results}")
            # Others are served meanwhile.
            clients_echo(port, f"127.4.{k}", 4, 1000, what)
            wait_for("the refusals counted",
                     lambda: sum(e.status()["refused"] for e in echods) >= refused_before + 2,
                     5)
            time.sleep(0.2)

        log("an echod stopped is taken out of rotation")
        echods[1].stop()
        wait_for("haproxy marking b DOWN", lambda: servers_are(sock, {"a": "UP", "b": "DOWN"}))
        for port, what, k in balancers:
            clients_echo(port, f"127.5.{k}", 6, 4096, f"{what}, b down")

        log("started again, it is back")
        echods[1].start()
        wait_for("haproxy marking b UP", lambda: servers_are(sock, {"a": "UP", "b": "UP"}))
        # nginx forgets the failure after fail_timeout.
        time.sleep(2.2)
        b_before = echods[1].status()["served"]
        for port, what, k in balancers:
            clients_echo(port, f"127.6.{k}", 6, 4096, f"{what}, b back")
        if echods[1].status()["served"] <= b_before:
            fail("b serves nothing after coming back")
        for e in echods:
            st = e.status()
            log(f"echod {e.name}: served {st['served']}, refused {st['refused']} "
                f"({st['refused_access']} access, {st['refused_proxy']} proxy)")
        for e in echods:
            e.stop()
        print("ok", flush=True)
    finally:
        for p in PROCS:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if os.environ.get("KEEP_TMP"):
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
