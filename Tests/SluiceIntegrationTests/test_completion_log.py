"""10. The completion log: one exact record per exchange, and its measured times (TTFT, TTFB,
longest gap, duration). Usage, model and capture are in test_completion_log_usage.py; blocked
sinks, SIGHUP rotation, flags and the shutdown flush in test_completion_log_sinks.py."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from completion_log_common import check_shape
from origin import (LAST_CHUNK, SSE_HEAD, BlackHole, OriginStopping, PeerClosed, SendStalled, chunk, respond,
                    unused_port)
from rawhttp import RawConn, get, request_bytes
from sluice_proc import log_config, wait_records

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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
                       traceparent=TRACEPARENT, request_id="rid-sse-complete", server=main_up, ttfb=True)

        def json_complete():
            body = b'{"model": "m-request", "stream": false, "messages": []}'
            raw = request_bytes("POST", "/v1/json-complete", [("Content-Type", "application/json")], body)
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response("POST")
            assert r.status == 200 and r.complete and r.body == JSON_BODY
            return exp("/v1/json-complete", "complete", 200, request_bytes=len(raw), method="POST",
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, server=main_up,
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
                       sse_events=1, server=main_up, ttfb=True)

        def client_abort_before_head():
            raw = request_bytes("GET", "/v1/no-head")
            with RawConn(port) as c:
                c.send(raw)
                origin.wait_for(lambda: any(h.target == "/v1/no-head" for h in origin.heads), 5, "the request")
            # No status was sent: status 0.
            return exp("/v1/no-head", "client_abort", 0, request_bytes=len(raw), response_bytes=0, sse_events=0,
                       server=main_up, ttfb=False)

        def upstream_abort():
            raw = request_bytes("GET", "/v1/upstream-abort")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 200 and not r.complete and r.body == b"x" * 100
            return exp("/v1/upstream-abort", "upstream_abort", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, server=main_up, ttfb=True)

        def sse_upstream_abort():
            raw = request_bytes("GET", "/v1/sse-upstream-abort")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 200 and not r.complete
            # Two whole events; the third never got its blank line and is not an event.
            return exp("/v1/sse-upstream-abort", "upstream_abort", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=2, server=main_up, ttfb=True)

        def simple(path, status, end, server, method="GET", headers=(), body=b"", ttfb=False, route=True):
            def run():
                raw = request_bytes(method, path, headers, body)
                with RawConn(port) as c:
                    c.send(raw)
                    r = c.read_response(method, timeout=10)
                assert r.status == status, f"{path}: {r.status_line} {r.body[:200]!r}"
                return exp(path, end, status, request_bytes=len(raw), response_bytes=len(r.head_raw) + len(r.raw_body),
                           sse_events=0, server=server, ttfb=ttfb, method=method)
            return run

        def idle_timeout():
            raw = request_bytes("GET", "/idle/x")
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response(timeout=10)
            assert r.status == 200 and not r.complete and r.body == b"data: first\n\n"
            return exp("/idle/x", "timeout_idle", 200, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=1, server=main_up, ttfb=True)

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
                       server=main_up, ttfb=True)

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
                       response_bytes=("at least", received), sse_events=0, server=flood_up, ttfb=True)

        def malformed():
            raw = b"GET /v1/malformed HTTP/1.1\r\nHost: sluice.test\r\nX Bad: v\r\n\r\n"
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 400
            return exp(None, "rejected_bad_request", 400, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, server=None, ttfb=False)

        def too_large():
            body = b"b" * 5000
            raw = request_bytes("POST", "/v1/too-large", [("Content-Type", "text/plain")], body)
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response("POST")
            assert r.status == 413
            return exp("/v1/too-large", "rejected_bad_request", 413, method="POST",
                       request_bytes=("between", len(raw) - len(body), len(raw)),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, server=None, ttfb=False)

        def bad_version():
            raw = b"GET /v1/h2 HTTP/2.0\r\nHost: sluice.test\r\n\r\n"
            with RawConn(port) as c:
                c.send(raw)
                r = c.read_response()
            assert r.status == 505
            return exp(None, "rejected_bad_request", 505, request_bytes=len(raw),
                       response_bytes=len(r.head_raw) + len(r.raw_body), sse_events=0, server=None, ttfb=False)

        dead_up, hole_up = f"127.0.0.1:{dead_port}", f"127.0.0.1:{hole.port}"
        upstream_names = {main_up: "main", dead_up: "dead", hole_up: "hole", flood_up: "flood"}
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
        check(rec["server"] == e["server"], f"server {rec['server']!r}, expected {e['server']!r}", e, rec)
        # `upstream` is the configured name, `tries` the servers contacted (one each here: a single server has no
        # other to retry on), `affinity` null without an `affinity` key.
        name = upstream_names.get(e["server"])
        check(rec["upstream"] == name, f"upstream {rec['upstream']!r}, expected {name!r}", e, rec)
        check(rec["tries"] == (0 if name is None else 1), f"tries {rec['tries']}", e, rec)
        check(rec["affinity"] is None, f"affinity {rec['affinity']!r}", e, rec)
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
        elif e["server"] is not None:
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
    ttfe_true = (truth["t_first"] - truth["head_at"]) * 1000
    ttfb_true = (truth["t_head"] - truth["head_at"]) * 1000
    gap_true = (truth["t_third"] - truth["t_second"]) * 1000
    print(f"ttfe {rec['ttfe_ms']} (truth {ttfe_true:.1f}), ttfb {rec['ttfb_ms']} (truth {ttfb_true:.1f}), "
          f"max_gap {rec['max_gap_ms']} (truth {gap_true:.1f}), duration {rec['duration_ms']}")
    assert rec["end"] == "complete" and rec["sse_events"] == 3, rec
    assert abs(rec["ttfe_ms"] - ttfe_true) <= 20, f"ttfe_ms {rec['ttfe_ms']} vs truth {ttfe_true:.1f}"
    # No event carried output (no content, delta or text), so there was no first token.
    assert rec["ttft_ms"] is None and rec["tpot_ms"] is None and rec["tokens_per_second"] is None, rec
    assert abs(rec["ttfb_ms"] - ttfb_true) <= 20 and rec["ttfb_ms"] < 50, f"ttfb_ms {rec['ttfb_ms']}"
    # Between two events only: the 500 ms before the first event is TTFE, not a gap.
    assert abs(rec["max_gap_ms"] - gap_true) <= 20, f"max_gap_ms {rec['max_gap_ms']} vs truth {gap_true:.1f}"
    low = (truth["t_end"] - truth["head_at"]) * 1000
    high = (t_done - t0) * 1000
    assert low - 20 <= rec["duration_ms"] <= high + 20, \
        f"duration_ms {rec['duration_ms']} not in [{low:.1f}, {high:.1f}]"


#: OpenAI-style: a role-only chunk with the head, content 300 ms later, three more tokens 100 ms apart, usage.
OPENAI_EVENTS = [b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
                 b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
                 b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n',
                 b'data: {"choices":[{"index":0,"delta":{"content":","}}]}\n\n',
                 b'data: {"choices":[{"index":0,"delta":{"content":" you"}}],'
                 b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\ndata: [DONE]\n\n']
#: Anthropic-style: message_start (and a content_block_start) with the head, the first content_block_delta later.
ANTHROPIC_EVENTS = [b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x",'
                    b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
                    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                    b'"content_block":{"type":"text","text":""}}\n\n',
                    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":"Hel"}}\n\n',
                    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":"lo"}}\n\n',
                    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":","}}\n\n',
                    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
                    b'"usage":{"output_tokens":4}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n']


def test_ttft_is_the_first_content_event_and_ttfe_the_first_event(stack, tmp_path):
    """Issue 14: the first event (a role-only chunk, `message_start`) arrives with the head, the first token
    300 ms later. ttfe_ms is TTFB; ttft_ms is the first content-bearing event; tokens_per_second and tpot_ms come
    from the reported completion tokens and the time from the first token to the end. A plain JSON body sent
    300 ms after its head has its first token at its first byte."""
    log = tmp_path / "c.jsonl"
    truth = {}

    def handler(conn, req):
        t = truth.setdefault(req.target, {"head_at": req.head_at})
        if req.target.startswith("/v1/json"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n")
            conn.sleep(0.3)
            t["first"] = conn.send(b"{")
            conn.sleep(0.1)
            t["end"] = conn.send(b"}")
            return
        events = OPENAI_EVENTS if req.target.startswith("/v1/chat") else ANTHROPIC_EVENTS
        t["t_head"] = conn.send(SSE_HEAD + chunk(events[0]))
        conn.sleep(0.3)
        t["first"] = conn.send(chunk(events[1]))
        for ev in events[2:]:
            conn.sleep(0.1)
            conn.send(chunk(ev))
        t["end"] = conn.send(LAST_CHUNK)

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], log=log_config(log))
    paths = ["/v1/chat/completions", "/v1/messages", "/v1/json"]
    for path in paths:
        r = get(sl.port, path)
        assert r.status == 200 and r.complete, path
    records = {rec["path"]: rec for rec in wait_records(log, len(paths))}
    for path in paths:
        rec, t = records[path], truth[path]
        check_shape(rec)
        first_true = (t["first"] - t["head_at"]) * 1000
        print(path, {k: rec[k] for k in ("ttfb_ms", "ttfe_ms", "ttft_ms", "tpot_ms", "tokens_per_second",
                                         "duration_ms")}, f"first token truth {first_true:.1f}")
        assert 300 <= rec["ttft_ms"] <= 300 + 60 and abs(rec["ttft_ms"] - first_true) <= 20, (path, rec)
        if path == "/v1/json":
            assert rec["ttfe_ms"] is None and rec["sse_events"] == 0, rec
            assert rec["tpot_ms"] is None and rec["tokens_per_second"] is None, "no usage reported"
            continue
        assert abs(rec["ttfe_ms"] - rec["ttfb_ms"]) <= 20 and rec["ttfe_ms"] < 60, (path, rec)
        assert rec["usage"]["completion_tokens"] == 4, rec
        # Three tokens after the first, 100 ms apart (then the end): tpot ≈ 100 ms, 4 tokens in ≈ 300 ms.
        generating = rec["duration_ms"] - rec["ttft_ms"]
        assert rec["tpot_ms"] == pytest.approx(generating / 3, abs=0.01), rec
        assert rec["tokens_per_second"] == pytest.approx(4000 / generating, rel=1e-3), rec
        assert 90 <= rec["tpot_ms"] <= 100 + 20, rec
        assert 4 / 0.36 <= rec["tokens_per_second"] <= 4 / 0.29, rec
