"""3. Framing: each kind of message length reaches the other side intact."""

import hashlib
import random
import subprocess
import time

import pytest

from origin import respond
from rawhttp import RawConn, get as get_one, request_bytes
from streams import BARE_SSE_HEAD, LAST_CHUNK, chunk


def _after(conn, req):
    """Second request on the same connection, to prove the first one ended where it should."""
    respond(conn, 200, b"after:" + req.target.encode())


def test_content_length_response(stack):
    def handler(conn, req):
        respond(conn, 200, b"x" * 1000 + b"end", [("Content-Type", "text/plain")])

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/"))
        r = c.read_response()
        assert r.status == 200 and r.framing == "length"
        assert r.header("content-length") == "1003"
        assert r.body == b"x" * 1000 + b"end"
        assert r.header("transfer-encoding") is None


def test_chunked_response_terminates_and_connection_is_reusable(stack):
    def handler(conn, req):
        if req.target == "/after":
            return _after(conn, req)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"one ", b"two ", b"three"):
            conn.send(chunk(piece))
            conn.sleep(0.02)
        conn.send(LAST_CHUNK)

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/"))
        r = c.read_response()
        assert r.status == 200 and r.framing == "chunked" and r.complete
        assert r.body == b"one two three"
        assert r.chunk_sizes == [4, 4, 5, 0]
        assert r.header("content-length") is None
        c.send(request_bytes("GET", "/after"))
        assert c.read_response().body == b"after:/after"


def test_close_delimited_response_http11_client(stack):
    body = bytes(range(256)) * 40

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        conn.send(body[:5000])
        conn.sleep(0.05)
        conn.send(body[5000:])
        conn.close()
        return False

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/"))
        r = c.read_response()
        assert r.status == 200 and r.complete, f"framing {r.framing}"
        assert r.body == body
        if r.framing == "close":
            assert c.eof
        else:  # re-framed as chunked is also correct for an HTTP/1.1 client
            assert r.framing == "chunked"


@pytest.mark.parametrize("case", ["HEAD", "HEAD-chunked", "204", "304"])
def test_bodyless_responses(stack, case):
    def handler(conn, req):
        if req.target == "/after":
            return _after(conn, req)
        if case == "HEAD":
            assert req.method == "HEAD"
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n")
        elif case == "HEAD-chunked":
            assert req.method == "HEAD"
            conn.send(BARE_SSE_HEAD)
        elif case == "204":
            conn.send(b"HTTP/1.1 204 No Content\r\nX-Case: 204\r\n\r\n")
        else:
            conn.send(b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nContent-Length: 99\r\n\r\n")

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    method = "HEAD" if case.startswith("HEAD") else "GET"
    with RawConn(sl.port) as c:
        t0 = time.monotonic()
        c.send(request_bytes(method, "/thing", [("If-None-Match", "\"abc\"")] if case == "304" else []))
        r = c.read_response(method)
        assert r.status == {"HEAD": 200, "HEAD-chunked": 200, "204": 204, "304": 304}[case]
        if case == "HEAD":
            assert r.header("content-length") == "1234"
            assert r.header("transfer-encoding") is None
        if case == "304":
            assert r.header("etag") == "\"abc\""
        if case in ("204", "304"):
            assert r.header("transfer-encoding") is None
        # No body bytes follow: the next response parses cleanly and promptly.
        c.send(request_bytes("GET", "/after"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"after:/after"
        assert time.monotonic() - t0 < 2.0
    assert len(origin.connections) == 1, "upstream connection not reused after a bodyless response"


def test_http10_client_gets_dechunked_close_delimited_body(stack):
    pieces = [b"alpha ", b"beta ", b"gamma ", b"\xce\xb4elta"]

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for p in pieces:
            conn.send(chunk(p))
            conn.sleep(0.02)
        conn.send(LAST_CHUNK)

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: sluice.test\r\n\r\n")
        r = c.read_head()
        body = c.read_until_close(5.0)
    assert r.status == 200
    assert r.header("transfer-encoding") is None
    assert r.header("content-length") is None
    assert body == b"".join(pieces), "HTTP/1.0 client must get the de-chunked body, ended by close"
    assert origin.requests[0].version == "HTTP/1.1"


def test_chunked_upload_forwarded_as_chunked(stack):
    parts = [b"first part|", b"x" * 70000, b"|\xe2\x82\xac|last"]

    def handler(conn, req):
        respond(conn, 200, hashlib.sha256(req.body).hexdigest().encode())

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: sluice.test\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/octet-stream\r\n\r\n")
        for p in parts:
            c.send(chunk(p))
            time.sleep(0.02)  # separate reads at sluice: the upload is streamed, not one write
        c.send(LAST_CHUNK)
        r = c.read_response()
    body = b"".join(parts)
    assert r.status == 200 and r.body == hashlib.sha256(body).hexdigest().encode()
    req = origin.requests[0]
    assert req.chunked, f"origin got {req.headers}"
    assert req.header("transfer-encoding").lower() == "chunked"
    assert req.header("content-length") is None
    assert req.body == body


def test_content_length_upload(stack):
    body = random.Random(5).randbytes(1 << 20)

    def handler(conn, req):
        respond(conn, 200, hashlib.sha256(req.body).hexdigest().encode())

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("PUT", "/upload", [("Content-Type", "application/octet-stream")], body))
        r = c.read_response()
    assert r.status == 200 and r.body == hashlib.sha256(body).hexdigest().encode()
    req = origin.requests[0]
    assert req.method == "PUT"
    assert req.header("content-length") == str(len(body))
    assert not req.chunked
    assert req.body == body


def test_expect_100_continue_with_curl(stack, tmp_path):
    body = random.Random(6).randbytes(2 << 20)
    f = tmp_path / "upload.bin"
    f.write_bytes(body)

    def handler(conn, req):
        respond(conn, 200, hashlib.sha256(req.body).hexdigest().encode())

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    t0 = time.monotonic()
    # --expect100-timeout 10: if nobody answers 100 Continue, curl would stall 10 s.
    p = subprocess.run(["curl", "-sS", "--max-time", "20", "--expect100-timeout", "10",
                        "-H", "Expect: 100-continue", "-H", "Content-Type: application/octet-stream",
                        "--data-binary", f"@{f}", "-w", "\n%{http_code}",
                        f"http://127.0.0.1:{sl.port}/upload"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr.decode()
    out_body, code = p.stdout.rsplit(b"\n", 1)
    assert code == b"200"
    assert out_body == hashlib.sha256(body).hexdigest().encode()
    assert origin.requests[0].body == body
    assert elapsed < 5.0, f"upload waited {elapsed:.1f}s for 100 Continue"


def test_request_and_response_heads_dribbled_one_byte_at_a_time(stack):
    """Both head parsers are restartable: every byte may arrive in its own read."""
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Dribble: yes\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    def handler(conn, req):
        for i in range(len(resp)):
            conn.send(resp[i:i + 1])
            conn.sleep(0.001)

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    raw = (b"POST /dribble HTTP/1.1\r\nHost: sluice.test\r\nX-Long-Name-Field: some value\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    with RawConn(sl.port) as c:
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
            time.sleep(0.001)
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello world" and r.header("x-dribble") == "yes"
    assert r.raw_body == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    req = origin.requests[0]
    assert req.body == b"abcdefg" and req.header("x-long-name-field") == "some value"


def test_chunk_extensions_and_trailers_pass_through(stack):
    wire = b"5;ext=1\r\nhello\r\n6;name=\"quoted\"\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n"

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + wire)

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/ext", [("TE", "trailers")]))
        r = c.read_response()
        assert r.status == 200 and r.complete and r.body == b"hello world"
        # The spec says byte-for-byte: extensions and trailer fields included.
        assert r.raw_body == wire
        c.send(request_bytes("GET", "/again"))
        assert c.read_response().body == b"hello world"


def test_large_response_head_forwarded(stack):
    fields = [(f"X-Big-{i:02d}", "v" * 1000) for i in range(30)]

    def handler(conn, req):
        respond(conn, 200, b"ok", fields)

    sl = stack.proxy(stack.origin(handler))
    r = get_one(sl.port)
    assert r.status == 200 and r.body == b"ok"
    for k, v in fields:
        assert r.header(k) == v
