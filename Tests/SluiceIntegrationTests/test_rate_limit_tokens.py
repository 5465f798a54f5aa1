"""11. Rate limits: token budgets charged from reported usage (OpenAI, Anthropic, JSON) with 429
until refill, and the openai SDK's RateLimitError and Retry-After back-off. Shared helpers:
rate_limit_common.py."""

from __future__ import annotations

import json
import math
import time

import pytest

from origin import respond
from rate_limit_common import auth, check_429, go_duration, one, sf_list
from rawhttp import get
from sluice_proc import log_config, wait_records
from streams import (LAST_CHUNK, OPENAI_DONE, anthropic_event, anthropic_message_start, anthropic_text_delta, chunk,
                     openai_chunk, openai_usage_chunk, usage)


# --------------------------------------------------------------------------------------------
# 3. Token budget: usage charged after the fact; over budget → 429 until refill
# --------------------------------------------------------------------------------------------

def openai_stream(prompt: int, completion: int) -> bytes:
    ids = {"id": "chatcmpl-rl", "model": "gpt-4o-mini"}
    return b"".join([openai_chunk({"role": "assistant", "content": "hi"}, logprobs=False, usage=None, **ids),
                     openai_chunk({}, "stop", logprobs=False, usage=None, **ids),
                     openai_usage_chunk(usage(prompt, completion), **ids),
                     OPENAI_DONE])


def anthropic_stream(inp: int, out: int) -> bytes:
    return b"".join([anthropic_message_start(inp, id="msg_rl", stop_reason=None),
                     anthropic_text_delta("hi"),
                     anthropic_event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": out}),
                     anthropic_event("message_stop")])


def json_completion(prompt: int, completion: int) -> bytes:
    return json.dumps({"id": "chatcmpl-rl", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}}).encode()


#: name: (body, content type) reporting 200 tokens in each of the three formats.
SECOND = {"openai-sse": (openai_stream(120, 80), "text/event-stream"),
          "anthropic-sse": (anthropic_stream(120, 80), "text/event-stream"),
          "json": (json_completion(120, 80), "application/json")}


def _usage_handler(conn, req):
    """`/v1/first`: OpenAI stream reporting 400 + 500 = 900; `/v1/second/FORMAT`: 200 tokens."""
    if req.target.startswith("/v1/second/"):
        body, ctype = SECOND[req.target.rsplit("/", 1)[1]]
    elif req.target.startswith("/v1/first"):
        body, ctype = openai_stream(400, 500), "text/event-stream"
    else:
        body, ctype = json_completion(1, 1), "application/json"
    if ctype == "text/event-stream":
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                  + chunk(body) + LAST_CHUNK)
    else:
        respond(conn, 200, body, [("Content-Type", ctype)])


@pytest.mark.parametrize("fmt", list(SECOND))
def test_token_budget(stack, tmp_path, fmt):
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_usage_handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"limit": "per_user"})],
                            rate_limits={"per_user": {"key": "header authorization", "tokens": "1000/min"}},
                            log=log_config(log))
    hdr = auth("sk-token-user")
    body = b'{"model":"m","stream":true,"messages":[]}'

    r1 = get(sl.port, "/v1/first", hdr, "POST", body)
    assert r1.status == 200 and r1.complete
    assert one(r1, "x-ratelimit-limit-tokens") == "1000"
    assert one(r1, "x-ratelimit-remaining-tokens") == "1000", "nothing is charged before usage is known"
    assert sf_list(one(r1, "RateLimit-Policy"))["per_user-tokens"] == {"q": "1000", "w": "60", "qu": "tokens"}
    rec1, = wait_records(log, 1)
    assert rec1["usage"] == {"prompt_tokens": 400, "completion_tokens": 500, "total_tokens": 900}, rec1

    r2 = get(sl.port, f"/v1/second/{fmt}", hdr, "POST", body)
    assert r2.status == 200 and r2.complete, \
        f"second request refused with 100 tokens left: {r2.status_line} {r2.body!r}"
    rem = int(one(r2, "x-ratelimit-remaining-tokens"))
    assert 100 <= rem <= 120, f"after 900 of 1000 tokens, remaining {rem} (want ~100 plus < 1 s of refill)"
    recs = wait_records(log, 2)
    assert recs[1]["usage"]["total_tokens"] == 200, recs[1]

    r3 = get(sl.port, "/v1/third", hdr, "POST", body)
    ra = check_429(r3, "per_user", "tokens", "1000 per 1min", 1, 7)
    # The debt is 200 - rem tokens (less what refilled since), at 1000/60 per second.
    debt_s = math.ceil((200 - rem) * 60 / 1000)
    assert debt_s - 1 <= ra <= debt_s, f"Retry-After {ra} for a debt of ~{200 - rem} tokens at 1000/min"
    assert one(r3, "x-ratelimit-limit-tokens") == "1000"
    reset = go_duration(one(r3, "x-ratelimit-reset-tokens"))
    assert 60 < reset <= 67, f"1100 tokens to refill at 1000/min: reset {reset}s"
    assert abs(int(sf_list(one(r3, "RateLimit"))["per_user-tokens"]["t"]) - reset) <= 1
    assert [h.target for h in origin.heads] == ["/v1/first", f"/v1/second/{fmt}"], \
        "a refused request reached the origin"
    recs = wait_records(log, 3)
    assert recs[2]["end"] == "rejected_rate_limit" and recs[2]["rate_limit_decision"] == "rejected", recs[2]
    # The budget is per key.
    other = get(sl.port, "/v1/other", auth("sk-token-other"), "POST", body)
    assert other.status == 200


def test_token_debt_refills(stack, tmp_path):
    """600/s, 900 reported: 300 of debt, refilled in 0.5 s → 429 with Retry-After 1, then admitted."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_usage_handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"limit": "tok"})],
                            rate_limits={"tok": {"key": "global", "tokens": "600/s"}}, log=log_config(log))
    r1 = get(sl.port, "/v1/first")
    assert r1.status == 200
    wait_records(log, 1)
    r2 = get(sl.port, "/v1/again")
    ra = check_429(r2, "tok", "tokens", "600 per 1s", 1, 1)
    time.sleep(ra)
    r3 = get(sl.port, "/v1/again")
    assert r3.status == 200, f"still refused {ra} s after Retry-After said to come back: {r3.status_line}"


# --------------------------------------------------------------------------------------------
# 4. The openai SDK: RateLimitError, and its retry waits at least Retry-After
# --------------------------------------------------------------------------------------------

def _chat_handler(conn, req):
    respond(conn, 200, json_completion(3, 4), [("Content-Type", "application/json")])


@pytest.fixture
def no_proxy_env(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_openai_sdk_rate_limit_error_and_retry_after(stack, tmp_path, no_proxy_env):
    import openai
    origin = stack.origin(_chat_handler)
    # 30/min burst 1: one request, then the next unit in 2 s → Retry-After 2 (the SDK's own
    # back-off without it would be under a second).
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"limit": "sdk"})],
                            rate_limits={"sdk": {"key": "header authorization", "requests": "30/min burst 1"}})
    base = f"http://127.0.0.1:{sl.port}/v1"
    msgs = [{"role": "user", "content": "hi"}]

    # max_retries=0: the 429 surfaces as RateLimitError, streaming or not.
    c0 = openai.OpenAI(base_url=base, api_key="sk-sdk-noretry", max_retries=0, timeout=10)
    ok = c0.chat.completions.create(model="m", messages=msgs)
    assert ok.choices[0].message.content == "hi"
    with pytest.raises(openai.RateLimitError) as ei:
        c0.chat.completions.create(model="m", messages=msgs)
    e = ei.value
    assert e.status_code == 429
    assert e.code == "rate_limit_exceeded" and e.type == "rate_limit_exceeded", (e.code, e.type)
    assert e.response.headers["retry-after"] == "2", e.response.headers
    assert "Rate limit reached for sdk (requests)" in e.message, e.message
    with pytest.raises(openai.RateLimitError):
        c0.chat.completions.create(model="m", messages=msgs, stream=True)
    assert len(origin.heads) == 1, "a refused request reached the origin"

    # max_retries=1: the retry comes no sooner than Retry-After, and succeeds.
    events: list[tuple[str, float, int | None]] = []
    http = openai.DefaultHttpxClient(event_hooks={
        "request": [lambda req: events.append(("request", time.monotonic(), None))],
        "response": [lambda resp: events.append(("response", time.monotonic(), resp.status_code))]})
    c1 = openai.OpenAI(base_url=base, api_key="sk-sdk-retry", max_retries=1, timeout=10, http_client=http)
    c1.chat.completions.create(model="m", messages=msgs)
    events.clear()
    n_heads = len(origin.heads)
    t0 = time.monotonic()
    res = c1.chat.completions.create(model="m", messages=msgs)
    elapsed = time.monotonic() - t0
    assert res.choices[0].message.content == "hi"
    kinds = [(k, s) for k, _, s in events]
    assert kinds == [("request", None), ("response", 429), ("request", None), ("response", 200)], kinds
    t_429, t_retry = events[1][1], events[2][1]
    retry_after = 2
    assert t_retry - t_429 >= retry_after - 0.05, \
        f"SDK retried {t_retry - t_429:.3f}s after a 429 with Retry-After {retry_after}"
    assert len(origin.heads) == n_heads + 1
    assert origin.heads[-1].head_at - t_429 >= retry_after - 0.05
    assert elapsed < retry_after + 3
