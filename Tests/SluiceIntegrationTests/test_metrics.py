"""11. GET /metrics on the admin listener: the Prometheus text format (parsed by the official
`prometheus_client` parser) and counters, gauges and histograms that agree with the log."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from origin import respond, unused_port
from rawhttp import RawConn, get, request_bytes
from sluice_proc import wait_records
from streams import LAST_CHUNK, SSE_HEAD, chunk

ENDS = ["complete", "client_abort", "upstream_abort", "upstream_error", "timeout_connect", "timeout_first_byte",
        "timeout_idle", "timeout_total", "client_write_timeout", "rejected_rate_limit", "rejected_bad_request",
        "drain"]
CODE_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"]
#: metric family name (as the parser names it) -> type
FAMILIES = {
    "sluice_requests": "counter", "sluice_exchanges": "counter",
    "sluice_client_bytes_received": "counter", "sluice_client_bytes_sent": "counter",
    "sluice_upstream_bytes_received": "counter", "sluice_upstream_bytes_sent": "counter",
    "sluice_rate_limit_rejections": "counter", "sluice_backpressure_pauses": "counter",
    "sluice_log_records_written": "counter", "sluice_log_records_dropped": "counter",
    "sluice_active_connections": "gauge", "sluice_active_streams": "gauge", "sluice_queued_bytes": "gauge",
    "sluice_ttfb_seconds": "histogram", "sluice_ttfe_seconds": "histogram", "sluice_ttft_seconds": "histogram",
    "sluice_duration_seconds": "histogram", "sluice_event_gap_seconds": "histogram",
    "sluice_prompt_tokens": "counter", "sluice_completion_tokens": "counter", "sluice_build_info": "gauge",
    "process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge", "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


class Scrape:
    """One /metrics response, parsed by prometheus_client."""

    def __init__(self, sl):
        status, headers, text = sl.scrape()
        assert status == 200, f"/metrics answered {status}"
        ctype = headers.get("content-type", "")
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple, float] = {}
        for fam in self.families.values():
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in self.samples, f"duplicate series {key}"
                self.samples[key] = s.value

    def get(self, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, f"no series {name}{labels} in /metrics"
        return self.samples[key]

    def total(self, name: str) -> float:
        """The sum of every series of sample `name` (e.g. TTFT's, which are by route and model)."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(le, cumulative count) summed over the family's series, ascending, +Inf last."""
        fam = self.families[name]
        counts: dict[float, float] = {}
        for s in fam.samples:
            if s.name == name + "_bucket":
                le = float(s.labels["le"])
                counts[le] = counts.get(le, 0) + s.value
        return sorted(counts.items())


def _handler(release: threading.Event):
    def handler(conn, req):
        path = req.target
        if path.startswith("/v1/sse/"):
            n = int(path.split("?")[0].rsplit("/", 1)[1])
            conn.send(SSE_HEAD)
            for i in range(n):
                if i:
                    conn.sleep(0.02)  # each event in its own read: one gap per pair of events
                # A role-only chunk first (the first event, not a token), then content: TTFE and TTFT differ.
                delta = '{"role": "assistant"}' if i == 0 else f'{{"content": "t{i}"}}'
                conn.send(chunk(f"data: {{\"i\": {i}, \"choices\": [{{\"delta\": {delta}}}]}}\n\n".encode()))
            conn.send(LAST_CHUNK)
        elif path.startswith("/v1/json/"):
            respond(conn, 200, b'{"ok": true}', [("Content-Type", "application/json")])
        elif path.startswith("/v1/abort-by-client/"):
            conn.send(SSE_HEAD + chunk(b"data: first\n\n"))
            conn.wait_peer_closed(10)
            return False
        elif path.startswith("/v1/no-head/"):
            conn.wait_peer_closed(10)
            return False
        elif path.startswith("/v1/abort-by-upstream/"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nhalf")
            conn.sleep(0.05)
            conn.close()
            return False
        elif path.startswith("/v1/held/"):
            conn.send(SSE_HEAD + chunk(b"data: held\n\n"))
            release.wait(10)
            conn.send(LAST_CHUNK)
        elif path.startswith("/v1/big/"):
            size = 16 * 1024 * 1024  # beyond what kernel socket buffers absorb (wmem max 4 MiB)
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
                      .encode())
            conn.send(b"B" * size, stall_timeout=15)
        else:
            respond(conn, 200, path.encode(), [("Content-Type", "text/plain")])
    return handler


def _wait_gauges_zero(sl, timeout: float = 3.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        m = Scrape(sl)
        gauges = {g: m.get(g) for g in ("sluice_active_connections", "sluice_active_streams", "sluice_queued_bytes")}
        if all(v == 0 for v in gauges.values()):
            return m
        assert time.monotonic() < deadline, f"gauges not back to 0 after every connection closed: {gauges}"
        time.sleep(0.05)


def test_metrics_parse_and_agree_with_the_log(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    release = threading.Event()
    origin = stack.origin(_handler(release))
    dead = unused_port()
    sl = stack.routes_proxy({"main": f"http://127.0.0.1:{origin.port}", "dead": f"http://127.0.0.1:{dead}"},
                            [("/v1/", "main", {}), ("/dead/", "dead", {})], workers=2,
                            log={"file": str(log), "stdout": "off"}, admin="127.0.0.1:0")
    port = sl.port

    # Before any traffic: every series exists at 0 (rates start from 0).
    m0 = Scrape(sl)
    for fam, typ in FAMILIES.items():
        assert fam in m0.families, f"family {fam} missing from /metrics"
        assert m0.families[fam].type == typ, f"{fam} is a {m0.families[fam].type}, expected {typ}"
    for end in ENDS:
        assert m0.get("sluice_exchanges_total", end=end) == 0
    for route in ("/v1/", "/dead/", "none"):
        for cls in CODE_CLASSES:
            assert m0.get("sluice_requests_total", route=route, code_class=cls) == 0

    # A stream held open shows in the gauges.
    held = RawConn(port)
    held.send(request_bytes("GET", "/v1/held/0"))
    r = held.read_head()
    assert r.status == 200
    while b"data: held" not in held.buf:
        assert held.recv_some(5)
    mh = Scrape(sl)
    assert mh.get("sluice_active_streams") == 1, "one response is being streamed"
    assert mh.get("sluice_active_connections") == 1, "one client connection is open (the scrape is not counted)"
    release.set()
    while not held.buf.endswith(LAST_CHUNK):
        assert held.recv_some(5), "held stream ended early"
    held.close()

    def sse(i, n):
        r = get(port, f"/v1/sse/{n}?i={i}")
        assert r.status == 200 and r.complete

    def json_ok(i):
        assert get(port, f"/v1/json/{i}").status == 200

    def client_abort(i):
        with RawConn(port) as c:
            c.send(request_bytes("GET", f"/v1/abort-by-client/{i}"))
            c.read_head()
            while b"data: first" not in c.buf:
                assert c.recv_some(5)

    def abort_before_head(i):  # no status sent: code_class "none"
        with RawConn(port) as c:
            c.send(request_bytes("GET", f"/v1/no-head/{i}"))
            origin.wait_for(lambda: any(h.target == f"/v1/no-head/{i}" for h in origin.heads), 5, "the request")

    def upstream_abort(i):
        with RawConn(port) as c:
            c.send(request_bytes("GET", f"/v1/abort-by-upstream/{i}"))
            assert not c.read_response().complete

    def status(path, code):
        def run(i):
            assert get(port, f"{path}{i}").status == code
        return run

    def malformed(i):
        with RawConn(port) as c:
            c.send(b"GET /v1/x HTTP/1.1\r\nHost: sluice.test\r\nBad Name: v\r\n\r\n")
            assert c.read_response().status == 400

    def slow_reader(i):
        # 16 MiB to a client that waits before reading: sluice pauses the upstream (backpressure).
        with RawConn(port, timeout=15) as c:
            c.send(request_bytes("GET", f"/v1/big/{i}"))
            time.sleep(0.3)
            r = c.read_response(timeout=15)
            assert r.status == 200 and r.complete and len(r.body) == 16 * 1024 * 1024

    jobs = ([lambda i=i: sse(i, 3 + i) for i in range(4)] + [lambda i=i: json_ok(i) for i in range(3)]
            + [lambda i=i: client_abort(i) for i in range(2)] + [lambda: abort_before_head(0)]
            + [lambda i=i: upstream_abort(i) for i in range(2)]
            + [lambda i=i: status("/dead/", 502)(i) for i in range(2)]
            # Not a route: /metrics is never served on the public listener.
            + [lambda i=i: status("/metrics?", 404)(i) for i in range(1)]
            + [lambda i=i: status("/nowhere/", 404)(i) for i in range(2)]
            + [lambda i=i: malformed(i) for i in range(1)] + [lambda: slow_reader(0)])
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(j) for j in jobs]:
            f.result()
    n = len(jobs) + 1  # + the held stream
    records = wait_records(log, n)
    assert len(records) == n, f"{len(records)} records for {n} exchanges"

    m = _wait_gauges_zero(sl)
    problems = []

    def agree(metric_value, log_value, what):
        if metric_value != log_value:
            problems.append(f"{what}: /metrics {metric_value}, log {log_value}")

    ends = Counter(r["end"] for r in records)
    for end in ENDS:
        agree(m.get("sluice_exchanges_total", end=end), ends[end], f"sluice_exchanges_total{{end={end}}}")

    def cls(status):
        return f"{status // 100}xx" if status else "none"
    reqs = Counter((r["route"] or "none", cls(r["status"])) for r in records)
    for route in ("/v1/", "/dead/", "none"):
        for c in CODE_CLASSES:
            agree(m.get("sluice_requests_total", route=route, code_class=c), reqs[(route, c)],
                  f"sluice_requests_total{{route={route},code_class={c}}}")

    agree(m.get("sluice_client_bytes_received_total"), sum(r["request_bytes"] for r in records),
          "client bytes received vs sum(request_bytes)")
    agree(m.get("sluice_client_bytes_sent_total"), sum(r["response_bytes"] for r in records),
          "client bytes sent vs sum(response_bytes)")
    agree(m.get("sluice_log_records_written_total"), n, "log records written")
    agree(m.get("sluice_log_records_dropped_total"), 0, "log records dropped")

    paused = [r for r in records if r["paused_ms"] > 0]
    if not paused:
        problems.append("no record has paused_ms > 0 although a client waited 0.3 s before reading 16 MiB")
    if m.get("sluice_backpressure_pauses_total") < max(1, len(paused)):
        problems.append(f"sluice_backpressure_pauses_total {m.get('sluice_backpressure_pauses_total')} "
                        f"< {len(paused)} records with paused_ms > 0")

    for name, key in (("sluice_ttfb_seconds", "ttfb_ms"), ("sluice_ttfe_seconds", "ttfe_ms"), ("sluice_ttft_seconds", "ttft_ms"),
                      ("sluice_duration_seconds", "duration_ms")):
        # TTFT is by route and model: its series are summed (the other histograms have one series).
        values = [r[key] / 1000 for r in records if r[key] is not None]
        agree(m.total(name + "_count"), len(values), f"{name}_count vs records with {key}")
        if abs(m.total(name + "_sum") - sum(values)) > 1e-6 * max(1, len(values)):
            problems.append(f"{name}_sum {m.total(name + '_sum')} vs log {sum(values)}")
        buckets = m.buckets(name)
        assert buckets[-1][0] == float("inf") and buckets[-1][1] == m.total(name + "_count")
        for le, count in buckets:
            agree(count, sum(1 for v in values if v <= le), f"{name}_bucket{{le={le}}}")

    streams = [r for r in records if r["path"].startswith("/v1/sse/")]
    if not all(r["ttft_ms"] is not None and r["ttft_ms"] >= r["ttfe_ms"] + 15 for r in streams):
        problems.append("an SSE stream's TTFT is not its first content event, 20 ms after the role chunk (TTFE)")

    gaps = sum(max(0, r["sse_events"] - 1) for r in records)
    agree(m.get("sluice_event_gap_seconds_count"), gaps, "sluice_event_gap_seconds_count vs sum(sse_events - 1)")
    assert not problems, f"{len(problems)} disagreements:\n" + "\n".join(problems) + \
        "\nrecords:\n" + "\n".join(json.dumps(r) for r in records)


def test_event_gap_histogram_counts_every_gap(stack, tmp_path):
    """Five events in one write, a sixth 200 ms later: five gaps between consecutive events
    (four of about 0 s, one of about 0.2 s)."""
    log = tmp_path / "c.jsonl"

    def handler(conn, req):
        conn.send(SSE_HEAD + chunk(b"".join(f"data: {i}\n\n".encode() for i in range(5))))
        conn.sleep(0.2)
        conn.send(chunk(b"data: 5\n\n") + LAST_CHUNK)

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})],
                            log={"file": str(log), "stdout": "off"}, admin="127.0.0.1:0")
    r = get(sl.port, "/v1/stream")
    assert r.status == 200 and r.complete
    rec, = wait_records(log, 1)
    assert rec["sse_events"] == 6
    assert abs(rec["max_gap_ms"] - 200) <= 20, rec
    m = Scrape(sl)
    assert m.get("sluice_event_gap_seconds_count") == 5, \
        f"{m.get('sluice_event_gap_seconds_count')} gaps observed for 6 events"
    assert abs(m.get("sluice_event_gap_seconds_sum") - 0.2) <= 0.03


def test_admin_listener_serves_only_metrics(stack):
    origin = stack.origin()
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], admin="127.0.0.1:0")
    assert sl.admin_port != sl.port
    status, _, _ = sl.scrape("/nothing")
    assert status == 404
    # On the public listener /metrics is just a path, proxied to the route's upstream.
    r = get(sl.port, "/metrics")
    assert r.status == 200 and r.body == b"/metrics"
    assert [h.target for h in origin.heads] == ["/metrics"]


def test_ttft_histogram_without_a_completion_log(stack):
    """With no completion log and no token budget (metrics only), an event stream is still read for its first
    content event: a role-only chunk at once and the first content 200 ms later give one TTFT of about 0.2 s."""

    def handler(conn, req):
        role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
        content = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        conn.send(SSE_HEAD + chunk(role))
        conn.sleep(0.2)
        conn.send(chunk(content) + chunk(b"data: [DONE]\n\n") + LAST_CHUNK)

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})],
                            log={"stdout": "off"}, admin="127.0.0.1:0")
    r = get(sl.port, "/v1/chat/completions")
    assert r.status == 200 and r.complete
    deadline = time.monotonic() + 3
    while (m := Scrape(sl)).total("sluice_ttft_seconds_count") != 1:
        assert time.monotonic() < deadline, m.total("sluice_ttft_seconds_count")
        time.sleep(0.05)
    # No model in the request or the stream: the series is model "none".
    assert 0.19 <= m.get("sluice_ttft_seconds_sum", route="/", model="none") <= 0.3, m.text
    assert m.get("sluice_ttfe_seconds_sum") < 0.1


def test_generated_responses_say_whose_fault_in_the_record_and_the_metrics(stack, tmp_path):
    """ProxyError's source decides the label and the record: a 404 (no route) is the client's, a 502 (refused
    connect) the upstream's; a forwarded answer is neither."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    dead = unused_port()
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}", "dead": f"http://127.0.0.1:{dead}"},
                            [("/ok", "o", {}), ("/dead", "dead", {})], admin="127.0.0.1:0",
                            log={"file": str(log), "stdout": "off"})
    assert get(sl.port, "/ok").status == 200
    assert get(sl.port, "/nowhere").status == 404
    assert get(sl.port, "/dead").status == 502
    records = {r["path"]: r for r in wait_records(log, 3)}
    assert "error_source" not in records["/ok"] and "error_type" not in records["/ok"], records["/ok"]
    assert (records["/nowhere"]["error_source"], records["/nowhere"]["error_type"]) == ("client", "no_route")
    assert (records["/dead"]["error_source"], records["/dead"]["error_type"]) == ("upstream", "upstream_unreachable")
    m = Scrape(sl)
    assert [m.get("sluice_generated_responses_total", source=s) for s in ("client", "upstream", "internal")] == [1, 1, 0]
