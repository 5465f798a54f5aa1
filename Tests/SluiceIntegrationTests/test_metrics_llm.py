"""LLM metrics on /metrics (parsed by `prometheus_client`): prompt and completion tokens and TTFT by route and model,
the cap on distinct model labels, `sluice_build_info`, the standard `process_*` families; and microsecond times in
the completion log and the operational log."""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict

import test_metrics
from origin import respond
from rawhttp import get
from sluice_proc import log_config, run_cli, wait_records
from streams import LAST_CHUNK, SSE_HEAD, chunk, openai_chunk, openai_usage_chunk, usage

#: ModelSeriesTable.maxModelsPerRoute
MODEL_CAP = 32


class Scrape(test_metrics.Scrape):
    """test_metrics' parsed scrape, with the label sets of a sample."""

    def series(self, name: str) -> list[dict]:
        """The label sets of sample `name`."""
        return [dict(labels) for (n, labels) in self.samples if n == name]


def _llm_origin_handler(conn, req):
    """An OpenAI-style backend that echoes the request's model: a stream (role chunk, two content chunks 5 ms
    apart, the usage chunk) when the body says `"stream": true`, else one JSON body; a GET gets plain text. Usage is derived from the
    model name, so every model's expected counts are known: prompt = 10 + len(model), completion = 2 + the
    number in the path (`/…/N`)."""
    if req.method == "GET":  # not an LLM call: a plain body, no usage
        respond(conn, 200, b"plain", [("Content-Type", "text/plain")])
        return
    body = json.loads(req.body or b"{}")
    model = body.get("model")
    n = int(req.target.rsplit("/", 1)[1])
    tokens = usage(10 + len(model or ""), 2 + n)
    if body.get("stream"):
        conn.send(SSE_HEAD + chunk(openai_chunk({"role": "assistant"}, model=model or "m")))
        conn.sleep(0.005)
        conn.send(chunk(openai_chunk({"content": "Hello"}, model=model or "m")))
        conn.sleep(0.005)
        conn.send(chunk(openai_chunk({"content": " world"}, "stop", model=model or "m"))
                  + chunk(openai_usage_chunk(tokens, model=model or "m")) + chunk(b"data: [DONE]\n\n") + LAST_CHUNK)
        return
    doc = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
           "content": "Hello"}, "finish_reason": "stop"}], "usage": tokens}
    if model is not None:
        doc["model"] = model
    respond(conn, 200, json.dumps(doc).encode(), [("Content-Type", "application/json")])


def _post(port: int, path: str, model: str | None, stream: bool):
    doc = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if model is not None:
        doc["model"] = model
    r = get(port, path, [("Content-Type", "application/json")], method="POST", body=json.dumps(doc).encode())
    assert r.status == 200 and r.complete, r.status
    return r


def test_tokens_and_ttft_by_route_and_model_agree_with_the_log(stack, tmp_path):
    """Two routes, three models (one whose name needs escaping in a label), streams and JSON bodies, and requests
    without a model: per (route, model) the token counters equal the sums of the records' usage, and the TTFT
    histogram holds exactly the records' ttft_ms."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_llm_origin_handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/a/", "o", {}), ("/b/", "o", {})],
                            workers=2, log=log_config(log), admin="127.0.0.1:0")
    m0 = Scrape(sl)
    for fam, typ in (("sluice_prompt_tokens", "counter"), ("sluice_completion_tokens", "counter"),
                     ("sluice_ttft_seconds", "histogram")):
        assert m0.families[fam].type == typ, f"{fam}: {m0.families[fam].type}"
    assert m0.series("sluice_prompt_tokens_total") == [], "no model series before any exchange"

    sent = 0
    for i, (route, model, stream) in enumerate([
            ("/a/", "alpha", True), ("/a/", "alpha", False), ("/a/", "beta", True), ("/b/", "alpha", True),
            ("/b/", 'ga"mma\\x', False), ("/b/", 'ga"mma\\x', True), ("/a/", None, False), ("/a/", "alpha", True)]):
        _post(sl.port, f"{route}v1/chat/completions/{i}", model, stream)
        sent += 1
    # A request with no body and no model: TTFT under model "none", no tokens.
    assert get(sl.port, "/a/plain/0").status == 200
    sent += 1
    records = wait_records(log, sent)
    assert len(records) == sent

    expected: dict[tuple, dict] = defaultdict(lambda: {"prompt": 0, "completion": 0, "ttft": []})
    for r in records:
        key = (r["route"], r["model"] or "none")
        if r["usage"]:
            expected[key]["prompt"] += r["usage"]["prompt_tokens"]
            expected[key]["completion"] += r["usage"]["completion_tokens"]
        if r["ttft_ms"] is not None:
            expected[key]["ttft"].append(r["ttft_ms"] / 1000)
    assert expected[("/a/", "alpha")]["prompt"] == 3 * (10 + 5), "the origin's usage reached the records"

    m = Scrape(sl)
    labelled = {(s["route"], s["model"]) for s in m.series("sluice_prompt_tokens_total")}
    assert labelled == set(expected), f"series {labelled}, records {set(expected)}"
    bounds = sorted({float(s["le"]) for s in m.series("sluice_ttft_seconds_bucket")})
    for (route, model), want in expected.items():
        assert m.get("sluice_prompt_tokens_total", route=route, model=model) == want["prompt"], (route, model)
        assert m.get("sluice_completion_tokens_total", route=route, model=model) == want["completion"], (route, model)
        assert m.get("sluice_ttft_seconds_count", route=route, model=model) == len(want["ttft"]), (route, model)
        assert abs(m.get("sluice_ttft_seconds_sum", route=route, model=model) - sum(want["ttft"])) < 1e-6 * len(want["ttft"]) + 1e-9
        for le in bounds:
            assert m.get("sluice_ttft_seconds_bucket", route=route, model=model,
                         le="+Inf" if le == float("inf") else _le(le)) == sum(1 for v in want["ttft"] if v <= le)
    assert m.get("sluice_prompt_tokens_total", route="/a/", model="none") == 10, "the JSON body without a model"
    assert 'model="ga\\"mma\\\\x"' in m.text, "label values are escaped per the text format"


def _le(bound: float) -> str:
    """A bucket bound as sluice writes it (shortest decimal, no trailing zeros)."""
    text = f"{bound:.6f}".rstrip("0").rstrip(".")
    return text


def test_distinct_models_beyond_the_cap_are_counted_as_other(stack, tmp_path):
    """A client sending 40 model names through one route gets 32 labelled series and `other` for the rest; the
    other route still names its own models; the totals are all there."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_llm_origin_handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/a/", "o", {}), ("/b/", "o", {})],
                            log=log_config(log), admin="127.0.0.1:0")
    models = [f"model-{i:02d}" for i in range(MODEL_CAP + 8)]
    for i, model in enumerate(models):  # one at a time: the first 32 are the named ones
        _post(sl.port, f"/a/v1/chat/completions/{i}", model, stream=i % 2 == 0)
    _post(sl.port, "/a/v1/chat/completions/0", models[3], stream=False)  # named before the cap: keeps its series
    _post(sl.port, "/a/v1/chat/completions/0", models[-1], stream=False)  # beyond: other again
    _post(sl.port, "/b/v1/chat/completions/0", models[-1], stream=True)  # the other route has room
    records = wait_records(log, len(models) + 3)

    m = Scrape(sl)
    route_a = {s["model"] for s in m.series("sluice_prompt_tokens_total") if s["route"] == "/a/"}
    assert route_a == set(models[:MODEL_CAP]) | {"other"}, sorted(route_a)
    assert {s["model"] for s in m.series("sluice_prompt_tokens_total") if s["route"] == "/b/"} == {models[-1]}
    assert {s["model"] for s in m.series("sluice_ttft_seconds_count") if s["route"] == "/a/"} == route_a

    beyond = [r for r in records if r["route"] == "/a/" and r["model"] in models[MODEL_CAP:]]
    assert len(beyond) == 9
    assert m.get("sluice_prompt_tokens_total", route="/a/", model="other") == sum(r["usage"]["prompt_tokens"] for r in beyond)
    assert m.get("sluice_completion_tokens_total", route="/a/", model="other") == \
        sum(r["usage"]["completion_tokens"] for r in beyond)
    assert m.get("sluice_ttft_seconds_count", route="/a/", model="other") == 9
    assert m.get("sluice_prompt_tokens_total", route="/a/", model=models[3]) == 2 * (10 + len(models[3]))
    total = sum(v for (name, _), v in m.samples.items() if name == "sluice_prompt_tokens_total")
    assert total == sum(r["usage"]["prompt_tokens"] for r in records)


def test_tokens_are_counted_without_a_completion_log(stack):
    """Metrics only (no log, no token budget): the JSON body and the stream are still read for usage and model."""
    origin = stack.origin(_llm_origin_handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})],
                            log={"stdout": "off"}, admin="127.0.0.1:0")
    _post(sl.port, "/v1/chat/completions/1", "json-model", stream=False)
    _post(sl.port, "/v1/chat/completions/4", "sse-model", stream=True)
    deadline = time.monotonic() + 3
    while True:
        m = Scrape(sl)
        if len(m.series("sluice_prompt_tokens_total")) == 2:
            break
        assert time.monotonic() < deadline, m.series("sluice_prompt_tokens_total")
        time.sleep(0.05)
    assert m.get("sluice_prompt_tokens_total", route="/", model="json-model") == 10 + len("json-model")
    assert m.get("sluice_completion_tokens_total", route="/", model="json-model") == 3
    assert m.get("sluice_prompt_tokens_total", route="/", model="sse-model") == 10 + len("sse-model")
    assert m.get("sluice_completion_tokens_total", route="/", model="sse-model") == 6
    assert m.get("sluice_ttft_seconds_count", route="/", model="sse-model") == 1
    # The stream's first content came 5 ms after the role chunk.
    assert m.get("sluice_ttft_seconds_sum", route="/", model="sse-model") >= 0.004


def _proc_stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # fields 3, 4, ...


def test_build_info_and_process_metrics(stack):
    """`sluice_build_info` names what `sluice --version` prints; the `process_*` families are those of the client
    libraries, with values that agree with /proc for the sluice process."""
    p = run_cli(["--version"])
    match = re.fullmatch(r"sluice (\S+) \(commit (\S+)\)\n", p.stdout.decode())
    assert match, p.stdout
    origin = stack.origin()
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=2,
                            admin="127.0.0.1:0")
    assert get(sl.port, "/x").status == 200
    m = Scrape(sl)
    assert m.families["sluice_build_info"].type == "gauge"
    assert m.series("sluice_build_info") == [{"version": match.group(1), "commit": match.group(2)}]
    assert m.get("sluice_build_info", version=match.group(1), commit=match.group(2)) == 1

    types = {"process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge",
             "process_virtual_memory_bytes": "gauge", "process_open_fds": "gauge", "process_max_fds": "gauge",
             "process_start_time_seconds": "gauge"}
    for fam, typ in types.items():
        assert m.families[fam].type == typ, fam
    stat = _proc_stat(sl.pid)
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    start = btime + int(stat[22 - 3]) / ticks
    assert abs(m.get("process_start_time_seconds") - start) < 0.02, (m.get("process_start_time_seconds"), start)
    assert time.time() - 120 < m.get("process_start_time_seconds") <= time.time()
    rss = m.get("process_resident_memory_bytes")
    assert rss > 1 << 20 and abs(rss - sl.rss_kib() * 1024) < 16 << 20, (rss, sl.rss_kib())
    assert m.get("process_virtual_memory_bytes") >= rss
    fds = len(os.listdir(f"/proc/{sl.pid}/fd"))
    # Listeners, epoll and eventfds of two workers and the admin loop: more than a handful; the scrape's own
    # connection and directory descriptor make the count differ by a few at most.
    assert fds > 5 and abs(m.get("process_open_fds") - fds) <= 3, (m.get("process_open_fds"), fds)
    with open(f"/proc/{sl.pid}/limits") as f:
        soft = next(line.split()[3] for line in f if line.startswith("Max open files"))
    assert m.get("process_max_fds") == float(soft)
    # /proc was read after the scrape: at least the scrape's CPU time, and not much more.
    cpu = m.get("process_cpu_seconds_total")
    stat_cpu = (int(stat[14 - 3]) + int(stat[15 - 3])) / ticks
    assert 0 <= cpu <= stat_cpu + 1e-9 and stat_cpu - cpu < 0.5, (cpu, stat_cpu)
    # A counter: it does not go back between scrapes.
    assert Scrape(sl).get("process_cpu_seconds_total") >= cpu


TIME_KEYS = ("ttfb_ms", "ttft_ms", "duration_ms", "max_gap_ms")


def test_log_times_have_microseconds(stack, tmp_path):
    """The record's times are measured in microseconds: the three decimals vary (whole milliseconds would all be
    `.000`); `ts` has six fraction digits, and so has the operational log's `ts`."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_llm_origin_handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], log=log_config(log))
    for i in range(10):
        _post(sl.port, f"/v1/chat/completions/{i}", "m", stream=True)
    wait_records(log, 10)
    lines = log.read_text().splitlines()
    assert len(lines) == 10
    decimals = defaultdict(set)
    for line in lines:
        assert re.match(r'\{"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"', line), line
        for key in TIME_KEYS:
            match = re.search(rf'"{key}":(\d+)\.(\d{{3}})[,}}]', line)
            assert match, f"{key} in {line}"
            decimals[key].add(match.group(2))
    for key in TIME_KEYS:
        assert decimals[key] != {"000"}, f"{key} is always a whole number of milliseconds: {lines}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", sl.ready["ts"]), sl.ready["ts"]
