"""Upstream pools: a server that dies under load (its connections reset, then its connects refused). Requests it had
not answered go to other servers and succeed; streams it had started end truncated and are never replayed; it is
ejected for `eject_time` and takes traffic again after it; with `health_check`, probes alone bring it back."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor

from pool_origins import Dispatcher, Fleet, fetch, write_pool_config
from rawhttp import RawConn, request_bytes
from sluice_proc import log_config, wait_records

EJECT_MS = 2000
#: Half the requests stream 8 events 100 ms apart; the other half are held 400 ms before their head.
STREAMING = "events=8&gap=100"
HELD = "head_delay=400&events=2&gap=10"


class Load:
    """`clients` threads sending one request after another until stopped; keeps what each request got."""

    def __init__(self, port: int, clients: int):
        self.port = port
        self.stop = threading.Event()
        self.results: dict[str, tuple] = {}
        self.shapes: dict[str, str] = {}
        self.pool = ThreadPoolExecutor(clients)
        self.futures = [self.pool.submit(self._client, slot) for slot in range(clients)]

    def _client(self, slot: int) -> None:
        for k in range(1000):  # bounded: the test stops the load after a few seconds
            if self.stop.is_set():
                return
            request_id = f"c{slot}-{k}"
            shape = STREAMING if (slot + k) % 2 else HELD
            self.shapes[request_id] = shape
            try:
                r = fetch(self.port, f"/v1/stream?{shape}", request_id, timeout=15)
                self.results[request_id] = (shape, r.status, r.complete, r.header("x-origin"))
            except (ConnectionError, TimeoutError) as e:
                self.results[request_id] = (shape, None, False, repr(e))

    def finish(self) -> dict[str, tuple]:
        self.stop.set()
        for f in self.futures:
            f.result(30)
        self.pool.shutdown()
        return self.results


def monotonic_of(ts: str) -> float:
    """A stderr line's `ts` (UTC, microseconds) on this process's monotonic clock."""
    wall = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    return wall - (time.time() - time.monotonic())


def ejected_line(sl, label: str, timeout: float) -> dict:
    return sl.wait_stderr(lambda o: o.get("msg") == "upstream server ejected" and o.get("server") == label, timeout,
                          f"the ejection of {label}")


def test_a_killed_server_is_ejected_its_unanswered_requests_retried_and_it_comes_back(stack, tmp_path):
    log = tmp_path / "pool.jsonl"
    fleet = Fleet(stack, 4)
    victim = fleet[0]
    cfg = write_pool_config(tmp_path / "pool.conf", fleet.server_lines(),
                            {"max_fails": 2, "fail_window": "5s", "eject_time": f"{EJECT_MS}ms", "retries": 2},
                            workers=2, log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    load = Load(sl.port, 16)
    try:
        # The kill must catch both kinds on the victim: a stream under way and a request held before its head (held
        # 400 ms, so still waiting when the kill comes a moment later).
        fleet.wait(lambda: {(load.shapes.get(rid), phase) for rid, phase in victim.phase.items()}
                   >= {(HELD, "waiting"), (STREAMING, "streaming")}, 10,
                   "the victim to hold a waiting and a streaming request")
        killed_at = time.monotonic()
        caught = victim.kill()
        assert {"waiting", "streaming"} <= set(caught.values()), caught
        line = ejected_line(sl, victim.label, 5)
        # When sluice ejected it, from the line's own timestamp: it may have been written before kill() returned.
        ejected_at = monotonic_of(line["ts"])
        assert line["for_ms"] == EJECT_MS, line
        time.sleep(0.3)  # refusing connects a while longer
        victim.restart()
        # Ejected: no connection at all while the rest of the fleet carries the load.
        quiet_until = ejected_at + EJECT_MS / 1000 - 0.3
        while time.monotonic() < quiet_until:
            assert victim.accepted() == 0, \
                f"the ejected server got a connection {time.monotonic() - ejected_at:.2f}s after its ejection"
            time.sleep(0.05)
        # Healthy and out of its ejection: traffic finds it again.
        fleet.wait(lambda: any(s.origin == 0 and s.generation == 1 and not s.probe for s in fleet.log), 3,
                   "a request on the restarted server after its ejection")
        back_at = time.monotonic()
        time.sleep(0.5)
    finally:
        results = load.finish()
    print(f"caught on the victim at the kill: {caught}; ejected {ejected_at - killed_at:.3f}s after the kill, "
          f"traffic back {back_at - ejected_at:.2f}s after the ejection; {len(results)} requests")

    # Streams the victim had started: never sent to another server; truncated at the client (unless its last
    # event had just gone out).
    truncated = {rid: r for rid, r in results.items() if r[1] == 200 and not r[2]}
    started = [rid for rid, phase in caught.items() if phase == "streaming"]
    assert set(started) & set(truncated), f"no stream caught mid-way: {caught}, {results}"
    for rid, r in truncated.items():
        assert r[3] == "0", f"{rid} truncated by a server that was not killed: {r}"
        assert fleet.where(rid) == [0], f"{rid} was replayed after its response started: {fleet.where(rid)}"
    # Everything else: complete, including the requests the victim held without answering (retried elsewhere).
    failed = {rid: r for rid, r in results.items() if rid not in truncated and (r[1] != 200 or not r[2])}
    assert not failed, f"client-visible failures: {failed}"
    waiting = [rid for rid, phase in caught.items() if phase == "waiting"]
    records = {r["request_id"]: r for r in wait_records(log, len(results), timeout=10)}
    for rid in waiting:
        # Served by another server in the end. A request that came on a pooled connection may first be replayed to
        # the victim on a fresh one (the stale-connection replay of an idempotent request), which the victim resets
        # too while its listener is still open.
        where = fleet.where(rid)
        assert set(where[:-1]) == {0} and where[-1] != 0, f"{rid}: {where}"
        assert records[rid]["tries"] >= 2 and records[rid]["server"] == fleet[where[-1]].label, records[rid]
    for rid in started:
        assert fleet.where(rid) == [0], f"{rid} was replayed after its response started: {fleet.where(rid)}"
        assert records[rid]["tries"] == 1, records[rid]
        if rid in truncated:
            assert records[rid]["end"] == "upstream_abort", records[rid]
    assert back_at - ejected_at >= EJECT_MS / 1000 - 0.3


def test_health_checks_take_a_dead_server_out_and_bring_it_back_without_traffic(stack, tmp_path):
    """A failed probe takes the server out (no request goes there, none is even tried there); after a restart, a
    passing probe brings it back although the passive ejection (60 s) would keep it out: no client request reached
    it in between, and the next burst is shared with it."""
    log = tmp_path / "health.jsonl"
    fleet = Fleet(stack, 4)
    victim = fleet[0]
    cfg = write_pool_config(tmp_path / "health.conf", fleet.server_lines(),
                            {"max_fails": 1, "eject_time": "60s", "health_check": "GET /health every 300ms timeout 200ms"},
                            log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    fleet.wait(lambda: all(o.seen(probes=True) for o in fleet), 3, "a probe of every server")
    victim.kill()
    sl.wait_stderr(lambda o: o.get("msg") == "upstream server failed its health check" and o.get("server") == victim.label,
                   3, "the victim's failed probe")

    def burst(tag: str, count: int) -> list[str]:
        """`count` requests held open together (each chosen while the earlier ones still run); their ids."""
        dispatcher = Dispatcher(fleet)
        ids = [f"{tag}-{n}" for n in range(count)]

        def one(request_id):
            with RawConn(sl.port, timeout=10) as c:
                dispatcher.send(c, lambda _: (request_bytes("GET", "/v1/stream?head_delay=600&events=1",
                                                            [("X-Request-Id", request_id)]), request_id))
                r = c.read_response(timeout=10)
            assert r.status == 200 and r.complete, (request_id, r.status_line)

        with ThreadPoolExecutor(count) as pool:
            for f in [pool.submit(one, rid) for rid in ids]:
                f.result()
        return ids

    out = burst("out", 6)
    records = {r["request_id"]: r for r in wait_records(log, len(out))}
    assert all(records[rid]["tries"] == 1 and fleet.where(rid)[0] != 0 for rid in out), \
        [(rid, records[rid]["tries"], fleet.where(rid)) for rid in out]

    victim.restart()
    sl.wait_stderr(lambda o: o.get("msg") == "upstream server passed its health check; back in use"
                   and o.get("server") == victim.label, 3, "the victim's passing probe")
    assert victim.seen(probes=True)[-1].generation == 1
    assert not [s for s in victim.seen() if s.generation == 1], "a client request reached the victim before the burst"
    back = burst("back", 8)
    on_victim = [rid for rid in back if fleet.where(rid) == [0]]
    # least_streams over 4 servers with 8 streams held together: two each.
    assert len(on_victim) == 2, [(rid, fleet.where(rid)) for rid in back]
