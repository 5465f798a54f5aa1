"""10. The completion log's sinks: a FIFO or stdout pipe nobody reads never slows a stream (drops
counted and warned, shutdown bounded), SIGHUP rotation without loss or duplicates, `--log-file` and
`--admin`, and the queue flushed on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from flush_probe import FlushProbe
from origin import LAST_CHUNK, SSE_HEAD, chunk, respond
from rawhttp import RawConn, get, request_bytes
from sluice_proc import Sluice, log_config, read_jsonl, wait_records, write_routes_config


# --------------------------------------------------------------------------------------------
# 4. A blocked sink never slows a stream; drops are counted and reported
# --------------------------------------------------------------------------------------------

def _bulk(port: int, n: int, conns: int = 4) -> None:
    """n quick requests over `conns` keep-alive connections (one record each)."""
    def run(k):
        with RawConn(port) as c:
            for i in range(k, n, conns):
                c.send(request_bytes("GET", f"/bulk/{i}"))
                r = c.read_response()
                assert r.status == 200, r.status_line
    with ThreadPoolExecutor(conns) as pool:
        for f in [pool.submit(run, k) for k in range(conns)]:
            f.result()


def _metric(sl, name: str) -> float:
    status, _, text = sl.scrape()
    assert status == 200
    for ln in text.splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            return float(ln.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _probe_handler(probe: FlushProbe):
    def handler(conn, req):
        if req.target == "/flush":
            probe.serve(conn)
        else:
            respond(conn, 200, b"ok", [("Content-Type", "text/plain")])
    return handler


#: Enough exchanges to overflow `queue 16` behind a blocked sink: besides the ring's 16, the
#: writer holds back one batch (what the ring held when it last drained, so up to 16 more).
OVERFLOW_EXCHANGES = 400


def _paced(port: int, n: int) -> None:
    """n requests in bursts of 8 with a pause, so the writer (draining every ~20 ms) keeps up
    with a 16-record ring: nothing is dropped unless the sink itself stops taking records."""
    for start in range(0, n, 8):
        _bulk(port, min(8, n - start), conns=1)
        time.sleep(0.03)


def test_fifo_nobody_reads_never_delays_streams_and_drops_are_counted(stack, tmp_path):
    fifo = tmp_path / "completions.fifo"
    os.mkfifo(fifo)
    probe = FlushProbe()
    origin = stack.origin(_probe_handler(probe))
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=1,
                            log=log_config(fifo, queue=16), admin="127.0.0.1:0")
    before = probe.check(sl.port)
    _bulk(sl.port, OVERFLOW_EXCHANGES)
    after = probe.check(sl.port)
    print("added delay per event (ms) before / after the queue overflowed:",
          [round(d * 1000, 2) for d in before], [round(d * 1000, 2) for d in after])
    warning = sl.wait_stderr(lambda o: o.get("level") == "warn" and "dropped" in o.get("msg", ""), 3,
                             "warning about dropped records")
    assert warning.get("dropped_total", 1) > 0, warning
    dropped = _metric(sl, "sluice_log_records_dropped_total")
    assert dropped > 0, "sluice_log_records_dropped_total is 0 although the sink was blocked"
    assert _metric(sl, "sluice_log_records_written_total") == 0
    exchanges = OVERFLOW_EXCHANGES + 2

    # A reader turns up: the writer opens the FIFO (it keeps retrying) and delivers everything
    # it did not drop, as whole JSON lines.
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    data = bytearray()
    try:
        deadline = time.monotonic() + 10
        # The last exchanges' records may still be on their way to the queue when the metric was first read:
        # the drop count is read again as lines arrive (it only grows until every record was queued or dropped).
        while data.count(b"\n") < exchanges - dropped and time.monotonic() < deadline:
            dropped = _metric(sl, "sluice_log_records_dropped_total")
            try:
                piece = os.read(fd, 1 << 20)
            except BlockingIOError:
                piece = None
            if not piece:
                time.sleep(0.02)
                continue
            data += piece
    finally:
        os.close(fd)
    lines = bytes(data).split(b"\n")
    print(f"{exchanges} exchanges, {dropped:.0f} dropped, {len(lines) - 1} delivered once a reader came")
    assert lines[-1] == b"", "the FIFO reader got half a line"
    recs = [json.loads(x) for x in lines[:-1]]
    assert len(recs) == exchanges - dropped, f"{len(recs)} records delivered, {exchanges} exchanges, {dropped} dropped"
    assert len({r["request_id"] for r in recs}) == len(recs)
    assert _metric(sl, "sluice_log_records_written_total") == len(recs)


def test_stdout_pipe_nobody_reads_never_delays_streams_and_shutdown_is_bounded(stack, tmp_path):
    probe = FlushProbe()
    origin = stack.origin(_probe_handler(probe))
    cfg = write_routes_config(tmp_path / "stdout.conf", upstreams={"o": f"http://127.0.0.1:{origin.port}"},
                              routes=[("/", "o", {})], workers=1, log={"stdout": "on", "queue": 16},
                              admin="127.0.0.1:0")
    # Not from `stack`: this test stops sluice itself (the fixture counts an exit as a crash).
    sl = Sluice(["--config", str(cfg)], drain_stdout=False)
    try:
        assert sl.ready["completion_log"] == ["stdout"]
        # Fill the 64 KiB pipe (a record is about 500 bytes) at a pace the writer would keep up
        # with, so that what stops the records is the pipe.
        _paced(sl.port, 200)
        written = _metric(sl, "sluice_log_records_written_total")
        assert written < 200, f"the stdout pipe took all {written} records: it is not blocked"
        before = probe.check(sl.port)
        sl.wait_stderr(lambda o: o.get("msg") == "completion log sink not accepting writes", 3,
                       "a warning about the blocked sink")
        _bulk(sl.port, OVERFLOW_EXCHANGES)
        after = probe.check(sl.port)
        print("added delay per event (ms) before / after the queue overflowed:",
              [round(d * 1000, 2) for d in before], [round(d * 1000, 2) for d in after])
        sl.wait_stderr(lambda o: o.get("level") == "warn" and "dropped" in o.get("msg", ""), 3,
                       "warning about dropped records")
        assert _metric(sl, "sluice_log_records_dropped_total") > 0
        assert _metric(sl, "sluice_log_records_written_total") == written, "records got through a full pipe"
        # Shutdown with a sink that never drains: bounded (the flush gives up), exit 0, not SIGKILL.
        t0 = time.monotonic()
        os.kill(sl.pid, signal.SIGTERM)
        rc = sl.wait_exit(4.5)
        elapsed = time.monotonic() - t0
        print(f"exit {rc} {elapsed:.2f}s after SIGTERM")
        assert rc == 0, f"exit {rc} {elapsed:.1f}s after SIGTERM with a blocked stdout sink"
        sl.wait_stderr(lambda o: o.get("msg") == "completion log not flushed at shutdown", 2,
                       "the not-flushed warning")
        # What reached the pipe is whole JSON lines (writes to a pipe are cut after a newline).
        data = sl.proc.stdout.read()
        assert data.endswith(b"\n"), data[-200:]
        lines = data.split(b"\n")[:-1]
        assert len(lines) == written
        for ln in lines:
            assert isinstance(json.loads(ln), dict)
    finally:
        sl.stop()
    sl.log_objects()


# --------------------------------------------------------------------------------------------
# 5. SIGHUP rotation while streams run
# --------------------------------------------------------------------------------------------

def test_sighup_rotation_loses_and_duplicates_nothing(stack, tmp_path):
    log = tmp_path / "completions.jsonl"
    rotated = tmp_path / "completions.jsonl.1"
    release = threading.Event()

    def handler(conn, req):
        if req.target.startswith("/slow/"):
            conn.send(SSE_HEAD + chunk(b"data: {\"part\": 1}\n\n"))
            # Hold the stream open across the rotation (bounded).
            for _ in range(200):
                if release.is_set():
                    break
                conn.send(chunk(b": keep-alive\n\n"))
                conn.sleep(0.05)
            conn.send(chunk(b"data: {\"part\": 2}\n\n") + LAST_CHUNK)
        else:
            respond(conn, 200, b"ok", [("Content-Type", "text/plain")])

    origin = stack.origin(handler)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {})], workers=2,
                            log=log_config(log))
    ids: dict[str, str] = {}  # request id -> phase

    def one(path: str, phase: str) -> None:
        rid = f"{phase}-{path.strip('/').replace('/', '-')}"
        r = get(sl.port, path, [("X-Request-Id", rid)])
        assert r.status == 200 and r.complete, r.status_line
        ids[rid] = phase

    for i in range(20):
        one(f"/before/{i}", "before")
    wait_records(log, 20)

    # Several streams in flight, plus a client that keeps making quick requests throughout.
    slow_results = []

    def slow(i: int) -> None:
        rid = f"slow-{i}"
        with RawConn(sl.port, timeout=15) as c:
            c.send(request_bytes("GET", f"/slow/{i}", [("X-Request-Id", rid)]))
            r = c.read_response(timeout=15)
        assert r.status == 200 and r.complete and b"\"part\": 2" in r.body
        slow_results.append(rid)

    stop_busy = threading.Event()
    busy_ids: list[str] = []

    def busy() -> None:
        for i in range(2000):  # bounded; stopped well before
            if stop_busy.is_set():
                return
            rid = f"busy-{i}"
            r = get(sl.port, f"/busy/{i}", [("X-Request-Id", rid)])
            assert r.status == 200
            busy_ids.append(rid)

    with ThreadPoolExecutor(8) as pool:
        slow_futs = [pool.submit(slow, i) for i in range(6)]
        busy_fut = pool.submit(busy)
        origin.wait_for(lambda: sum(h.target.startswith("/slow/") for h in origin.heads) == 6, 5,
                        "6 streams to reach the origin")
        time.sleep(0.2)
        os.rename(log, rotated)
        os.kill(sl.pid, signal.SIGHUP)
        # The writer reopens the path (creating a new file) between two batches; from then on
        # every record goes to the new file.
        deadline = time.monotonic() + 5
        while not log.exists():
            assert time.monotonic() < deadline, "no new log file 5 s after SIGHUP"
            time.sleep(0.01)
        time.sleep(0.1)
        release.set()
        for f in slow_futs:
            f.result()
        stop_busy.set()
        busy_fut.result()
    for i in range(20):
        one(f"/after/{i}", "after")

    expected = set(ids) | set(slow_results) | set(busy_ids)
    assert len(busy_ids) > 0
    recs = wait_records([rotated, log], len(expected), timeout=10)
    old, new = read_jsonl(rotated), read_jsonl(log)
    seen = [r["request_id"] for r in old + new]
    dups = {x for x in seen if seen.count(x) > 1}
    assert not dups, f"records written twice across the rotation: {sorted(dups)}"
    assert set(seen) == expected, (f"missing {sorted(expected - set(seen))}, "
                                   f"unexpected {sorted(set(seen) - expected)}")
    assert len(recs) == len(expected)
    new_ids = {r["request_id"] for r in new}
    old_ids = {r["request_id"] for r in old}
    assert {x for x in expected if x.startswith("before-")} <= old_ids
    # Finished after the new file existed: in the new file.
    assert set(slow_results) <= new_ids, \
        f"streams that ended after the rotation are in the old file: {set(slow_results) - new_ids}"
    assert {x for x in expected if x.startswith("after-")} <= new_ids
    sl.wait_stderr(lambda o: "SIGHUP" in o.get("msg", ""), 2, "a SIGHUP line")
    print(f"{len(old)} records in the rotated file, {len(new)} in the new one ({len(busy_ids)} busy requests)")


# --------------------------------------------------------------------------------------------
# Flags, shutdown flush
# --------------------------------------------------------------------------------------------

def test_log_file_and_admin_flags(stack, tmp_path):
    log = tmp_path / "flag.jsonl"
    origin = stack.origin()
    sl = stack.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin.port}",
                       "--workers", "1", "--log-file", str(log), "--admin", "127.0.0.1:0"])
    assert sl.ready["completion_log"] == [str(log)], "stdout is off by default once a file is set"
    assert sl.ready["admin"].startswith("127.0.0.1:") and sl.admin_port not in (0, sl.port)
    r = get(sl.port, "/flagged")
    assert r.status == 200
    rec, = wait_records(log, 1)
    assert rec["path"] == "/flagged" and rec["route"] == "/" and rec["end"] == "complete"
    assert bytes(sl.stdout) == b"", "records went to stdout although only a file was asked for"


def test_shutdown_flushes_the_queue(stack, tmp_path):
    """SIGTERM right after a burst: the records still queued are written before exit."""
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    cfg = write_routes_config(tmp_path / "flush.conf", upstreams={"o": f"http://127.0.0.1:{origin.port}"},
                              routes=[("/", "o", {})], workers=2, log=log_config(log))
    sl = Sluice(["--config", str(cfg)])  # stopped by the test, so not from `stack`
    try:
        _bulk(sl.port, 200)
        os.kill(sl.pid, signal.SIGTERM)
        on_disk = len(read_jsonl(log))
        rc = sl.wait_exit(5)
        assert rc == 0, f"exit {rc} after SIGTERM"
    finally:
        sl.stop()
    recs = read_jsonl(log)
    print(f"{on_disk} records on disk at SIGTERM, {len(recs)} after exit")
    assert len(recs) == 200, f"{len(recs)} of 200 records written before exit ({on_disk} at SIGTERM)"
    assert sorted(int(r["path"].rsplit("/", 1)[1]) for r in recs) == list(range(200))
    sl.log_objects()
