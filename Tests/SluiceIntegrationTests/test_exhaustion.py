"""Resource exhaustion: a slow-loris head, max_connections, and running out of file descriptors."""

from __future__ import annotations

import select
import shutil
import socket
import threading
import time

import pytest

from origin import respond
from rawhttp import RawConn, get, request_bytes
from sluice_proc import wait_records, write_routes_config


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_slowloris_head_is_cut_at_the_header_timeout(stack):
    origin = stack.origin()
    sl = stack.proxy(origin, timeouts={"client_header": "2s"})
    with RawConn(sl.port, timeout=10) as c:
        started = time.monotonic()
        c.send(b"GET /slow HTTP/1.1\r\n")
        closed = False
        for byte in b"X-Drip: " + b"d" * 40:
            time.sleep(0.25)
            try:
                c.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if select.select([c.sock], [], [], 0)[0]:  # sluice answered (or closed): stop dripping
                break
        response = c.read_response(timeout=5)
        took = time.monotonic() - started
        assert response.status == 408, response.status_line
        assert c.closed_within(3) or closed
    assert 1.8 <= took < 3.5, f"closed after {took:.2f} s with client_header 2s"
    assert not origin.heads, "a partial head reached the origin"


def test_max_connections_answers_503_at_once_and_recovers(stack):
    # The held connections are mid-exchange: an idle one would be closed to make room instead (test_admission.py).
    release = threading.Event()

    def handler(conn, req):
        if req.target.startswith("/held/") and req.target != "/held/again":
            release.wait(10)
        respond(conn, 200, req.target.encode())

    origin = stack.origin(handler)
    log = stack.tmp_path / "completions.jsonl"
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=2,
                            limits={"max_connections": 3}, log={"file": str(log)}, admin="127.0.0.1:0")
    held = [RawConn(sl.port) for _ in range(3)]
    try:
        for i, c in enumerate(held):
            c.send(request_bytes("GET", f"/held/{i}"))
        origin.wait_for(lambda: len(origin.heads) == 3, 5, "the three held requests at the origin")
        started = time.monotonic()
        with RawConn(sl.port) as extra:
            extra.send(request_bytes("GET", "/extra"))
            refused = extra.read_response(timeout=5)
            took = time.monotonic() - started
            assert refused.status == 503, refused.status_line
            assert refused.header("retry-after") == "1"
            assert refused.json()["error"]["type"] == "overloaded"
            assert extra.closed_within(3), "the refused connection stayed open"
        assert took < 0.5, f"the 503 took {took:.2f} s"
        assert "/extra" not in [h.target for h in origin.heads]
        release.set()
        for c in held:
            assert c.read_response().status == 200  # kept alive: each still counts
        # A held connection is still served, and closing one makes room for a new one.
        held[0].send(request_bytes("GET", "/held/again"))
        assert held[0].read_response().status == 200
        held.pop().close()
        # Until sluice has seen that close, a new connection may still meet the cap: a 503 if its worker holds no
        # idle connection to close instead (the other two are idle now, but perhaps on the other worker).
        retried = 0
        deadline = time.monotonic() + 2
        while True:
            response = get(sl.port, "/after")
            if response.status == 200:
                break
            assert response.status == 503, response.status_line
            retried += 1
            assert time.monotonic() < deadline, "no room after a connection closed"
            time.sleep(0.05)
    finally:
        release.set()
        for c in held:
            c.close()
    records = wait_records(log, 6 + retried)
    assert [r["end"] for r in records if r["status"] == 503] == ["rejected_overload"] * (1 + retried)
    _, _, text = sl.scrape()
    assert f"sluice_connections_refused_total {1 + retried}" in text


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is needed to start sluice with a low fd limit")
def test_out_of_file_descriptors_keeps_serving_without_spinning_and_recovers(stack, tmp_path):
    origin = stack.origin()
    cfg = write_routes_config(tmp_path / "fds.conf", upstreams={"o": f"http://127.0.0.1:{origin.port}"},
                              routes=[("/", "o", {})], workers=1)
    # prlimit execs sluice with 64 descriptors in all (soft and hard), so sluice cannot raise it.
    sl = stack.sluice(["--config", str(cfg)], launcher=("prlimit", "--nofile=64:64", "--"))
    kept = [RawConn(sl.port) for _ in range(8)]
    flood: list[socket.socket] = []
    try:
        for i, c in enumerate(kept):
            c.send(request_bytes("GET", f"/kept/{i}"))
            assert c.read_response().status == 200
        for _ in range(100):  # more clients than descriptors: the kernel queues what sluice cannot accept
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", sl.port))
            flood.append(s)
        sl.wait_stderr(lambda o: o.get("msg") == "accept failed; pausing the listener", 5, "the accept warning")
        # The connections it has are served (their upstream connections are pooled).
        for i, c in enumerate(kept):
            c.send(request_bytes("GET", f"/kept/again/{i}"))
            assert c.read_response(timeout=5).status == 200
        # And it does not spin while the listener cannot accept.
        before, t0 = _ticks(sl.pid), time.monotonic()
        time.sleep(1.0)
        busy = (_ticks(sl.pid) - before) / 100 / (time.monotonic() - t0)
        assert busy < 0.2, f"sluice used {busy:.0%} of a core while out of descriptors"
    finally:
        for s in flood:
            s.close()
    # Descriptors come back as the flood's connections close: new clients are served again.
    deadline = time.monotonic() + 5
    while True:
        try:
            if get(sl.port, "/recovered", timeout=2).status == 200:
                break
        except (TimeoutError, OSError):
            pass
        assert time.monotonic() < deadline, "sluice did not recover after descriptors were freed"
        time.sleep(0.1)
    for c in kept:
        c.close()
    assert sl.alive()
