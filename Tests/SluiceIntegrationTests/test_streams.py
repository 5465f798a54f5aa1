"""streams.py writes exactly the bytes the tests assume: the heads, chunk framing and event builders that the
scripted origins of many test files share (a change here would silently change what those tests send)."""

import json

import origin
import streams
from streams import (BARE_SSE_HEAD, LAST_CHUNK, OMIT, OPENAI_DONE, SSE_HEAD, anthropic_event, anthropic_message_start,
                     anthropic_text_delta, chunk, chunked, openai_chunk, openai_usage_chunk, sse, sse_head, usage)


def test_heads():
    assert SSE_HEAD == (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
    assert BARE_SSE_HEAD == b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert sse_head(framing="Content-Length: 12") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 12\r\n\r\n")
    assert sse_head("X-A: 1", framing="Connection: close", content_type="text/plain") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nConnection: close\r\n\r\n")
    # origin.py re-exports the same objects, for the tests that import them from there
    assert (origin.SSE_HEAD, origin.LAST_CHUNK, origin.chunk) == (SSE_HEAD, LAST_CHUNK, chunk)


def test_chunk_framing():
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"  # lower-case hex, no leading zeros
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert chunked(b"abcde", piece=2) == b"2\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n0\r\n\r\n"
    assert chunked(b"") == LAST_CHUNK


def test_sse_events():
    assert sse({"a": [1, "b"]}) == b'data: {"a":[1,"b"]}\n\n'  # compact JSON, as OpenAI's servers write it
    assert sse("[DONE]") == OPENAI_DONE == b"data: [DONE]\n\n"
    assert sse(b"raw", event="tick", id=3) == b"id: 3\nevent: tick\ndata: raw\n\n"


def test_openai_chunks():
    assert json.loads(openai_chunk({"content": "hi"})[len(b"data: "):]) == {
        "id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}]}
    no_logprobs = openai_chunk({}, "stop", logprobs=False, usage=None)
    assert b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}' in no_logprobs
    assert b'"usage"' not in openai_chunk({}, usage=OMIT)
    assert openai_usage_chunk(usage(2, 3), id="i", model="g") == (
        b'data: {"id":"i","object":"chat.completion.chunk","created":1,"model":"g","choices":[],'
        b'"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}\n\n')


def test_anthropic_events():
    assert anthropic_event("message_stop") == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert anthropic_text_delta("w") == (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                                         b'"delta":{"type":"text_delta","text":"w"}}\n\n')
    start = json.loads(anthropic_message_start(25).split(b"data: ", 1)[1])
    assert start["message"]["usage"] == {"input_tokens": 25, "output_tokens": 1}
    assert "stop_reason" not in start["message"]
    assert json.loads(anthropic_message_start(1, stop_reason=None).split(b"data: ", 1)[1])["message"]["stop_reason"] is None
    assert streams.OMIT is OMIT
