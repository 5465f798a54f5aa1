"""Upstream pools: a server removed by a reload (SIGHUP) drains: the stream it is serving finishes whole, it takes
no new request, and sluice lets go of its connections."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

from pool_origins import Fleet, fetch, write_pool_config


def test_a_server_removed_by_reload_finishes_its_stream_and_takes_no_new_one(stack, tmp_path):
    fleet = Fleet(stack, 3)
    cfg = write_pool_config(tmp_path / "drain.conf", fleet.server_lines(), workers=2)
    sl = stack.sluice(["--config", str(cfg)])
    removed = fleet[2]

    def stream(request_id):
        return fetch(sl.port, "/v1/stream?events=10&gap=150", request_id, timeout=15)

    with ThreadPoolExecutor(3) as pool:
        # One stream per server: least_streams puts each new one on an idle server when it is chosen after the last
        # reached its origin.
        running = []
        for n in range(3):
            running.append(pool.submit(stream, f"long-{n}"))
            fleet.wait_seen(f"long-{n}")
        assert sorted(o for n in range(3) for o in fleet.where(f"long-{n}")) == [0, 1, 2]
        assert removed.phase, "the stream on the server to remove is not running"
        cfg.write_text(cfg.read_text().replace(f"    server {removed.url}\n", ""))
        os.kill(sl.pid, signal.SIGHUP)
        sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
        assert removed.phase, "the stream on the removed server ended before the reload"
        after = [pool.submit(fetch, sl.port, "/v1/stream?events=2&gap=50", f"new-{n}") for n in range(12)]
        results = [f.result() for f in running + after]
    assert all(r.status == 200 and r.complete for r in results), [(r.status_line, r.complete) for r in results]
    assert not [s.request_id for s in removed.seen() if s.request_id.startswith("new-")]
    # Its idle connection is closed once its stream has ended.
    removed.origin.wait_for(lambda: all(c.closed for c in removed.origin.connections), 5,
                            "sluice to close its connections to the removed server")
