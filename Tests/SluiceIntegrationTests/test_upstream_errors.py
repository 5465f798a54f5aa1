"""9. Upstream failures become 502/504 with JSON bodies; client_write timeout closes both sides."""

import time

import pytest

from origin import BlackHole, OriginStopping, PeerClosed, SendStalled, unused_port
from rawhttp import RawConn, get, request_bytes
from streams import BARE_SSE_HEAD

REASON = {502: "Bad Gateway", 504: "Gateway Timeout"}


def _assert_error(r, status):
    assert r.status == status, f"expected {status}, got {r.status_line} {r.body[:200]!r}"
    assert r.reason == REASON[status], r.status_line
    assert (r.header("content-type") or "").split(";")[0].strip().lower() == "application/json"
    err = r.json()["error"]
    assert isinstance(err["type"], str) and err["type"]
    assert isinstance(err["message"], str) and err["message"]
    # Clients learn the upstream's name, never its address (that stays in the operator log and the record).
    assert "127.0.0.1" not in err["message"], err["message"]


def test_connection_refused_is_502(stack):
    port = unused_port()
    sl = stack.proxy(port)
    t0 = time.monotonic()
    r = get(sl.port, "/")
    _assert_error(r, 502)
    assert time.monotonic() - t0 < 2.0
    assert r.json()["error"]["message"] == "cannot connect to upstream 'default'", r.json()
    # The operator's warning says where.
    deadline = time.monotonic() + 3
    while not any("upstream error" in line and f"127.0.0.1:{port}" in line for line in sl.stderr_lines):
        assert time.monotonic() < deadline, sl.stderr_lines
        time.sleep(0.02)


def test_connect_timeout_is_504(stack):
    hole = BlackHole()
    try:
        assert hole.full, "could not fill the listener's accept queue; SYNs are not being dropped"
        sl = stack.proxy(hole.port, timeouts={"upstream_connect": "500ms"})
        t0 = time.monotonic()
        r = get(sl.port, "/", timeout=10)
        elapsed = time.monotonic() - t0
        _assert_error(r, 504)
        assert 0.4 <= elapsed < 3.0, f"504 after {elapsed:.2f}s with upstream_connect 500ms"
    finally:
        hole.close()


def _close_without_response(conn, req):
    conn.close()
    return False


def _partial_head(conn, req):
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Le")
    conn.close()
    return False


def _garbage(conn, req):
    conn.send(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
    conn.close()
    return False


def _bad_status(conn, req):
    conn.send(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")
    return False


def _bad_cl(conn, req):
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\nhello")
    conn.close()
    return False


@pytest.mark.parametrize("handler", [_close_without_response, _partial_head, _garbage, _bad_status, _bad_cl],
                         ids=["close-no-bytes", "close-partial-head", "garbage", "bad-status-code", "bad-content-length"])
def test_bad_upstream_response_is_502(stack, handler):
    sl = stack.proxy(stack.origin(handler))
    t0 = time.monotonic()
    r = get(sl.port, "/")
    _assert_error(r, 502)
    assert time.monotonic() - t0 < 3.0


def test_first_byte_timeout_is_504_and_upstream_closed(stack):
    def silent(conn, req):
        conn.wait_peer_closed(10)
        return False

    origin = stack.origin(silent)
    sl = stack.proxy(origin, timeouts={"upstream_first_byte": "500ms"})
    t0 = time.monotonic()
    r = get(sl.port, "/slow", timeout=10)
    elapsed = time.monotonic() - t0
    _assert_error(r, 504)
    assert 0.4 <= elapsed < 3.0, f"504 after {elapsed:.2f}s with upstream_first_byte 500ms"
    up = origin.connections[0]
    origin.wait_for(lambda: up.closed, 3, "sluice to close the timed-out upstream")
    assert up.close_reason in ("eof", "reset")


def test_upstream_idle_timeout_mid_body_aborts_client(stack):
    def stalls(conn, req):
        conn.send(BARE_SSE_HEAD + b"c\r\ndata: first\n\r\n")
        conn.wait_peer_closed(10)  # then silence
        return False

    origin = stack.origin(stalls)
    sl = stack.proxy(origin, timeouts={"upstream_idle": "500ms"})
    t0 = time.monotonic()
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/stall"))
        r = c.read_response(timeout=10)
        elapsed = time.monotonic() - t0
        assert r.status == 200 and r.body == b"data: first\n"
        assert not r.complete, "a stalled upstream must not end in a clean terminator"
        assert c.eof
    assert 0.4 <= elapsed < 3.0, f"client cut off after {elapsed:.2f}s with upstream_idle 500ms"
    up = origin.connections[0]
    origin.wait_for(lambda: up.closed, 3, "sluice to close the idle upstream")


def test_client_write_timeout_closes_client_and_upstream(stack):
    total = 64 * 1024 * 1024
    sent_at = []

    def flood(conn, req):
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {total}\r\n\r\n".encode())
        sent_at.append(time.monotonic())
        piece = b"W" * 65536
        try:
            for _ in range(total // len(piece)):
                conn.send(piece, stall_timeout=20)
        except (PeerClosed, SendStalled, OriginStopping):
            pass
        return False

    origin = stack.origin(flood, sndbuf=65536)
    sl = stack.proxy(origin, timeouts={"client_write": "1s"})
    c = RawConn(sl.port, rcvbuf=4096, timeout=15)
    try:
        t0 = time.monotonic()
        c.send(request_bytes("GET", "/big"))
        # The client never reads. sluice's writes stall; after 1 s it must give up.
        origin.wait_for(lambda: origin.connections and origin.connections[0].closed, 15,
                        "sluice to close the upstream of a stalled client")
        up = origin.connections[0]
        assert up.close_reason in ("eof", "reset"), up.close_reason
        elapsed = up.closed_at - t0
        assert 0.9 <= elapsed < 8.0, f"upstream closed {elapsed:.2f}s after the request (client_write 1s)"
        assert up.bytes_sent < total
        got = c.read_until_close(10)
        assert len(got) < total, "the client got the whole body although it was cut off"
        assert c.ended in ("eof", "reset")
    finally:
        c.close()
