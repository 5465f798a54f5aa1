"""Upstream pools on /metrics (parsed by `prometheus_client`): streams in flight per server while they run, affinity
outcomes, retries by reason and the per-server responses and failures, all equal to what the origins saw."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pool_origins import Fleet, fetch, write_pool_config
from rawhttp import RawConn, request_bytes
from test_metrics import Scrape

SESSION = "x-session-id"
#: Keys sent one at a time; the chance that none has the first server as its home is (2/3)^24, under 1 in 10,000.
KEYS = 24


def test_pool_series_follow_streams_affinity_and_retries(stack, tmp_path):
    fleet = Fleet(stack, 3)
    # Passive ejection off: the 503s below must not take the server out between requests.
    cfg = write_pool_config(tmp_path / "metrics.conf", fleet.server_lines(),
                            {"affinity": f"header {SESSION}", "max_fails": 0}, admin="127.0.0.1:0")
    sl = stack.sluice(["--config", str(cfg)])
    labels = [{"upstream": "llm", "server": o.label} for o in fleet]

    # Six streams without a key, held together (each chosen after the last reached its origin): two per server.
    with ThreadPoolExecutor(6) as pool:
        held = []
        for n in range(6):
            held.append(pool.submit(fetch, sl.port, "/v1/stream?head_delay=1000&events=1", f"held-{n}"))
            fleet.wait_seen(f"held-{n}")
        during = Scrape(sl)
        assert [o.active for o in fleet] == [2, 2, 2]
        assert [r.status for r in (f.result() for f in held)] == [200] * 6
    assert [during.get("sluice_upstream_server_streams", **lb) for lb in labels] == [2, 2, 2]
    assert [during.get("sluice_upstream_server_up", **lb) for lb in labels] == [1, 1, 1]

    # One request at a time: every key is a hit. Then the first server answers 503: each request it gets is
    # retried (reason 503) on another server.
    with RawConn(sl.port, timeout=10) as c:
        for phase in ("hit", "retry"):
            if phase == "retry":
                fleet[0].status = 503
            for n in range(KEYS):
                c.send(request_bytes("GET", "/v1/stream?events=1", [("X-Request-Id", f"{phase}-{n}"),
                                                                       (SESSION, f"key-{n}")]))
                r = c.read_response()
                assert r.status == 200, (phase, n, r.status_line)
                assert phase == "hit" or r.header("x-origin") != "0", (phase, n, "the 503 reached the client")
    retried = [s for s in fleet[0].seen() if s.request_id.startswith("retry-")]
    assert retried, f"no key of {KEYS} went to the first server"
    after = Scrape(sl)
    assert [after.get("sluice_upstream_server_streams", **lb) for lb in labels] == [0, 0, 0]
    assert {r: after.get("sluice_affinity_total", upstream="llm", result=r) for r in ("hit", "spill", "nokey")} \
        == {"hit": 2 * KEYS, "spill": 0, "nokey": 6}
    assert after.get("sluice_upstream_retries_total", upstream="llm", reason="503") == len(retried)
    assert after.get("sluice_upstream_retries_total", upstream="llm", reason="reset") == 0
    assert after.get("sluice_upstream_retries_total", upstream="llm", reason="connect_error") == 0
    for o, lb in zip(fleet, labels):
        answered = o.seen()
        fives = len(retried) if o.index == 0 else 0
        assert after.get("sluice_upstream_server_responses_total", code_class="5xx", **lb) == fives
        assert after.get("sluice_upstream_server_responses_total", code_class="2xx", **lb) == len(answered) - fives
        assert after.get("sluice_upstream_server_failures_total", **lb) == fives
        assert after.get("sluice_upstream_server_ejections_total", **lb) == 0
