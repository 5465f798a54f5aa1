"""A sidecar rehearsal without Docker: the backend and sluice share one network namespace (the pod), the
client reaches sluice from another namespace over a veth pair; a full stream and a drain work there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sluice_proc import Sluice

POD_IP, CLIENT_IP = "10.213.0.1", "10.213.0.2"
EVENTS, GAP = 30, 0.05

# The pod's LLM backend: SSE on 127.0.0.1:8000 only, so the one way in from outside the pod is sluice.
BACKEND = textwrap.dedent('''
    import socket, sys, threading, time
    EVENTS, GAP = int(sys.argv[1]), float(sys.argv[2])

    def serve(conn):
        with conn:
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                more = conn.recv(4096)
                if not more:
                    return
                data += more
            path = data.split(b" ")[1].decode()
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/event-stream\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")
            for i in range(EVENTS):
                event = ('data: {"path":"%s","n":%d}\\n\\n' % (path, i)).encode()
                conn.sendall(b"%x\\r\\n" % len(event) + event + b"\\r\\n")
                time.sleep(GAP)
            conn.sendall(b"0\\r\\n\\r\\n")

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 8000))
    listener.listen(64)
    print("listening", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
''')


def expected(path: str) -> bytes:
    return b"".join(('data: {"path":"%s","n":%d}\n\n' % (path, i)).encode() for i in range(EVENTS))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, timeout=30, check=check)


@pytest.fixture
def pod(tmp_path):
    """Two namespaces joined by a veth pair; yields their names; removes them (and their veths) after."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = f"{os.getpid() % 100000}"
    pod_ns, client_ns = f"sluice-pod-{tag}", f"sluice-cli-{tag}"
    pod_if, client_if = f"slp{tag}", f"slc{tag}"
    created = []
    try:
        for ns in (pod_ns, client_ns):
            run("ip", "netns", "add", ns)
            created.append(ns)
        run("ip", "link", "add", pod_if, "type", "veth", "peer", "name", client_if)
        run("ip", "link", "set", pod_if, "netns", pod_ns)
        run("ip", "link", "set", client_if, "netns", client_ns)
        for ns, ifname, ip in ((pod_ns, pod_if, POD_IP), (client_ns, client_if, CLIENT_IP)):
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            run("ip", "-n", ns, "link", "set", ifname, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        yield pod_ns, client_ns
    finally:
        for ns in created:
            run("ip", "netns", "del", ns, check=False)


def curl(client_ns: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", client_ns, "curl", "-sS", "-N", "--max-time", "20", *extra, url, check=False)


def test_sidecar_stream_and_drain_across_namespaces(pod, tmp_path):
    pod_ns, client_ns = pod
    script = tmp_path / "backend.py"
    script.write_text(BACKEND)
    backend = subprocess.Popen(["ip", "netns", "exec", pod_ns, sys.executable, str(script), str(EVENTS), str(GAP)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sluice = None
    try:
        assert backend.stdout.readline().strip() == b"listening", backend.stderr.read()
        log = tmp_path / "completions.jsonl"
        cfg = tmp_path / "sidecar.conf"
        cfg.write_text(textwrap.dedent(f"""\
            listen 0.0.0.0:8080
            workers 2
            drain_timeout 30s
            admin {{
                listen 127.0.0.1:9901
            }}
            log {{
                file {log}
            }}
            upstream backend {{
                server http://127.0.0.1:8000
            }}
            route / {{
                upstream backend
            }}
            """))
        sluice = Sluice(["--config", str(cfg)], launcher=("ip", "netns", "exec", pod_ns))

        # The backend is not reachable from outside the pod; sluice is.
        direct = curl(client_ns, f"http://{POD_IP}:8000/")
        assert direct.returncode == 7, f"backend reachable from outside the pod: {direct}"
        full = curl(client_ns, f"http://{POD_IP}:8080/v1/full")
        assert full.returncode == 0, full.stderr
        assert full.stdout == expected("/v1/full")

        ready = run("ip", "netns", "exec", pod_ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    "http://127.0.0.1:9901/readyz", check=False)
        assert ready.stdout == b"200"

        # A stream in flight when SIGTERM arrives completes; new connections are refused.
        streaming = subprocess.Popen(["ip", "netns", "exec", client_ns, "curl", "-sS", "-N", "--max-time", "20",
                                      f"http://{POD_IP}:8080/v1/drained"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while not _client_connected(pod_ns):
            assert time.monotonic() < deadline, "the stream did not reach sluice"
            time.sleep(0.05)
        os.kill(sluice.pid, signal.SIGTERM)
        sluice.wait_stderr(lambda o: o.get("msg") == "draining", 5, "the draining line")
        not_ready = run("ip", "netns", "exec", pod_ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:9901/readyz", check=False)
        assert not_ready.stdout == b"503"
        refused = curl(client_ns, f"http://{POD_IP}:8080/v1/late")
        assert refused.returncode == 7, f"a new connection was accepted while draining: {refused}"
        out, err = streaming.communicate(timeout=20)
        assert streaming.returncode == 0, err
        assert out == expected("/v1/drained")
        assert sluice.wait_exit(10) == 0
        ends = sorted((r["path"], r["end"]) for r in map(json.loads, log.read_text().splitlines()))
        assert ends == [("/v1/drained", "complete"), ("/v1/full", "complete")]
    finally:
        if sluice is not None:
            sluice.stop()
        backend.kill()
        backend.wait(5)


def _client_connected(pod_ns: str) -> bool:
    """Whether sluice in the pod has an established client connection on port 8080."""
    out = run("ip", "netns", "exec", pod_ns, "ss", "-Htn", "state", "established", "( sport = :8080 )", check=False)
    return bool(out.stdout.strip())
