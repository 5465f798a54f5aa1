"""WebSocket tunnels, the upgrade itself: what reaches the origin and what the client gets when the upgrade is not
a WebSocket one (`h2c`), is switched off on the route (`websocket off`), carries a body, is answered with
something else than 101, or when a 101 answers a request that asked for no WebSocket."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from origin import echo_handler, respond
from rawhttp import RawConn, get, request_bytes
from sluice_proc import wait_records
from websocket_origins import WSOrigin, echo, only_record, start, upgrade_head, ws_client

H2C = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")]


def _tokens(value) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


def test_h2c_upgrade_is_stripped_and_answered_as_plain_http(stack):
    origin = stack.origin(echo_handler)
    sl, log = start(stack, origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/h2c", H2C))
        r = c.read_response()
        assert r.status == 200 and r.body == b"/h2c", r.head_raw
        assert r.header("Upgrade") is None, r.head_raw
        # The connection is still HTTP/1.1: a next request on it is served.
        c.send(request_bytes("GET", "/after"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"/after", r2.head_raw
    head = origin.heads[0]
    assert head.target == "/h2c"
    assert head.header("Upgrade") is None, f"Upgrade reached the origin: {head.headers}"
    assert head.header("HTTP2-Settings") is None, f"HTTP2-Settings reached the origin: {head.headers}"
    assert not {"upgrade", "http2-settings"} & set(_tokens(head.header("Connection"))), head.headers
    recs = wait_records(log, 2)
    assert [r["status"] for r in recs] == [200, 200], recs
    assert all("tunnel" not in r for r in recs), recs


def test_websocket_off_on_a_route_forwards_a_plain_get(stack):
    origin = WSOrigin(echo)
    sl, log = start(stack, origin, routes=[("/plain/", {"websocket": "off"}), ("/", {})])
    with pytest.raises(InvalidStatus) as refused:
        ws_client(sl.port, "/plain/ws")
    # The websockets origin, seeing no Upgrade, does not switch: it answers 426 Upgrade Required.
    assert refused.value.response.status_code == 426, refused.value
    [hs] = origin.handshakes
    assert hs.path == "/plain/ws"
    assert hs.header("Upgrade") is None, f"Upgrade reached the origin on a websocket off route: {hs.headers}"
    assert "upgrade" not in _tokens(hs.header("Connection")), hs.headers
    assert origin.conns == []
    # The same sluice tunnels on the other route (websocket on is the default).
    with ws_client(sl.port, "/on/ws") as ws:
        ws.send("on")
        assert ws.recv(timeout=5) == "on"
    recs = wait_records(log, 2)
    off = only_record(recs, path="/plain/ws")
    assert off["status"] == 426 and "tunnel" not in off, off
    on = only_record(recs, path="/on/ws")
    assert on["status"] == 101 and on["end"] == "tunnel_client_closed", on


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upgrade_with_a_body_is_400_and_never_forwarded(stack, framing):
    origin = stack.origin(echo_handler)
    sl, log = start(stack, origin)
    if framing == "content-length":
        head, _ = upgrade_head("/ws", extra=[("Content-Length", "5")])
        body = b"hello"
    else:
        head, _ = upgrade_head("/ws", extra=[("Transfer-Encoding", "chunked")])
        body = b"5\r\nhello\r\n0\r\n\r\n"
    with RawConn(sl.port) as c:
        c.send(head + body)
        r = c.read_response()
        assert r.status == 400, r.head_raw
    [rec] = wait_records(log, 1)
    assert rec["status"] == 400 and rec["end"] == "rejected_bad_request" and "tunnel" not in rec, rec
    assert origin.heads == [], "an upgrade request with a body reached the origin"
    assert origin.connections == [], "sluice connected to the origin for an upgrade request with a body"


def _forbid_upgrades(conn, req):
    if req.header("Upgrade"):
        return respond(conn, 403, b"no tunnels here", [("Content-Type", "text/plain")], reason="Forbidden")
    return echo_handler(conn, req)


def test_non_101_answer_is_an_ordinary_response_and_the_connection_stays_http(stack):
    origin = stack.origin(_forbid_upgrades)
    sl, log = start(stack, origin)
    with RawConn(sl.port) as c:
        head, key = upgrade_head("/ws")
        c.send(head)
        r = c.read_response()
        assert r.status == 403 and r.body == b"no tunnels here" and r.complete, r.head_raw
        c.send(request_bytes("GET", "/next"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"/next", "the connection did not continue as HTTP after the 403"
    forwarded = origin.heads[0]
    assert forwarded.header("Upgrade") == "websocket" and "upgrade" in _tokens(forwarded.header("Connection"))
    assert forwarded.header("Sec-WebSocket-Key") == key
    # The websockets client gets the 403 as it is.
    with pytest.raises(InvalidStatus) as refused:
        ws_client(sl.port, "/ws2")
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"no tunnels here"
    recs = wait_records(log, 3)
    assert sorted(r["status"] for r in recs) == [200, 403, 403], recs
    assert all("tunnel" not in r and r["end"] == "complete" for r in recs), recs


def _switch_anyway(upgrade: str):
    """An origin that answers every request with a 101 naming `upgrade`, then holds the connection."""
    def handler(conn, req):
        conn.send(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".encode())
        conn.sleep(3)
        return False
    return handler


def test_101_to_a_request_that_asked_for_no_upgrade_is_502(stack):
    origin = stack.origin(_switch_anyway("websocket"))
    sl, log = start(stack, origin)
    r = get(sl.port, "/plain", timeout=5)
    assert r.status == 502, r.head_raw
    [rec] = wait_records(log, 1)
    assert rec["status"] == 502 and "tunnel" not in rec, rec
    assert rec["end"] == "upstream_error", rec


def test_101_naming_another_protocol_than_websocket_is_502(stack):
    origin = stack.origin(_switch_anyway("h2c"))
    sl, log = start(stack, origin)
    with RawConn(sl.port, timeout=5) as c:
        head, _ = upgrade_head("/ws")
        c.send(head)
        r = c.read_response()
        assert r.status == 502, r.head_raw
    assert origin.heads[0].header("Upgrade") == "websocket"
    [rec] = wait_records(log, 1)
    assert rec["status"] == 502 and "tunnel" not in rec, rec
    assert rec["end"] == "upstream_error", rec
