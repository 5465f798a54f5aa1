"""Allocation count: the forwarding path allocates nothing per chunk, and a request costs a bounded number.

STYLE.md "Allocation-free hot path": buffers come from a per-loop pool, a session holds one only while
bytes are in flight, so a stream of 100,000 events costs per event what a stream of 10 costs: nothing
on the heap. This is the guard (the idea of swift-nio's IntegrationTests/tests_04_performance).

How it measures: sluice (`--workers 1`) runs under `malloc_count.c`, an LD_PRELOAD shim compiled here
into the test's tmp dir, which counts every malloc/calloc/realloc/posix_memalign/aligned_alloc/memalign
call in the process and writes the total to a file on SIGUSR2. One client connection and one upstream
connection (both kept alive) carry every request: after a warm-up (pools and tables grown), the count is
read, one stream of N1 events runs, the count is read, one stream of N2 events, the count again:

    allocations per event   = (A2 - A1) / (N2 - N1)    (the per-request cost cancels out)
    allocations per request = (A4 - A3) / R            over R short streams on the same connection

How we know every event went through sluice as its own read and write: the origin and the client run
in lock step on this thread. The origin writes event i (one chunk frame, one send(), TCP_NODELAY) and the
client then reads until it holds exactly that frame; only then is event i+1 written. Event i+1 is not
in any socket when sluice reads event i, so sluice cannot have batched two events into one read or one
write, and a client read that held anything besides the exact frame would fail the test. So N events
are N upstream reads and N client writes (at least; a wakeup that finds nothing costs a read too).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from origin import OriginConn, Request
from rawhttp import RawConn, request_bytes

HERE = Path(__file__).resolve().parent
SHIM_SOURCE = HERE / "malloc_count.c"

#: SSE event size (the chunk payload); the frame adds "40\r\n" and "\r\n".
EVENT_BYTES = 64
WARMUP_STREAMS = 5
WARMUP_EVENTS = 200
N1 = 200
N2 = 20_000
#: Short streams for the per-request figure.
REQUESTS = 50
EVENTS_PER_REQUEST = 4

#: Allocations per extra event: effectively zero (20,000 events would have to allocate fewer than 200 times).
PER_EVENT_LIMIT = 0.01
#: Allocations per keep-alive request (parse, rewrite, pool an upstream, …): sane and bounded.
PER_REQUEST_LIMIT = 200

COUNT_TIMEOUT = 5.0


def build_shim(tmp_path: Path) -> Path:
    """Compile malloc_count.c into the test's tmp dir (gcc, or the toolchain's clang)."""
    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if cc is None:
        raise AssertionError("no C compiler (gcc/cc/clang) to build the malloc_count shim")
    out = tmp_path / "malloc_count.so"
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"building the malloc_count shim failed:\n{r.stderr}"
    return out


class AllocationCounter:
    """Reads the shim's counter in a process started with LD_PRELOAD and MALLOC_COUNT_FILE."""

    def __init__(self, pid: int, path: Path):
        self.pid = pid
        self.path = path

    def read_once(self) -> int:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + COUNT_TIMEOUT
        while not self.path.exists():  # the shim renames a complete file into place
            if time.monotonic() > deadline:
                raise AssertionError(f"no allocation count from pid {self.pid} within {COUNT_TIMEOUT}s "
                                     "(is the malloc_count shim preloaded?)")
            time.sleep(0.002)
        return int(self.path.read_text().split()[0])

    def read(self) -> int:
        """The count once the process is quiet: two readings 50 ms apart agree."""
        time.sleep(0.05)  # the turn that wrote the last bytes may still be finishing the exchange
        last = self.read_once()
        for _ in range(20):
            time.sleep(0.05)
            now = self.read_once()
            if now == last:
                return now
            last = now
        raise AssertionError(f"allocation count of pid {self.pid} never settled (last {last})")


def event_frame(stream: int, i: int) -> bytes:
    """One SSE event of EVENT_BYTES bytes, as one chunk frame; the content names its stream and index."""
    text = f'data: {{"s":{stream},"i":{i},"p":"'.encode()
    tail = b'"}\n\n'
    event = text + b"x" * (EVENT_BYTES - len(text) - len(tail)) + tail
    assert len(event) == EVENT_BYTES
    return b"%x\r\n" % EVENT_BYTES + event + b"\r\n"


class StreamControl:
    """Hands the origin's connection to the test thread for the length of one response."""

    def __init__(self, conn: OriginConn, req: Request):
        self.conn = conn
        self.req = req
        self.done = threading.Event()


class LockstepStreams:
    """An origin whose responses are written by the test thread, one event per client read."""

    HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")

    def __init__(self):
        self.controls: "queue.Queue[StreamControl]" = queue.Queue()
        self.streams = 0

    def handler(self, conn: OriginConn, req: Request):
        conn.send(self.HEAD)
        control = StreamControl(conn, req)
        self.controls.put(control)
        if not control.done.wait(60):
            raise AssertionError("the test never finished driving the stream")
        return True  # keep the upstream connection for the next request

    def stream(self, client: RawConn, events: int) -> None:
        """One request on `client`; the origin writes `events` events in lock step with the client's reads."""
        sid = self.streams
        self.streams += 1
        client.send(request_bytes("GET", f"/v1/stream/{sid}", [("Accept", "text/event-stream")]))
        control = self.controls.get(timeout=10)
        try:
            assert control.req.target == f"/v1/stream/{sid}"
            head = client.read_head()
            assert head.status == 200 and head.header("transfer-encoding") == "chunked", head.head_raw
            assert not client.buf, f"bytes after the head before any event was written: {bytes(client.buf)!r}"
            sock = client.sock
            sock.settimeout(10)
            for i in range(events):
                frame = event_frame(sid, i)
                control.conn.send(frame)  # one send() per event; the origin sets TCP_NODELAY
                got = b""
                while len(got) < len(frame):
                    data = sock.recv(65536)
                    if not data:
                        raise AssertionError(f"stream {sid}: connection ended at event {i}")
                    got += data
                # Exactly this frame: the next event has not been written yet, so nothing else can be here.
                assert got == frame, f"stream {sid} event {i}: expected {frame!r}, got {got!r}"
            control.conn.send(b"0\r\n\r\n")
            got = b""
            while len(got) < 5:
                data = sock.recv(65536)
                if not data:
                    raise AssertionError(f"stream {sid}: connection ended before the last chunk")
                got += data
            assert got == b"0\r\n\r\n", f"stream {sid}: expected the last chunk, got {got!r}"
        finally:
            control.done.set()


def test_no_allocation_per_chunk_and_bounded_per_request(stack, tmp_path):
    shim = build_shim(tmp_path)
    count_file = tmp_path / "malloc_count"
    streams = LockstepStreams()
    origin = stack.origin(streams.handler)
    env = dict(os.environ, LD_PRELOAD=str(shim), MALLOC_COUNT_FILE=str(count_file))
    sl = stack.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin.port}",
                       "--workers", "1"], env=env)
    counter = AllocationCounter(sl.pid, count_file)
    assert counter.read_once() > 0, "the shim counted nothing: it is not interposing malloc"

    with RawConn(sl.port) as client:
        client.sock.settimeout(10)
        # Warm-up: pools, tables and the upstream pool reach their steady size.
        for _ in range(WARMUP_STREAMS):
            streams.stream(client, WARMUP_EVENTS)
        for _ in range(REQUESTS):
            streams.stream(client, EVENTS_PER_REQUEST)

        a0 = counter.read()
        streams.stream(client, N1)
        a1 = counter.read()
        t0 = time.monotonic()
        streams.stream(client, N2)
        seconds = time.monotonic() - t0
        a2 = counter.read()
        for _ in range(REQUESTS):
            streams.stream(client, EVENTS_PER_REQUEST)
        a3 = counter.read()
        assert not client.eof, "sluice closed the keep-alive client connection"

    # Same conditions for every measured stream: one client connection, one reused upstream connection.
    assert len(origin.connections) == 1, f"{len(origin.connections)} upstream connections; expected one reused"

    per_event = (a2 - a1) / (N2 - N1)
    per_request = (a3 - a2) / REQUESTS
    numbers = (f"counts A0={a0} A1={a1} (after {N1} events) A2={a2} (after {N2} events) A3={a3} "
               f"(after {REQUESTS} requests of {EVENTS_PER_REQUEST} events); "
               f"stream of {N1}: {a1 - a0} allocations, stream of {N2}: {a2 - a1} allocations "
               f"({N2 / seconds:.0f} events/s); per extra event {per_event:.5f}, per request {per_request:.1f}")
    print(numbers)
    assert per_event < PER_EVENT_LIMIT, f"sluice allocates per chunk: {numbers}"
    assert per_request < PER_REQUEST_LIMIT, f"sluice allocates too much per request: {numbers}"
