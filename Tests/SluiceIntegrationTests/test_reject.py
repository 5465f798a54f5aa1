"""8. Malformed requests: sluice answers itself, closes, and forwards nothing."""

import pytest

from rawhttp import RawConn, get, request_bytes

H = b"Host: sluice.test\r\n"

REASONS = {
    400: {"Bad Request"},
    413: {"Content Too Large", "Payload Too Large"},
    414: {"URI Too Long", "Request-URI Too Long"},
    431: {"Request Header Fields Too Large"},
    505: {"HTTP Version Not Supported"},
}


def _many_fields(n: int) -> bytes:
    return b"".join(b"X-F%d: v\r\n" % i for i in range(n))


def _big_head(total: int) -> bytes:
    """Fields of 1 KiB each adding up to about `total` bytes (well under 100 fields)."""
    line = lambda i: b"X-Pad-%02d: " % i + b"p" * 1000 + b"\r\n"  # noqa: E731
    return b"".join(line(i) for i in range(total // len(line(0)) + 1))


# (id, raw request, expected status)
CASES = [
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("cl-differing-lines", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-minus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nhello", 400),
    ("cl-abc", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\nhello", 400),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\nhello", 400),
    ("te-chunked-identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello", 400),
    ("te-xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-Folded: first\r\n  continued\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-Folded: first\r\n\tcontinued\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-Space : value\r\n\r\n", 400),
    ("tab-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-Tab\t: value\r\n\r\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-Cr: a\rb\r\n\r\n", 400),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r" + H + b"\r\n", 400),
    ("bare-lf-line-ends", b"GET / HTTP/1.1\nHost: sluice.test\n\n", 400),
    ("bare-lf-one-field", b"GET / HTTP/1.1\r\n" + H + b"X-Lf: a\nX-Other: b\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-Nul: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-Ctl: a\x01b\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-Del: a\x7fb\r\n\r\n", 400),
    ("nul-in-target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method-at", b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method-paren", b"GET(1) / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method-empty", b" / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("field-name-space", b"GET / HTTP/1.1\r\n" + H + b"X Bad: value\r\n\r\n", 400),
    ("field-name-at", b"GET / HTTP/1.1\r\n" + H + b"X@Bad: value\r\n\r\n", 400),
    ("field-name-empty", b"GET / HTTP/1.1\r\n" + H + b": value\r\n\r\n", 400),
    ("field-no-colon", b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", 400),
    ("chunk-size-0x", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", 400),
    ("chunk-size-zz", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", 400),
    ("missing-host-11", b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n", 400),
    ("no-version", b"GET /\r\n\r\n", 400),
    ("http2-version", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http09-version", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("request-line-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("head-too-large", b"GET / HTTP/1.1\r\n" + H + _big_head(66 * 1024) + b"\r\n", 431),
    ("too-many-fields", b"GET / HTTP/1.1\r\n" + H + _many_fields(101) + b"\r\n", 431),
]


def _check_rejection(sl, origin, raw: bytes, status: int, read_timeout: float = 5.0):
    with RawConn(sl.port) as c:
        c.send(raw)
        r = c.read_response(timeout=read_timeout)
        assert r.status == status, f"expected {status}, got {r.status_line}"
        assert r.version == "HTTP/1.1", r.status_line
        assert r.reason in REASONS[status], f"status line {r.status_line!r}"
        assert (r.header("content-type") or "").split(";")[0].strip().lower() == "application/json"
        err = r.json()["error"]
        assert isinstance(err["type"], str) and err["type"]
        assert isinstance(err["message"], str) and err["message"]
        assert c.closed_within(3.0), "sluice must close the connection after rejecting"
    # Sentinel: a good request on a new connection arrives, and is the only thing that did.
    s = get(sl.port, "/sentinel")
    assert s.status == 200 and s.body == b"/sentinel"
    assert [h.target for h in origin.heads] == ["/sentinel"], \
        f"malformed request was forwarded: {[(h.method, h.target) for h in origin.heads]}"


@pytest.fixture
def proxied(stack):
    origin = stack.origin()
    return stack.proxy(origin), origin


@pytest.mark.parametrize("raw,status", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_and_not_forwarded(proxied, raw, status):
    sl, origin = proxied
    _check_rejection(sl, origin, raw, status)


def test_valid_request_pipelined_after_malformed_is_not_forwarded(proxied):
    sl, origin = proxied
    raw = (b"GET /bad HTTP/1.1\r\n" + H + b"X Bad: 1\r\n\r\n"
           + request_bytes("GET", "/second"))
    with RawConn(sl.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400
        rest = c.read_until_close(3.0)
        assert rest == b"", f"a second response followed the 400: {rest[:100]!r}"
    s = get(sl.port, "/sentinel")
    assert s.status == 200
    assert [h.target for h in origin.heads] == ["/sentinel"]


@pytest.mark.parametrize("raw", [
    pytest.param(b"GET /" + b"a" * 7900 + b" HTTP/1.1\r\n" + H + b"\r\n", id="request-line-7.9k"),
    pytest.param(b"GET / HTTP/1.1\r\n" + H + _big_head(60 * 1024) + b"\r\n", id="head-60k"),
    pytest.param(b"GET / HTTP/1.1\r\n" + H + _many_fields(97) + b"\r\n", id="98-fields"),
])
def test_near_limits_still_forwarded(proxied, raw):
    sl, origin = proxied
    with RawConn(sl.port) as c:
        c.send(raw)
        r = c.read_response()
    assert r.status == 200
    assert len(origin.heads) == 1


@pytest.fixture
def small_body_limit(stack):
    origin = stack.origin()
    return stack.proxy(origin, limits={"max_request_body": "1k"}), origin


def test_body_over_limit_with_content_length_rejected_before_forwarding(small_body_limit):
    sl, origin = small_body_limit
    # Only the head is sent: sluice must answer 413 from Content-Length alone.
    raw = b"POST /big HTTP/1.1\r\n" + H + b"Content-Length: 2000\r\n\r\n"
    _check_rejection(sl, origin, raw, 413, read_timeout=3.0)


def test_body_at_limit_accepted(small_body_limit):
    sl, origin = small_body_limit
    r = get(sl.port, "/ok", method="POST", body=b"k" * 1024)
    assert r.status == 200
    assert origin.requests[0].body == b"k" * 1024


def test_chunked_body_over_limit(small_body_limit):
    sl, origin = small_body_limit
    with RawConn(sl.port) as c:
        c.send(b"POST /big HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(4):
                c.send(b"200\r\n" + b"c" * 512 + b"\r\n")
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # sluice may close as soon as the limit is crossed
        r = c.read_response(timeout=5)
        assert r.status == 413
        assert r.json()["error"]["type"]
        assert c.closed_within(3.0)
    # Whatever the origin may have seen of it, it never got a complete 2 KiB request.
    assert not origin.requests, [len(q.body) for q in origin.requests]


def test_malformed_request_after_valid_one_on_same_connection(proxied):
    sl, origin = proxied
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/good"))
        assert c.read_response().body == b"/good"
        c.send(b"GET /bad HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n")
        r = c.read_response()
        assert r.status == 400 and r.json()["error"]["type"]
        assert c.closed_within(3.0)
    assert [h.target for h in origin.heads] == ["/good"]
