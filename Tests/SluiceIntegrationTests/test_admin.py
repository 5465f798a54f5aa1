"""The admin listener cannot be stalled (issue 12, item 4): clients that dribble, stay silent, never read a
large /metrics body or open more connections than the cap leave /healthz, /readyz and /metrics answering
promptly; a slow-loris head is cut at the head deadline (5 s from the accept, however the bytes trickle in);
a non-loopback admin address is warned about."""

from __future__ import annotations

import os
import socket
import threading
import time

from rawhttp import RawConn, request_bytes
from sluice_proc import write_routes_config

#: AdminLimits.headTimeoutMilliseconds and maxConnections in Sources/SluiceCore/Admin/AdminConnectionState.swift.
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
#: What "promptly" means for a probe (the kubelet's default timeoutSeconds is 1).
PROMPT = 1.0


def _admin_sluice(stack, *, routes: int = 1, admin: str = "127.0.0.1:0", debug: bool = False):
    origin = stack.origin()
    stack._n += 1
    # Many routes make /metrics large (a requests_total series per route and class): larger than what the
    # socket buffers of a client that never reads can hold.
    cfg = write_routes_config(stack.tmp_path / f"admin{stack._n}.conf", upstreams={"a": f"http://127.0.0.1:{origin.port}"},
                              routes=[("/" if i == 0 else f"/r{i}", "a", {}) for i in range(routes)], admin=admin)
    env = dict(os.environ, SLUICE_LOG_LEVEL="debug") if debug else None
    return stack.sluice(["--config", str(cfg)], env=env)


def _timed_get(port: int, path: str) -> tuple[int, float, bytes]:
    """GET `path` on a fresh connection: (status, seconds to the whole response, body)."""
    t0 = time.monotonic()
    with RawConn(port, timeout=5) as c:
        c.send(request_bytes("GET", path, host="admin"))
        r = c.read_response()
    return r.status, time.monotonic() - t0, r.body


def _assert_prompt(port: int, seconds: float, gap: float, metrics_bound: float = PROMPT) -> int:
    """Probe /healthz, /readyz and /metrics for `seconds`, a round every `gap` s; each must answer 200 within
    PROMPT (/metrics within `metrics_bound`). Returns the number of probes."""
    probes = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path in ("/healthz", "/readyz", "/metrics"):
            status, took, body = _timed_get(port, path)
            assert status == 200, (path, status, body[:200])
            bound = metrics_bound if path == "/metrics" else PROMPT
            assert took < bound, f"{path} took {took:.2f}s while hostile connections were held"
            probes += 1
        time.sleep(gap)
    return probes


class Dribbler(threading.Thread):
    """Sends a request head one byte every `gap` s and records when sluice closed the connection."""

    def __init__(self, port: int, gap: float):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.connected_at = time.monotonic()
        self.gap = gap
        self.closed_at = None
        self.sent = 0
        self.stop = threading.Event()

    def run(self):
        head = request_bytes("GET", "/healthz", host="admin")
        self.sock.settimeout(self.gap)
        while not self.stop.is_set() and self.sent < len(head) - 1:
            try:
                self.sock.send(head[self.sent:self.sent + 1])
                self.sent += 1
                if self.sock.recv(1) == b"":
                    self.closed_at = time.monotonic()
                    return
            except socket.timeout:
                continue
            except OSError:
                self.closed_at = time.monotonic()
                return


def test_dribblers_silent_connections_and_a_non_reader_do_not_stall_the_probes(stack):
    sl = _admin_sluice(stack, routes=500)
    port = sl.admin_port
    _, quiet, body = _timed_get(port, "/metrics")
    assert len(body) > 150_000, f"/metrics is only {len(body)} bytes: too small to fill a non-reader's socket buffers"
    # Rendering 500 routes' series takes a sanitizer build a while; a stall (the write deadline, 10 s) is far longer.
    metrics_bound = max(PROMPT, 3 * quiet)

    dribblers = [Dribbler(port, gap=2.0) for _ in range(4)]
    for d in dribblers:
        d.start()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    # A scraper that asks for /metrics and never reads: the response fills its receive buffer and the
    # admin's send buffer, so a blocking writer would wait here.
    non_reader = socket.socket()
    non_reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    non_reader.connect(("127.0.0.1", port))
    non_reader.sendall(request_bytes("GET", "/metrics", host="admin"))
    try:
        # Probes keep answering while all of them are held, through and past the head deadline.
        probes = _assert_prompt(port, seconds=HEAD_TIMEOUT + 1.5, gap=0.25, metrics_bound=metrics_bound)
        assert probes >= 15
        # The slow loris: each dribbler sent a byte at least every 2 s and is cut at the head deadline.
        for d in dribblers:
            d.join(HEAD_TIMEOUT + 3 - (time.monotonic() - d.connected_at))
            assert d.closed_at is not None, f"a dribbler that sent {d.sent} bytes is still open"
            age = d.closed_at - d.connected_at
            assert HEAD_TIMEOUT - 0.5 < age < HEAD_TIMEOUT + 2.5, f"dribbler closed after {age:.1f}s"
            assert 1 <= d.sent < 40
        # The silent ones too.
        for s in silent:
            s.settimeout(3)
            assert s.recv(1) == b"", "a silent connection got bytes"
        # The non-reader got only part of the body, and /healthz still answers.
        assert _timed_get(port, "/healthz")[1] < PROMPT
    finally:
        for d in dribblers:
            d.stop.set()
            d.sock.close()
        for s in silent:
            s.close()
        non_reader.close()


def test_over_the_connection_cap_the_oldest_pending_connection_makes_room(stack):
    sl = _admin_sluice(stack, debug=True)
    port = sl.admin_port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # all accepted
        t0 = time.monotonic()
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        held += extra
        # Each of the 10 new ones closed one old silent connection, oldest first, long before the head deadline.
        for s in held[:10]:
            s.settimeout(2)
            assert s.recv(1) == b"", "an evicted connection got bytes"
        assert time.monotonic() - t0 < 2
        for s in held[10:20]:
            s.setblocking(False)
            try:
                assert s.recv(1) != b"", "a newer connection was closed instead of the oldest"
            except BlockingIOError:
                pass  # still open, as it should be
        # A probe still gets its answer at once (it evicts the oldest silent connection in turn).
        status, took, _ = _timed_get(port, "/healthz")
        assert status == 200 and took < PROMPT
        line = sl.wait_stderr(lambda o: o.get("msg", "").startswith("admin connection limit reached"), 5, "the cap line")
        assert line["level"] == "debug" and line["limit"] == MAX_CONNECTIONS and line["closed_phase"] == "reading_head"
    finally:
        for s in held:
            s.close()


def test_slow_loris_is_cut_at_the_head_deadline_and_logged_at_debug(stack):
    sl = _admin_sluice(stack, debug=True)
    d = Dribbler(sl.admin_port, gap=0.5)
    d.start()
    d.join(HEAD_TIMEOUT + 3)
    try:
        assert d.closed_at is not None
        age = d.closed_at - d.connected_at
        assert HEAD_TIMEOUT - 0.5 < age < HEAD_TIMEOUT + 1.5, f"closed after {age:.1f}s, {d.sent} bytes sent"
        assert d.sent >= 8, "the dribbler kept sending all along"
        line = sl.wait_stderr(lambda o: o.get("msg") == "admin connection closed", 3, "the debug line")
        assert line["reason"] == "head_timeout"
    finally:
        d.stop.set()
        d.sock.close()


def test_a_large_metrics_body_is_written_whole_to_a_slow_reader(stack):
    sl = _admin_sluice(stack, routes=500)
    expected = len(_timed_get(sl.admin_port, "/metrics")[2])
    with RawConn(sl.admin_port, rcvbuf=4096, timeout=10) as c:
        c.send(request_bytes("GET", "/metrics", host="admin"))
        time.sleep(0.5)  # the admin loop meets a full socket meanwhile
        r = c.read_response()
    assert r.status == 200 and r.complete
    assert abs(len(r.body) - expected) < 2_000  # counters moved between the two scrapes
    assert r.body.endswith(b"\n")


def test_a_non_loopback_admin_address_is_warned_about(stack):
    wide = _admin_sluice(stack, admin="0.0.0.0:0")
    line = wide.wait_stderr(lambda o: "admin listener is reachable" in o.get("msg", ""), 5, "the warning")
    assert line["level"] == "warn" and line["admin"].startswith("0.0.0.0:")
    assert wide.scrape("/healthz")[0] == 200
    narrow = _admin_sluice(stack)
    narrow.scrape("/healthz")
    assert not [o for o in narrow.log_objects() if "admin listener is reachable" in o.get("msg", "")]
