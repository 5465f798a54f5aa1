"""The bytes a scripted origin writes for a streamed response: event-stream heads, chunk framing, SSE events
and OpenAI- and Anthropic-shaped stream events.

One home for them, so that every test frames a stream the same way and a change of framing (or a bug in it)
shows up everywhere at once. Everything here returns `bytes` and has no state; `origin.py` re-exports
`SSE_HEAD`, `LAST_CHUNK` and `chunk` for the tests that import them from there.
"""

from __future__ import annotations

import json

#: A JSON value that stands for "leave the key out" (distinct from None, which is written as null).
OMIT = object()


def sse_head(*fields: str, framing: str = "Transfer-Encoding: chunked",
             content_type: str = "text/event-stream") -> bytes:
    """A `200 OK` head: `Content-Type`, then `fields` (each `"Name: value"`), then the framing field:
    `Transfer-Encoding: chunked` by default, `Content-Length: N`, or `Connection: close` for a close-delimited
    body."""
    lines = ["HTTP/1.1 200 OK", f"Content-Type: {content_type}", *fields, framing]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


#: The head of a chunked `text/event-stream` response, as LLM servers send it (with `Cache-Control: no-cache`).
SSE_HEAD = sse_head("Cache-Control: no-cache")
#: A chunked `text/event-stream` head with nothing but the content type and the framing.
BARE_SSE_HEAD = sse_head()
#: The zero-size chunk that ends a chunked body (no trailers).
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """`data` framed as one chunk (RFC 9112 §7.1): its size in lower-case hex, CRLF, the data, CRLF."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def chunked(data: bytes, piece: int = 16384) -> bytes:
    """A whole chunked body: `data` in chunks of at most `piece` bytes, then the last chunk."""
    return b"".join(chunk(data[i:i + piece]) for i in range(0, len(data), piece)) + LAST_CHUNK


def sse(data, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """One SSE event (`id:`, `event:`, one `data:` line, blank line). `data` is written as is when it is bytes or
    a string (`"[DONE]"`), else as compact JSON (`separators=(",", ":")`, as OpenAI's servers write it)."""
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = json.dumps(data, separators=(",", ":")).encode()
    out = b""
    if id is not None:
        out += f"id: {id}\n".encode()
    if event is not None:
        out += f"event: {event}\n".encode()
    return out + b"data: " + payload + b"\n\n"


#: The event that ends an OpenAI stream.
OPENAI_DONE = sse("[DONE]")


def openai_chunk(delta: dict, finish: str | None = None, *, id: str = "chatcmpl-x", model: str = "m",
                 logprobs: bool = True, usage=OMIT) -> bytes:
    """One `chat.completion.chunk` event with one choice. `logprobs=False` leaves the choice's `logprobs` key
    out; `usage` (None writes `"usage":null`, as OpenAI does in every chunk of a stream that asked for usage) is
    left out unless given."""
    choice = {"index": 0, "delta": delta}
    if logprobs:
        choice["logprobs"] = None
    choice["finish_reason"] = finish
    doc = {"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [choice]}
    if usage is not OMIT:
        doc["usage"] = usage
    return sse(doc)


def openai_usage_chunk(usage: dict, *, id: str = "chatcmpl-x", model: str = "m") -> bytes:
    """The usage-only chunk an OpenAI stream ends with when the request asked for usage (`"choices":[]`)."""
    return sse({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                "usage": usage})


def usage(prompt: int, completion: int, total: int | None = None) -> dict:
    """OpenAI's `usage` object; `total` defaults to the sum."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion if total is None else total}


def anthropic_event(type_: str, **fields) -> bytes:
    """One event of Anthropic's Messages stream: `event: TYPE` and a data object whose `type` is TYPE."""
    return sse({"type": type_, **fields}, event=type_)


def anthropic_message_start(input_tokens: int, *, id: str = "msg_x", model: str = "claude-x",
                            stop_reason=OMIT) -> bytes:
    """`message_start` with the reported input tokens and `output_tokens: 1` (what Anthropic reports there)."""
    message = {"id": id, "type": "message", "role": "assistant", "content": [], "model": model}
    if stop_reason is not OMIT:
        message["stop_reason"] = stop_reason
    message["usage"] = {"input_tokens": input_tokens, "output_tokens": 1}
    return anthropic_event("message_start", message=message)


def anthropic_text_delta(text: str, index: int = 0) -> bytes:
    """A `content_block_delta` carrying `text` (an output-bearing event)."""
    return anthropic_event("content_block_delta", index=index, delta={"type": "text_delta", "text": text})
