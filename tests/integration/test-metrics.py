#!/usr/bin/python3
"""GET /metrics of a real echod (model $ECHOD_MODEL): promtool checks both
formats; a real Prometheus on loopback scrapes it and its query API
returns the series after some traffic; bad, oversized and stalled HTTP
requests get an error or are cut off while echod keeps serving echo and
other scrapes. Usage: test-metrics.py ECHOD PROMTOOL PROMETHEUS"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ECHOD, PROMTOOL, PROMETHEUS = sys.argv[1:4]
MODEL = os.environ.get("ECHOD_MODEL", "prefork")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def echo(port, data=b"hello"):
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        assert got == data, f"echo returned {got!r}"


def get(port, accept=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def raw(port, data, timeout=10):
    """Sends data, returns what came back until the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        return got


def promtool(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                       capture_output=True)
    assert r.returncode == 0, f"promtool: {r.stdout}{r.stderr}"


def check_formats(mport):
    status, ctype, text = get(mport)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), ctype
    assert "# EOF" not in text
    promtool(text)
    status, ctype, om = get(mport, OPENMETRICS)
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert om.endswith("# EOF\n"), om[-50:]
    assert "# TYPE echod_connections counter" in om
    # promtool reads only the Prometheus text format; the OpenMetrics one
    # is what Prometheus itself asks for when it scrapes (below).
    for series in ("echod_connections_active ", 'echod_connections_total{result="served"}',
                   'echod_bytes_total{direction="in"}', 'echod_datagrams_dropped_total{reason=',
                   'echod_workers{state="running"}', 'echod_reloads_total{result="ok"}',
                   'echod_build_info{version='):
        assert series in text, f"no {series} in /metrics"
    return text


def check_bad_requests(port, mport):
    # Garbage: an HTTP error, or the connection closed, soon.
    for junk in (b"\x00\x01garbage\r\n\r\n", b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
                 b"GET /metrics HTTP/9.9\r\n\r\n"):
        t = time.monotonic()
        got = raw(mport, junk)
        assert got == b"" or got.startswith(b"HTTP/1.1 4") or got.startswith(b"HTTP/1.1 5"), got[:80]
        assert time.monotonic() - t < 7, f"{junk!r}: held {time.monotonic() - t:.1f} s"
    got = raw(mport, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 404"), got[:80]
    # Oversized: more header than the request limit.
    got = raw(mport, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:80]
    assert not got.startswith(b"HTTP/1.1 200")
    # Stalled clients: one byte, then nothing. echod serves echo and other
    # scrapes meanwhile, and cuts the stalled ones off after its timeout.
    stalled = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", mport), 5)
        s.sendall(b"G")
        stalled.append(s)
    start = time.monotonic()
    for _ in range(10):
        echo(port)
        t = time.monotonic()
        assert get(mport)[0] == 200
        assert time.monotonic() - t < 1, "a scrape waited behind stalled clients"
    for s in stalled:
        s.settimeout(15)
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        except socket.timeout:
            sys.exit("a stalled scraper was never cut off")
        assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:80]
        s.close()
    waited = time.monotonic() - start
    assert waited < 12, f"stalled clients held for {waited:.1f} s"


def listen_inode(port):
    for line in open("/proc/net/tcp").readlines()[1:]:
        f = line.split()
        if f[1].endswith(":%04X" % port) and f[3] == "0A":
            return f[9]
    sys.exit(f"no listening socket on {port} in /proc/net/tcp")


def holds(pid, inode):
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def check_children_hold_no_metrics_socket(echod_pid, port, mport):
    """Workers (and Model=fork's connection processes) close the metrics
    socket: held there, it would outlive the supervisor."""
    inode = listen_inode(mport)
    assert holds(echod_pid, inode), "the supervisor does not hold the metrics socket"
    with socket.create_connection(("127.0.0.1", port), 5) as held:
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        kids = open(f"/proc/{echod_pid}/task/{echod_pid}/children").read().split()
        assert kids, "echod has no children"
        for kid in kids:
            assert not holds(int(kid), inode), f"process {kid} holds the metrics socket"


def check_prometheus(port, mport, tmp):
    pport = free_port()
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n"
                "scrape_configs:\n  - job_name: echod\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
    log = open(os.path.join(tmp, "prometheus.log"), "w")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp}/data",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=log, stderr=log)
    try:
        for _ in range(7):
            echo(port)
        until = time.monotonic() + 60
        while time.monotonic() < until:
            try:
                q = "http://127.0.0.1:%d/api/v1/query?query=echod_connections_total" % pport
                with urllib.request.urlopen(q, timeout=2) as r:
                    answer = json.load(r)
                results = {x["metric"]["result"]: float(x["value"][1])
                           for x in answer["data"]["result"]}
                if results.get("served", 0) >= 7:
                    assert set(results) == {"served", "refused", "lost"}, results
                    assert all(x["metric"]["job"] == "echod" for x in answer["data"]["result"])
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        sys.exit("Prometheus never returned echod_connections_total{result=\"served\"} >= 7:\n"
                 + open(os.path.join(tmp, "prometheus.log")).read()[-2000:])
    finally:
        prom.terminate()
        prom.wait(10)


def check_systemd_socket():
    """The socket systemd names "metrics" is served as HTTP, not echo."""
    port, mport = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="test-metrics-sd-")
    act = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                            "-l", f"127.0.0.1:{mport}", "--fdname=echo:metrics",
                            ECHOD, "-m", MODEL, "-w", "1", "--runtime-dir", tmp])
    try:
        wait_port(mport)
        # The first connection starts echod; the request waits in the backlog.
        status, _, text = get(mport, timeout=10)
        assert status == 200 and "echod_connections_total" in text, text[:200]
        echo(port)
        assert get(mport)[2].count('echod_connections_total{result="served"} 1\n') == 1
    finally:
        act.terminate()
        act.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    tmp = tempfile.mkdtemp(prefix="test-metrics-")
    port, mport = free_port(), free_port()
    echod = subprocess.Popen([ECHOD, "-m", MODEL, "-w", "2", "--listen", f"127.0.0.1:{port}",
                              "--metrics-listen", f"127.0.0.1:{mport}", "--runtime-dir", tmp])
    try:
        wait_port(port)
        wait_port(mport)
        echo(port)
        check_formats(mport)
        check_children_hold_no_metrics_socket(echod.pid, port, mport)
        # The HTTP server is the supervisor's, one and the same in every
        # model: its defences and a real scrape are checked once, in
        # prefork; what a model changes (the children, the figures) above.
        if MODEL == "prefork":
            check_bad_requests(port, mport)
            check_prometheus(port, mport, tmp)
        assert echod.poll() is None, "echod exited"
        echo(port)
        check_systemd_socket()
        echod.terminate()
        # 0: a clean stop (and, under a sanitizer, nothing it reports).
        assert echod.wait(15) == 0, f"echod exited with {echod.returncode}"
        print("ok")
    finally:
        if echod.poll() is None:
            echod.kill()
            echod.wait()
        shutil.rmtree(tmp, ignore_errors=True)


main()
