"""10. The completion log: one exact record per exchange, measured times, usage, capture,
a blocked sink that never slows a stream, and SIGHUP rotation without loss or duplicates."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from origin import BlackHole, OriginStopping, PeerClosed, SendStalled, respond, unused_port
from rawhttp import ChunkedDecoder, RawConn, get, request_bytes
from sluice_proc import Sluice, read_jsonl, wait_records, write_routes_config

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
LAST_CHUNK = b"0\r\n\r\n"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
#: The record's keys, in the order `CompletionRecord.writeJSON` writes them.
KEYS = ["ts", "request_id", "traceparent", "client", "route", "method", "path", "upstream", "status",
        "request_bytes", "response_bytes", "sse_events", "ttfb_ms", "ttft_ms", "duration_ms", "max_gap_ms",
        "paused_ms", "peak_queued_bytes", "rate_limit_key", "rate_limit_decision", "model", "usage", "end",
        "error", "worker"]
#: Keys written only when set, right after `usage` (token budgets, issue 12).
USAGE_KEYS = ["usage_source", "estimated_usage"]
ENDS = {"complete", "client_abort", "upstream_abort", "upstream_error", "timeout_connect", "timeout_first_byte",
        "timeout_idle", "timeout_total", "client_write_timeout", "rejected_rate_limit", "rejected_bad_request",
        "drain", "rejected_overload"}


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def check_shape(rec: dict) -> None:
    """Keys in the documented order, a UTC RFC 3339 timestamp close to now, known `end`."""
    keys = [k for k in rec if k not in USAGE_KEYS]
    assert keys[: len(KEYS)] == KEYS, f"record keys {list(rec)}"
    extra = [k for k in rec if k in USAGE_KEYS]
    after_usage = list(rec).index("usage") + 1
    assert extra == list(rec)[after_usage: after_usage + len(extra)], list(rec)
    assert TS_RE.fullmatch(rec["ts"]), rec["ts"]
    assert rec["end"] in ENDS, rec
    assert isinstance(rec["request_id"], str) and rec["request_id"], rec
    assert rec["client"].startswith("127.0.0.1"), rec
    assert rec["duration_ms"] >= 0 and rec["max_gap_ms"] >= 0 and rec["paused_ms"] >= 0, rec
    if rec["ttfb_ms"] is not None:
        assert 0 <= rec["ttfb_ms"] <= rec["duration_ms"], rec
    if rec["ttft_ms"] is not None:
        assert rec["ttfb_ms"] is not None and rec["ttfb_ms"] <= rec["ttft_ms"] <= rec["duration_ms"], rec


def log_config(path, **extra) -> dict:
    return {"file": str(path), "stdout": "off", **extra}


# --------------------------------------------------------------------------------------------
# 1. Mixed outcomes: exactly one record per exchange, with the right end, status, bytes, events
# --------------------------------------------------------------------------------------------

#: A complete SSE response: 4 events (one with CRLF line ends, one with two data lines), plus
#: a comment-only block, which is not an event.
MIXED_EVENTS = [b"event: delta\ndata: {\"i\": 0}\n\n", b"id: 7\ndata: one\ndata: two\n\n", b": keep-alive\n\n",
                b"data: {\"i\": 2}\r\n\r\n", b"event: done\ndata: [DONE]\n\n"]
MIXED_EVENT_COUNT = 4
JSON_BODY = b'{"id":"x","object":"chat.completion","choices":[{"message":{"content":"hi"}}]}'


def _mixed_handler(conn, req):
    path = req.target
    if path.startswith("/v1/sse-complete"):
        conn.send(SSE_HEAD)
        for ev in MIXED_EVENTS:
            conn.send(chunk(ev))
        conn.send(LAST_CHUNK)
    elif path.startswith("/v1/json-complete"):
        respond(conn, 200, JSON_BODY, [("Content-Type", "application/json")])
    elif path.startswith("/v1/client-abort"):
        conn.send(SSE_HEAD + chunk(b"data: first\n\n"))
        conn.wait_peer_closed(10)
        return False
    elif path.startswith("/v1/upstream-abort"):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        conn.sleep(0.05)
        conn.close()
        return False
    elif path.startswith("/v1/sse-upstream-abort"):
        conn.send(SSE_HEAD + chunk(b"data: a\n\n") + chunk(b"data: b\n\n") + chunk(b"data: partial"))
        conn.sleep(0.05)
        conn.close()
        return False
    elif path.startswith("/v1/garbage"):
        conn.send(b"THIS IS NOT HTTP\r\n\r\n")
        conn.close()
        return False
    elif path.startswith("/slowhead/") or path.startswith("/v1/no-head"):
        conn.wait_peer_closed(10)
        return False
    elif path.startswith("/idle/"):
        conn.send(SSE_HEAD + chunk(b"data: first\n\n"))
        conn.wait_peer_closed(10)
        return False
    elif path.startswith("/total/"):
        conn.send(SSE_HEAD)
        for _ in range(50):  # 50 x 100 ms bounds the stream at 5 s; `total 1s` cuts it
            conn.send(chunk(b"data: t\n\n"))
            if conn.wait_peer_closed(0.1):
                return False
        conn.send(LAST_CHUNK)
    else:
        respond(conn, 200, path.encode(), [("Content-Type", "text/plain")])


def _flood_handler(conn, req):
    total = 16 * 1024 * 1024
    conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n".encode())
    piece = b"W" * 65536
    try:
        for _ in range(total // len(piece)):
            conn.send(piece, stall_timeout=20)
    except (PeerClosed, SendStalled, OriginStopping):
        pass
    return False


def test_mixed_outcomes_one_exact_record_each(stack, tmp_path):
    log = tmp_path / "completions.jsonl"
    origin = stack.origin(_mixed_handler)
    flood = stack.origin(_flood_handler, sndbuf=65536)
    hole = BlackHole()
    dead_port = unused_port()
    try:
        assert hole.full, "could not fill the listener's accept queue; SYNs are not being dropped"
        sl = stack.routes_proxy(
            {"main": f"http://127.0.0.1:{origin.port}", "dead": f"http://127.0.0.1:{dead_port}",
             "hole": f"http://127.0.0.1:{hole.port}", "flood": f"http://127.0.0.1:{flood.port}"},
            [("/v1/", "main", {}), ("/dead/", "dead", {}), ("/hole/", "hole", {}), ("/flood/", "flood", {}),
             ("/slowhead/", "main", {"upstream_first_byte": "500ms"}),
             ("/idle/", "main", {"upstream_idle": "500ms"}),
             ("/total/", "main", {"total": "1s"})],
            workers=2, timeouts={"client_write": "1s", "upstream_connect": "500ms"},
            limits={"max_request_body": "1k"}, log=log_config(log))
        assert sl.ready["completion_log"] == [str(log)]
        port = sl.port
        main_up, flood_up = f"127.0.0.1:{origin.port}", f"127.0.0.1:{flood.port}"

        def exp(path, end, status, **kw):
            return {"path": path, "end": end, "status": status, **kw}

        def sse_complete():
            raw = request_bytes("GET", "/v1/sse-complete?api_key=secret", [("traceparent", TRACEPARENT),
                                                                          ("X-Request-Id", "rid-sse-complete")])
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 200 and r.complete and r.body == b"".join(MIXED_EVENTS)
            return exp("/v1/sse-complete", "complete", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=MIXED_EVENT_COUNT,
                       traceparent=TRACEPARENT, request_id="rid-sse-complete", upstream=main_up, ttfb=True)

        def json_complete():
            body = b'{"model": "m-request", "stream": false, "messages": []}'
            raw = request_bytes("POST", "/v1/json-complete", [("Content-Type", "application/json")], body)
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response("POST")
            assert r.status == 200 and r.complete and r.body == JSON_BODY
            return exp("/v1/json-complete", "complete", 200, request_bytes=len(raw), method="POST",
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, upstream=main_up,
                       model="m-request", ttfb=True)

        def client_abort():
            raw = request_bytes("GET", "/v1/client-abort")
            want = chunk(b"data: first\n\n")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_head()
                while not bytes(c.buf).endswith(want):
                    assert c.recv_some(5), "stream ended early"
                received = len(r.head_raw) + len(c.buf)
            # The origin learns the client left when sluice closes the upstream.
            origin.wait_for(lambda: any(h.target == "/v1/client-abort" and origin.connections[h.conn_id].closed
                                        for h in origin.heads), 5, "the client-abort upstream to close")
            return exp("/v1/client-abort", "client_abort", 200, request_bytes=len(raw), response_bytes=received,
                       sse_events=1, upstream=main_up, ttfb=True)

        def client_abort_before_head():
            raw = request_bytes("GET", "/v1/no-head")
            with RawConn(port) as c:
                c.send(raw)
                origin.wait_for(lambda: any(h.target == "/v1/no-head" for h in origin.heads), 5, "the request")
            # No status was sent: status 0.
            return exp("/v1/no-head", "client_abort", 0, request_bytes=len(raw), response_bytes=0, sse_events=0,
                       upstream=main_up, ttfb=False)

        def upstream_abort():
            raw = request_bytes("GET", "/v1/upstream-abort")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 200 and not r.complete and r.body == b"x" * 100
            return exp("/v1/upstream-abort", "upstream_abort", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, upstream=main_up, ttfb=True)

        def sse_upstream_abort():
            raw = request_bytes("GET", "/v1/sse-upstream-abort")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 200 and not r.complete
            # Two whole events; the third never got its blank line and is not an event.
            return exp("/v1/sse-upstream-abort", "upstream_abort", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=2, upstream=main_up, ttfb=True)

        def simple(path, status, end, upstream, method="GET", headers=(), body=b"", ttfb=False, route=True):
            def run():
                raw = request_bytes(method, path, headers, body)
                with RawConn(port) as c:
                    c.send(raw)
                    r = c.read_response(method, timeout=10)
                assert r.status == status, f"{path}: {r.status_line} {r.body[:200]!r}"
                return exp(path, end, status, request_bytes=len(raw), response_bytes=len(r.head_raw) + len(r.raw_body),
                           sse_events=0, upstream=upstream, ttfb=ttfb, method=method)
            return run

        def idle_timeout():
            raw = request_bytes("GET", "/idle/x")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response(timeout=10)
            assert r.status == 200 and not r.complete and r.body == b"data: first\n\n"
            return exp("/idle/x", "timeout_idle", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=1, upstream=main_up, ttfb=True)

        def total_timeout():
            raw = request_bytes("GET", "/total/x")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response(timeout=10)
            assert r.status == 200 and not r.complete
            got = r.body.count(b"data: t\n\n")
            assert 5 <= got <= 15, f"{got} events before `total 1s` cut the stream"
            return exp("/total/x", "timeout_total", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=(got, got + 1),
                       upstream=main_up, ttfb=True)

        def client_write_timeout():
            raw = request_bytes("GET", "/flood/x")
            c = RawConn(port, rcvbuf=4096, timeout=15)
            try:
                c.send(raw)
                # The client never reads; after `client_write 1s` sluice gives up on it.
                flood.wait_for(lambda: flood.connections and flood.connections[0].closed, 15,
                               "sluice to close the upstream of a stalled client")
                received = len(c.read_until_close(10))
            finally:
                c.close()
            return exp("/flood/x", "client_write_timeout", 200, request_bytes=len(raw),
                       response_bytes=("at least", received), sse_events=0, upstream=flood_up, ttfb=True)

        def malformed():
            raw = b"GET /v1/malformed HTTP/1.1\r\nHost: sluice.test\r\nX Bad: v\r\n\r\n"
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 400
            return exp(None, "rejected_bad_request", 400, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, upstream=None, ttfb=False)

        def too_large():
            body = b"b" * 5000
            raw = request_bytes("POST", "/v1/too-large", [("Content-Type", "text/plain")], body)
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response("POST")
            assert r.status == 413
            return exp("/v1/too-large", "rejected_bad_request", 413, method="POST",
                       request_bytes=("between", len(raw) - len(body), len(raw)),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, upstream=None, ttfb=False)

        def bad_version():
            raw = b"GET /v1/h2 HTTP/2.0\r\nHost: sluice.test\r\n\r\n"
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 505
            return exp(None, "rejected_bad_request", 505, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, upstream=None, ttfb=False)

        dead_up, hole_up = f"127.0.0.1:{dead_port}", f"127.0.0.1:{hole.port}"
        jobs = [sse_complete, json_complete, client_abort, client_abort_before_head, upstream_abort, sse_upstream_abort,
                simple("/v1/garbage", 502, "upstream_error", main_up),
                simple("/dead/x", 502, "upstream_error", dead_up),
                simple("/hole/x", 504, "timeout_connect", hole_up),
                simple("/slowhead/x", 504, "timeout_first_byte", main_up),
                idle_timeout, total_timeout, client_write_timeout,
                simple("/nothing/here", 404, "rejected_bad_request", None),
                malformed, too_large, bad_version]
        # The slow ones (timeouts) run side by side; each exchange is on its own connection.
        with ThreadPoolExecutor(len(jobs)) as pool:
            expected = [f.result() for f in [pool.submit(j) for j in jobs]]
    finally:
        hole.close()

    records = wait_records(log, len(expected), timeout=10)
    summary = "\n".join(json.dumps(r) for r in records)
    assert len(records) == len(expected), f"{len(records)} records for {len(expected)} exchanges:\n{summary}"
    by_path = {}
    for rec in records:
        check_shape(rec)
        by_path.setdefault(rec["path"], []).append(rec)
    # Every mismatch is collected, so one run shows them all.
    problems = []

    def check(ok: bool, what: str, e: dict, rec: dict) -> None:
        if not ok:
            problems.append(f"{e['path'] or e['status']} ({e['end']}): {what}; record {json.dumps(rec)}")

    for e in expected:
        if e["path"] is not None:
            found = by_path.get(e["path"], [])
        else:  # a request whose head sluice could not parse: find it by its status
            found = [r for r in records if r["status"] == e["status"] and r["end"] == e["end"]]
        if len(found) != 1:
            problems.append(f"{len(found)} records for {e}")
            continue
        rec = found[0]
        check(rec["end"] == e["end"], f"end {rec['end']!r}, expected {e['end']!r}", e, rec)
        check(rec["status"] == e["status"], f"status {rec['status']}, expected {e['status']}", e, rec)
        if e["path"] is not None:
            check(rec["method"] == e.get("method", "GET"), f"method {rec['method']!r}", e, rec)
        check(rec["upstream"] == e["upstream"], f"upstream {rec['upstream']!r}, expected {e['upstream']!r}", e, rec)
        rb = e["request_bytes"]
        if isinstance(rb, tuple):
            check(rb[1] <= rec["request_bytes"] <= rb[2],
                  f"request_bytes {rec['request_bytes']}, expected {rb[1]}..{rb[2]}", e, rec)
        else:
            check(rec["request_bytes"] == rb, f"request_bytes {rec['request_bytes']}, client sent {rb}", e, rec)
        sb = e["response_bytes"]
        if isinstance(sb, tuple):
            check(rec["response_bytes"] >= sb[1],
                  f"response_bytes {rec['response_bytes']}, client received {sb[1]}", e, rec)
        else:
            check(rec["response_bytes"] == sb, f"response_bytes {rec['response_bytes']}, client received {sb}", e, rec)
        ev = e["sse_events"]
        if isinstance(ev, tuple):
            check(ev[0] <= rec["sse_events"] <= ev[1], f"sse_events {rec['sse_events']}, expected {ev}", e, rec)
        else:
            check(rec["sse_events"] == ev, f"sse_events {rec['sse_events']}, expected {ev}", e, rec)
        check((rec["ttfb_ms"] is not None) == e["ttfb"], f"ttfb_ms {rec['ttfb_ms']}", e, rec)
        for key in ("traceparent", "request_id", "model"):
            if key in e:
                check(rec[key] == e[key], f"{key} {rec[key]!r}, expected {e[key]!r}", e, rec)
        check(rec["usage"] is None, "usage should be null", e, rec)
        if rec["end"] == "complete":
            check(rec["error"] is None, "error on a complete exchange", e, rec)
        if e["path"] == "/nothing/here":
            check(rec["route"] is None, "route of an unrouted request", e, rec)
        elif e["upstream"] is not None:
            check(rec["route"] == "/" + e["path"].split("/")[1] + "/", f"route {rec['route']!r}", e, rec)
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems)
    # The query string is not logged by default (it may carry keys).
    assert "api_key" not in log.read_text()
    assert {r["worker"] for r in records} <= {0, 1}


# --------------------------------------------------------------------------------------------
# 2. TTFT, TTFB, longest gap and duration against the origin's own clock
# --------------------------------------------------------------------------------------------

def test_ttft_ttfb_and_gaps_match_the_origin_clock(stack, tmp_path):
    """The head goes out at once, a keep-alive comment at 200 ms (not a data event), the first
    data event at 500 ms, then events after 100 ms and 300 ms. The origin and sluice share the
    host's monotonic clock, so the origin's timestamps are the truth (within 20 ms)."""
    log = tmp_path / "c.jsonl"
    truth = {}

    def handler(conn, req):
        t_head = conn.send(SSE_HEAD)
        conn.sleep(0.2)
        conn.send(chunk(b": keep-alive\n\n"))
        conn.sleep(0.3)
        t_first = conn.send(chunk(b"event: delta\ndata: {\"i\": 1}\n\n"))
        conn.sleep(0.1)
        t_second = conn.send(chunk(b"data: {\"i\": 2}\n\n"))
        conn.sleep(0.3)
        t_third = conn.send(chunk(b"data: {\"i\": 3}\n\n"))
        t_end = conn.send(LAST_CHUNK)
        truth.update(head_at=req.head_at, t_head=t_head, t_first=t_first, t_second=t_second,
                     t_third=t_third, t_end=t_end)

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], log=log_config(log))
    t0 = time.monotonic()
    r = get(sl.port, "/v1/chat/completions")
    t_done = time.monotonic()
    assert r.status == 200 and r.complete
    rec, = wait_records(log, 1)
    check_shape(rec)
    ttft_true = (truth["t_first"] - truth["head_at"]) * 1000
    ttfb_true = (truth["t_head"] - truth["head_at"]) * 1000
    gap_true = (truth["t_third"] - truth["t_second"]) * 1000
    print(f"ttft {rec['ttft_ms']} (truth {ttft_true:.1f}), ttfb {rec['ttfb_ms']} (truth {ttfb_true:.1f}), "
          f"max_gap {rec['max_gap_ms']} (truth {gap_true:.1f}), duration {rec['duration_ms']}")
    assert rec["end"] == "complete" and rec["sse_events"] == 3, rec
    assert abs(rec["ttft_ms"] - ttft_true) <= 20, f"ttft_ms {rec['ttft_ms']} vs truth {ttft_true:.1f}"
    assert abs(rec["ttfb_ms"] - ttfb_true) <= 20 and rec["ttfb_ms"] < 50, f"ttfb_ms {rec['ttfb_ms']}"
    # Between two events only: the 500 ms before the first event is TTFT, not a gap.
    assert abs(rec["max_gap_ms"] - gap_true) <= 20, f"max_gap_ms {rec['max_gap_ms']} vs truth {gap_true:.1f}"
    low = (truth["t_end"] - truth["head_at"]) * 1000
    high = (t_done - t0) * 1000
    assert low - 20 <= rec["duration_ms"] <= high + 20, \
        f"duration_ms {rec['duration_ms']} not in [{low:.1f}, {high:.1f}]"


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
# 4. A blocked sink never slows a stream; drops are counted and reported
# --------------------------------------------------------------------------------------------

FLUSH_EVENTS = 5
FLUSH_GAP = 0.3


def _flush_events():
    return [f"id: {i}\nevent: tick\ndata: {{\"n\": {i}, \"pad\": \"{'x' * (i * 7)}\"}}\n\n".encode()
            for i in range(FLUSH_EVENTS)]


class FlushProbe:
    """The flush measurement of test_flush.py, as an origin route plus a client check."""

    def __init__(self):
        self.events = _flush_events()
        self.write_times: list[float] = []

    def serve(self, conn) -> None:
        self.write_times = []
        conn.send(SSE_HEAD)
        for i, ev in enumerate(self.events):
            if i:
                conn.sleep(FLUSH_GAP)
            self.write_times.append(conn.send(chunk(ev)))
        conn.send(LAST_CHUNK)

    def check(self, port: int) -> list[float]:
        """Each event reaches the client before the next is written; median added delay < 20 ms."""
        events = self.events
        with RawConn(port) as c:
            c.send(request_bytes("GET", "/flush", [("Accept", "text/event-stream")]))
            resp = c.read_head()
            assert resp.status == 200
            dec = ChunkedDecoder()
            dec.feed(bytes(c.buf))
            c.buf.clear()
            got_at: list[float] = []
            bounds = [sum(len(e) for e in events[: i + 1]) for i in range(len(events))]
            now = time.monotonic()
            while True:
                while len(got_at) < len(events) and len(dec.data) >= bounds[len(got_at)]:
                    got_at.append(now)
                if len(got_at) == len(events):
                    break
                assert not dec.done, "stream ended before all events arrived"
                assert c.recv_some(5.0), "sluice closed the stream early"
                now = time.monotonic()
                dec.feed(bytes(c.buf))
                c.buf.clear()
            while not dec.done:
                assert c.recv_some(5.0), "sluice closed the stream before the terminator"
                dec.feed(bytes(c.buf))
                c.buf.clear()
            assert bytes(dec.data) == b"".join(events)
        delays = [g - w for g, w in zip(got_at, self.write_times)]
        for i in range(1, len(events)):
            assert got_at[i - 1] < self.write_times[i], f"event {i - 1} held back until event {i} was written: {delays}"
        assert max(delays) < 0.060, f"per-event added delay (s): {delays}"
        assert statistics.median(delays) < 0.020, f"per-event added delay (s): {delays}"
        return delays


def _bulk(port: int, n: int, conns: int = 4) -> None:
    """n quick requests over `conns` keep-alive connections (one record each)."""
    def run(k):
        with RawConn(port) as c:
            for i in range(k, n, conns):
                c.send(request_bytes("GET", f"/bulk/{i}"))
                r = c.read_response()
                assert r.status == 200, r.status_line
    with ThreadPoolExecutor(conns) as pool:
        for f in [pool.submit(run, k) for k in range(conns)]:
            f.result()


def _metric(sl, name: str) -> float:
    status, _, text = sl.scrape()
    assert status == 200
    for ln in text.splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            return float(ln.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _probe_handler(probe: FlushProbe):
    def handler(conn, req):
        if req.target == "/flush":
            probe.serve(conn)
        else:
            respond(conn, 200, b"ok", [("Content-Type", "text/plain")])
    return handler


#: Enough exchanges to overflow `queue 16` behind a blocked sink: besides the ring's 16, the
#: writer holds back one batch (what the ring held when it last drained, so up to 16 more).
OVERFLOW_EXCHANGES = 400


def _paced(port: int, n: int) -> None:
    """n requests in bursts of 8 with a pause, so the writer (draining every ~20 ms) keeps up
    with a 16-record ring: nothing is dropped unless the sink itself stops taking records."""
    for start in range(0, n, 8):
        _bulk(port, min(8, n - start), conns=1)
        time.sleep(0.03)


def test_fifo_nobody_reads_never_delays_streams_and_drops_are_counted(stack, tmp_path):
    fifo = tmp_path / "completions.fifo"
    os.mkfifo(fifo)
    probe = FlushProbe()
    origin = stack.origin(_probe_handler(probe))
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=1,
                            log=log_config(fifo, queue=16), admin="127.0.0.1:0")
    before = probe.check(sl.port)
    _bulk(sl.port, OVERFLOW_EXCHANGES)
    after = probe.check(sl.port)
    print("added delay per event (ms) before / after the queue overflowed:",
          [round(d * 1000, 2) for d in before], [round(d * 1000, 2) for d in after])
    warning = sl.wait_stderr(lambda o: o.get("level") == "warn" and "dropped" in o.get("msg", ""), 3,
                             "warning about dropped records")
    assert warning.get("dropped_total", 1) > 0, warning
    dropped = _metric(sl, "sluice_log_records_dropped_total")
    assert dropped > 0, "sluice_log_records_dropped_total is 0 although the sink was blocked"
    assert _metric(sl, "sluice_log_records_written_total") == 0
    exchanges = OVERFLOW_EXCHANGES + 2

    # A reader turns up: the writer opens the FIFO (it keeps retrying) and delivers everything
    # it did not drop, as whole JSON lines.
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    data = bytearray()
    try:
        deadline = time.monotonic() + 10
        while data.count(b"\n") < exchanges - dropped and time.monotonic() < deadline:
            try:
                piece = os.read(fd, 1 << 20)
            except BlockingIOError:
                piece = None
            if not piece:
                time.sleep(0.02)
                continue
            data += piece
    finally:
        os.close(fd)
    lines = bytes(data).split(b"\n")
    print(f"{exchanges} exchanges, {dropped:.0f} dropped, {len(lines) - 1} delivered once a reader came")
    assert lines[-1] == b"", "the FIFO reader got half a line"
    recs = [json.loads(x) for x in lines[:-1]]
    assert len(recs) == exchanges - dropped, f"{len(recs)} records delivered, {exchanges} exchanges, {dropped} dropped"
    assert len({r["request_id"] for r in recs}) == len(recs)
    assert _metric(sl, "sluice_log_records_written_total") == len(recs)


def test_stdout_pipe_nobody_reads_never_delays_streams_and_shutdown_is_bounded(stack, tmp_path):
    probe = FlushProbe()
    origin = stack.origin(_probe_handler(probe))
    cfg = write_routes_config(tmp_path / "stdout.conf", upstreams={"o": f"http://127.0.0.1:{origin.port}"},
                              routes=[("/", "o", {})], workers=1, log={"stdout": "on", "queue": 16},
                              admin="127.0.0.1:0")
    # Not from `stack`: this test stops sluice itself (the fixture counts an exit as a crash).
    sl = Sluice(["--config", str(cfg)], drain_stdout=False)
    try:
        assert sl.ready["completion_log"] == ["stdout"]
        # Fill the 64 KiB pipe (a record is about 500 bytes) at a pace the writer would keep up
        # with, so that what stops the records is the pipe.
        _paced(sl.port, 200)
        written = _metric(sl, "sluice_log_records_written_total")
        assert written < 200, f"the stdout pipe took all {written} records: it is not blocked"
        before = probe.check(sl.port)
        sl.wait_stderr(lambda o: o.get("msg") == "completion log sink not accepting writes", 3,
                       "a warning about the blocked sink")
        _bulk(sl.port, OVERFLOW_EXCHANGES)
        after = probe.check(sl.port)
        print("added delay per event (ms) before / after the queue overflowed:",
              [round(d * 1000, 2) for d in before], [round(d * 1000, 2) for d in after])
        sl.wait_stderr(lambda o: o.get("level") == "warn" and "dropped" in o.get("msg", ""), 3,
                       "warning about dropped records")
        assert _metric(sl, "sluice_log_records_dropped_total") > 0
        assert _metric(sl, "sluice_log_records_written_total") == written, "records got through a full pipe"
        # Shutdown with a sink that never drains: bounded (the flush gives up), exit 0, not SIGKILL.
        t0 = time.monotonic()
        os.kill(sl.pid, signal.SIGTERM)
        rc = sl.wait_exit(4.5)
        elapsed = time.monotonic() - t0
        print(f"exit {rc} {elapsed:.2f}s after SIGTERM")
        assert rc == 0, f"exit {rc} {elapsed:.1f}s after SIGTERM with a blocked stdout sink"
        sl.wait_stderr(lambda o: o.get("msg") == "completion log not flushed at shutdown", 2,
                       "the not-flushed warning")
        # What reached the pipe is whole JSON lines (writes to a pipe are cut after a newline).
        data = sl.proc.stdout.read()
        assert data.endswith(b"\n"), data[-200:]
        lines = data.split(b"\n")[:-1]
        assert len(lines) == written
        for ln in lines:
            assert isinstance(json.loads(ln), dict)
    finally:
        sl.stop()
    sl.log_objects()


# --------------------------------------------------------------------------------------------
# 5. SIGHUP rotation while streams run
# --------------------------------------------------------------------------------------------

def test_sighup_rotation_loses_and_duplicates_nothing(stack, tmp_path):
    log = tmp_path / "completions.jsonl"
    rotated = tmp_path / "completions.jsonl.1"
    release = threading.Event()

    def handler(conn, req):
        if req.target.startswith("/slow/"):
            conn.send(SSE_HEAD + chunk(b"data: {\"part\": 1}\n\n"))
            # Hold the stream open across the rotation (bounded).
            for _ in range(200):
                if release.is_set():
                    break
                conn.send(chunk(b": keep-alive\n\n"))
                conn.sleep(0.05)
            conn.send(chunk(b"data: {\"part\": 2}\n\n") + LAST_CHUNK)
        else:
            respond(conn, 200, b"ok", [("Content-Type", "text/plain")])

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=2,
                            log=log_config(log))
    ids: dict[str, str] = {}  # request id -> phase

    def one(path: str, phase: str) -> None:
        rid = f"{phase}-{path.strip('/').replace('/', '-')}"
        r = get(sl.port, path, [("X-Request-Id", rid)])
        assert r.status == 200 and r.complete, r.status_line
        ids[rid] = phase

    for i in range(20):
        one(f"/before/{i}", "before")
    wait_records(log, 20)

    # Several streams in flight, plus a client that keeps making quick requests throughout.
    slow_results = []

    def slow(i: int) -> None:
        rid = f"slow-{i}"
        with RawConn(sl.port, timeout=15) as c:
            c.send(request_bytes("GET", f"/slow/{i}", [("X-Request-Id", rid)]))
            r = c.read_response(timeout=15)
        assert r.status == 200 and r.complete and b"\"part\": 2" in r.body
        slow_results.append(rid)

    stop_busy = threading.Event()
    busy_ids: list[str] = []

    def busy() -> None:
        for i in range(2000):  # bounded; stopped well before
            if stop_busy.is_set():
                return
            rid = f"busy-{i}"
            r = get(sl.port, f"/busy/{i}", [("X-Request-Id", rid)])
            assert r.status == 200
            busy_ids.append(rid)

    with ThreadPoolExecutor(8) as pool:
        slow_futs = [pool.submit(slow, i) for i in range(6)]
        busy_fut = pool.submit(busy)
        origin.wait_for(lambda: sum(h.target.startswith("/slow/") for h in origin.heads) == 6, 5,
                        "6 streams to reach the origin")
        time.sleep(0.2)
        os.rename(log, rotated)
        os.kill(sl.pid, signal.SIGHUP)
        # The writer reopens the path (creating a new file) between two batches; from then on
        # every record goes to the new file.
        deadline = time.monotonic() + 5
        while not log.exists():
            assert time.monotonic() < deadline, "no new log file 5 s after SIGHUP"
            time.sleep(0.01)
        time.sleep(0.1)
        release.set()
        for f in slow_futs:
            f.result()
        stop_busy.set()
        busy_fut.result()
    for i in range(20):
        one(f"/after/{i}", "after")

    expected = set(ids) | set(slow_results) | set(busy_ids)
    assert len(busy_ids) > 0
    recs = wait_records([rotated, log], len(expected), timeout=10)
    old, new = read_jsonl(rotated), read_jsonl(log)
    seen = [r["request_id"] for r in old + new]
    dups = {x for x in seen if seen.count(x) > 1}
    assert not dups, f"records written twice across the rotation: {sorted(dups)}"
    assert set(seen) == expected, (f"missing {sorted(expected - set(seen))}, "
                                   f"unexpected {sorted(set(seen) - expected)}")
    assert len(recs) == len(expected)
    new_ids = {r["request_id"] for r in new}
    old_ids = {r["request_id"] for r in old}
    assert {x for x in expected if x.startswith("before-")} <= old_ids
    # Finished after the new file existed: in the new file.
    assert set(slow_results) <= new_ids, \
        f"streams that ended after the rotation are in the old file: {set(slow_results) - new_ids}"
    assert {x for x in expected if x.startswith("after-")} <= new_ids
    sl.wait_stderr(lambda o: "SIGHUP" in o.get("msg", ""), 2, "a SIGHUP line")
    print(f"{len(old)} records in the rotated file, {len(new)} in the new one ({len(busy_ids)} busy requests)")


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
# Flags, request-body scan limit, shutdown flush
# --------------------------------------------------------------------------------------------

def test_log_file_and_admin_flags(stack, tmp_path):
    log = tmp_path / "flag.jsonl"
    origin = stack.origin()
    sl = stack.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin.port}",
                       "--workers", "1", "--log-file", str(log), "--admin", "127.0.0.1:0"])
    assert sl.ready["completion_log"] == [str(log)], "stdout is off by default once a file is set"
    assert sl.ready["admin"].startswith("127.0.0.1:") and sl.admin_port not in (0, sl.port)
    r = get(sl.port, "/flagged")
    assert r.status == 200
    rec, = wait_records(log, 1)
    assert rec["path"] == "/flagged" and rec["route"] == "/" and rec["end"] == "complete"
    assert bytes(sl.stdout) == b"", "records went to stdout although only a file was asked for"


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


def test_shutdown_flushes_the_queue(stack, tmp_path):
    """SIGTERM right after a burst: the records still queued are written before exit."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    cfg = write_routes_config(tmp_path / "flush.conf", upstreams={"o": f"http://127.0.0.1:{origin.port}"},
                              routes=[("/", "o", {})], workers=2, log=log_config(log))
    sl = Sluice(["--config", str(cfg)])  # stopped by the test, so not from `stack`
    try:
        _bulk(sl.port, 200)
        os.kill(sl.pid, signal.SIGTERM)
        on_disk = len(read_jsonl(log))
        rc = sl.wait_exit(5)
        assert rc == 0, f"exit {rc} after SIGTERM"
    finally:
        sl.stop()
    recs = read_jsonl(log)
    print(f"{on_disk} records on disk at SIGTERM, {len(recs)} after exit")
    assert len(recs) == 200, f"{len(recs)} of 200 records written before exit ({on_disk} at SIGTERM)"
    assert sorted(int(r["path"].rsplit("/", 1)[1]) for r in recs) == list(range(200))
    sl.log_objects()
