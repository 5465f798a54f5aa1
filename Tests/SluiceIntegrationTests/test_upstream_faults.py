"""Upstream faults (issue 7, second half), each with its completion-log record.

Covered elsewhere and not repeated here: an upstream that accepts and never answers (504,
`test_upstream_errors.py::test_first_byte_timeout_is_504_and_upstream_closed`; `end: timeout_first_byte` in
`test_completion_log.py::test_mixed_outcomes_one_exact_record_each`), a head then a stall (aborted stream,
`test_upstream_errors.py::test_upstream_idle_timeout_mid_body_aborts_client`; `end: timeout_idle` in the
mixed-outcomes log test), a FIN or reset mid-body seen by raw clients and curl (`test_cancel.py`), a pooled
connection the origin closed while idle (`test_keepalive.py`).

Here: a reset mid-stream with its log record; invalid status lines and heads; oversized heads; and a
pooled keep-alive connection that the origin closes just as sluice reuses it: retried once on a fresh
connection for a request without a body, 502 for one whose body sluice streamed and no longer holds.
"""

from __future__ import annotations

import pytest

from origin import respond
from rawhttp import RawConn, request_bytes
from sluice_proc import wait_records
from streams import LAST_CHUNK, SSE_HEAD, chunk, sse_head

EVENTS = [b"data: {\"i\": %d}\n\n" % i for i in range(3)]


def logged_proxy(stack, origin, **kw):
    """sluice in front of `origin` with a completion log file; returns (sluice, log path)."""
    log = stack.tmp_path / "completions.jsonl"
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})],
                            log={"file": str(log), "stdout": "off"}, **kw)
    return sl, log


def assert_502(r):
    assert r.status == 502 and r.reason == "Bad Gateway", f"{r.status_line} {r.body[:200]!r}"
    assert (r.header("content-type") or "").split(";")[0].strip().lower() == "application/json"
    assert r.json()["error"]["type"] == "upstream_bad_response", r.body


def one_record(log, path: str) -> dict:
    recs = [r for r in wait_records(log, 1) if r["path"] == path]
    assert len(recs) == 1, f"{len(recs)} records for {path}: {recs}"
    return recs[0]


# -- reset mid-stream ---------------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_reset_mid_stream_aborts_the_client_and_is_logged(stack, framing):
    """Head and three events, then a TCP reset: the client gets the events, no clean end, and a close;
    the record says upstream_abort."""
    body = b"".join(EVENTS)

    def handler(conn, req):
        if framing == "chunked":
            conn.send(SSE_HEAD)
            for ev in EVENTS:
                conn.send(chunk(ev))
                conn.sleep(0.02)
        else:
            conn.send(sse_head(framing=f"Content-Length: {len(body) + 1000}") + body)
            conn.sleep(0.05)
        conn.abort()  # SO_LINGER 0: RST, not FIN
        return False

    origin = stack.origin(handler)
    sl, log = logged_proxy(stack, origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/reset"))
        r = c.read_response(timeout=10)
        assert r.status == 200 and r.framing == framing
        assert r.body == body
        assert not r.complete, "a reset upstream must not look like a complete response"
        if framing == "chunked":
            assert not r.raw_body.endswith(b"0\r\n\r\n") and b"\r\n0\r\n" not in r.raw_body
        assert c.eof, "sluice must close the client connection of an aborted response"
    rec = one_record(log, "/reset")
    assert (rec["status"], rec["end"], rec["sse_events"]) == (200, "upstream_abort", 3), rec
    assert rec["error"], rec


# -- invalid status lines and heads --------------------------------------------------------------------

BAD_HEADS = [
    ("no-space-after-code", b"HTTP/1.1 200OK\r\nContent-Length: 2\r\n\r\nok"),
    ("four-digit-code", b"HTTP/1.1 1000 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("two-digit-code", b"HTTP/1.1 99 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("code-600", b"HTTP/1.1 600 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("negative-code", b"HTTP/1.1 -20 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("http2-version", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("lowercase-version", b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("double-space", b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("icy", b"ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("bare-lf-status-line", b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"),
    ("nul-in-reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok"),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("cl-differing", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
]


@pytest.mark.parametrize("head", [b for _, b in BAD_HEADS], ids=[i for i, _ in BAD_HEADS])
def test_invalid_response_head_is_502_and_logged(stack, head):
    def handler(conn, req):
        conn.send(head)
        conn.wait_peer_closed(5)
        return False

    origin = stack.origin(handler)
    sl, log = logged_proxy(stack, origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/bad-head"))
        r = c.read_response(timeout=5)
        assert_502(r)
    up = origin.connections[0]
    origin.wait_for(lambda: up.closed, 3, "sluice to close the upstream that sent a bad head")
    rec = one_record(log, "/bad-head")
    assert (rec["status"], rec["end"]) == (502, "upstream_error"), rec
    assert "invalid response from upstream" in rec["error"], rec


@pytest.mark.parametrize("head", [
    pytest.param(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * 1000) for i in range(70))
                 + b"Content-Length: 2\r\n\r\nok", id="head-70k"),
    pytest.param(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(120))
                 + b"Content-Length: 2\r\n\r\nok", id="120-fields"),
])
def test_oversized_response_head_is_502_and_logged(stack, head):
    def handler(conn, req):
        try:
            conn.send(head)
        finally:
            conn.wait_peer_closed(5)
        return False

    origin = stack.origin(handler)
    sl, log = logged_proxy(stack, origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/big-head"))
        r = c.read_response(timeout=5)
        assert_502(r)
        assert b"X-Pad" not in r.head_raw and b"X-F1" not in r.head_raw
    rec = one_record(log, "/big-head")
    assert (rec["status"], rec["end"]) == (502, "upstream_error"), rec


# -- a pooled connection closed just as it is reused ------------------------------------------------------

def _closes_on_reuse(how: str, *, also_fresh: bool = False):
    """Answers the first request of each connection (keep-alive); a second request on the same connection is
    read and then the connection is closed (FIN or RST) without an answer. `also_fresh`: /two is never
    answered, on any connection."""
    def handler(conn, req):
        reused = len(conn.requests) > 1
        if reused or (also_fresh and req.target == "/two"):
            (conn.abort if how == "rst" else conn.close)()
            return False
        respond(conn, 200, b"answer to " + req.target.encode() + b" " + req.body)
    return handler


def _first_then_second(sl, method: str, raw_second: bytes):
    """GET /one, then the second request on the same client connection; returns the second response."""
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/one"))
        r1 = c.read_response()
        assert r1.status == 200 and r1.body == b"answer to /one "
        c.send(raw_second)
        return c.read_response(method, timeout=10)


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_reused_connection_closed_without_answer_retries_bodyless_request_once(stack, how, method):
    origin = stack.origin(_closes_on_reuse(how))
    sl, log = logged_proxy(stack, origin, admin="127.0.0.1:0")
    r = _first_then_second(sl, method, request_bytes(method, "/two"))
    assert r.status == 200 and r.body == b"answer to /two ", f"{r.status_line} {r.body[:200]!r}"
    assert 'sluice_upstream_retries_total{reason="replay"} 1' in sl.scrape()[2].splitlines()
    # /two reached the reused connection (conn 0), which closed, and then a fresh one (conn 1), which answered.
    assert [(h.conn_id, h.method, h.target) for h in origin.heads] == \
        [(0, "GET", "/one"), (0, method, "/two"), (1, method, "/two")]
    assert len(origin.connections) == 2
    recs = wait_records(log, 2)
    assert [(x["path"], x["status"], x["end"]) for x in recs] == [("/one", 200, "complete"), ("/two", 200, "complete")]


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_reused_connection_closed_without_answer_after_streamed_body_is_502(stack, how, framing):
    """sluice streams request bodies and keeps no copy, so a POST whose body went to the dead connection
    cannot be replayed: 502, and the origin saw it once."""
    if framing == "length":
        raw = request_bytes("POST", "/two", [("Content-Type", "application/json")], b'{"prompt": "hi"}')
    else:
        raw = (b"POST /two HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunk(b'{"prompt": "hi"}') + LAST_CHUNK)
    origin = stack.origin(_closes_on_reuse(how))
    sl, log = logged_proxy(stack, origin)
    r = _first_then_second(sl, "POST", raw)
    assert_502(r)
    assert [(h.conn_id, h.target) for h in origin.heads] == [(0, "/one"), (0, "/two")], "the POST was replayed"
    assert len(origin.connections) == 1
    recs = wait_records(log, 2)
    assert [(x["path"], x["status"], x["end"]) for x in recs] == [("/one", 200, "complete"), ("/two", 502, "upstream_error")]


def test_retry_happens_once_only(stack):
    """The fresh connection of the retry fails too: 502, not a loop; the origin saw /two exactly twice."""
    origin = stack.origin(_closes_on_reuse("fin", also_fresh=True))
    sl, log = logged_proxy(stack, origin)
    r = _first_then_second(sl, "GET", request_bytes("GET", "/two"))
    assert_502(r)
    assert [(h.conn_id, h.target) for h in origin.heads] == [(0, "/one"), (0, "/two"), (1, "/two")]
    recs = wait_records(log, 2)
    assert [(x["path"], x["status"], x["end"]) for x in recs] == [("/one", 200, "complete"), ("/two", 502, "upstream_error")]


def test_reused_connection_that_started_answering_is_not_retried(stack):
    """Part of a response head came back before the close: the server did take the request, so it is not
    sent again even though nothing reached the client yet: 502."""
    def handler(conn, req):
        if len(conn.requests) > 1:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")
            conn.close()
            return False
        respond(conn, 200, b"answer to " + req.target.encode() + b" ")

    origin = stack.origin(handler)
    sl, log = logged_proxy(stack, origin)
    r = _first_then_second(sl, "GET", request_bytes("GET", "/two"))
    assert_502(r)
    assert [(h.conn_id, h.target) for h in origin.heads] == [(0, "/one"), (0, "/two")]
    recs = wait_records(log, 2)
    assert [(x["path"], x["status"], x["end"]) for x in recs] == [("/one", 200, "complete"), ("/two", 502, "upstream_error")]


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_origin_closing_right_after_each_answer_never_costs_a_request(stack, pipelined):
    """The race itself: every upstream connection answers one request and closes at once, while the next
    request follows immediately (pipelined: it is already in sluice's buffer when the answer ends, so sluice
    reuses the connection in the same turn it pooled it). Whether sluice sees the close before reuse or only
    after writing, every GET is answered, and no request is answered twice."""
    def handler(conn, req):
        respond(conn, 200, b"answer to " + req.target.encode())
        conn.close()
        return False

    origin = stack.origin(handler)
    sl, log = logged_proxy(stack, origin)
    n = 30
    with RawConn(sl.port) as c:
        if pipelined:
            c.send(b"".join(request_bytes("GET", f"/r{i}") for i in range(n)))
        for i in range(n):
            if not pipelined:
                c.send(request_bytes("GET", f"/r{i}"))
            r = c.read_response(timeout=10)
            assert r.status == 200 and r.body == f"answer to /r{i}".encode(), f"request {i}: {r.status_line} {r.body[:200]!r}"
    # Each upstream connection answers one request and then stops reading, so this is "answered exactly once".
    assert sorted(q.target for q in origin.requests) == sorted(f"/r{i}" for i in range(n))
    recs = wait_records(log, n)
    assert len(recs) == n and all(x["end"] == "complete" for x in recs), [x["end"] for x in recs]
