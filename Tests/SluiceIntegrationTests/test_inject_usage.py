"""Issue 12 item 3, second bullet: `inject_usage on`, the one case where sluice changes bytes.

On a route with `inject_usage on`, a streaming OpenAI-compatible chat/completions request whose body does not ask
for usage gets `"stream_options":{"include_usage":true}` (Content-Length adjusted, every other byte as the client
sent it), and the usage-only chunk the backend then appends (`"choices":[]` and a `usage` object) is removed from
the response, so the client receives the backend's stream minus that one event while the tap still reads the usage
and the token budget is charged what the backend reported. A client that asked itself, a request that does not
stream, a route without the key, a non-completions path, and a body over the hold bound, chunked or sent with
`Expect: 100-continue` go through untouched.

The origin here is a scripted OpenAI/vLLM stand-in (`Backend`): it sends the usage chunk exactly when the body it
received asks for it (or always/never, per test), in chunk frames cut at varied places, and keeps every payload it
sent so a test compares the client's bytes with the origin's. Raw sockets (rawhttp.py) see the exact framing; the
official `openai` SDK checks what a real client gets.
"""

from __future__ import annotations

import json
import time

import pytest

from completion_log_common import check_shape
from rawhttp import RawConn, request_bytes
from sluice_proc import wait_records
from streams import LAST_CHUNK, OMIT, SSE_HEAD, chunk, openai_chunk, sse_head

#: The bound on the request bodies sluice holds to edit (the lead's documented value: bodies over it are
#: forwarded unchanged).
HOLD_BOUND = 64 * 1024

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
#: The usage-only chunk, byte for byte as OpenAI/vLLM append it for `include_usage`.
USAGE_EVENT = (b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
               b'"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n')
DONE_EVENT = b"data: [DONE]\n\n"
#: The three content deltas (the only content-bearing events: the estimate would count 3 completion tokens).
CONTENT = ["Hel", "lo", " world"]
INJECTED = b',"stream_options":{"include_usage":true}'

#: The client's messages. Default `json.dumps` separators (", ", ": ") differ from the inserted text's, so a
#: byte comparison shows sluice touched nothing else. Its text makes the prompt estimate well over 7 tokens.
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x" * 95}]
CHAT = "/v1/chat/completions"


def request_body(**fields) -> bytes:
    """`{"model": "m", "stream": true, "messages": [...]}` plus `fields` (a None value drops the key)."""
    doc = {"model": "m", "stream": True, "messages": MESSAGES}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def chat_chunk(delta: dict, finish=None, usage_null: bool = False) -> bytes:
    # OpenAI writes "usage":null in every chunk of a stream that asked for usage
    return openai_chunk(delta, finish, id="x", model="m", usage=None if usage_null else OMIT)


def stream_events(with_usage: bool) -> list[tuple[str, bytes]]:
    """(name, bytes) of an OpenAI stream: role chunk, content chunks, finish chunk, [usage chunk], [DONE]."""
    events = [("role", chat_chunk({"role": "assistant", "content": ""}, usage_null=with_usage))]
    events += [(f"c{i}", chat_chunk({"content": text}, usage_null=with_usage)) for i, text in enumerate(CONTENT)]
    events.append(("finish", chat_chunk({}, "stop", usage_null=with_usage)))
    if with_usage:
        events.append(("usage", USAGE_EVENT))
    events.append(("done", DONE_EVENT))
    return events


def split(events: list[tuple[str, bytes]], plan: str) -> list[bytes]:
    """The payload cut into the pieces the origin writes (each one chunk frame).

    varied: an event split in two, three events in one piece, the usage event split across pieces and its
        final LF alone at the start of the piece that holds [DONE];
    grouped: one event per piece up to the finish chunk, then finish + usage + [DONE] in one piece;
    per_byte: one byte per piece;
    whole: the payload as one piece.
    """
    payload = b"".join(e for _, e in events)
    starts, offset = {}, 0
    for name, e in events:
        starts[name] = offset
        offset += len(e)
    if plan == "whole":
        return [payload]
    if plan == "per_byte":
        return [payload[i:i + 1] for i in range(len(payload))]
    if plan == "grouped":
        cuts = [starts[n] for n in ("c0", "c1", "c2", "finish")]
    elif plan == "varied":
        cuts = [starts["c0"] + 10, starts["finish"]]
        if "usage" in starts:
            cuts += [starts["usage"] + 17, starts["done"] - 1]
        else:
            cuts += [starts["done"] - 1]
    else:
        raise AssertionError(f"unknown plan {plan}")
    bounds = [0] + sorted(set(cuts)) + [len(payload)]
    return [payload[a:b] for a, b in zip(bounds, bounds[1:])]


class Backend:
    """An OpenAI-compatible origin. A streaming request (`"stream": true`) gets an SSE stream, chunked (or
    Content-Length framed with `framing="length"`), written in the pieces of `plan` with a short pause between
    writes; the usage chunk is in it when the received body asks for it (`usage="asked"`, as OpenAI and vLLM do),
    or `"always"`/`"never"`. Any other request gets a JSON chat.completion with usage, Content-Length framed.
    Every payload written is appended to `sent`."""

    def __init__(self, usage: str = "asked", plan: str = "varied", framing: str = "chunked"):
        self.usage, self.plan, self.framing = usage, plan, framing
        self.sent: list[bytes] = []

    def __call__(self, conn, req):
        try:
            doc = json.loads(req.body)
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and doc.get("stream") is True):
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(CONTENT)},
                                            "logprobs": None, "finish_reason": "stop"}],
                               "usage": USAGE}, separators=(",", ":")).encode()
            self.sent.append(body)
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return True
        options = doc.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        with_usage = {"asked": asked, "always": True, "never": False}[self.usage]
        events = stream_events(with_usage)
        payload = b"".join(e for _, e in events)
        self.sent.append(payload)
        pieces = split(events, self.plan)
        if self.framing == "length":
            conn.send(sse_head("Cache-Control: no-cache", framing=f"Content-Length: {len(payload)}"))
            frames = pieces
        else:
            conn.send(SSE_HEAD)
            frames = [chunk(p) for p in pieces]
        # One byte per frame: 16 frames a write, so the test stays short and reads still land mid-event.
        per_write = 16 if self.plan == "per_byte" else 1
        writes = [b"".join(frames[i:i + per_write]) for i in range(0, len(frames), per_write)]
        if self.framing != "length":
            # The last chunk goes with the last event, as servers write them back to back: a client that
            # stops at [DONE] (the openai SDK) then finds the body ended and leaves no abort behind.
            writes[-1] += LAST_CHUNK
        for i, data in enumerate(writes):
            if i:
                conn.sleep(0.005)
            conn.send(data)
        return True


def start(stack, tmp_path, backend: Backend, inject: str | None = "on", tokens: str = "100/min"):
    """An origin running `backend` and a sluice with route `/` (`inject_usage` = `inject`, no line when None) under
    a global `tokens` limit, logging to a file. Returns (sluice, log path, origin)."""
    origin = stack.origin(backend)
    keys = {"limit": "tok"}
    if inject is not None:
        keys["inject_usage"] = inject
    log = tmp_path / "c.jsonl"
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", keys)],
                            rate_limits={"tok": {"key": "global", "tokens": tokens}},
                            log={"file": str(log), "stdout": "off"})
    return sl, log, origin


def send_chat(conn: RawConn, body: bytes, target: str = CHAT, version: str = "HTTP/1.1") -> None:
    conn.send(request_bytes("POST", target, [("Content-Type", "application/json"),
                                              ("Authorization", "Bearer sk-test")], body, version))


def exchange(sl, body: bytes, target: str = CHAT):
    """One POST on a fresh connection; returns the response, checked to have ended cleanly with nothing after it."""
    with RawConn(sl.port) as conn:
        send_chat(conn, body, target)
        r = conn.read_response("POST")
        assert not conn.buf, f"bytes after the response: {bytes(conn.buf[:200])!r}"
    assert r.status == 200 and r.complete, (r.status_line, r.raw_body[-200:])
    return r


def check_client_stream(r, expected: bytes) -> None:
    """Status 200, valid chunked framing ending in the last chunk, and exactly `expected` decoded."""
    assert r.status == 200, r.status_line
    assert r.framing == "chunked" and r.header("content-length") is None, r.head_raw
    assert r.complete and r.raw_body.endswith(b"\r\n0\r\n\r\n"), f"framing not ended cleanly: {r.raw_body[-80:]!r}"
    assert r.body == expected, f"client got\n{r.body!r}\nexpected\n{expected!r}"


def check_forwarded(origin, index: int, body: bytes) -> None:
    """The origin's `index`-th request has exactly `body`, with a Content-Length that says so."""
    req = origin.requests[index]
    assert req.header("transfer-encoding") is None and not req.chunked, req.headers
    assert req.header("content-length") == str(len(req.body)), (req.header("content-length"), len(req.body))
    assert req.body == body, f"origin got\n{req.body[:400]!r}\nexpected\n{body[:400]!r}"
    assert req.header("content-type") == "application/json", req.headers


def check_reported(rec: dict) -> None:
    check_shape(rec)
    assert rec["end"] == "complete" and rec["status"] == 200, rec
    assert rec["usage"] == USAGE and rec.get("usage_source") == "reported", rec
    assert "estimated_usage" not in rec, rec


def remaining_tokens(r) -> int:
    values = r.values("x-ratelimit-remaining-tokens")
    assert len(values) == 1, r.head_raw
    return int(values[0])


# --------------------------------------------------------------------------------------------
# 1, 2. The edit and the removal
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("plan", ["varied", "grouped", "per_byte", "whole"])
def test_injects_include_usage_and_removes_the_usage_chunk(stack, tmp_path, plan):
    """Guards the whole feature on a raw socket: a streaming chat request without stream_options reaches the origin
    as the same JSON plus `"stream_options":{"include_usage":true}` (inserted before the closing brace, every
    other byte the client's, Content-Length adjusted); the client's de-chunked body is the origin's payload minus
    exactly the usage-only event, whatever the write boundaries, in valid chunked framing; the record holds the
    reported usage (usage_source "reported") and the budget is charged 10, not the estimate (>= 28). A second
    request on the same connection proves the re-chunked response left the connection in sync."""
    backend = Backend(usage="asked", plan=plan)
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body()
    with RawConn(sl.port) as conn:
        send_chat(conn, body)
        r = conn.read_response("POST")
        check_forwarded(origin, 0, body[:-1] + INJECTED + b"}")
        sent = json.loads(origin.requests[0].body)
        assert sent == {**json.loads(body), "stream_options": {"include_usage": True}}, sent
        assert USAGE_EVENT in backend.sent[0], "the origin did not send the usage chunk it was asked for"
        check_client_stream(r, backend.sent[0].replace(USAGE_EVENT, b""))
        assert remaining_tokens(r) == 100, r.head_raw
        rec, = wait_records(log, 1)
        check_reported(rec)
        # Same connection: the budget left is 100 - 10 (plus at most a few seconds of refill at 100/min).
        send_chat(conn, body)
        again = conn.read_response("POST")
        assert not conn.buf, f"bytes after the second response: {bytes(conn.buf[:200])!r}"
    check_client_stream(again, backend.sent[1].replace(USAGE_EVENT, b""))
    left = remaining_tokens(again)
    assert 90 <= left <= 93, f"{100 - left} tokens charged for a stream that reported 10"
    assert len(origin.requests) == 2
    check_forwarded(origin, 1, body[:-1] + INJECTED + b"}")
    recs = wait_records(log, 2)
    assert len(recs) == 2
    check_reported(recs[1])


# --------------------------------------------------------------------------------------------
# 3, 4. The client's own stream_options
# --------------------------------------------------------------------------------------------

def test_client_that_asks_for_usage_gets_everything_unchanged(stack, tmp_path):
    """Guards against editing or filtering a client that asked: `include_usage: true` (with another member) goes
    to the origin byte for byte, and the client gets the origin's payload byte for byte, usage chunk included."""
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body(stream_options={"include_usage": True, "continuous_usage_stats": False})
    r = exchange(sl, body)
    check_forwarded(origin, 0, body)
    assert USAGE_EVENT in backend.sent[0]
    check_client_stream(r, backend.sent[0])
    rec, = wait_records(log, 1)
    check_reported(rec)


@pytest.mark.parametrize("options, edited", [
    ('"stream_options": {"include_usage": false}', '"stream_options": {"include_usage": true}'),
    ('"stream_options": {"include_usage": null}', '"stream_options": {"include_usage": true}'),
    ('"stream_options": null', '"stream_options": {"include_usage":true}'),
    ('"stream_options": {}', '"stream_options": {"include_usage":true}'),
    ('"stream_options": {"continuous_usage_stats": false}',
     '"stream_options": {"include_usage":true,"continuous_usage_stats": false}'),
], ids=["false", "null", "options-null", "options-empty", "options-other"])
def test_client_that_declines_usage_is_edited_and_filtered(stack, tmp_path, options, edited):
    """Guards the edit when the client sent stream_options without asking for usage (`false`, the documented
    StreamUsageEdit splices for null and other members): the origin gets `include_usage` true, only those bytes
    changed and Content-Length matching, and the client does not get the usage chunk; the record has the usage."""
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    body = b'{"model": "m", "stream": true, ' + options.encode() + b', "messages": ' \
        + json.dumps(MESSAGES).encode() + b'}'
    r = exchange(sl, body)
    got = json.loads(origin.requests[0].body)
    opts = got.get("stream_options")
    assert isinstance(opts, dict) and opts.get("include_usage") is True, f"origin got stream_options {opts!r}"
    assert {k: v for k, v in got.items() if k != "stream_options"} == \
        {k: v for k, v in json.loads(body).items() if k != "stream_options"}, got
    check_forwarded(origin, 0, body.replace(options.encode(), edited.encode()))
    assert USAGE_EVENT in backend.sent[0]
    check_client_stream(r, backend.sent[0].replace(USAGE_EVENT, b""))
    rec, = wait_records(log, 1)
    check_reported(rec)


# --------------------------------------------------------------------------------------------
# 5, 6, 7. What is left alone
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, None], ids=["stream-false", "stream-absent"])
def test_non_streaming_request_is_left_alone(stack, tmp_path, stream):
    """Guards against editing a request that does not stream (`"stream": false`, or no `stream`): body unchanged,
    the JSON answer (with its usage and Content-Length) reaches the client unchanged."""
    backend = Backend()
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body(stream=stream)
    r = exchange(sl, body)
    check_forwarded(origin, 0, body)
    assert r.framing == "length" and r.header("content-length") == str(len(backend.sent[0])), r.head_raw
    assert r.body == backend.sent[0]
    rec, = wait_records(log, 1)
    check_reported(rec)


@pytest.mark.parametrize("inject", [None, "off"], ids=["default", "off"])
def test_route_without_inject_usage_is_left_alone(stack, tmp_path, inject):
    """Guards the default (and an explicit `inject_usage off`): the body goes unchanged, and a usage chunk the
    origin sends anyway (one it was not asked for) reaches the client; the tap reads it."""
    backend = Backend(usage="always")
    sl, log, origin = start(stack, tmp_path, backend, inject=inject)
    body = request_body()
    r = exchange(sl, body)
    check_forwarded(origin, 0, body)
    assert USAGE_EVENT in backend.sent[0]
    check_client_stream(r, backend.sent[0])
    rec, = wait_records(log, 1)
    check_reported(rec)


def sized_body(size: int) -> bytes:
    """A streaming chat request of exactly `size` bytes."""
    def build(n: int) -> bytes:
        return request_body(messages=[{"role": "user", "content": "y" * n}])
    body = build(size - len(build(0)))
    assert len(body) == size
    return body


def test_body_over_the_bound_is_forwarded_unchanged(stack, tmp_path):
    """Guards the hold bound: a streaming body one byte over it goes to the origin unchanged (no include_usage), the
    exchange completes with the origin's stream unchanged, and with no usage reported the record says
    usage_source "estimated" (3 content deltas) with `usage` null."""
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    body = sized_body(HOLD_BOUND + 1)
    with RawConn(sl.port) as conn:
        send_chat(conn, body)
        r = conn.read_response("POST")
    check_forwarded(origin, 0, body)
    assert USAGE_EVENT not in backend.sent[0]
    check_client_stream(r, backend.sent[0])
    rec, = wait_records(log, 1)
    assert rec["end"] == "complete" and rec["usage"] is None, rec
    assert rec.get("usage_source") == "estimated", rec
    assert rec["estimated_usage"]["completion_tokens"] == len(CONTENT), rec


def test_body_at_the_bound_sent_in_pieces_is_edited(stack, tmp_path):
    """Guards holding a body across reads: a body of exactly the bound, sent in five writes with pauses, is still
    edited (include_usage inserted, Content-Length the bound + 39) and the usage chunk removed."""
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    body = sized_body(HOLD_BOUND)
    raw = request_bytes("POST", CHAT, [("Content-Type", "application/json")], body)
    with RawConn(sl.port) as conn:
        step = len(raw) // 5 + 1
        for i in range(0, len(raw), step):
            conn.send(raw[i:i + step])
            time.sleep(0.05)
        r = conn.read_response("POST")
    check_forwarded(origin, 0, body[:-1] + INJECTED + b"}")
    check_client_stream(r, backend.sent[0].replace(USAGE_EVENT, b""))
    rec, = wait_records(log, 1)
    check_reported(rec)


def test_non_chat_path_is_left_alone(stack, tmp_path):
    """Guards the path restriction (beyond the brief: the issue limits the edit to chat/completions): a streaming
    Anthropic `/v1/messages` body, where an unknown `stream_options` is a 400, goes unchanged, and a usage-shaped
    chunk in its answer is not removed."""
    backend = Backend(usage="always")
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body(max_tokens=64)
    r = exchange(sl, body, target="/v1/messages")
    check_forwarded(origin, 0, body)
    check_client_stream(r, backend.sent[0])


# --------------------------------------------------------------------------------------------
# 8, 9. Real clients and other framings
# --------------------------------------------------------------------------------------------

def test_openai_sdk_stream_has_no_usage_chunk(stack, tmp_path, monkeypatch):
    """Guards what a real client sees: the official SDK's streaming iterator works through an inject route, no
    chunk has empty `choices` or a usage (the usage-only chunk was removed), the content is what the origin sent,
    the origin was asked for usage and the record has the reported usage."""
    import openai
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{sl.port}/v1", api_key="sk-test", max_retries=0, timeout=10)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert chunks, "no chunks"
    assert all(c.choices for c in chunks), [c.model_dump() for c in chunks if not c.choices]
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(CONTENT)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    sent = json.loads(origin.requests[0].body)
    assert sent.get("stream_options") == {"include_usage": True} and sent["stream"] is True, sent
    assert origin.requests[0].header("content-length") == str(len(origin.requests[0].body))
    assert USAGE_EVENT in backend.sent[0]
    rec, = wait_records(log, 1)
    check_reported(rec)


def test_http10_client_gets_close_delimited_stream_without_usage(stack, tmp_path):
    """Guards the removal on the de-chunking path: an HTTP/1.0 client gets no chunked framing, the body ends at
    close and equals the origin's payload minus the usage event."""
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body()
    with RawConn(sl.port) as conn:
        send_chat(conn, body, version="HTTP/1.0")
        r = conn.read_head()
        got = conn.read_until_close(10.0)
    assert r.status == 200 and r.header("transfer-encoding") is None and r.header("content-length") is None, r.head_raw
    check_forwarded(origin, 0, body[:-1] + INJECTED + b"}")
    assert USAGE_EVENT in backend.sent[0]
    assert got == backend.sent[0].replace(USAGE_EVENT, b""), got
    rec, = wait_records(log, 1)
    check_reported(rec)


def test_content_length_stream_is_reframed(stack, tmp_path):
    """Guards the framing when bytes are removed from a Content-Length response (beyond the brief: an origin or
    an intermediate that buffers may send SSE with Content-Length): the client must not be promised the origin's
    length; it gets valid framing (chunked, or close-delimited) holding the payload minus the usage event."""
    backend = Backend(usage="asked", framing="length")
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body()
    with RawConn(sl.port) as conn:
        send_chat(conn, body)
        r = conn.read_response("POST", timeout=10.0)
    expected = backend.sent[0].replace(USAGE_EVENT, b"")
    assert USAGE_EVENT in backend.sent[0]
    assert r.status == 200 and r.complete, (r.status_line, r.framing, r.raw_body[-100:])
    if r.framing == "length":
        assert r.header("content-length") == str(len(expected)), r.head_raw
    assert r.body == expected, r.body
    rec, = wait_records(log, 1)
    check_reported(rec)


# --------------------------------------------------------------------------------------------
# Holding the body must not disturb the connection (beyond the brief)
# --------------------------------------------------------------------------------------------

def check_consistent(client_body: bytes, forwarded: bytes, payload: bytes, got: bytes) -> None:
    """Whatever sluice chose for a request whose handling the brief leaves open: the origin got the client's JSON,
    or it plus include_usage; the client lost the usage chunk exactly when sluice added the request for it."""
    sent, mine = json.loads(forwarded), json.loads(client_body)
    if sent == mine:
        assert got == payload, "a request forwarded unchanged had its response changed"
    else:
        assert sent == {**mine, "stream_options": {"include_usage": True}}, sent
        assert USAGE_EVENT in payload
        assert got == payload.replace(USAGE_EVENT, b""), "usage asked on the client's behalf reached the client"


def test_pipelined_requests_are_each_edited(stack, tmp_path):
    """Guards the body hold against pipelining: two requests in one write (the second's head right after the
    first's body) are both edited and answered in order, neither body swallowing the other's bytes."""
    backend = Backend(usage="asked", plan="varied")
    sl, log, origin = start(stack, tmp_path, backend, tokens="1000/min")
    first, second = request_body(), request_body(model="m2")
    with RawConn(sl.port) as conn:
        conn.send(request_bytes("POST", CHAT, [("Content-Type", "application/json")], first)
                  + request_bytes("POST", CHAT, [("Content-Type", "application/json")], second))
        r1 = conn.read_response("POST")
        r2 = conn.read_response("POST")
        assert not conn.buf
    assert [r.target for r in origin.requests] == [CHAT, CHAT]
    check_forwarded(origin, 0, first[:-1] + INJECTED + b"}")
    check_forwarded(origin, 1, second[:-1] + INJECTED + b"}")
    check_client_stream(r1, backend.sent[0].replace(USAGE_EVENT, b""))
    check_client_stream(r2, backend.sent[1].replace(USAGE_EVENT, b""))
    for rec in wait_records(log, 2):
        check_reported(rec)


def test_expect_100_continue_does_not_stall(stack, tmp_path):
    """Guards against a deadlock: a client that sends `Expect: 100-continue` and waits for the 100 before its body
    must get it within 2 s although sluice holds bodies it edits; such a body goes unchanged (documented), so the
    usage chunk the origin sends anyway reaches the client (the filter is off when sluice did not ask)."""
    backend = Backend(usage="always")
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body()
    with RawConn(sl.port) as conn:
        conn.send(request_bytes("POST", CHAT, [("Content-Type", "application/json"), ("Expect", "100-continue"),
                                               ("Content-Length", str(len(body)))]))
        interim = conn.read_head(timeout=2.0)
        assert interim.status == 100, interim.status_line
        conn.send(body)
        r = conn.read_response("POST")
    assert r.status == 200 and r.complete, r.status_line
    check_consistent(body, origin.requests[0].body, backend.sent[0], r.body)
    check_forwarded(origin, 0, body)
    check_client_stream(r, backend.sent[0])
    check_reported(wait_records(log, 1)[0])


def test_chunked_request_body_is_handled_consistently(stack, tmp_path):
    """Guards a chunked upload on an inject route: the origin gets valid framing and the client's JSON (plus
    include_usage only if edited, and then the usage chunk removed); as documented it goes unchanged, so the usage
    chunk the origin sends anyway reaches the client."""
    backend = Backend(usage="always")
    sl, log, origin = start(stack, tmp_path, backend)
    body = request_body()
    framed = chunk(body[:50]) + chunk(body[50:]) + LAST_CHUNK
    with RawConn(sl.port) as conn:
        conn.send(request_bytes("POST", CHAT, [("Content-Type", "application/json"),
                                               ("Transfer-Encoding", "chunked")], framed))
        r = conn.read_response("POST")
    assert r.status == 200 and r.complete, r.status_line
    req = origin.requests[0]
    if req.header("content-length") is not None:
        assert req.header("content-length") == str(len(req.body)) and not req.chunked, req.headers
    check_consistent(body, req.body, backend.sent[0], r.body)
    assert req.body == body, "a chunked upload was edited (documented: it goes unchanged)"
    check_client_stream(r, backend.sent[0])
    check_reported(wait_records(log, 1)[0])


def test_legacy_completions_path_is_edited(stack, tmp_path):
    """Guards the documented path rule (any `...completions` path): a streaming `/v1/completions` request is edited
    too, and the usage chunk removed."""
    backend = Backend(usage="asked")
    sl, log, origin = start(stack, tmp_path, backend)
    body = json.dumps({"model": "m", "prompt": "Say hello", "stream": True, "max_tokens": 8}).encode()
    r = exchange(sl, body, target="/v1/completions")
    check_forwarded(origin, 0, body[:-1] + INJECTED + b"}")
    check_client_stream(r, backend.sent[0].replace(USAGE_EVENT, b""))
    check_reported(wait_records(log, 1)[0])


def test_many_tiny_events_to_a_slow_reader_keep_the_framing(stack, tmp_path):
    """Guards the growth bound of re-chunking: blank lines are one-byte events, each re-emitted as its own chunk
    with about nine bytes of framing, so a piece of them can grow tenfold on its way out. With the client queue
    nearly full (a reader that waits before reading), a piece that did not fit used to be taken only in part while
    the chunk decoder had moved past it all. The client must get the origin's payload minus the usage event,
    in valid chunked framing."""
    filler = b"\n" * 60_000

    def handler(conn, req):
        doc = json.loads(req.body)
        assert doc.get("stream_options") == {"include_usage": True}, doc
        events = [e for _, e in stream_events(True)]
        payload = events[0] + filler + b"".join(events[1:])
        conn.send(SSE_HEAD + chunk(events[0]) + chunk(filler) + b"".join(chunk(e) for e in events[1:]) + LAST_CHUNK)
        handler.sent = payload
        return True

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"inject_usage": "on"})],
                            log={"stdout": "off"})
    with RawConn(sl.port, rcvbuf=4096) as conn:
        send_chat(conn, request_body())
        time.sleep(0.5)  # let sluice fill the client queue before anything is read
        r = conn.read_response("POST")
    assert r.status == 200 and r.complete, (r.status_line, r.raw_body[-200:])
    assert r.body == handler.sent.replace(USAGE_EVENT, b""), "payload differs from the origin's minus the usage event"
