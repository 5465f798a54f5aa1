"""Issue 12's request-side desync defects, each reproduced over raw sockets against the real binary with an
origin that records the exact bytes it parses (the upstream-side items are in test_desync_review_upstream.py).

- HIGH 1: an upstream that answers early (401 after the head, keep-alive) and then drains a large body slowly.
  The upstream connection must not be pooled while sluice still owes it body bytes, and the unsent rest of the
  body must never be parsed as a request (it is full of `GET /smuggled` lines here).
- HIGH 2: a `Connection` token naming Content-Length, Transfer-Encoding or Host, in a request or a response, is
  ignored for those fields: the message is forwarded with its framing (and Host).
- Item 8: an absolute-form target's authority is validated like Host; userinfo is 400 and never logged.
- Item 10: requests pipelined behind a 429 are answered in order (or the 429 closes the connection); a 429'd
  body is never parsed as a request.
"""

from __future__ import annotations

import select
import threading
import time

import pytest

from origin import OriginStopping, PeerClosed, respond
from rawhttp import ChunkedDecoder, RawConn, get, request_bytes
from sluice_proc import read_jsonl, wait_records
from streams import chunked

SMUGGLED_LINE = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
H = b"Host: sluice.test\r\n"


def logged_proxy(stack, origin, **kw):
    """sluice in front of `origin` with a completion log file; returns (sluice, log path)."""
    log = stack.tmp_path / f"completions{stack._n}.jsonl"
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", kw.pop("route", {}))],
                            log={"file": str(log), "stdout": "off"}, **kw)
    return sl, log


def _echo(conn, req):
    """Each answer names its request, so an answer cannot be taken for another's."""
    respond(conn, 200, f"{req.method} {req.target}".encode("latin-1"), [("Content-Type", "text/plain")])


def _fail_with_origin_errors(origin):
    """Origin parse errors are reported by the failing test itself, not a second time by the fixture."""
    errors = list(origin.errors)
    origin.errors.clear()
    return f" (the origin could not parse what sluice forwarded: {errors})" if errors else ""


# -- HIGH 1: the body an early answer left unsent ----------------------------------------------------------

def smuggling_body(size: int) -> bytes:
    """`size` bytes (rounded up to whole lines) of request-looking text."""
    return SMUGGLED_LINE * -(-size // len(SMUGGLED_LINE))


class EarlyAnswerOrigin:
    """Answers a POST with 401 (Content-Length, keep-alive) after reading only its head (`answer_after` s later,
    reading nothing meanwhile), waits `pause` s, then drains the body the way its framing says, slowly (8 KiB
    reads, 2 ms apart, from a 4 KiB receive buffer), and keeps the connection for the next request.
    `drained[target]` holds every body byte read for that POST, so a test can prove no foreign bytes arrived
    inside a body; `body_done[target]` is when its body was complete. A GET is echoed with `Connection: close`,
    so that each POST of a test starts on a fresh upstream connection (fresh socket buffers)."""

    def __init__(self, pause: float = 0.0, answer_after: float = 0.0):
        self.pause, self.answer_after = pause, answer_after
        self.drained: dict[str, bytearray] = {}
        self.body_done: dict[str, float] = {}

    def __call__(self, conn, req):
        if req.method != "POST":
            respond(conn, 200, f"{req.method} {req.target}".encode(), [("Connection", "close")])
            return False
        if self.answer_after:
            conn.sleep(self.answer_after)
        respond(conn, 401, b'{"error":"unauthorized"}', [("Content-Type", "application/json")], reason="Unauthorized")
        if self.pause:
            conn.sleep(self.pause)
        sink = self.drained.setdefault(req.target, bytearray())
        if req.header("transfer-encoding"):
            dec, rest = ChunkedDecoder(), b""
            while not dec.done:
                rest = dec.feed(self._take(conn, sink, 8192))
            conn._buf[:0] = rest  # bytes past the body belong to the next request
            del sink[len(sink) - len(rest):]
        else:
            left = int(req.header("content-length") or 0)
            while left:
                left -= len(self._take(conn, sink, min(left, 8192)))
        self.body_done[req.target] = time.monotonic()

    @staticmethod
    def _take(conn, sink: bytearray, n: int) -> bytes:
        """Up to `n` bytes: what the origin already buffered, else one small recv after a short pause."""
        if conn._buf:
            data = bytes(conn._buf[:n])
            del conn._buf[:n]
        else:
            conn.sleep(0.002)
            deadline = time.monotonic() + 10
            while True:
                if conn.origin.stopping.is_set():
                    raise OriginStopping()
                if time.monotonic() > deadline:
                    raise TimeoutError("origin: body stopped arriving")
                if not select.select([conn.sock], [], [], 0.1)[0]:
                    continue
                try:
                    data = conn.sock.recv(n)
                except BlockingIOError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    conn._mark_closed("reset")
                    raise PeerClosed()
                if not data:
                    conn._mark_closed("eof")
                    raise PeerClosed()
                break
        sink += data
        return data


class Sender(threading.Thread):
    """Sends bytes on a client connection in the background; sluice may close it early (allowed)."""

    def __init__(self, conn: RawConn, data: bytes):
        super().__init__(daemon=True)
        self.conn, self.data, self.error = conn, data, None
        self.start()

    def run(self):
        try:
            self.conn.sock.sendall(self.data)
        except OSError as e:
            self.error = e


def _wire_body(size: int, framing: str, target: str):
    """(body bytes as on the wire, the whole request) for a POST of `size` bytes of smuggling text."""
    body = smuggling_body(size)
    head = f"POST {target} HTTP/1.1\r\n".encode() + H
    if framing == "chunked":
        wire = chunked(body)
        return wire, head + b"Transfer-Encoding: chunked\r\n\r\n" + wire
    return body, head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _heads(origin):
    return [(h.conn_id, h.method, h.target) for h in origin.heads]


def _answer(conn: RawConn, what: str, timeout: float):
    try:
        return conn.read_response(timeout=timeout)
    except (TimeoutError, ConnectionError) as e:
        raise AssertionError(f"{what} got no answer ({e}); origin parsed {_heads(conn.origin)}") from None


def _check_nothing_smuggled(handler, origin, wire: bytes, post: str):
    """No body bytes reached the origin as a request, and the POST's upstream connection got a prefix of its own
    body (a foreign byte inside it is the next exchange's request, written to a connection that still owed body)."""
    assert "/smuggled" not in [h.target for h in origin.heads], f"body bytes were forwarded as requests: {_heads(origin)}"
    got = bytes(handler.drained.get(post, b""))
    if not wire.startswith(got):
        at = next(i for i in range(len(got)) if i >= len(wire) or got[i] != wire[i])
        raise AssertionError(f"the POST's upstream connection received foreign bytes inside its body, at byte {at} "
                             f"of {len(got)}: {got[at:at + 80]!r}; origin parsed {_heads(origin)}")


def _assert_own_request(handler, origin, target: str, post: str):
    """`target` reached the origin as a request head of its own: on another connection than the POST's, or
    on the POST's only after its whole body had been drained there."""
    mine = [h for h in origin.heads if h.target == target]
    assert len(mine) == 1, f"origin parsed {target} {len(mine)} times: {_heads(origin)}"
    a_conn = next(h.conn_id for h in origin.heads if h.target == post)
    if mine[0].conn_id == a_conn:
        assert post in handler.body_done and mine[0].head_at >= handler.body_done[post], \
            f"{target} reached the POST's upstream connection before the POST's body was complete"


def _early_answer_attempt(sl, origin, handler, i: int, size: int, framing: str, pipelined: bool) -> str:
    """One POST /upload-i answered early, then (pipelined) GET /next-i on the same client connection or (not)
    GET /second-i from a second client on a new connection. Asserts that the next request is answered as its
    own, that no foreign bytes arrived inside the POST's body upstream and that no body bytes were forwarded as
    requests. Returns where the size fell: "fit" (the upstream got the whole body), "big" (sluice had not read
    the whole body when the response ended: its 401 closes the connection) or "window" (read whole, not sent
    whole: the case where the connection used to be pooled while sluice still owed it body bytes)."""
    post = f"/upload-{i}"
    wire, raw = _wire_body(size, framing, post)
    nxt = f"/next-{i}" if pipelined else f"/second-{i}"
    a = RawConn(sl.port, timeout=10)
    a.origin = origin
    sender = Sender(a, raw + (request_bytes("GET", nxt) if pipelined else b""))
    try:
        r1 = a.read_response("POST", timeout=10)
        assert r1.status == 401 and r1.body == b'{"error":"unauthorized"}', r1.status_line
        closes = "close" in (r1.header("connection") or "").lower()
        a_conn = next(h.conn_id for h in origin.heads if h.target == post)
        if not pipelined:
            with RawConn(sl.port, timeout=5) as b:
                b.origin = origin
                b.send(request_bytes("GET", nxt))
                r2 = _answer(b, f"the second client's GET {nxt} (on a new connection)", 5)
        elif closes:
            rest = a.read_until_close(10)
            assert not rest.startswith(b"HTTP/"), f"a response after Connection: close: {rest[:200]!r}"
            assert nxt not in [h.target for h in origin.heads], "forwarded a request sluice said it would not read"
        else:
            r2 = _answer(a, f"the pipelined GET {nxt}", 10)
        if not (pipelined and closes):
            assert r2.status == 200 and r2.body == f"GET {nxt}".encode(), \
                f"expected the answer to GET {nxt}, got {r2.status_line} {r2.body[:200]!r} (a 400 here: the rest of " \
                f"the POST's body was parsed as a request)"
            _assert_own_request(handler, origin, nxt, post)
    finally:
        a.close()
        sender.join(5)
    # The POST's upstream connection ends its drain (whole body, or sluice closed it) before the verdict.
    origin.wait_for(lambda: post in handler.body_done or origin.connections[a_conn].closed, 10,
                    "the POST's upstream connection to be drained or closed")
    _check_nothing_smuggled(handler, origin, wire, post)
    if bytes(handler.drained.get(post, b"")) == wire:
        return "fit"
    return "big" if closes else "window"


def _calibrate(sl, origin, handler) -> int:
    """How many request bytes the loopback buffers between sluice and this origin take while the origin reads
    nothing: a 5 MB POST answered after 0.3 s, counted by what the origin drains before sluice closes."""
    wire, raw = _wire_body(5_000_000, "length", "/calibrate")
    a = RawConn(sl.port, timeout=10)
    sender = Sender(a, raw)
    try:
        assert a.read_response("POST", timeout=10).status == 401
        a_conn = next(h.conn_id for h in origin.heads if h.target == "/calibrate")
        origin.wait_for(lambda: "/calibrate" in handler.body_done or origin.connections[a_conn].closed, 15,
                        "the calibration POST to be drained or closed")
    finally:
        a.close()
        sender.join(5)
    _check_nothing_smuggled(handler, origin, wire, "/calibrate")
    return len(handler.drained.get("/calibrate", b""))


def _early_answer_run(stack, framing: str, pipelined: bool):
    """The defect needs a body that sluice reads whole while part of it is still in its own buffer, unsent:
    larger than what the kernel's loopback buffers take (about 2.8 MB here, autotuned) by less than sluice's
    64 KiB buffer. A calibration exchange measures the first, then two attempts land 16 and 40 KB past it,
    each on a fresh upstream connection (the origin closes after every GET it answers)."""
    handler = EarlyAnswerOrigin(answer_after=0.3)
    origin = stack.origin(handler, read_body=False, rcvbuf=4096)
    sl, log = logged_proxy(stack, origin)
    capacity = _calibrate(sl, origin, handler)
    seen = []
    for i, extra in enumerate((16384, 40960)):
        size = capacity + extra
        if framing == "chunked":
            size = size * 16384 // (16384 + 8)  # the wire adds "4000\r\n" and "\r\n" per 16 KiB chunk
        seen.append((size, _early_answer_attempt(sl, origin, handler, i, size, framing, pipelined)))
    n = len(seen)
    recs = wait_records(log, 1 + (n if pipelined else 2 * n))
    paths = sorted((r["method"], r["path"]) for r in recs)
    want = sorted([("POST", "/calibrate")] + [("POST", f"/upload-{i}") for i in range(n)]
                  + [("GET", f"/{'next' if pipelined else 'second'}-{i}") for i in range(n)])
    extra = [p for p in paths if p not in want]
    assert not extra, f"records for requests nobody sent: {extra} (capacity {capacity}, attempts {seen})"
    if pipelined:  # a /next-i after a Connection: close is neither forwarded nor logged
        assert [p for p in paths if p[0] == "POST"] == [p for p in want if p[0] == "POST"], paths
    else:
        assert paths == want, f"records {paths} (capacity {capacity}, attempts {seen})"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_early_answer_then_next_client_on_new_connection(stack, framing):
    """HIGH 1: the upstream answers 401 after the head and then drains the body slowly. The upstream connection
    must not go back to the pool while body bytes are still owed to it (the next client's request reached the
    origin as the remainder of that body and got no answer), and the body's unsent rest must never be parsed
    as requests (`GET /smuggled` forwarded as its own exchange, with its own log record)."""
    _early_answer_run(stack, framing, pipelined=False)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_early_answer_then_pipelined_request_on_same_connection(stack, framing):
    """HIGH 1 on one client connection: the next request follows the body at once. It is answered as its own
    request after the 401 (the rest of the body drained and discarded), or the 401 says `Connection: close` and
    nothing more is forwarded; the body is never parsed as requests, and nothing is merged."""
    _early_answer_run(stack, framing, pipelined=True)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_early_answer_small_body_origin_pauses(stack, framing):
    """HIGH 1, small body (200 KB, taken whole by sluice and the socket buffers): the origin answers 401 after
    the head and reads nothing more for a second. The next client's request on a new connection still reaches
    the origin as its own request and is answered; no body bytes become requests."""
    handler = EarlyAnswerOrigin(pause=1.0)
    origin = stack.origin(handler, read_body=False, rcvbuf=4096)
    sl, log = logged_proxy(stack, origin)
    _early_answer_attempt(sl, origin, handler, 0, 200_000, framing, pipelined=False)
    recs = wait_records(log, 2)
    assert sorted((r["method"], r["path"]) for r in recs) == [("GET", "/second-0"), ("POST", "/upload-0")], \
        [(r["method"], r["path"], r["status"], r["end"]) for r in recs]


# -- HIGH 2: Connection naming framing fields or Host ------------------------------------------------------

REQUEST_CONNECTION_CASES = [
    ("te", b"POST /u HTTP/1.1\r\n" + H + b"Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", "transfer-encoding", "chunked"),
    ("te-among-others", b"POST /u HTTP/1.1\r\n" + H + b"Connection: keep-alive, Transfer-Encoding\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "transfer-encoding", "chunked"),
    ("cl", b"POST /u HTTP/1.1\r\n" + H + b"Connection: content-length\r\nContent-Length: 5\r\n\r\nhello",
     "content-length", "5"),
    ("host", b"GET /u HTTP/1.1\r\n" + H + b"Connection: host\r\n\r\n", "host", "sluice.test"),
]


@pytest.mark.parametrize("raw,field,value", [c[1:] for c in REQUEST_CONNECTION_CASES],
                         ids=[c[0] for c in REQUEST_CONNECTION_CASES])
def test_request_connection_token_cannot_remove_framing_or_host(stack, raw, field, value):
    """HIGH 2, request side: `Connection: transfer-encoding` used to drop Transfer-Encoding while the chunked
    bytes were still forwarded (the backend sees a request without framing and the chunks as the next request);
    `Connection: host` dropped Host. The token is ignored for these fields: forwarded with framing and body."""
    origin = stack.origin(lambda conn, req: respond(conn, 200, b"got " + req.body))
    sl = stack.proxy(origin)
    try:
        with RawConn(sl.port, timeout=5) as c:
            c.send(raw)
            r = c.read_response(timeout=5)
            assert r.status == 200, f"{r.status_line} {r.body[:200]!r}"
            c.send(request_bytes("GET", "/in-sync"))
            assert c.read_response(timeout=5).body == b"got ", "connection out of sync"
        first = origin.requests[0]
        assert len(first.values(field)) == 1, f"forwarded without {field}: {first.headers}"
        assert first.header(field).lower() == value, first.headers
        want = b"hello" if raw.startswith(b"POST") else b""
        assert first.body == want and r.body == b"got " + want, (first.body, r.body)
        assert [(q.method, q.target) for q in origin.requests] == [(raw.split(b" ")[0].decode(), "/u"), ("GET", "/in-sync")]
    except AssertionError as e:
        raise AssertionError(str(e) + _fail_with_origin_errors(origin)) from None
    except (TimeoutError, ConnectionError) as e:
        raise AssertionError(f"{e}; origin parsed {[(h.method, h.target, h.headers) for h in origin.heads]}"
                             + _fail_with_origin_errors(origin)) from None


RESPONSE_CONNECTION_CASES = [
    ("cl", b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello", "content-length", "5"),
    ("cl-among-others", b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 5\r\n\r\nhello",
     "content-length", "5"),
    ("te", b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", "transfer-encoding", "chunked"),
]


@pytest.mark.parametrize("raw,field,value", [c[1:] for c in RESPONSE_CONNECTION_CASES],
                         ids=[c[0] for c in RESPONSE_CONNECTION_CASES])
def test_response_connection_token_cannot_remove_framing(stack, raw, field, value):
    """HIGH 2, response side: an upstream's `Connection: content-length` used to reach the client without its
    Content-Length on a kept-alive connection, so the client read the next response as body."""
    def handler(conn, req):
        if req.target == "/first":
            conn.send(raw)
        else:
            _echo(conn, req)

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port, timeout=5) as c:
        c.send(request_bytes("GET", "/first"))
        head = c.read_head()
        assert head.status == 200 and len(head.values(field)) == 1 and head.header(field).lower() == value, \
            f"response forwarded without its framing field {field}: {head.head_raw!r}"
        c.buf[:0] = head.head_raw
        r1 = c.read_response(timeout=5)
        assert r1.body == b"hello" and r1.complete
        assert not c.eof, "sluice closed a connection the response did not ask to close"
        c.send(request_bytes("GET", "/second"))
        r2 = c.read_response(timeout=5)
        assert r2.status == 200 and r2.body == b"GET /second", f"{r2.status_line} {r2.body[:200]!r}"


# -- item 8: absolute-form authority ---------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    b"http://user:pass@127.0.0.1:{port}/x",
    b"http://user:pass@sluice.test/x",
    b"http://pass@sluice.test/x",
    b"http://bad host/x",
    b"http://bad^host/x",
    b"http://bad{host/x",
    b"http://host:99999/x",
    b"http://host:8o/x",
    b"http://[::1/x",
    b"http://::1]/x",
    b"http:///x",
    b"http://:80/x",
], ids=lambda t: t.decode().replace("{port}", "PORT"))
def test_absolute_form_authority_validated_like_host(stack, target):
    """Item 8: an absolute-form target's authority skipped the validation a Host field gets, and its userinfo
    (`user:pass@`) was forwarded and written to the completion log. 400, nothing forwarded, no secret logged."""
    origin = stack.origin(_echo)
    sl, log = logged_proxy(stack, origin)
    target = target.replace(b"{port}", str(origin.port).encode())
    with RawConn(sl.port, timeout=5) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 400, f"{target!r}: {r.status_line} {r.body[:200]!r}"
        assert c.closed_within(3)
    assert get(sl.port, "/sentinel").body == b"GET /sentinel"
    assert [h.target for h in origin.heads] == ["/sentinel"], [(h.target, h.headers) for h in origin.heads]
    recs = wait_records(log, 2)
    assert sorted(r["status"] for r in recs) == [200, 400], recs
    text = log.read_bytes() + "\n".join(sl.stderr_lines).encode() + r.body
    for secret in (b"user:pass", b"pass@"):
        assert secret not in text, f"{secret!r} logged or echoed: {[x for x in read_jsonl(log)]}"


def test_absolute_form_with_valid_authority_still_forwarded(stack):
    """Item 8's guard: a valid absolute-form target is still forwarded, as origin-form with its authority as Host."""
    origin = stack.origin(_echo)
    sl = stack.proxy(origin)
    with RawConn(sl.port, timeout=5) as c:
        c.send(b"GET http://example.test/x HTTP/1.1\r\n" + H + b"\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 200 and r.body == b"GET /x", f"{r.status_line} {r.body[:200]!r}"
    assert origin.requests[0].values("host") == ["example.test"]


# -- item 10: requests pipelined behind a 429 ----------------------------------------------------------------

def _limited_proxy(stack, origin):
    return logged_proxy(stack, origin, route={"limit": "one"},
                        rate_limits={"one": {"key": "global", "requests": "1/s burst 1"}})


def _closes(r) -> bool:
    return "close" in (r.header("connection") or "").lower()


def test_pipelined_requests_behind_a_429_are_answered(stack):
    """Item 10: three GETs pipelined in one write under `1/s burst 1`: 200, 429, 429 in order, each complete.
    The requests behind the first 429 used to be dropped with the connection left open, so the client waited
    forever. Within 2 s either all three answers arrived or the connection closed after a `Connection: close`."""
    origin = stack.origin(_echo)
    sl, log = _limited_proxy(stack, origin)
    with RawConn(sl.port, timeout=5) as c:
        c.send(b"".join(request_bytes("GET", f"/p{i}") for i in (1, 2, 3)))
        deadline = time.monotonic() + 2
        got = []
        while len(got) < 3:
            try:
                r = c.read_response(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"connection left open with {3 - len(got)} pipelined requests unanswered; "
                                     f"got {[x.status for x in got]}") from None
            except ConnectionError as e:
                raise AssertionError(f"closed without Connection: close after {[x.status for x in got]}: {e}") from None
            assert r.complete, f"response {len(got)} truncated: {r.status_line}"
            got.append(r)
            if _closes(r):
                assert c.closed_within(2), "Connection: close but the connection stayed open"
                break
        assert [x.status for x in got] == [200, 429, 429][:len(got)], [x.status_line for x in got]
        assert got[0].body == b"GET /p1"
        assert all(x.json()["error"]["type"] == "rate_limit_exceeded" for x in got[1:])
        if not c.eof:
            c.send(request_bytes("GET", "/after"))
            r = c.read_response(timeout=5)
            assert r.status in (200, 429) and r.complete, r.status_line
    assert [h.target for h in origin.heads] in (["/p1"], ["/p1", "/after"])


def test_429_body_holding_a_request_is_not_parsed(stack):
    """Item 10: a 429'd POST whose Content-Length body looks like a request: the 429 says `Connection: close`
    and the connection closes; `/smuggled` reaches neither the origin nor the completion log."""
    origin = stack.origin(_echo)
    sl, log = _limited_proxy(stack, origin)
    assert get(sl.port, "/first").status == 200  # takes the only token
    with RawConn(sl.port, timeout=5) as c:
        c.send(request_bytes("POST", "/upload", [], SMUGGLED_LINE * 3))
        r = c.read_response(timeout=5)
        assert r.status == 429, r.status_line
        assert _closes(r), f"429 without Connection: close: {r.head_raw!r}"
        rest = c.read_until_close(3)
        assert rest == b"", f"bytes after the 429: {rest[:200]!r}"
    recs = wait_records(log, 2)
    assert sorted((r["path"], r["status"]) for r in recs) == [("/first", 200), ("/upload", 429)], \
        [(r["method"], r["path"], r["status"], r["end"]) for r in recs]
    assert [h.target for h in origin.heads] == ["/first"]
