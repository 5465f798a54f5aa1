"""WebSocket tunnels against awkward orders on the wire: a 101 that arrives in one write with the server's first
frame, client frames sent right behind the upgrade request (before any 101), and a client that pipelines a plain
request behind an upgrade the origin refuses. Raw sockets on both sides, exact bytes."""

from __future__ import annotations

import time

from origin import OriginConn, PeerClosed, Request
from rawhttp import RawConn, request_bytes
from sluice_proc import wait_records
from websocket_origins import accept_value, client_frame, start, tunnel_of, upgrade_head

EARLY = bytes([0x81, 5]) + b"early"  # an unmasked server text frame


def _raw_switch(received: list):
    """Answers the upgrade with its 101 and a first frame in one write, then records every byte it gets."""
    def handler(conn: OriginConn, req: Request):
        key = req.header("Sec-WebSocket-Key") or ""
        conn.send(("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   f"Sec-WebSocket-Accept: {accept_value(key)}\r\n\r\n").encode() + EARLY)
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline:
                conn._recv_more(timeout=max(0.01, deadline - time.monotonic()))
                received.append(bytes(conn._buf))
                del conn._buf[:]
        except (PeerClosed, TimeoutError):
            pass
        return False
    return handler


def test_frames_on_both_sides_of_the_101_keep_their_order(stack):
    received: list[bytes] = []
    origin = stack.origin(_raw_switch(received))
    sl, log = start(stack, origin)
    head, _ = upgrade_head("/ws")
    early_from_client = client_frame(0x1, b"sent before the 101")
    with RawConn(sl.port, timeout=5) as c:
        # The client does not wait for the 101 (RFC 6455 says it should): its frame queues behind the request and goes
        # up once the tunnel opens, never parsed as HTTP.
        c.send(head + early_from_client)
        r = c.read_head()
        assert r.status == 101, r.head_raw
        deadline = time.monotonic() + 3
        while len(c.buf) < len(EARLY) and time.monotonic() < deadline:
            c._need(deadline)
        assert bytes(c.buf[:len(EARLY)]) == EARLY, f"the frame sent with the 101 must follow it at once: {bytes(c.buf)!r}"
        origin.wait_for(lambda: b"".join(received) == early_from_client, 3, "the client's early frame at the origin")
        later = client_frame(0x2, b"\x00" * 300)
        c.send(later)
        origin.wait_for(lambda: b"".join(received) == early_from_client + later, 3, "the next frame, in order")
    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["status"] == 101 and rec["end"] == "tunnel_client_closed", rec
    assert t["client_messages"] == 2 and t["upstream_messages"] == 1, t
    assert t["client_bytes"] == len(early_from_client) + len(later) and t["upstream_bytes"] == len(EARLY), t
    assert len(origin.heads) == 1, "one request reached the origin: the early frame was not parsed as one"


def _refuse_upgrades(conn: OriginConn, req: Request):
    body = b"no"
    conn.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n" + body)
    return True


def test_a_request_pipelined_behind_a_refused_upgrade_is_served_as_http(stack):
    origin = stack.origin(_refuse_upgrades)
    sl, log = start(stack, origin)
    head, _ = upgrade_head("/ws")
    with RawConn(sl.port, timeout=5) as c:
        c.send(head + request_bytes("GET", "/next"))
        first = c.read_response()
        assert first.status == 403 and first.body == b"no", first.head_raw
        second = c.read_response()
        assert second.status == 403 and second.body == b"no", second.head_raw
    assert [h.target for h in origin.heads] == ["/ws", "/next"]
    assert origin.heads[1].header("Upgrade") is None
    recs = wait_records(log, 2)
    assert all("tunnel" not in r and r["status"] == 403 for r in recs), recs
