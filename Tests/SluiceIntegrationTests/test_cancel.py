"""7. Cancellation both ways: a client that leaves, an upstream that dies mid-body."""

import socket
import struct
import subprocess
import time

import pytest

from origin import respond
from rawhttp import RawConn, request_bytes
from streams import BARE_SSE_HEAD, LAST_CHUNK, chunk

EVENT = b"data: {\"tick\": true}\n\n"
MAX_EVENTS = 200  # 200 x 50 ms bounds the stream at 10 s


def _streaming_handler(conn, req):
    if req.target == "/after":
        return respond(conn, 200, b"after")
    conn.send(BARE_SSE_HEAD)
    for _ in range(MAX_EVENTS):
        conn.send(chunk(EVENT))
        if conn.wait_peer_closed(0.05):
            return False
    conn.send(LAST_CHUNK)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_close_mid_stream_closes_upstream(stack, how):
    origin = stack.origin(_streaming_handler)
    sl = stack.proxy(origin)
    c = RawConn(sl.port)
    c.send(request_bytes("GET", "/stream"))
    r = c.read_head()
    assert r.status == 200
    while c.buf.count(EVENT) < 3:
        assert c.recv_some(5), "stream ended early"
    if how == "rst":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t_close = time.monotonic()
    c.close()
    up = origin.connections[origin.heads[0].conn_id]
    origin.wait_for(lambda: up.closed, 5, "the upstream connection to close")
    lag = up.closed_at - t_close
    print(f"upstream closed {lag * 1000:.1f} ms after the client ({how})")
    assert lag < 1.0, f"upstream closed {lag:.3f}s after the client left"
    assert up.close_reason in ("eof", "reset"), f"origin ended the stream itself ({up.close_reason})"
    # sluice is fine afterwards and does not hand out the dead upstream connection.
    with RawConn(sl.port) as c2:
        c2.send(request_bytes("GET", "/after"))
        assert c2.read_response().body == b"after"


def _dying_handler(framing, how):
    def handler(conn, req):
        if framing == "chunked":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                conn.send(b"6\r\npart" + str(i).encode() + b"\n\r\n")
                conn.sleep(0.02)
        else:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\n\r\n")
            conn.send(b"z" * 5000)
            conn.sleep(0.05)
        (conn.abort if how == "rst" else conn.close)()
        return False
    return handler


PARTIAL = {"chunked": b"part0\npart1\npart2\n", "length": b"z" * 5000}


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_upstream_dies_mid_body_raw_client(stack, framing, how):
    sl = stack.proxy(stack.origin(_dying_handler(framing, how)))
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/dies"))
        r = c.read_response(timeout=10)
        assert r.status == 200
        assert r.framing == framing
        assert not r.complete, "a truncated upstream body must not look complete to the client"
        assert r.body == PARTIAL[framing]
        if framing == "chunked":
            assert not r.raw_body.endswith(b"0\r\n\r\n")
        assert c.eof, "client connection must be closed"


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_upstream_dies_mid_body_curl_reports_error(stack, framing):
    sl = stack.proxy(stack.origin(_dying_handler(framing, "fin")))
    p = subprocess.run(["curl", "-sS", "-N", "--max-time", "10", f"http://127.0.0.1:{sl.port}/dies"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert p.returncode != 0, f"curl accepted a truncated body as complete: {p.stdout[-40:]!r}"
    assert p.returncode != 28, "curl timed out instead of seeing the connection end"
    assert p.stdout == PARTIAL[framing]
