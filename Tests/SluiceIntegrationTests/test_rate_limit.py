"""11. Rate limits: burst precision (also across workers) and concurrency leases released on
every way an exchange ends. Token budgets and the openai SDK are in test_rate_limit_tokens.py; header
keys never in clear, `key client` with trusted proxies and an upstream's own 429 in
test_rate_limit_headers.py. Shared helpers: rate_limit_common.py."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from origin import LAST_CHUNK, SSE_HEAD, chunk, unused_port
from rate_limit_common import HEX16, Metrics, auth, burst, check_429, go_duration, one, sf_list
from rawhttp import RawConn, get, request_bytes
from sluice_proc import log_config, wait_records

FIRST_EVENT = b"data: first\n\n"


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
