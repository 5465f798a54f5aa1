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


def test_connection_close_from_client_is_honoured(stack):
    origin = stack.origin()
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/first"))
        assert c.read_response().body == b"/first"
        c.send(request_bytes("GET", "/last", [("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200 and r.body == b"/last"
        assert c.closed_within(2.0), "sluice kept the connection open after Connection: close"
    with RawConn(sl.port) as c:  # HTTP/1.0 without keep-alive: one request per connection
        c.send(request_bytes("GET", "/old", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"/old"
        assert c.closed_within(2.0), "sluice kept an HTTP/1.0 connection open"


def test_upstream_connection_close_is_not_pooled(stack):
    """A response with `Connection: close` ends that upstream connection; the next request opens a new one."""
    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\n" + req.target[-4:].encode())
        conn.close()
        return False

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        for i in range(5):
            c.send(request_bytes("GET", f"/r{i:03d}"))
            r = c.read_response()
            assert r.status == 200 and r.body == f"r{i:03d}".encode(), f"request {i}: {r.status_line}"
    assert len(origin.connections) == 5


def test_pooled_connection_closed_by_origin_is_not_used(stack):
    """The origin closes idle keep-alive connections after 100 ms; sluice must notice, not answer 502."""
    def handler(conn, req):
        respond(conn, 200, req.target.encode())
        if not conn.wait_peer_closed(0.1):
            conn.close()
        return False

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/idle{i}"))
            r = c.read_response()
            assert r.status == 200 and r.body == f"/idle{i}".encode(), f"request {i}: {r.status_line} {r.body[:100]!r}"
            # Wait until the origin has closed its side of the now idle pooled connection.
            origin.wait_for(lambda: all(k.closed for k in origin.connections), 3, "the origin's idle close")
    assert len(origin.requests) == 3


def test_concurrent_clients(stack):
    import hashlib
    import threading

    def handler(conn, req):
        n = int(req.target.split("/")[-1])
        body = hashlib.sha256(req.target.encode()).hexdigest().encode() * (n % 50 + 1)
        respond(conn, 200, body, chunked=bool(n % 2))

    origin = stack.origin(handler)
    sl = stack.proxy(origin, workers=2)
    errors: list[str] = []

    def client(k):
        try:
            with RawConn(sl.port, timeout=10) as c:
                for j in range(5):
                    target = f"/c{k}/{k * 5 + j}"
                    c.send(request_bytes("GET", target))
                    r = c.read_response()
                    n = k * 5 + j
                    if r.status != 200 or r.body != hashlib.sha256(target.encode()).hexdigest().encode() * (n % 50 + 1):
                        errors.append(f"{target}: {r.status_line} {len(r.body)} bytes")
        except Exception as e:  # collected and asserted below
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "clients hung"
    assert not errors, errors[:5]
    assert len(origin.requests) == 100
