"""Issue 12 item 3: token budgets have no free path. A route with a `tokens` limit charges the usage the
backend reported, and when there is none (an OpenAI-compatible stream without `include_usage`, a client
gone before the usage chunk, a backend that never reports, a timeout) an estimate: prompt = the request's
JSON text bytes / 4, completion = the content-bearing deltas of a stream (or a JSON body's output text
bytes / 4). The record keeps them apart: `usage` is only what the backend reported, `usage_source` says
which was charged and `estimated_usage` what the estimate was (both keys only when set)."""

from __future__ import annotations

import json
import time
from functools import partial

import pytest

import streams
from rawhttp import RawConn, get, request_bytes
from sluice_proc import wait_records
from streams import (BARE_SSE_HEAD as SSE_HEAD, LAST_CHUNK, OPENAI_DONE, anthropic_event, anthropic_message_start,
                     anthropic_text_delta, chunk, openai_usage_chunk, usage)

#: The request body every test sends: its JSON string values are "m" + "user" + 95 bytes of content,
#: 100 text bytes, so the prompt estimate is exactly 25 tokens.
PROMPT = "x" * 95
BODY = json.dumps({"model": "m", "stream": True, "max_tokens": 64,
                   "messages": [{"role": "user", "content": PROMPT}]}).encode()
PROMPT_ESTIMATE = 25


#: The OpenAI chunks of these streams (ids and model as a gpt-4o-mini stream would have them).
openai_chunk = partial(streams.openai_chunk, id="chatcmpl-e", model="gpt-4o-mini")


def openai_events(deltas: int) -> list[bytes]:
    """A role-only chunk (not output), `deltas` content chunks, the finish chunk (not output)."""
    return ([openai_chunk({"role": "assistant", "content": ""})]
            + [openai_chunk({"content": f"w{i} "}) for i in range(deltas)]
            + [openai_chunk({}, "stop")])


def openai_stream(deltas: int, usage: dict | None = None) -> bytes:
    tail = [openai_usage_chunk(usage, id="chatcmpl-e", model="gpt-4o-mini")] if usage else []
    return b"".join(openai_events(deltas) + tail + [OPENAI_DONE])


def anthropic_start(input_tokens: int) -> list[bytes]:
    return [anthropic_message_start(input_tokens, id="msg_e"),
            anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""})]


def anthropic_delta(i: int) -> bytes:
    return anthropic_text_delta(f"w{i} ")


def handler(conn, req):
    """`/v1/plain`: 15 deltas, no usage. `/v1/usage`: 15 deltas and usage 30 + 15. `/v1/json`: a JSON body of
    40 output bytes, no usage. `/v1/cut/N`: N deltas, then waits for the client to leave. `/v1/anthropic-cut/N`:
    message_start (input 25, output 1) and N deltas, then waits. `/v1/die/N`: N deltas, then closes mid-body.
    `/v1/silent`: never answers."""
    path = req.target
    if path.startswith("/v1/plain") or path.startswith("/free/plain"):
        conn.send(SSE_HEAD + chunk(openai_stream(15)) + LAST_CHUNK)
    elif path.startswith("/v1/usage") or path.startswith("/free/usage"):
        conn.send(SSE_HEAD + chunk(openai_stream(15, usage(30, 15))) + LAST_CHUNK)
    elif path.startswith("/v1/json"):
        body = json.dumps({"id": "chatcmpl-j", "object": "chat.completion", "model": "gpt-4o-mini",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "y" * 40},
                                        "finish_reason": "stop"}]}).encode()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    elif path.startswith("/v1/cut/") or path.startswith("/v1/anthropic-cut/") or path.startswith("/v1/die/"):
        n = int(path.rsplit("/", 1)[1])
        events = (anthropic_start(25) + [anthropic_delta(i) for i in range(n)] if "anthropic" in path
                  else openai_events(n)[:-1])
        conn.send(SSE_HEAD + b"".join(chunk(e) for e in events))
        if path.startswith("/v1/die/"):
            conn.close()
            return False
        conn.wait_peer_closed(10)
        return False
    elif path.startswith("/v1/silent"):
        conn.wait_peer_closed(10)
        return False
    else:
        raise AssertionError(f"unexpected target {path}")
    return True


def remaining(r) -> int:
    values = r.values("x-ratelimit-remaining-tokens")
    assert len(values) == 1, r.head_raw
    return int(values[0])


@pytest.fixture
def budget(stack, tmp_path):
    """`tokens 100/min`, one global key, on /v1/ (and /v1/silent/ with a 500 ms first-byte timeout);
    /free/ has no limit. Returns (sluice, log path, origin)."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"},
                            [("/v1/silent", "o", {"limit": "tok", "upstream_first_byte": "500ms"}),
                             ("/v1/", "o", {"limit": "tok"}), ("/free/", "o", {})],
                            rate_limits={"tok": {"key": "global", "tokens": "100/min"}},
                            log={"file": str(log), "stdout": "off"})
    return sl, log, origin


def post(sl, path: str):
    return get(sl.port, path, [("Content-Type", "application/json")], "POST", BODY)


def test_stream_without_usage_is_charged_the_estimate(budget):
    """25 + 15 = 40 a request against 100/min: 200, 200, 200 (balance 60, 20, -20), then 429."""
    sl, log, origin = budget
    seen = []
    for n in range(3):
        r = post(sl, "/v1/plain")
        assert r.status == 200 and r.complete, r.status_line
        seen.append(remaining(r))
        wait_records(log, n + 1)
    # What the response head says is left before its own charge; ~1.7 tokens a second refill.
    assert seen[0] == 100 and 60 <= seen[1] <= 62 and 20 <= seen[2] <= 23, seen
    refused = post(sl, "/v1/plain")
    assert refused.status == 429, f"a fourth request after 120 estimated tokens of 100: {refused.status_line}"
    assert len(origin.requests) == 3, "the refused request reached the origin"
    recs = wait_records(log, 4)
    for rec in recs[:3]:
        assert rec["usage"] is None, "an estimate is never logged as usage"
        assert rec.get("usage_source") == "estimated", rec
        assert rec.get("estimated_usage") == usage(PROMPT_ESTIMATE, 15), rec
    assert recs[3]["end"] == "rejected_rate_limit", recs[3]
    assert "usage_source" not in recs[3] and "estimated_usage" not in recs[3], "a refused request costs no tokens"


def test_stream_with_usage_is_charged_what_it_reports(budget):
    """The same requests with usage 30 + 15 = 45: 100, 55, 10 left, then 429; the estimate plays no part."""
    sl, log, _ = budget
    seen = []
    for n in range(3):
        r = post(sl, "/v1/usage")
        assert r.status == 200, r.status_line
        seen.append(remaining(r))
        wait_records(log, n + 1)
    assert seen[0] == 100 and 55 <= seen[1] <= 57 and 10 <= seen[2] <= 13, seen
    assert post(sl, "/v1/usage").status == 429
    for rec in wait_records(log, 3)[:3]:
        assert rec["usage"] == usage(30, 15) and rec.get("usage_source") == "reported", rec
        assert "estimated_usage" not in rec, rec


def test_json_body_without_usage_is_charged_its_text(budget):
    """A JSON completion with 40 bytes of content and no usage: 25 + 10."""
    sl, log, _ = budget
    r = post(sl, "/v1/json")
    assert r.status == 200 and r.complete
    rec, = wait_records(log, 1)
    assert rec["usage"] is None and rec.get("usage_source") == "estimated", rec
    assert rec.get("estimated_usage") == usage(PROMPT_ESTIMATE, 10), rec
    assert 65 <= remaining(post(sl, "/v1/json")) <= 67


def test_no_tokens_limit_charges_nothing_and_logs_only_reported(budget):
    """Without a tokens limit nothing is estimated: `usage_source` is "reported" with usage, else absent."""
    sl, log, _ = budget
    assert post(sl, "/free/plain").status == 200
    assert post(sl, "/free/usage").status == 200
    plain, reported = wait_records(log, 2)
    assert plain["usage"] is None and "usage_source" not in plain and "estimated_usage" not in plain, plain
    assert reported["usage"] == usage(30, 15) and reported.get("usage_source") == "reported", reported
    assert remaining(post(sl, "/v1/usage")) == 100, "the free route charged the limited one"


def read_events(conn: RawConn, marker: bytes, count: int, timeout: float = 5.0) -> None:
    """Read until `count` occurrences of `marker` arrived (the stream's chunks, read raw)."""
    deadline = time.monotonic() + timeout
    while conn.buf.count(marker) < count:
        assert time.monotonic() < deadline, f"only {conn.buf.count(marker)} of {count} events: {bytes(conn.buf)!r}"
        conn.recv_some(deadline - time.monotonic())


def abandon(sl, path: str, marker: bytes, count: int) -> None:
    with RawConn(sl.port) as conn:
        conn.send(request_bytes("POST", path, [("Content-Type", "application/json")], BODY))
        read_events(conn, marker, count)


def test_client_abort_mid_stream_is_charged(budget):
    """The client leaves after 10 of an unfinished stream's deltas: 25 + 10 charged, `end` client_abort."""
    sl, log, origin = budget
    abandon(sl, "/v1/cut/10", b'"content":"w', 10)
    rec, = wait_records(log, 1)
    assert rec["end"] == "client_abort", rec
    assert rec["usage"] is None and rec.get("usage_source") == "estimated", rec
    assert rec.get("estimated_usage") == usage(PROMPT_ESTIMATE, 10), rec
    assert 65 <= remaining(post(sl, "/v1/usage")) <= 67


def test_client_gone_before_anthropic_final_usage(budget):
    """Anthropic reports output_tokens 1 in message_start and the real count only in message_delta: a client
    gone after 8 deltas is charged the reported input (25) and the 8 deltas, not 26; `usage` stays as reported."""
    sl, log, _ = budget
    abandon(sl, "/v1/anthropic-cut/8", b"content_block_delta", 16)  # each delta names its type twice
    rec, = wait_records(log, 1)
    assert rec["end"] == "client_abort", rec
    assert rec["usage"] == usage(25, 1), "the reported usage is logged as reported"
    assert rec.get("usage_source") == "estimated" and rec.get("estimated_usage") == usage(25, 8), rec
    assert 67 <= remaining(post(sl, "/v1/usage")) <= 69


def test_upstream_abort_and_timeout_are_charged(budget):
    """An upstream gone after 5 deltas: 25 + 5. A backend that never answers (first-byte timeout): the
    prompt was sent, so 25 + 0."""
    sl, log, _ = budget
    died = post(sl, "/v1/die/5")
    assert not died.complete
    silent = post(sl, "/v1/silent")
    assert silent.status == 504, silent.status_line
    cut, timed_out = wait_records(log, 2)
    assert cut["end"] == "upstream_abort" and cut.get("estimated_usage") == usage(PROMPT_ESTIMATE, 5), cut
    assert timed_out["end"] == "timeout_first_byte", timed_out
    assert timed_out.get("usage_source") == "estimated" and timed_out.get("estimated_usage") == usage(PROMPT_ESTIMATE, 0)
    assert 45 <= remaining(post(sl, "/v1/usage")) <= 47
