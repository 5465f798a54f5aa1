"""5. Keep-alive: persistent client connections, pipelining, upstream connection reuse."""

import time

from origin import respond
from rawhttp import RawConn, request_bytes

N = 100


def test_100_sequential_requests_reuse_upstream(stack):
    def handler(conn, req):
        i = int(req.target.rsplit("/", 1)[1])
        body = f"response {i} ".encode() * (i % 7 + 1)
        # Alternate framings: the pool may reuse a connection only after a clean end of either.
        respond(conn, 200, body, [("Content-Type", "text/plain")], chunked=bool(i % 2))

    origin = stack.origin(handler)
    sl = stack.proxy(origin, workers=2)
    with RawConn(sl.port) as c:
        for i in range(N):
            c.send(request_bytes("GET", f"/req/{i}"))
            r = c.read_response()
            assert r.status == 200 and r.complete, f"request {i}"
            assert r.body == f"response {i} ".encode() * (i % 7 + 1), f"request {i}"
            assert not c.eof, f"sluice closed the client connection after request {i}"
    assert len(origin.requests) == N
    assert [q.target for q in origin.requests] == [f"/req/{i}" for i in range(N)]
    # Ideally exactly one upstream connection; a couple at most.
    assert len(origin.connections) <= 2, f"{len(origin.connections)} upstream connections for {N} requests"


def test_pipelined_requests_answered_in_order(stack):
    def handler(conn, req):
        if req.target == "/a":
            conn.sleep(0.2)  # the first answer is the slowest; order must still hold
        respond(conn, 200, b"body of " + req.target.encode(), chunked=req.target == "/b")

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(b"".join(request_bytes("GET", t) for t in ("/a", "/b", "/c")))
        bodies = [c.read_response().body for _ in range(3)]
        assert bodies == [b"body of /a", b"body of /b", b"body of /c"]
        # The connection is still usable afterwards.
        c.send(request_bytes("GET", "/d"))
        assert c.read_response().body == b"body of /d"
    assert sorted(q.target for q in origin.requests) == ["/a", "/b", "/c", "/d"]


def test_pipelined_post_bodies_stay_with_their_requests(stack):
    def handler(conn, req):
        respond(conn, 200, req.target.encode() + b"=" + req.body)

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("POST", "/one", [], b"first body")
               + b"POST /two HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"6\r\nsecond\r\n5\r\n body\r\n0\r\n\r\n"
               + request_bytes("GET", "/three"))
        got = [c.read_response().body for _ in range(3)]
    assert got == [b"/one=first body", b"/two=second body", b"/three="]


def test_upstream_not_reused_after_unclean_end(stack):
    """An upstream that ended a response by closing is not put back in the pool."""
    def handler(conn, req):
        if req.target == "/close":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
            conn.close()
            return False
        respond(conn, 200, b"fine")

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/close"))
        r = c.read_response()
        assert r.body == b"until close"
    t0 = time.monotonic()
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/next"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"fine"
    assert time.monotonic() - t0 < 2.0
    assert len(origin.connections) == 2
