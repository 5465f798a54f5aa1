"""11. Rate limits: burst precision (also across workers), concurrency leases released on every
way an exchange ends, token budgets charged from reported usage, the openai SDK's RateLimitError
and Retry-After back-off, header keys never in clear, `key client` with trusted proxies, and an
upstream's own 429 passed through."""

from __future__ import annotations

import json
import math
import queue
import re
import threading
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from origin import respond, unused_port
from rawhttp import RawConn, get, request_bytes
from sluice_proc import Sluice, wait_records, write_routes_config

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
LAST_CHUNK = b"0\r\n\r\n"
FIRST_EVENT = b"data: first\n\n"
HEX16 = re.compile(r"[0-9a-f]{16}")


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def log_config(path) -> dict:
    return {"file": str(path), "stdout": "off"}


def auth(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}")]


# --------------------------------------------------------------------------------------------
# Reading the rate-limit fields
# --------------------------------------------------------------------------------------------

def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out, cur, quoted, esc = [], "", False, False
    for ch in text:
        if quoted:
            cur += ch
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur += ch
        elif ch == sep:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def sf_list(value: str) -> dict[str, dict[str, str]]:
    """A Structured Field list of `"name";k=v;...` items: {name: {k: v}} (quotes kept off names,
    string parameter values unquoted)."""
    items = {}
    for item in _split_outside_quotes(value, ","):
        parts = _split_outside_quotes(item, ";")
        name = parts[0]
        assert name.startswith('"') and name.endswith('"'), f"SF item name is not a string: {item!r}"
        params = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k] = v[1:-1] if v.startswith('"') else v
        items[name[1:-1]] = params
    return items


def go_duration(text: str) -> float:
    """`1h2m3.5s`, `6m0s`, `20ms`, `0s` (OpenAI's x-ratelimit-reset-*) in seconds."""
    m = re.fullmatch(r"(\d+)ms", text)
    if m:
        return int(m.group(1)) / 1000
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d+)?)s", text)
    assert m, f"not a Go duration: {text!r}"
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + float(m.group(3))


def one(r, name: str) -> str:
    """The single value of field `name`; fails when it is absent or repeated."""
    vs = r.values(name)
    assert len(vs) == 1, f"expected exactly one {name} field, got {vs}; head:\n{r.head_raw.decode('latin-1')}"
    return vs[0]


def rejection_body(rule: str, kind: str, limit_text: str, retry_after: int) -> bytes:
    """The exact 429 body in OpenAI's error shape; `limit_text` is e.g. `5 per 1s`."""
    return json.dumps({"error": {
        "message": f"Rate limit reached for {rule} ({kind}): {limit_text}. Retry after {retry_after} s.",
        "type": "rate_limit_exceeded", "param": None, "code": "rate_limit_exceeded"}},
        separators=(",", ":")).encode()


def check_429(r, rule: str, kind: str, limit_text: str, retry_min: int = 1, retry_max: int = 1) -> int:
    """Everything a refusal must carry; returns Retry-After."""
    head = r.head_raw.decode("latin-1")
    assert r.status == 429, f"expected 429, got {r.status_line}; body {r.body[:200]!r}"
    assert r.complete, "429 body incomplete"
    ra_text = one(r, "Retry-After")
    assert re.fullmatch(r"[0-9]+", ra_text), f"Retry-After must be whole seconds: {ra_text!r}"
    ra = int(ra_text)
    assert retry_min <= ra <= retry_max, f"Retry-After {ra} not in [{retry_min}, {retry_max}]\n{head}"
    assert one(r, "Content-Type").split(";")[0].strip().lower() == "application/json", head
    want = rejection_body(rule, kind, limit_text, ra)
    assert r.body == want, f"429 body\n got  {r.body!r}\n want {want!r}"
    policy = sf_list(one(r, "RateLimit-Policy"))
    state = sf_list(one(r, "RateLimit"))
    assert f"{rule}-{kind}" in policy and f"{rule}-{kind}" in state, f"no {rule}-{kind} item\n{head}"
    if kind in ("requests", "tokens"):
        assert int(one(r, f"x-ratelimit-remaining-{kind}")) == 0, head
        assert state[f"{rule}-{kind}"]["r"] == "0", head
        go_duration(one(r, f"x-ratelimit-reset-{kind}"))
    return ra


class Metrics:
    def __init__(self, sl):
        status, _, text = sl.scrape()
        assert status == 200
        self.samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, f"no series {name}{labels} in /metrics"
        return self.samples[key]


def burst(port: int, n: int, prefix: str, headers) -> list:
    """n requests at once on n distinct connections, all connected before the first byte is sent;
    returns the responses in order (target `{prefix}{i}`)."""
    conns = [RawConn(port) for _ in range(n)]
    try:
        raws = [request_bytes("GET", f"{prefix}{i}", headers) for i in range(n)]
        for c, raw in zip(conns, raws):
            c.send(raw)
        return [c.read_response() for c in conns]
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------------------------
# 1. Burst precision: 5/s burst 5, 20 at once → exactly 5 forwarded; 1 s later 5 more
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 4])
def test_burst_precision(stack, tmp_path, workers):
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"limit": "per_user"})],
                            rate_limits={"per_user": {"key": "header authorization", "requests": "5/s burst 5"}},
                            workers=workers, log=log_config(log), admin="127.0.0.1:0")
    hdr = auth("sk-burst-user")
    assert Metrics(sl).get("sluice_rate_limit_rejections_total", rule="per_user") == 0

    rs = burst(sl.port, 20, "/b1/", hdr)
    t_done = time.monotonic()
    ok = [i for i, r in enumerate(rs) if r.status == 200]
    refused = [i for i, r in enumerate(rs) if r.status == 429]
    assert len(ok) == 5 and len(refused) == 15, \
        f"20 at once with 5/s burst 5: {len(ok)} admitted, {len(refused)} refused, others " \
        f"{[r.status for r in rs if r.status not in (200, 429)]}"
    time.sleep(0.1)  # anything else on its way to the origin would show up
    assert sorted(h.target for h in origin.heads) == sorted(f"/b1/{i}" for i in ok), \
        "the origin must see exactly the admitted requests"
    # Each admission took one unit from one shared bucket: remaining 4, 3, 2, 1, 0, once each.
    remaining = sorted(int(one(rs[i], "x-ratelimit-remaining-requests")) for i in ok)
    assert remaining == [0, 1, 2, 3, 4], f"remaining-requests on the admitted responses: {remaining}"
    for i in ok:
        r = rs[i]
        assert r.body == f"/b1/{i}".encode()
        assert one(r, "x-ratelimit-limit-requests") == "5"
        assert 0 < go_duration(one(r, "x-ratelimit-reset-requests")) <= 1.0
        assert sf_list(one(r, "RateLimit-Policy"))["per_user-requests"] == {"q": "5", "w": "1"}
        assert sf_list(one(r, "RateLimit"))["per_user-requests"]["r"] == one(r, "x-ratelimit-remaining-requests")
        assert r.values("Retry-After") == []
    for i in refused:
        r = rs[i]
        check_429(r, "per_user", "requests", "5 per 1s", 1, 1)
        assert one(r, "x-ratelimit-limit-requests") == "5"
        assert 0 < go_duration(one(r, "x-ratelimit-reset-requests")) <= 1.0
        assert sf_list(one(r, "RateLimit-Policy"))["per_user-requests"] == {"q": "5", "w": "1"}
        assert sf_list(one(r, "RateLimit"))["per_user-requests"] == {"r": "0", "t": "1"}

    recs = wait_records(log, 20)
    assert len(recs) == 20, f"{len(recs)} records for 20 requests"
    allowed = [r for r in recs if r["rate_limit_decision"] == "allowed"]
    rejected = [r for r in recs if r["rate_limit_decision"] == "rejected"]
    assert len(allowed) == 5 and all(r["end"] == "complete" and r["status"] == 200 for r in allowed), allowed
    assert len(rejected) == 15, rejected
    assert all(r["end"] == "rejected_rate_limit" and r["status"] == 429 and r["upstream"] is None
               for r in rejected), rejected
    keys = {r["rate_limit_key"] for r in recs}
    assert len(keys) == 1 and HEX16.fullmatch(keys.pop()), [r["rate_limit_key"] for r in recs]
    if workers > 1:
        used = {r["worker"] for r in recs}
        assert len(used) > 1, f"all 20 connections landed on worker(s) {used}: nothing shared across loops"
    assert Metrics(sl).get("sluice_rate_limit_rejections_total", rule="per_user") == 15
    assert Metrics(sl).get("sluice_rate_limit_allowed_total", rule="per_user") == 5

    # One second later the bucket is full again (5), no more: 5 of 6 pass.
    time.sleep(max(0.0, t_done + 1.05 - time.monotonic()))
    rs2 = burst(sl.port, 6, "/b2/", hdr)
    ok2 = [i for i, r in enumerate(rs2) if r.status == 200]
    assert len(ok2) == 5, f"after 1.05 s, 6 at once: statuses {[r.status for r in rs2]} (want five 200, one 429)"
    for r in rs2:
        if r.status != 200:
            check_429(r, "per_user", "requests", "5 per 1s", 1, 1)
    time.sleep(0.1)
    assert sorted(h.target for h in origin.heads if h.target.startswith("/b2/")) == sorted(f"/b2/{i}" for i in ok2)
    assert len(origin.heads) == 10
    wait_records(log, 26)
    assert Metrics(sl).get("sluice_rate_limit_rejections_total", rule="per_user") == 16
    assert Metrics(sl).get("sluice_rate_limit_allowed_total", rule="per_user") == 10


# --------------------------------------------------------------------------------------------
# 2. Concurrency: 2 streams per key; a lease comes back however the exchange ends
# --------------------------------------------------------------------------------------------

class Streams:
    """An origin handler holding SSE streams open until the test says how each one ends.

    `/hold/NAME` and `/idle/NAME` and `/total/NAME`: head + one event, then wait for a command
    ("complete" or "abort") or for sluice to close the upstream. `/slow/NAME`: no response at all
    until sluice gives up."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ctl: dict[str, queue.Queue] = {}
        self.ended: dict[str, str] = {}

    def q(self, name: str) -> queue.Queue:
        with self.lock:
            return self.ctl.setdefault(name, queue.Queue())

    def tell(self, name: str, cmd: str) -> None:
        self.q(name).put(cmd)

    def handler(self, conn, req):
        name = req.target.rsplit("/", 1)[1]
        if req.target.startswith("/slow/"):
            conn.wait_peer_closed(10)
            self.ended[name] = "peer_closed"
            return False
        conn.send(SSE_HEAD + chunk(FIRST_EVENT))
        q = self.q(name)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                cmd = q.get_nowait()
            except queue.Empty:
                cmd = None
            if cmd == "complete":
                conn.send(chunk(b"data: last\n\n") + LAST_CHUNK)
                self.ended[name] = "complete"
                return None
            if cmd == "abort":  # upstream dies mid-body: an unterminated event, then FIN
                conn.send(chunk(b"data: part"))
                conn.sleep(0.05)
                conn.close()
                self.ended[name] = "aborted"
                return False
            if conn.wait_peer_closed(0.03):
                self.ended[name] = "peer_closed"
                return False
        self.ended[name] = "deadline"
        return False


def test_concurrency_leases_released_on_every_end(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    streams = Streams()
    origin = stack.origin(streams.handler)
    up = {"o": f"http://127.0.0.1:{origin.port}", "dead": f"http://127.0.0.1:{unused_port()}"}
    lim = {"limit": "per_user"}
    sl = stack.routes_proxy(
        up, [("/hold/", "o", lim), ("/idle/", "o", {**lim, "upstream_idle": "500ms"}),
             ("/slow/", "o", {**lim, "upstream_first_byte": "300ms"}), ("/total/", "o", {**lim, "total": "300ms"}),
             ("/dead/", "dead", lim)],
        rate_limits={"per_user": {"key": "header authorization", "concurrent": 2}},
        timeouts={"upstream_connect": "1s"}, log=log_config(log))
    port = sl.port
    k1, k2 = auth("sk-conc-one"), auth("sk-conc-two")
    rejected_paths: list[str] = []

    def open_stream(path, hdr=k1):
        """(conn, head) with the first event received for 200; (None, response) for a 429."""
        c = RawConn(port)
        c.send(request_bytes("GET", path, hdr))
        r = c.read_head()
        if r.status != 200:
            body_len = int(r.header("content-length") or 0)
            deadline = time.monotonic() + 5
            while len(c.buf) < body_len and time.monotonic() < deadline:
                if not c.recv_some(5):
                    break
            r.body = bytes(c.buf[:body_len])
            c.close()
            return None, r
        want = chunk(FIRST_EVENT)
        for _ in range(100):
            if bytes(c.buf).startswith(want):
                break
            assert c.recv_some(5), f"{path}: stream ended before its first event"
        assert bytes(c.buf).startswith(want), f"{path}: first event not received: {bytes(c.buf)!r}"
        return c, r

    def refused(path):
        c, r = open_stream(path)
        assert c is None, f"{path}: a third stream for the key was admitted (status {r.status}): lease count wrong"
        check_429(r, "per_user", "concurrent", "2 concurrent requests", 1, 1)
        rejected_paths.append(path)

    def admitted_within(path, what, timeout=3.0):
        """Poll (the lease is returned when the record is written) until `path` is admitted."""
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            tries += 1
            c, r = open_stream(path)
            if c is not None:
                return c, r
            assert r.status == 429 and r.header("retry-after"), f"{path}: {r.status_line}"
            rejected_paths.append(path)
            assert time.monotonic() < deadline, \
                f"no stream admitted within {timeout}s ({tries} tries) after {what}: the lease leaked"
            time.sleep(0.03)

    def read_to_end(c, path):
        for _ in range(200):
            if bytes(c.buf).endswith(LAST_CHUNK):
                return
            assert c.recv_some(5), f"{path}: stream cut before its last chunk: {bytes(c.buf)!r}"
        raise AssertionError(f"{path}: no last chunk")

    # Two streams held open; the third is refused and never reaches the origin.
    a, ra = open_stream("/hold/a")
    assert a and sf_list(one(ra, "RateLimit"))["per_user-concurrent"] == {"r": "1"}
    assert sf_list(one(ra, "RateLimit-Policy"))["per_user-concurrent"] == {"q": "2", "qu": "concurrent-requests"}
    b, rb = open_stream("/hold/b")
    assert b and sf_list(one(rb, "RateLimit"))["per_user-concurrent"] == {"r": "0"}
    refused("/hold/c1")
    # Another key has its own two leases.
    x, _ = open_stream("/hold/x", k2)
    assert x is not None, "a different key was refused"
    streams.tell("x", "complete")
    read_to_end(x, "/hold/x")
    x.close()

    # complete
    streams.tell("a", "complete")
    read_to_end(a, "/hold/a")
    a.close()
    d, _ = admitted_within("/hold/d", "a stream completed")
    refused("/hold/c2")

    # client abort: the client closes mid-stream
    b.close()
    e, _ = admitted_within("/hold/e", "a client abort")
    origin.wait_for(lambda: streams.ended.get("b") == "peer_closed", 3, "the client-abort upstream to close")
    refused("/hold/c3")

    # upstream abort: the origin closes mid-body
    streams.tell("d", "abort")
    assert d.closed_within(3), "client connection not closed after the upstream died mid-body"
    assert not bytes(d.buf).endswith(LAST_CHUNK)
    d.close()
    f, _ = admitted_within("/idle/f", "an upstream abort")
    refused("/hold/c4")

    # upstream idle timeout (500 ms on /idle/)
    t0 = time.monotonic()
    assert f.closed_within(4), "idle stream not cut by upstream_idle 500ms"
    assert time.monotonic() - t0 < 3
    f.close()
    g, _ = admitted_within("/hold/g", "an upstream idle timeout")
    refused("/hold/c5")

    # With one stream held (e), one lease free: exchanges that fail fast must each give it back.
    streams.tell("g", "complete")
    read_to_end(g, "/hold/g")
    g.close()
    outcomes = {}
    for path, status in (("/dead/1", 502), ("/dead/2", 502), ("/slow/s", 504), ("/total/t", 200)):
        deadline = time.monotonic() + 3
        while True:
            r = get(port, path, k1)
            if r.status != 429:
                break
            rejected_paths.append(path)
            assert time.monotonic() < deadline, f"{path} refused for 3 s: a lease leaked before it"
            time.sleep(0.03)
        assert r.status == status, f"{path}: {r.status_line}"
        outcomes[path] = r
    assert not outcomes["/total/t"].complete, "total 300ms did not cut the stream"
    h, _ = admitted_within("/hold/h", "a connect error, a first-byte timeout and a total timeout")
    refused("/hold/c6")  # e and h: exactly two leases in use, none leaked, none duplicated

    streams.tell("e", "complete")
    streams.tell("h", "complete")
    read_to_end(e, "/hold/e")
    read_to_end(h, "/hold/h")
    e.close()
    h.close()

    admitted_paths = ["/hold/a", "/hold/b", "/hold/x", "/hold/d", "/hold/e", "/idle/f", "/hold/g", "/dead/1",
                      "/dead/2", "/slow/s", "/total/t", "/hold/h"]
    recs = wait_records(log, len(admitted_paths) + len(rejected_paths))
    by_path = {}
    for rec in recs:
        by_path.setdefault(rec["path"], []).append(rec)
    want_end = {"/hold/a": "complete", "/hold/b": "client_abort", "/hold/d": "upstream_abort",
                "/idle/f": "timeout_idle", "/hold/g": "complete", "/dead/1": "upstream_error",
                "/dead/2": "upstream_error", "/slow/s": "timeout_first_byte", "/total/t": "timeout_total",
                "/hold/e": "complete", "/hold/h": "complete", "/hold/x": "complete"}
    for path, end in want_end.items():
        allowed = [r for r in by_path.get(path, []) if r["rate_limit_decision"] == "allowed"]
        assert len(allowed) == 1 and allowed[0]["end"] == end, f"{path}: want one allowed record ending {end}: " \
                                                                f"{by_path.get(path)}"
    n_rejected = sum(1 for r in recs if r["rate_limit_decision"] == "rejected")
    assert n_rejected == len(rejected_paths), (n_rejected, rejected_paths)
    assert all(r["end"] == "rejected_rate_limit" and r["status"] == 429 for r in recs
               if r["rate_limit_decision"] == "rejected")
    k1_hashes = {r["rate_limit_key"] for r in recs if r["path"] != "/hold/x"}
    assert len(k1_hashes) == 1, k1_hashes
    assert by_path["/hold/x"][0]["rate_limit_key"] not in k1_hashes
    # Refused requests never reached the origin.
    assert not any(h.target.startswith("/hold/c") for h in origin.heads)


# --------------------------------------------------------------------------------------------
# 3. Token budget: usage charged after the fact; over budget → 429 until refill
# --------------------------------------------------------------------------------------------

def _sse(events, names=None) -> bytes:
    out = b""
    for i, ev in enumerate(events):
        if names and names[i]:
            out += b"event: " + names[i].encode() + b"\n"
        out += b"data: " + (ev if isinstance(ev, str) else json.dumps(ev, separators=(",", ":"))).encode() + b"\n\n"
    return out


def openai_stream(prompt: int, completion: int) -> bytes:
    base = {"id": "chatcmpl-rl", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    return _sse([{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"},
                                       "finish_reason": None}], "usage": None},
                 {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
                 {**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                   "total_tokens": prompt + completion}},
                 "[DONE]"])


def anthropic_stream(inp: int, out: int) -> bytes:
    ev = [("message_start", {"type": "message_start", "message": {
              "id": "msg_rl", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
              "stop_reason": None, "usage": {"input_tokens": inp, "output_tokens": 1}}}),
          ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": "hi"}}),
          ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                             "usage": {"output_tokens": out}}),
          ("message_stop", {"type": "message_stop"})]
    return _sse([e for _, e in ev], [n for n, _ in ev])


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


# --------------------------------------------------------------------------------------------
# 5. Keys from a header are never written in clear
# --------------------------------------------------------------------------------------------

def test_header_keys_never_in_clear(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    rules = {"by_auth": {"key": "header authorization", "requests": "1/min burst 2"},
             "by_apikey": {"key": "header x-api-key", "requests": "1/min burst 2"}}
    routes = [("/a/", "o", {"limit": "by_auth"}), ("/k/", "o", {"limit": "by_apikey"}),
              ("/both/", "o", {"limit": ["by_auth", "by_apikey"]})]
    up = {"o": f"http://127.0.0.1:{origin.port}"}

    def start(n: int, log_path) -> Sluice:
        cfg = write_routes_config(tmp_path / f"keys{n}.conf", upstreams=up, routes=routes, rate_limits=rules,
                                  log=log_config(log_path))
        return Sluice(["--config", str(cfg)])  # stopped by the test (all output flushed), so not from `stack`

    sl = start(1, log)
    try:
        _keys_never_in_clear(sl, start, tmp_path, log)
    finally:
        sl.stop()


def _keys_never_in_clear(sl, start, tmp_path, log):
    tag = uuid.uuid4().hex
    s1, s2 = f"sk-secret-XYZ-{tag}-one", f"sk-secret-XYZ-{tag}-two"
    x1, x2 = f"xk-secret-{tag}-alpha", f"xk-secret-{tag}-beta"
    secrets = [s1, s2, x1, x2]

    def run(path, headers, want):
        r = get(sl.port, path, headers)
        assert r.status == want, f"{path} {headers}: {r.status_line}"
        for s in secrets:
            assert s.encode() not in r.head_raw + r.body, f"{path}: the key came back in the response"
        return r

    plan = [("/a/1", [("Authorization", f"Bearer {s1}")], 200),
            ("/a/2", [("Authorization", f"Bearer {s1}")], 200),
            ("/a/3", [("Authorization", f"Bearer {s1}")], 429),     # burst 2 used up
            ("/a/4", [("authorization", f"Bearer {s1}")], 429),     # field names are case-insensitive
            ("/a/5", [("Authorization", f"Bearer {s2}")], 200),     # another value, another budget
            ("/k/1", [("x-api-key", x1)], 200),
            ("/k/2", [("X-Api-Key", x1)], 200),
            ("/k/3", [("x-api-key", x1)], 429),
            ("/k/4", [("x-api-key", x2)], 200),
            ("/both/1", [("Authorization", f"Bearer {s2}"), ("x-api-key", x2)], 200),
            ("/both/2", [("Authorization", f"Bearer {s2}"), ("x-api-key", x2)], 429),
            ("/a/n1", [], 200), ("/a/n2", [], 200), ("/a/n3", [], 429)]  # no header: one shared budget
    for path, headers, want in plan:
        run(path, headers, want)
    recs = {r["path"]: r for r in wait_records(log, len(plan))}
    assert len(recs) == len(plan)
    for path, rec in recs.items():
        assert isinstance(rec["rate_limit_key"], str) and HEX16.fullmatch(rec["rate_limit_key"]), (path, rec)
    h = {p: recs[p]["rate_limit_key"] for p in recs}
    assert h["/a/1"] == h["/a/2"] == h["/a/3"] == h["/a/4"], "one Authorization value, one key"
    assert h["/a/5"] != h["/a/1"]
    assert h["/k/1"] == h["/k/2"] == h["/k/3"] and h["/k/4"] != h["/k/1"]
    assert h["/a/n1"] == h["/a/n2"] == h["/a/n3"] and h["/a/n1"] not in (h["/a/1"], h["/a/5"])
    assert [recs[p]["rate_limit_decision"] for p in ("/a/1", "/a/3", "/k/3", "/both/2")] == \
        ["allowed", "rejected", "rejected", "rejected"]

    # The hash is keyed per process: the same value gives another hash in another sluice.
    log2 = tmp_path / "c2.jsonl"
    sl2 = start(2, log2)
    try:
        assert get(sl2.port, "/a/1", [("Authorization", f"Bearer {s1}")]).status == 200
        rec2, = wait_records(log2, 1)
        assert HEX16.fullmatch(rec2["rate_limit_key"]) and rec2["rate_limit_key"] != h["/a/1"]
    finally:
        sl2.stop()
    assert sl.stop() == 0 and sl2.stop() == 0
    sl.log_objects()
    sl2.log_objects()
    blobs = {"completion log": log.read_bytes() + log2.read_bytes(),
             "stderr": "\n".join(sl.stderr_lines + sl2.stderr_lines).encode(),
             "stdout": bytes(sl.stdout) + bytes(sl2.stdout)}
    for where, blob in blobs.items():
        for s in secrets:
            for variant in (s, s.lower(), s[len("sk-secret-"):] if s.startswith("sk-") else s[len("xk-secret-"):]):
                assert variant.encode() not in blob, f"key value {variant!r} written in clear to {where}"
        assert tag.encode() not in blob, f"part of a key value written to {where}"


# --------------------------------------------------------------------------------------------
# 6. `key client`: X-Forwarded-For only from trusted proxies
# --------------------------------------------------------------------------------------------

#: (X-Forwarded-For or None, status with 127.0.0.1 trusted). 1/min burst 1 per client.
XFF_PLAN = [("203.0.113.7", 200),
            ("203.0.113.7", 429),
            ("203.0.113.8", 200),
            ("198.51.100.9, 127.0.0.1", 200),   # the trusted hop is skipped: client 198.51.100.9
            ("1.2.3.4, 203.0.113.8", 429),      # a prepended address does not pick the key
            (None, 200),                        # no header: the peer, 127.0.0.1
            ("198.51.100.9", 429),
            ("2001:db8::1", 200)]


@pytest.mark.parametrize("trusted", ["127.0.0.1/32", None, "10.0.0.0/8 ::1/128"])
def test_key_client_x_forwarded_for_only_from_trusted_proxies(stack, tmp_path, trusted):
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"limit": "per_client"})],
                            rate_limits={"per_client": {"key": "client", "requests": "1/min burst 1"}},
                            trusted_proxies=trusted, log=log_config(log))
    believed = trusted == "127.0.0.1/32"
    got = []
    for i, (xff, status) in enumerate(XFF_PLAN):
        hdrs = [("X-Forwarded-For", xff)] if xff else []
        r = get(sl.port, f"/c/{i}", hdrs)
        got.append(r.status)
    want = [s for _, s in XFF_PLAN] if believed else [200] + [429] * (len(XFF_PLAN) - 1)
    assert got == want, "statuses for X-Forwarded-For " + ", ".join(
        f"{x!r}: {g} (want {w})" for (x, _), g, w in zip(XFF_PLAN, got, want))
    recs = sorted(wait_records(log, len(XFF_PLAN)), key=lambda r: int(r["path"].rsplit("/", 1)[1]))
    keys = [r["rate_limit_key"] for r in recs]
    assert all(isinstance(k, str) and HEX16.fullmatch(k) for k in keys), keys
    if believed:
        assert keys[0] == keys[1] and keys[2] == keys[4] and keys[3] == keys[6]
        assert len({keys[0], keys[2], keys[3], keys[5], keys[7]}) == 5, keys
    else:
        assert len(set(keys)) == 1, keys


# --------------------------------------------------------------------------------------------
# 7. An upstream's own 429 passes through unchanged
# --------------------------------------------------------------------------------------------

UPSTREAM_429_BODY = b'{"error":{"message":"upstream: slow down","type":"requests","code":"rate_limit_exceeded"}}'
UPSTREAM_FIELDS = [("x-ratelimit-limit-requests", "60"), ("x-ratelimit-remaining-requests", "0"),
                   ("x-ratelimit-reset-requests", "7s"), ("x-upstream-marker", "kept")]


def _upstream_429(conn, req):
    respond(conn, 429, UPSTREAM_429_BODY,
            [("Content-Type", "application/json"), ("Retry-After", "7")] + UPSTREAM_FIELDS,
            reason="Too Many Requests")


def _upstream_429_stack(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_upstream_429)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"},
                            [("/plain/", "o", {}), ("/limited/", "o", {"limit": "per_user"})],
                            rate_limits={"per_user": {"key": "header authorization", "requests": "100/s"}},
                            log=log_config(log), admin="127.0.0.1:0")
    return origin, sl, log


def test_upstream_429_passes_through(stack, tmp_path):
    origin, sl, log = _upstream_429_stack(stack, tmp_path)
    for i, path in enumerate(["/plain/x", "/limited/x", "/limited/y"]):
        r = get(sl.port, path, auth("sk-up"))
        assert r.status == 429 and r.reason == "Too Many Requests", r.status_line
        assert r.values("Retry-After") == ["7"], f"{path}: Retry-After {r.values('Retry-After')}"
        assert r.body == UPSTREAM_429_BODY
        assert one(r, "Content-Type") == "application/json"
        for name, value in UPSTREAM_FIELDS:
            assert value in r.values(name), f"{path}: upstream's {name}: {value} lost: {r.values(name)}"
    assert len(origin.heads) == 3
    recs = wait_records(log, 3)
    assert all(r["status"] == 429 and r["end"] == "complete" for r in recs), recs
    assert [r["rate_limit_decision"] for r in recs] == [None, "allowed", "allowed"], recs
    assert Metrics(sl).get("sluice_rate_limit_rejections_total", rule="per_user") == 0


def test_upstream_rate_limit_fields_not_duplicated(stack, tmp_path):
    """When the upstream sends its own x-ratelimit-* fields (OpenAI does, on every response), a
    limited route must not add a second field of the same name: clients read one value, and two
    lines are combined into `60, 100`, which no client parses."""
    _, sl, _ = _upstream_429_stack(stack, tmp_path)
    r = get(sl.port, "/limited/x", auth("sk-up"))
    assert r.status == 429
    dup = {n: r.values(n) for n, _ in UPSTREAM_FIELDS if len(r.values(n)) > 1}
    assert not dup, "x-ratelimit-* fields repeated (upstream's and sluice's):\n" + r.head_raw.decode("latin-1")
