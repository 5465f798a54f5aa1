#!/usr/bin/env python3
"""Soak: mixed traffic through one sluice for a bounded time, then the leak and accounting checks.

Traffic (16 client threads, seeded, each picking an action per iteration): complete SSE streams, slow
readers, clients that abort mid-stream, upstreams that reset mid-stream, bursts against a rate-limited
route, and malformed requests. Every client request carries its own X-Request-Id, so each completion
record is matched to the exchange that produced it.

At the end (exit 1 on any failure, with the reasons):
- every exchange has exactly one completion record, with the `end` its action implies;
- every completed stream arrived byte for byte (checked against the origin's deterministic content);
- once idle, sluice's open descriptors are back to the baseline taken after warm-up, and its RSS is
  within a small margin of that baseline (a leak grows it with the number of exchanges).

Usage: bench/soak.sh [SECONDS]  (default 600; CI runs 120). Needs a built sluice ($SLUICE_BIN or
.build/debug/sluice) and python3.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "SluiceIntegrationTests"))

from origin import Origin, PeerClosed  # noqa: E402
from rawhttp import ChunkedDecoder, RawConn, request_bytes  # noqa: E402
from sluice_proc import Sluice, read_jsonl, write_routes_config  # noqa: E402

THREADS = 16
EVENT_GAP = 0.004
#: RSS may settle this much above the post-warm-up baseline (allocator arenas, pools at their cap).
RSS_MARGIN_KIB = 12 * 1024


def event(rid: str, i: int) -> bytes:
    pad = "x" * (17 + (i * 7919) % 200)
    return f"id: {i}\ndata: {{\"r\":\"{rid}\",\"i\":{i},\"p\":\"{pad}\"}}\n\n".encode()


def stream_body(rid: str, n: int) -> bytes:
    return b"".join(event(rid, i) for i in range(n))


def handler(conn, req):
    parts = req.target.strip("/").split("/")  # kind/rid/n
    kind, rid, n = parts[-3], parts[-2], int(parts[-1])
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(n):
        body = event(rid, i)
        try:
            conn.send(f"{len(body):x}\r\n".encode() + body + b"\r\n")
        except PeerClosed:
            return False
        if kind == "abort" and i == n // 2:
            conn.abort()
            return False
        conn.sleep(EVENT_GAP)
    conn.send(b"0\r\n\r\n")
    return None


class Soak:
    def __init__(self, seconds: float, workdir: Path):
        self.deadline = time.monotonic() + seconds
        self.workdir = workdir
        self.origin = Origin(handler, backlog=512)
        self.log = workdir / "completions.jsonl"
        cfg = write_routes_config(
            workdir / "soak.conf", upstreams={"o": f"http://127.0.0.1:{self.origin.port}"},
            routes=[("/", "o", {}), ("/limited/", "o", {"limit": "burst"})], workers=2,
            timeouts={"upstream_pool_idle": "1s", "client_write": "5s"},
            # A small log queue: its slots (about 400 bytes each) are first touched during the warm-up, so the
            # baseline already holds them and RSS growth afterwards means a leak.
            log={"file": str(self.log), "queue": 4096}, rate_limits={"burst": {"key": "header x-soak-key", "requests": "20/s burst 10"}})
        self.sluice = Sluice(["--config", str(cfg)])
        self.expected: dict[str, str] = {}  # request id -> expected end
        self.malformed_sent = 0
        self.failures: list[str] = []
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        self.sequence = 0

    def next_id(self, kind: str) -> str:
        with self.lock:
            self.sequence += 1
            return f"soak-{kind}-{self.sequence}"

    def expect(self, rid: str, end: str):
        with self.lock:
            self.expected[rid] = end
            self.counts[end] += 1

    def fail(self, text: str):
        with self.lock:
            self.failures.append(text)

    # -- actions --------------------------------------------------------------------------------------

    def stream(self, rng: random.Random, slow: bool):
        rid, n = self.next_id("slow" if slow else "sse"), rng.randint(5, 60)
        with RawConn(self.sluice.port, rcvbuf=4096 if slow else None, timeout=30) as c:
            c.send(request_bytes("GET", f"/sse/{rid}/{n}", [("X-Request-Id", rid)]))
            if slow:
                time.sleep(0.3)  # let the queue fill: sluice must pause the upstream, not buffer
            r = c.read_response(timeout=30)
            if r.status != 200 or not r.complete or r.body != stream_body(rid, n):
                self.fail(f"{rid}: status {r.status}, complete {r.complete}, {len(r.body)} of {len(stream_body(rid, n))} bytes")
        self.expect(rid, "complete")

    def client_abort(self, rng: random.Random):
        rid, n = self.next_id("cabort"), 400
        c = RawConn(self.sluice.port, timeout=10)
        c.send(request_bytes("GET", f"/sse/{rid}/{n}", [("X-Request-Id", rid)]))
        c.read_head()
        c.recv_some(5)
        c.close()
        self.expect(rid, "client_abort")

    def upstream_abort(self, rng: random.Random):
        rid, n = self.next_id("uabort"), rng.randint(4, 20)
        with RawConn(self.sluice.port, timeout=10) as c:
            c.send(request_bytes("GET", f"/abort/{rid}/{n}", [("X-Request-Id", rid)]))
            r = c.read_response(timeout=10)
            if r.complete:
                self.fail(f"{rid}: an upstream reset ended cleanly for the client")
        self.expect(rid, "upstream_abort")

    def burst(self, rng: random.Random):
        key = f"k{rng.randint(0, 3)}"
        for _ in range(rng.randint(5, 25)):
            rid = self.next_id("burst")
            with RawConn(self.sluice.port, timeout=10) as c:
                c.send(request_bytes("GET", f"/limited/sse/{rid}/1", [("X-Request-Id", rid), ("X-Soak-Key", key)]))
                r = c.read_response(timeout=10)
            if r.status == 200 and r.body == stream_body(rid, 1):
                self.expect(rid, "complete")
            elif r.status == 429:
                self.expect(rid, "rejected_rate_limit")
            else:
                self.fail(f"{rid}: status {r.status} from the rate-limited route")

    def malformed_request(self, rng: random.Random):
        raw = rng.choice([b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                          b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
                          b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n"])
        with RawConn(self.sluice.port, timeout=10) as c:
            c.send(raw)
            r = c.read_response(timeout=10)
            if r.status != 400:
                self.fail(f"malformed request answered {r.status}")
        with self.lock:
            self.malformed_sent += 1

    def worker(self, seed: int):
        rng = random.Random(seed)
        actions = [(lambda: self.stream(rng, False), 40), (lambda: self.stream(rng, True), 10),
                   (lambda: self.client_abort(rng), 15), (lambda: self.upstream_abort(rng), 10),
                   (lambda: self.burst(rng), 10), (lambda: self.malformed_request(rng), 15)]
        choices, weights = zip(*actions)
        while time.monotonic() < self.deadline and len(self.failures) < 20:
            try:
                rng.choices(choices, weights)[0]()
            except Exception as exc:  # noqa: BLE001 - every surprise is a soak failure
                self.fail(f"{type(exc).__name__}: {exc}")

    # -- measurements ---------------------------------------------------------------------------------

    def idle_state(self) -> tuple[int, int]:
        """(open fds, RSS KiB) once sluice is idle: pooled upstream connections expire after 1 s."""
        time.sleep(3)
        fds = len(os.listdir(f"/proc/{self.sluice.pid}/fd"))
        return fds, self.sluice.rss_kib()

    def run(self, warmup: float) -> int:
        warm_end = time.monotonic() + warmup
        saved, self.deadline = self.deadline, warm_end
        self.spawn(THREADS, 1000)
        self.deadline = saved
        base_fds, base_rss = self.idle_state()
        print(f"soak: baseline after {warmup:.0f} s of warm-up: {base_fds} fds, {base_rss} KiB RSS", flush=True)
        started = time.monotonic()
        self.spawn(THREADS, 2000)
        fds, rss = self.idle_state()
        elapsed = time.monotonic() - started
        print(f"soak: after {elapsed:.0f} s: {fds} fds, {rss} KiB RSS; exchanges by expected end: {dict(self.counts)}, "
              f"malformed {self.malformed_sent}", flush=True)
        if fds != base_fds:
            self.fail(f"open descriptors {fds} after the soak, {base_fds} at the baseline")
        if rss > base_rss + RSS_MARGIN_KIB:
            self.fail(f"RSS {rss} KiB after the soak, {base_rss} KiB at the baseline (margin {RSS_MARGIN_KIB} KiB)")
        self.check_records()
        return 1 if self.failures else 0

    def spawn(self, count: int, seed_base: int):
        threads = [threading.Thread(target=self.worker, args=(seed_base + i,), daemon=True) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def check_records(self):
        records = read_jsonl(self.log)
        by_id = collections.defaultdict(list)
        for r in records:
            by_id[r["request_id"]].append(r)
        for rid, end in self.expected.items():
            got = by_id.get(rid, [])
            if len(got) != 1:
                self.fail(f"{rid}: {len(got)} completion records, expected exactly one")
            elif got[0]["end"] != end:
                self.fail(f"{rid}: end {got[0]['end']}, expected {end} ({got[0].get('error')})")
        unexpected = [r for r in records if r["request_id"].startswith("soak-") and r["request_id"] not in self.expected]
        if unexpected:
            self.fail(f"{len(unexpected)} records for exchanges the soak did not make")
        bad = sum(1 for r in records if r["end"] == "rejected_bad_request")
        if bad != self.malformed_sent:
            self.fail(f"{bad} rejected_bad_request records for {self.malformed_sent} malformed requests")
        print(f"soak: {len(records)} completion records checked", flush=True)

    def close(self):
        self.sluice.stop()
        self.origin.close()


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600
    workdir = Path(os.environ.get("SOAK_DIR") or f"/tmp/sluice-soak-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(seconds, workdir)
    try:
        status = soak.run(warmup=min(30.0, seconds / 5))
    finally:
        soak.close()
    for failure in soak.failures:
        print("soak: FAIL", failure, flush=True)
    print("soak: ok" if not soak.failures else f"soak: {len(soak.failures)} failures", flush=True)
    return status


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
