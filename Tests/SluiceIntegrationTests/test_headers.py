"""4. Header handling: hop-by-hop removal, X-Forwarded-*, X-Request-Id, X-Accel-Buffering."""

import pytest

from origin import respond
from rawhttp import RawConn, get, request_bytes

HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]


def test_hop_by_hop_removed_both_ways(stack):
    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\n"
                  b"Content-Type: text/plain\r\n"
                  b"Connection: X-Resp-Hop, keep-alive\r\n"
                  b"X-Resp-Hop: secret\r\n"
                  b"Keep-Alive: timeout=5, max=100\r\n"
                  b"Proxy-Connection: keep-alive\r\n"
                  b"Trailer: X-Checksum\r\n"
                  b"Upgrade: h2c\r\n"
                  b"X-Resp-End: kept\r\n"
                  b"Content-Length: 2\r\n\r\nok")

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    r = get(sl.port, "/hop", [
        ("Connection", "keep-alive, X-Client-Hop"),
        ("X-Client-Hop", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket"),
        ("X-Client-End", "kept"),
    ])
    assert r.status == 200 and r.body == b"ok"
    req = origin.requests[0]
    sent = {k.lower() for k, _ in req.headers}
    for name in HOP_BY_HOP + ["x-client-hop"]:
        if name == "connection":
            # sluice may send its own Connection to the origin, but not the client's tokens.
            assert "x-client-hop" not in (req.header("connection") or "").lower()
            continue
        assert name not in sent, f"origin received hop-by-hop field {name}: {req.headers}"
    assert req.header("x-client-end") == "kept"

    got = {k.lower() for k, _ in r.headers}
    for name in HOP_BY_HOP + ["x-resp-hop"]:
        if name == "connection":
            assert "x-resp-hop" not in (r.header("connection") or "").lower()
            continue
        assert name not in got, f"client received hop-by-hop field {name}: {r.headers}"
    assert r.header("x-resp-end") == "kept"


def test_request_to_origin_is_http11_with_forwarded_fields(stack):
    origin = stack.origin()
    sl = stack.proxy(origin)
    for version in ("HTTP/1.1", "HTTP/1.0"):
        with RawConn(sl.port) as c:
            c.send(request_bytes("GET", f"/v?{version}", [], version=version, host="api.example.test:8443"))
            r = c.read_response()
            assert r.status == 200
    assert len(origin.requests) == 2
    for req in origin.requests:
        assert req.version == "HTTP/1.1"
        assert req.values("host") == ["api.example.test:8443"], "Host must pass through unchanged"
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert req.header("x-forwarded-proto") == "http"
        assert req.header("x-forwarded-host") == "api.example.test:8443"


def test_x_forwarded_for_appends_client_ip(stack):
    origin = stack.origin()
    sl = stack.proxy(origin)
    r = get(sl.port, "/xff", [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")])
    assert r.status == 200
    xff = origin.requests[0].header("x-forwarded-for")
    assert [p.strip() for p in xff.split(",")] == ["203.0.113.7", "198.51.100.2", "127.0.0.1"], xff


def test_request_id_kept_and_returned(stack):
    origin = stack.origin()
    sl = stack.proxy(origin)
    r = get(sl.port, "/rid", [("X-Request-Id", "client-chosen-id-123")])
    assert r.status == 200
    assert origin.requests[0].values("x-request-id") == ["client-chosen-id-123"]
    assert r.values("x-request-id") == ["client-chosen-id-123"]


def test_request_id_minted_unique_and_returned(stack):
    origin = stack.origin()
    sl = stack.proxy(origin)
    ids = []
    with RawConn(sl.port) as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/mint{i}"))
            r = c.read_response()
            assert r.status == 200
            assert len(r.values("x-request-id")) == 1, r.headers
            rid = r.header("x-request-id")
            assert rid.strip(), "minted X-Request-Id is empty"
            assert origin.requests[i].values("x-request-id") == [rid], "origin and client saw different ids"
            ids.append(rid)
    assert len(set(ids)) == 3, f"minted ids repeat: {ids}"


@pytest.mark.parametrize("ctype,expected", [
    ("text/event-stream", "no"),
    ("text/event-stream; charset=utf-8", "no"),
    ("Text/Event-Stream", "no"),
    ("TEXT/EVENT-STREAM;charset=UTF-8", "no"),
    ("application/json", None),
    ("text/plain", None),
    ("text/event-streamx", None),
])
def test_x_accel_buffering_only_for_event_stream(stack, ctype, expected):
    def handler(conn, req):
        respond(conn, 200, b"data: x\n\n", [("Content-Type", ctype)])

    sl = stack.proxy(stack.origin(handler))
    r = get(sl.port, "/")
    assert r.status == 200
    assert r.header("content-type") == ctype
    assert r.header("x-accel-buffering") == expected
