"""WebSocket tunnels under limits: a client that reads nothing pauses the origin (memory bounded), SIGTERM's drain
closes tunnels with 1001 at `drain_timeout`, `tunnel_idle` (global and per route; pings are traffic), rate limits
and concurrency leases at the upgrade, and the tunnel metrics on /metrics."""

from __future__ import annotations

import os
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sluice_proc import wait_records
from websocket_origins import (RawWS, WSOrigin, close_frame, echo, flood, frame_len, only_record, start, tunnel_of,
                               ws_client)

MiB = 1 << 20
PUSH = 100 * MiB
#: As test_backpressure: kernel buffers on both sides of sluice may hold several MiB (autotuning), sluice's own
#: queues 64 KiB each; a sluice that kept reading would pass these within a second.
RSS_GROWTH_LIMIT_KIB = 16 * 1024
ORIGIN_SENT_LIMIT = 16 * MiB
#: Over the last two seconds of the stall the origin may gain only this much.
LATE_GROWTH_LIMIT = MiB
STALL_SECONDS = 4.0


async def _warm_or_flood(ws, c):
    if c.path.startswith("/warm"):
        await echo(ws, c)
    else:
        await flood(PUSH)(ws, c)


def test_a_client_that_reads_nothing_pauses_the_origin_with_memory_bounded(stack):
    origin = WSOrigin(_warm_or_flood, sndbuf=65536, compression=None)
    sl, log = start(stack, origin)
    with ws_client(sl.port, "/warm") as ws:  # one tunnel first, so what a tunnel needs is allocated
        ws.send(b"w" * 65536)
        assert ws.recv(timeout=5) == b"w" * 65536
    wait_records(log, 1)
    rss0 = sl.rss_kib()

    raw = RawWS(sl.port, "/flood", rcvbuf=65536)
    try:
        raw.handshake()
        c = origin.conn(1)
        origin.wait_for(lambda: c.bytes_sent > 0, 5, "the flood to start")
        t0 = time.monotonic()
        samples = []  # (t, origin bytes sent, rss KiB)
        while time.monotonic() - t0 < STALL_SECONDS:
            time.sleep(0.25)
            samples.append((time.monotonic() - t0, c.bytes_sent, sl.rss_kib()))
        report = ", ".join(f"t={t:.2f}s sent={b / MiB:.2f}MiB rss={r / 1024:.1f}MiB" for t, b, r in samples)
        print(f"rss0={rss0 / 1024:.1f}MiB; {report}")
        late = [s for s in samples if s[0] >= STALL_SECONDS - 2.0]
        assert samples[-1][1] < ORIGIN_SENT_LIMIT, f"the origin wrote far ahead of a client reading nothing: {report}"
        assert late[-1][1] - late[0][1] < LATE_GROWTH_LIMIT, f"the origin's writes did not stall: {report}"
        assert max(s[2] for s in samples) - rss0 < RSS_GROWTH_LIMIT_KIB, f"sluice RSS grew: {report}"
        assert sl.alive()

        # Now the client closes (1000) and reads what is on its way until sluice closes the connection.
        raw.send(close_frame(1000))
        assert raw.read_until_close(60) == "eof", "the tunnel ended with a reset instead of a clean close"
    finally:
        raw.close()
    origin.wait_for(lambda: c.ended_at is not None, 10, "the origin's end of the flood")
    assert c.close_code == 1000

    recs = wait_records(log, 2)
    rec = only_record(recs, path="/flood")
    t = tunnel_of(rec)
    assert rec["end"] == "tunnel_client_closed", rec
    # The bytes actually relayed: everything the client received after the 101, and its close frame.
    assert t["upstream_bytes"] == raw.reader.bytes, (t, raw.reader.bytes)
    assert t["client_bytes"] == raw.sent_after == frame_len(2, True), t
    assert t["upstream_messages"] == raw.reader.messages, (t, raw.reader.messages)
    assert t["client_messages"] == 0, t
    assert t["client_close_code"] == 1000 and t["upstream_close_code"] == raw.reader.close_code() == 1000, t
    # What the origin's send() calls returned for, give or take the one frame in flight, plus its close frame.
    assert abs(t["upstream_bytes"] - frame_len(2, False) - c.bytes_sent) <= frame_len(65536, False), (t, c.bytes_sent)
    assert t["upstream_bytes"] < ORIGIN_SENT_LIMIT + frame_len(65536, False), t


def test_client_write_timeout_ends_a_tunnel_whose_client_stopped_reading(stack):
    origin = WSOrigin(flood(PUSH), sndbuf=65536, compression=None)
    sl, log = start(stack, origin, timeouts={"client_write": "1s"})
    raw = RawWS(sl.port, "/stuck", rcvbuf=4096)
    try:
        raw.handshake()
        c = origin.conn()
        origin.wait_for(lambda: c.bytes_sent > 0, 5, "the flood to start")
        started = time.monotonic()
        # The client reads nothing: once sluice's writes make no progress for 1 s, it closes both sides.
        origin.wait_for(lambda: c.ended_at is not None, 10, "sluice to close the origin's side")
        took = c.ended_at - started
    finally:
        raw.close()
    assert 1.0 <= took < 5.0, f"the tunnel ended {took:.2f} s after the flood began, with client_write 1s"
    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "client_write_timeout", rec
    assert t["upstream_bytes"] < ORIGIN_SENT_LIMIT, t


def test_drain_keeps_tunnels_until_the_deadline_then_closes_both_sides_with_1001(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin, top=("drain_timeout 1s",))
    ws = ws_client(sl.port)
    try:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        signalled = time.monotonic()
        os.kill(sl.pid, signal.SIGTERM)
        sl.wait_stderr(lambda o: o.get("msg") == "draining", 5, "the draining line")
        # Until the deadline messages still flow both ways.
        for i, at in enumerate((0.2, 0.45)):
            time.sleep(max(0.0, signalled + at - time.monotonic()))
            ws.send(f"during drain {i}")
            assert ws.recv(timeout=2) == f"during drain {i}"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=8)
        client_closed_after = time.monotonic() - signalled
    finally:
        ws.close()
    c = origin.conn()
    try:
        origin.wait_for(lambda: c.ended_at is not None, 5, "the origin's end")
    finally:
        code = sl.wait_exit(10)  # first, so that a failed check below does not read as a crash
    assert closed.value.rcvd is not None, f"the client got no close frame at the drain deadline: {closed.value!r}"
    assert closed.value.rcvd.code == 1001, closed.value
    assert 0.8 <= client_closed_after < 4.0, f"the client's tunnel closed {client_closed_after:.2f} s after SIGTERM"
    assert c.close_code == 1001, f"the origin got close code {c.close_code}, want 1001 (going away)"
    assert 0.8 <= c.ended_at - signalled < 4.0, f"the origin's tunnel closed {c.ended_at - signalled:.2f} s after SIGTERM"
    assert code == 0, f"sluice exited with {code}"

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "drain", rec
    assert (t["client_messages"], t["upstream_messages"]) == (3, 3), t


def test_tunnel_idle_closes_an_idle_tunnel_and_pings_keep_one_open(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin, timeouts={"tunnel_idle": "1s"})
    ws = ws_client(sl.port, "/idle")
    try:
        ws.send("once")
        assert ws.recv(timeout=5) == "once"
        last = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=8)
        took = time.monotonic() - last
    finally:
        ws.close()
    assert 0.9 <= took < 3.0, f"an idle tunnel closed {took:.2f} s after its last byte with tunnel_idle 1s"
    [rec] = wait_records(log, 1)
    assert rec["end"] == "tunnel_idle_timeout", rec
    assert tunnel_of(rec)["duration_ms"] >= 900, rec

    # Pings every 300 ms are traffic: the tunnel outlives tunnel_idle twice over.
    with ws_client(sl.port, "/pinged") as ws:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.4:
            time.sleep(0.3)
            assert ws.ping().wait(2), f"no pong {time.monotonic() - t0:.2f} s in: the tunnel was closed"
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"
    recs = wait_records(log, 2)
    pinged = only_record(recs, path="/pinged")
    assert pinged["end"] == "tunnel_client_closed", pinged
    assert tunnel_of(pinged)["duration_ms"] >= 2400, pinged


def test_a_route_overrides_tunnel_idle(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin, routes=[("/short/", {"tunnel_idle": "1s"}), ("/", {})])
    short = ws_client(sl.port, "/short/ws")
    default = ws_client(sl.port, "/long/ws")
    try:
        opened = time.monotonic()
        with pytest.raises(ConnectionClosed):
            short.recv(timeout=8)
        took = time.monotonic() - opened
        assert 0.9 <= took < 3.0, f"the route's tunnel_idle 1s closed its idle tunnel after {took:.2f} s"
        time.sleep(max(0.0, opened + 2.2 - time.monotonic()))
        default.send("default 1h")  # the global default (1 h) still holds on the other route
        assert default.recv(timeout=5) == "default 1h"
    finally:
        short.close()
        default.close()
    recs = wait_records(log, 2)
    assert only_record(recs, path="/short/ws")["end"] == "tunnel_idle_timeout", recs
    assert only_record(recs, path="/long/ws")["end"] == "tunnel_client_closed", recs


def test_requests_limit_refuses_a_second_upgrade_before_any_tunnel(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin, route_keys={"limit": "ws"},
                    rate_limits={"ws": {"key": "client", "requests": "1/s burst 1"}})
    first = ws_client(sl.port, "/first")
    try:
        with pytest.raises(InvalidStatus) as refused:
            ws_client(sl.port, "/second")
        assert refused.value.response.status_code == 429, refused.value
        assert refused.value.response.headers.get("Retry-After"), refused.value.response.headers
        first.send("still here")
        assert first.recv(timeout=5) == "still here"
    finally:
        first.close()
    assert [h.path for h in origin.handshakes] == ["/first"], "a refused upgrade reached the origin"
    recs = wait_records(log, 2)
    rejected = only_record(recs, path="/second")
    assert rejected["status"] == 429 and rejected["end"] == "rejected_rate_limit" and "tunnel" not in rejected, rejected
    admitted = only_record(recs, path="/first")
    assert admitted["end"] == "tunnel_client_closed" and tunnel_of(admitted)["client_messages"] == 1, admitted


def test_concurrent_lease_is_held_for_the_tunnels_whole_life(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin, route_keys={"limit": "ws"},
                    rate_limits={"ws": {"key": "client", "concurrent": 1}})
    a = ws_client(sl.port, "/a")
    try:
        a.send("a")
        assert a.recv(timeout=5) == "a"
        for attempt, path in enumerate(("/b", "/b-later")):
            if attempt:
                time.sleep(1.2)  # long after the handshake, the lease is still the tunnel's
            with pytest.raises(InvalidStatus) as refused:
                ws_client(sl.port, path)
            assert refused.value.response.status_code == 429, refused.value
        a.send("a again")
        assert a.recv(timeout=5) == "a again"
    finally:
        a.close()
    recs = wait_records(log, 3)
    assert only_record(recs, path="/a")["end"] == "tunnel_client_closed", recs
    # The tunnel's record is written: its lease is back, a new tunnel is admitted.
    with ws_client(sl.port, "/c") as c:
        c.send("c")
        assert c.recv(timeout=5) == "c"
    recs = wait_records(log, 4)
    assert [h.path for h in origin.handshakes] == ["/a", "/c"], [h.path for h in origin.handshakes]
    assert [r["status"] for r in recs if r["path"].startswith("/b")] == [429, 429], recs
    assert only_record(recs, path="/c")["status"] == 101, recs


def _samples(sl) -> dict:
    status, _, text = sl.scrape()
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _metric(samples: dict, name: str, default=None, **labels):
    """A sample's value; `default` when the series is absent (None: absent fails)."""
    value = samples.get((name, tuple(sorted(labels.items()))), default)
    assert value is not None, f"no series {name}{labels} on /metrics"
    return value


def _wait_metric(sl, name: str, want: float, timeout: float = 3.0, **labels) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = _samples(sl)
        if _metric(samples, name, -1, **labels) == want:
            return samples
        assert time.monotonic() < deadline, f"{name}{labels} is {_metric(samples, name, -1, **labels)} (-1: absent), want {want}"
        time.sleep(0.05)


def test_tunnel_metrics_follow_the_tunnels(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin, admin=True)
    before = _samples(sl)
    c2u, u2c = "client_to_upstream", "upstream_to_client"

    ws = ws_client(sl.port, "/one")
    ws.send("x" * 1000)
    assert ws.recv(timeout=5) == "x" * 1000
    _wait_metric(sl, "sluice_tunnels_active", 1)
    ws.close()
    wait_records(log, 1)
    _wait_metric(sl, "sluice_tunnels_active", 0)

    ws2 = ws_client(sl.port, "/two")
    try:
        ws2.send("!close 4001 bye")
        with pytest.raises(ConnectionClosed):
            ws2.recv(timeout=5)
    finally:
        ws2.close()
    recs = wait_records(log, 2)
    after = _wait_metric(sl, "sluice_tunnels_active", 0)
    tunnels = [tunnel_of(r) for r in recs]

    sent = ws.counter.sent_after + ws2.counter.sent_after
    received = ws.counter.received_after + ws2.counter.received_after
    assert sum(t["client_bytes"] for t in tunnels) == sent
    assert sum(t["upstream_bytes"] for t in tunnels) == received
    moved = {d: _metric(after, "sluice_tunnel_bytes_total", direction=d)
             - _metric(before, "sluice_tunnel_bytes_total", 0.0, direction=d) for d in (c2u, u2c)}
    assert moved == {c2u: sent, u2c: received}, moved
    ends = {e: _metric(after, "sluice_tunnel_ends_total", end=e)
            - _metric(before, "sluice_tunnel_ends_total", 0.0, end=e)
            for e in ("tunnel_client_closed", "tunnel_upstream_closed")}
    assert ends == {"tunnel_client_closed": 1, "tunnel_upstream_closed": 1}, ends
    assert sorted(r["end"] for r in recs) == ["tunnel_client_closed", "tunnel_upstream_closed"], recs
