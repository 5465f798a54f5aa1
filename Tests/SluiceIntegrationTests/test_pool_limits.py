"""Upstream pools at their edges: `max_streams` caps a server, a `backup` takes streams only when no primary can,
every server at its cap answers 503 `upstream_busy` with `Retry-After: 1` without contacting any; with every server
ejected, panic mode uses them all rather than refusing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pool_origins import Fleet, fetch, write_pool_config
from sluice_proc import log_config, wait_records
from test_metrics import Scrape


def test_max_streams_then_the_backup_then_503_busy(stack, tmp_path):
    log = tmp_path / "limits.jsonl"
    fleet = Fleet(stack, 3)
    cfg = write_pool_config(tmp_path / "limits.conf",
                            fleet.server_lines({0: "max_streams 1", 1: "max_streams 1", 2: "backup max_streams 1"}),
                            log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    for n in range(6):
        assert fetch(sl.port, "/v1/stream?events=1", f"idle-{n}").status == 200
    assert not fleet[2].seen(), "the backup took a request while the primaries were free"

    with ThreadPoolExecutor(3) as pool:
        held = []
        for n in range(3):
            held.append(pool.submit(fetch, sl.port, "/v1/stream?head_delay=1000&events=1", f"held-{n}"))
            fleet.wait_seen(f"held-{n}")
        assert sorted(fleet.where(f"held-{n}")[0] for n in range(3)) == [0, 1, 2]
        assert fleet.where("held-2") == [2], "the third stream should be the backup's (both primaries at max_streams)"
        busy = fetch(sl.port, "/v1/stream", "busy")
        assert [f.result().status for f in held] == [200] * 3
    assert busy.status == 503 and busy.header("retry-after") == "1", (busy.status_line, busy.headers)
    assert busy.json()["error"]["type"] == "upstream_busy", busy.body
    assert not fleet.where("busy")
    rec = {r["request_id"]: r for r in wait_records(log, 10)}["busy"]
    # No server was contacted: no `upstream` or `server` (the error names the upstream).
    assert rec["status"] == 503 and rec["tries"] == 0 and rec["server"] is None and rec["upstream"] is None, rec
    assert rec["end"] == "upstream_error" and "'llm'" in rec["error"], rec


def test_with_every_server_ejected_panic_mode_still_serves(stack, tmp_path):
    """Both servers answer 503 once each and are ejected for 60 s (`max_fails 1`, no retries); they recover, and the
    next request is served by one of them instead of being refused (counted in `sluice_upstream_panic_total`)."""
    fleet = Fleet(stack, 2)
    for o in fleet:
        o.status = 503
    cfg = write_pool_config(tmp_path / "panic.conf", fleet.server_lines(),
                            {"max_fails": 1, "eject_time": "60s", "retries": 0}, admin="127.0.0.1:0")
    sl = stack.sluice(["--config", str(cfg)])
    first, second = fetch(sl.port, "/v1/stream", "first"), fetch(sl.port, "/v1/stream", "second")
    assert (first.status, second.status) == (503, 503)
    # The first server's ejection sent the second request to the other one.
    assert sorted(fleet.where("first") + fleet.where("second")) == [0, 1]
    scrape = Scrape(sl)
    assert [scrape.get("sluice_upstream_server_up", upstream="llm", server=o.label) for o in fleet] == [0, 0]
    for o in fleet:
        o.status = None
    r = fetch(sl.port, "/v1/stream?events=1", "panic")
    assert r.status == 200 and r.complete and len(fleet.where("panic")) == 1, r.status_line
    assert Scrape(sl).get("sluice_upstream_panic_total", upstream="llm") == 1
