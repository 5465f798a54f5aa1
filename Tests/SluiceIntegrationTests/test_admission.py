"""Memory before the first byte and fairness at max_connections (issue 12, item 5).

- A bare TCP connect to a TLS listener allocates no TLS engine state until the client's first byte: 2,000 of
  them grow sluice's RSS by about 2.2 MiB (1.1 KB each) and cost 6 heap allocations each (release build, with
  test_allocations.py's malloc shim); before, each held OpenSSL's ~56 KB and 35 allocations (107 MiB in all).
- At max_connections the oldest idle connection (accepted with no request byte, or kept alive between requests)
  is closed to admit the new one (`sluice_connections_evicted_total`); a connection with a request under way
  (head partly read, exchange) never is, and with no idle one the new connection gets the 503.
- max_connections defaults to max(64, (nofile - (32 + workers * (listeners + 2 + sum of max_idle))) / 2), after
  sluice raised its soft open-file limit to the hard one; the ready line shows it; an explicit value wins.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from origin import respond
from rawhttp import RawConn, get, request_bytes
from sluice_proc import write_routes_config

BARE_CONNECTS = 2000
#: RSS growth allowed per bare connect to a TLS listener. Measured: 1.1 KB (debug build); it was 55 KB when each
#: accept created the OpenSSL connection and its 2 x 17 KiB BIO pair. Room for sanitizer builds.
RSS_PER_BARE_CONNECT_LIMIT = 16 * 1024
#: Heap allocations per bare connect to a TLS listener (optimized build, under test_allocations.py's shim).
#: Measured: 6 (the session and its bookkeeping); 35 when OpenSSL's connection was made at accept.
MALLOCS_PER_BARE_CONNECT_LIMIT = 15


def _metric(sl, name: str) -> int:
    _, _, text = sl.scrape()
    match = re.search(rf"^{name} (\d+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return int(match.group(1))


def _wait_metric(sl, name: str, value: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _metric(sl, name)) != value:
        assert time.monotonic() < deadline, f"{name} is {seen}, expected {value}"
        time.sleep(0.02)


def _tls_listener_config(stack, pki: Path, origin_port: int, handshake_timeout: str) -> Path:
    stack._n += 1
    path = stack.tmp_path / f"admission{stack._n}.conf"
    path.write_text(f"""listen 127.0.0.1:0 tls
workers 1
limits {{
    max_connections 0
}}
tls {{
    certificate {pki / 'server.pem'}
    key {pki / 'server.key'}
    handshake_timeout {handshake_timeout}
}}
upstream o {{
    server http://127.0.0.1:{origin_port}
}}
route / {{
    upstream o
}}
""")
    return path


def _https_get(port: int, pki: Path, target: str, delay_before_hello: float = 0.0) -> bytes:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        time.sleep(delay_before_hello)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return data


def _enough_descriptors(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"needs {count} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def test_bare_connects_to_a_tls_listener_hold_no_tls_state(stack, pki):
    _enough_descriptors(BARE_CONNECTS + 200)
    origin = stack.origin()
    sl = stack.sluice(["--config", str(_tls_listener_config(stack, pki, origin.port, "4s"))])
    assert _https_get(sl.port, pki, "/warm").startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    rss0 = sl.rss_kib()
    bare: list[socket.socket] = []
    try:
        opened_at = time.monotonic()
        for _ in range(BARE_CONNECTS):
            bare.append(socket.create_connection(("127.0.0.1", sl.port), timeout=10))
        time.sleep(0.5)  # sluice accepts them all and runs a turn for each
        rss1 = sl.rss_kib()
        growth = (rss1 - rss0) * 1024
        print(f"{BARE_CONNECTS} bare connects: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
              f"{growth / BARE_CONNECTS:.0f} B each")
        assert growth < RSS_PER_BARE_CONNECT_LIMIT * BARE_CONNECTS, \
            f"{BARE_CONNECTS} bare connects grew RSS by {growth / 1048576:.1f} MiB ({growth / BARE_CONNECTS:.0f} B each)"
        # Clients that do send a ClientHello are served meanwhile, also one that waits before its first byte.
        assert _https_get(sl.port, pki, "/meanwhile").startswith(b"HTTP/1.1 200")
        assert _https_get(sl.port, pki, "/late-hello", delay_before_hello=0.5).startswith(b"HTTP/1.1 200")
        # The handshake timeout still runs from accept, with nothing allocated to time out.
        bare[0].settimeout(8)
        assert bare[0].recv(1) == b""
        took = time.monotonic() - opened_at
        assert 3.5 <= took < 7, f"a bare connect was closed after {took:.2f} s with handshake_timeout 4s"
    finally:
        for s in bare:
            s.close()


def test_bare_connects_to_a_tls_listener_allocate_no_tls_engine(stack, pki, tmp_path):
    """The same with the malloc shim: allocations per bare connect, not bytes (needs an optimized binary)."""
    from test_allocations import counted_sluice
    _enough_descriptors(BARE_CONNECTS + 200)
    origin = stack.origin()
    sl, counter = counted_sluice(stack, tmp_path, origin.port,
                                 ["--config", str(_tls_listener_config(stack, pki, origin.port, "30s"))])
    assert _https_get(sl.port, pki, "/warm").startswith(b"HTTP/1.1 200")
    warm = [socket.create_connection(("127.0.0.1", sl.port), timeout=10) for _ in range(50)]
    time.sleep(0.3)
    for s in warm:
        s.close()
    before = counter.read()
    bare = [socket.create_connection(("127.0.0.1", sl.port), timeout=10) for _ in range(BARE_CONNECTS)]
    try:
        time.sleep(0.5)
        per_connect = (counter.read() - before) / BARE_CONNECTS
        print(f"{per_connect:.1f} allocations per bare connect to a TLS listener")
        assert per_connect <= MALLOCS_PER_BARE_CONNECT_LIMIT, f"{per_connect:.1f} allocations per bare connect"
    finally:
        for s in bare:
            s.close()


def _held_origin(stack):
    """An origin that holds every response until `release` is set."""
    release = threading.Event()

    def handler(conn, req):
        if req.target.startswith("/busy"):
            release.wait(15)
        respond(conn, 200, req.target.encode())

    return stack.origin(handler), release


def _capped_proxy(stack, origin, cap: int, workers: int = 1):
    log = stack.tmp_path / "completions.jsonl"
    return stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=workers,
                              limits={"max_connections": cap}, log={"file": str(log)}, admin="127.0.0.1:0",
                              timeouts={"client_header": "30s"},
                              sluice_kw={"env": {**os.environ, "SLUICE_LOG_LEVEL": "debug"}})


CAP = 20


def _hold(kind: str, port: int, origin, index: int) -> RawConn:
    c = RawConn(port, timeout=10)
    if kind == "keepalive":
        c.send(request_bytes("GET", f"/ka/{index}"))
        assert c.read_response().status == 200
    elif kind == "partial_head":
        c.send(b"GET /partial HTTP/1.1\r\nHost: sluice.test\r\n")
    elif kind == "busy":
        c.send(request_bytes("GET", f"/busy/{index}"))
    return c


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind, admitted", [
    ("bare", True),           # accepted, no byte yet: the attacker's idle connection
    ("keepalive", True),      # answered and kept alive, nothing pending
    ("partial_head", False),  # a head under way is never closed to make room
    ("busy", False),          # mid-exchange: never closed; the new connection gets the 503
])
def test_at_max_connections_the_oldest_idle_connection_makes_room(stack, kind, admitted, workers):
    """With one worker the oldest idle connection is the one closed; with two, the accepting worker's oldest, or
    (when it has none) the oldest of a worker that has some: the idle connections may sit on either."""
    origin, release = _held_origin(stack)
    sl = _capped_proxy(stack, origin, CAP, workers)
    held: list[RawConn] = []
    try:
        for i in range(CAP):
            held.append(_hold(kind, sl.port, origin, i))
            _wait_metric(sl, "sluice_active_connections", i + 1)  # accepted in this order: held[0] is the oldest
        if kind == "busy":
            origin.wait_for(lambda: len(origin.heads) == CAP, 5, "every held request at the origin")
        if kind == "partial_head":
            time.sleep(0.3)  # sluice has read the partial heads
        response = get(sl.port, "/legit", timeout=5)
        if admitted:
            assert response.status == 200, response.status_line
            if workers == 1:
                assert held[0].closed_within(2), "the oldest idle connection was not the one closed"
            else:
                deadline = time.monotonic() + 2
                while not any(c.closed_within(0.02) for c in held):
                    assert time.monotonic() < deadline, "no idle connection was closed"
            closed = [i for i, c in enumerate(held) if c.closed_within(0.05)]
            assert len(closed) == 1, f"connections {closed} were closed, expected one"
            line = sl.wait_stderr(lambda o: o.get("msg") == "idle connection closed to make room at max_connections", 2)
            assert line["level"] == "debug" and line["max_connections"] == CAP and line["idle_ms"] >= 0
            assert _metric(sl, "sluice_connections_evicted_total") == 1
            assert _metric(sl, "sluice_connections_refused_total") == 0
        else:
            assert response.status == 503, response.status_line
            assert response.json()["error"]["type"] == "overloaded"
            assert not any(c.closed_within(0.05) for c in held), "a connection with a request under way was closed"
            assert _metric(sl, "sluice_connections_evicted_total") == 0
            assert _metric(sl, "sluice_connections_refused_total") == 1
        assert "/legit" in [h.target for h in origin.heads] if admitted else "/legit" not in [h.target for h in origin.heads]
        if kind == "busy":
            release.set()
            for c in held:
                assert c.read_response(timeout=5).status == 200
    finally:
        release.set()
        for c in held:
            c.close()


def test_busy_connections_are_passed_over_for_an_idle_one(stack):
    """19 exchanges in flight and one idle connection (the newest): the idle one is closed, no exchange is."""
    origin, release = _held_origin(stack)
    sl = _capped_proxy(stack, origin, CAP)
    held: list[RawConn] = []
    try:
        for i in range(CAP - 1):
            held.append(_hold("busy", sl.port, origin, i))
            _wait_metric(sl, "sluice_active_connections", i + 1)
        origin.wait_for(lambda: len(origin.heads) == CAP - 1, 5, "every held request at the origin")
        idle = _hold("bare", sl.port, origin, CAP)
        _wait_metric(sl, "sluice_active_connections", CAP)
        assert get(sl.port, "/legit", timeout=5).status == 200
        assert idle.closed_within(2)
        assert _metric(sl, "sluice_connections_evicted_total") == 1
        release.set()
        for c in held:
            assert c.read_response(timeout=5).status == 200
        idle.close()
    finally:
        release.set()
        for c in held:
            c.close()


def _default_cap(nofile: int, workers: int, listeners: int, max_idle_sum: int) -> int:
    return max(64, (nofile - (32 + workers * (listeners + 2 + max_idle_sum))) // 2)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) sets sluice's fd limit")
@pytest.mark.parametrize("nofile, limits, expected", [
    ("2000:2000", None, _default_cap(2000, 2, 1, 256 + 8)),
    ("1024:3000", None, _default_cap(3000, 2, 1, 256 + 8)),  # the soft limit is raised to the hard one first
    ("300:300", None, 64),                                 # too few descriptors to matter: the floor
    ("2000:2000", {"max_connections": "auto"}, _default_cap(2000, 2, 1, 256 + 8)),
    ("2000:2000", {"max_connections": 20}, 20),            # explicit wins
    ("2000:2000", {"max_connections": 0}, 0),              # explicit 0: no limit
])
def test_default_max_connections_follows_the_fd_limit(stack, tmp_path, nofile, limits, expected):
    origin = stack.origin()
    cfg = write_routes_config(tmp_path / "cap.conf", workers=2, limits=limits,
                              upstreams={"o": f"http://127.0.0.1:{origin.port}"}, routes=[("/", "o", {})])
    # A second upstream with a small pool: every upstream's max_idle counts in the reserve.
    cfg.write_text(cfg.read_text() + "upstream p {\n    server http://127.0.0.1:9\n    max_idle 8\n}\n")
    sl = stack.sluice(["--config", str(cfg)], launcher=("prlimit", f"--nofile={nofile}", "--"))
    assert sl.ready["open_file_limit"] == int(nofile.split(":")[1])
    assert sl.ready["max_connections"] == expected
    assert get(sl.port, "/ok").status == 200


def test_a_tls_client_over_the_cap_gets_its_503(stack, pki):
    """At max_connections with no idle connection to close, a new TLS client gets the 503 over TLS at once: the
    refusal is queued before the handshake, and the handshake must still be read for it to go out (it used to
    wait for client_write, answered by nothing)."""
    origin, release = _held_origin(stack)
    cfg = _tls_listener_config(stack, pki, origin.port, "5s")
    cfg.write_text(cfg.read_text().replace("max_connections 0", "max_connections 1"))
    sl = stack.sluice(["--config", str(cfg)])
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    try:
        with socket.create_connection(("127.0.0.1", sl.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as busy:
            busy.sendall(b"GET /busy HTTP/1.1\r\nHost: localhost\r\n\r\n")
            origin.wait_for(lambda: len(origin.heads) == 1, 5, "the busy request at the origin")
            started = time.monotonic()
            answer = _https_get(sl.port, pki, "/refused")
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
            assert b"Retry-After: 1\r\n" in answer
            assert time.monotonic() - started < 2, "the 503 waited for a timeout"
            release.set()
            assert busy.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        release.set()
