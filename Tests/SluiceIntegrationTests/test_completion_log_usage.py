"""10. The completion log, what a record says: OpenAI, Anthropic and JSON usage and model (also
split and CRLF), capture and truncation, secrets that never reach the log, and the request-body
scan cap. Shared helpers: completion_log_common.py."""

from __future__ import annotations

import json

import pytest

from completion_log_common import check_shape
from origin import LAST_CHUNK, chunk, respond
from rawhttp import get
from sluice_proc import log_config, wait_records


# --------------------------------------------------------------------------------------------
# 3. Usage and model
# --------------------------------------------------------------------------------------------

def _sse(events: list[dict | str], event_names: list[str | None] | None = None, eol: bytes = b"\n") -> bytes:
    out = b""
    for i, ev in enumerate(events):
        name = event_names[i] if event_names else None
        if name:
            out += b"event: " + name.encode() + eol
        data = ev if isinstance(ev, str) else json.dumps(ev, separators=(",", ":"))
        out += b"data: " + data.encode() + eol + eol
    return out


def _openai_stream() -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_1"}
    deltas = [{"role": "assistant", "content": ""}, {"content": "Hel"},
              {"content": "lo \"usage\": {\"prompt_tokens\": 999, \"total_tokens\": 999}"}, {}]
    events = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None,
                                    "finish_reason": "stop" if not d else None}], "usage": None} for d in deltas]
    events.append({**base, "choices": [], "usage": {
        "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}})
    return _sse(events + ["[DONE]"])


def _anthropic_stream(eol: bytes = b"\n") -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-3-5-sonnet-20241022", "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello \"usage\": {\"output_tokens\": 7}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse([e for _, e in events], [n for n, _ in events], eol)


_JSON_RESPONSE = json.dumps({
    "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant",
                                         "content": "{\"usage\": {\"prompt_tokens\": 999}}"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
              "prompt_tokens_details": {"cached_tokens": 0}}}).encode()

_NO_USAGE_STREAM = _sse([{"choices": [{"index": 0, "delta": {"content": "hi"}}]},
                         {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]"])

# id: (body, content type, pieces of this size with a pause between (0: one write), events,
#      expected usage, expected model)
USAGE_CASES = {
    "openai": (_openai_stream(), "text/event-stream", 0, 6,
               {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}, "gpt-4o-mini-2024-07-18"),
    "openai-split-7-bytes": (_openai_stream(), "text/event-stream", 7, 6,
                             {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
                             "gpt-4o-mini-2024-07-18"),
    "anthropic": (_anthropic_stream(), "text/event-stream", 0, 7,
                  {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}, "claude-3-5-sonnet-20241022"),
    "anthropic-crlf-split-5-bytes": (_anthropic_stream(b"\r\n"), "text/event-stream", 5, 7,
                                     {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40},
                                     "claude-3-5-sonnet-20241022"),
    "json": (_JSON_RESPONSE, "application/json", 0, 0,
             {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, "gpt-4o-2024-08-06"),
    # Neither usage nor model in the response: usage null (never an estimate), model from the request.
    "stream-without-usage": (_NO_USAGE_STREAM, "text/event-stream", 0, 3, None, "req-model"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_and_model_recorded_exactly(stack, tmp_path, case):
    body, ctype, piece, events, usage, model = USAGE_CASES[case]
    log = tmp_path / "c.jsonl"

    def handler(conn, req):
        if ctype == "text/event-stream":
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            step = piece or len(body)
            for i in range(0, len(body), step):
                conn.send(chunk(body[i:i + step]))
                if piece:
                    conn.sleep(0.001)
            conn.send(LAST_CHUNK)
        else:
            respond(conn, 200, body, [("Content-Type", ctype)])

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], log=log_config(log))
    req_body = json.dumps({"model": "req-model", "stream": ctype == "text/event-stream",
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
    r = get(sl.port, "/v1/chat/completions", [("Content-Type", "application/json")], "POST", req_body)
    assert r.status == 200 and r.complete
    assert r.body == body, "sluice changed the response body"
    rec, = wait_records(log, 1)
    check_shape(rec)
    assert rec["end"] == "complete", rec
    assert rec["usage"] == usage, rec
    assert rec["model"] == model, rec
    assert rec["sse_events"] == events, rec


# --------------------------------------------------------------------------------------------
# 7. Capture, truncation, and secrets that never reach the log
# --------------------------------------------------------------------------------------------

SECRETS = ["sk-AUTHSECRET0123456789", "XAPIKEYSECRET9876", "COOKIESECRET5555", "SETCOOKIESECRET4444",
           "QUERYSECRET3333"]


def test_capture_and_secrets_never_logged(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    small_sse = b"data: {\"a\":1}\n\nevent: x\ndata: two\ndata: lines\n\n: comment\n\n"
    big_sse = b"".join(f"data: {{\"token\": \"t{i:03d}\"}}\n\n".encode() for i in range(20))

    def handler(conn, req):
        body = big_sse if "big" in req.target else small_sse
        respond(conn, 200, body, [("Content-Type", "text/event-stream"),
                                  ("Set-Cookie", f"s={SECRETS[3]}; HttpOnly")], chunked=True)

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"},
                            [("/cap/", "o", {"capture_request": 64, "capture_response": 64}), ("/", "o", {})],
                            log=log_config(log))
    secret_headers = [("Authorization", f"Bearer {SECRETS[0]}"), ("x-api-key", SECRETS[1]),
                      ("Cookie", f"session={SECRETS[2]}; other=1"), ("Content-Type", "application/json")]
    small_body = b'{"model":"m","prompt":"hi"}'
    big_body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "y" * 200}]}).encode()
    for path, body in [("/cap/small", small_body), (f"/cap/big?key={SECRETS[4]}", big_body),
                       (f"/plain?key={SECRETS[4]}", small_body)]:
        r = get(sl.port, path, secret_headers, "POST", body)
        assert r.status == 200 and r.complete
    recs = {r["path"]: r for r in wait_records(log, 3)}
    assert set(recs) == {"/cap/small", "/cap/big", "/plain"}, list(recs)

    small = recs["/cap/small"]
    assert small["request_body"] == small_body.decode(), small
    # For SSE: each data line's value followed by LF, no framing, no comments.
    assert small["response_text"] == "{\"a\":1}\ntwo\nlines\n", small
    assert small["capture_truncated"] is False, small

    big = recs["/cap/big"]
    assert big["request_body"] == big_body[:64].decode(), big
    want = b"".join(f"{{\"token\": \"t{i:03d}\"}}\n".encode() for i in range(20))[:64]
    assert big["response_text"] == want.decode(), big
    assert big["capture_truncated"] is True, big

    plain = recs["/plain"]
    assert not {"request_body", "response_text", "capture_truncated"} & set(plain), "capture is off by default"

    text = log.read_text()
    for secret in SECRETS:
        assert secret not in text, f"{secret} appears in the completion log"
    for name in ("authorization", "x-api-key", "cookie"):
        assert name not in text.lower(), f"{name!r} appears in the completion log"
    # Nor on stderr.
    assert not any(s in ln for s in SECRETS for ln in sl.stderr_lines)


# --------------------------------------------------------------------------------------------
# Request-body scan limit
# --------------------------------------------------------------------------------------------

def test_request_model_scan_respects_its_cap(stack, tmp_path):
    """`request_body_scan 128`: the model of a small JSON body is read (Content-Length or
    chunked); a body over the cap is not scanned at all."""
    log = tmp_path / "c.jsonl"

    def handler(conn, req):
        respond(conn, 200, b'{"choices": []}', [("Content-Type", "application/json")])

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})],
                            log=log_config(log, request_body_scan=128))
    small = b'{"model": "small-model", "stream": false}'
    big = json.dumps({"model": "big-model", "pad": "p" * 300}).encode()
    assert get(sl.port, "/small", [("Content-Type", "application/json")], "POST", small).status == 200
    chunked = b"".join(chunk(small[i:i + 9]) for i in range(0, len(small), 9)) + LAST_CHUNK
    assert get(sl.port, "/chunked", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
               "POST", chunked).status == 200
    assert get(sl.port, "/big", [("Content-Type", "application/json")], "POST", big).status == 200
    assert [r.body for r in origin.requests] == [small, small, big], "sluice changed a request body"
    recs = {r["path"]: r for r in wait_records(log, 3)}
    assert recs["/small"]["model"] == "small-model", recs["/small"]
    assert recs["/chunked"]["model"] == "small-model", recs["/chunked"]
    assert recs["/big"]["model"] is None, recs["/big"]
    assert recs["/small"]["request_bytes"] > len(small)
