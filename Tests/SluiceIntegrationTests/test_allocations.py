"""Allocation count: the forwarding path allocates nothing per chunk, and a request costs a bounded number.

STYLE.md "Allocation-free hot path": buffers come from a per-loop pool and a session holds one only while
bytes are in flight, so a stream of 100,000 events costs per event what a stream of 10 costs: nothing
on the heap. This is the guard (the idea of swift-nio's IntegrationTests/tests_04_performance).

How it measures: sluice (`--workers 1`) runs under `malloc_count.c`, an LD_PRELOAD shim compiled here
into the test's tmp dir. It counts every malloc/calloc/realloc/posix_memalign/aligned_alloc/memalign
call in the process and writes the total to a file on SIGUSR2. A reading is taken only when sluice is
quiet: two readings 50 ms apart must agree.

Which binary: allocation counts only mean something for an optimized build. At -Onone, unspecialized
generic standard-library code (`Array.first`, `for x in array`, `contains(where:)`) allocates a coroutine
frame on every call, and so does a local function capturing a `var`; the debug binary therefore
allocates about five times per loop turn even though the forwarding path is sound. The test uses
$SLUICE_ALLOC_BIN if set (any binary; set it to the debug binary to watch the test fail), else $SLUICE_BIN
when that is an optimized build, else `.build/release/sluice`; without one of these it is skipped
(build one with `swift build -c release`).

Two tests:
- lock step: one client connection and one upstream connection (both kept alive) carry every request.
  After a warm-up the count is read, one stream of N1 events runs, the count is read, one stream of N2
  events runs, the count is read:
      allocations per event   = (A2 - A1) / (N2 - N1)    (the per-request cost cancels out)
      allocations per request = (A3 - A2) / REQUESTS     (short streams on the same connection)
      allocations per connection + request                (short streams on new connections)
  How we know every event went through sluice as its own read and write: the origin and the client run
  in lock step on the test thread. The origin writes event i (one chunk frame, one send(), TCP_NODELAY)
  and the client then reads until it holds exactly that frame; only then is event i+1 written. Event
  i+1 is in no socket when sluice reads event i, so sluice cannot batch two events into one read or one
  write, and a client read holding anything but the exact frame fails the test. N events are thus at
  least N upstream reads and N client writes.
- saturated: the origin writes a long stream as fast as it can and the client reads as fast as it can,
  so sluice runs full read/write rounds back to back and yields to the loop after its round budget
  (`ClientSession.roundsPerWakeup`): the path a fast model's stream takes. It must not allocate either.
"""

from __future__ import annotations

import hashlib
import ssl
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from typing import Optional

import pytest

import sluice_proc
from origin import OriginConn, Request
from rawhttp import RawConn, request_bytes
from streams import LAST_CHUNK, SSE_HEAD, chunk

HERE = Path(__file__).resolve().parent
SHIM_SOURCE = HERE / "malloc_count.c"

#: SSE event size (the chunk payload); the frame adds "40\r\n" and "\r\n".
EVENT_BYTES = 64
WARMUP_STREAMS = 5
WARMUP_EVENTS = 200
N1 = 200
N2 = 20_000
#: Short streams for the per-request and per-connection figures.
REQUESTS = 50
CONNECTIONS = 20
EVENTS_PER_REQUEST = 4
#: Saturated streams: events per stream (70 bytes each on the wire).
SATURATED_WARMUP_EVENTS = 100_000
SATURATED_EVENTS = 1_000_000

#: Allocations per extra event: effectively zero (20,000 events may allocate fewer than 200 times).
PER_EVENT_LIMIT = 0.01
#: Allocations per request on a kept-alive connection (measured: 0 in a release build of 890bf39).
PER_REQUEST_LIMIT = 50
#: Allocations per new client connection and its request (measured: 5 in a release build of 890bf39).
PER_CONNECTION_LIMIT = 50
#: Allocations in a whole saturated stream of 70 MB: none is expected; the slack covers a one-time
#: growth (e.g. the loop's list of yielded sessions) that the warm-up happened not to reach.
SATURATED_LIMIT = 2

COUNT_TIMEOUT = 5.0


# -- binary and shim ---------------------------------------------------------------------------------

def is_unoptimized(binary: str) -> bool:
    """True for a -Onone Swift build: it links libswiftSwiftOnoneSupport."""
    return b"libswiftSwiftOnoneSupport" in Path(binary).read_bytes()


def allocation_binary() -> str:
    explicit = os.environ.get("SLUICE_ALLOC_BIN")
    if explicit:
        assert os.access(explicit, os.X_OK), f"SLUICE_ALLOC_BIN={explicit} is not an executable"
        return explicit
    candidates = [sluice_proc.SLUICE_BIN, str(sluice_proc.REPO / ".build" / "release" / "sluice")]
    for binary in candidates:
        if os.access(binary, os.X_OK) and not is_unoptimized(binary):
            return binary
    pytest.skip("allocation counts need an optimized sluice (a -Onone build allocates in unspecialized "
                "generics every loop turn): run `swift build -c release` or set SLUICE_ALLOC_BIN")


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


def counted_sluice(stack, tmp_path: Path, origin_port: int, args: Optional[list] = None):
    """sluice (one worker) in front of `origin_port`, under the shim, with `args` instead of the default flags
    when given; returns (sluice, counter)."""
    binary = allocation_binary()
    shim = build_shim(tmp_path)
    count_file = tmp_path / "malloc_count"
    env = dict(os.environ, LD_PRELOAD=str(shim), MALLOC_COUNT_FILE=str(count_file))
    saved = sluice_proc.SLUICE_BIN
    sluice_proc.SLUICE_BIN = binary
    try:
        sl = stack.sluice(args or ["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin_port}",
                                   "--workers", "1"], env=env)
    finally:
        sluice_proc.SLUICE_BIN = saved
    counter = AllocationCounter(sl.pid, count_file)
    assert counter.read_once() > 0, "the shim counted nothing: it is not interposing malloc"
    return sl, counter


# -- the lock-step origin ----------------------------------------------------------------------------

def event_frame(stream: int, i: int) -> bytes:
    """One SSE event of EVENT_BYTES bytes as one chunk frame; the content names its stream and index."""
    text = f'data: {{"s":{stream},"i":{i},"p":"'.encode()
    tail = b'"}\n\n'
    event = text + b"x" * (EVENT_BYTES - len(text) - len(tail)) + tail
    assert len(event) == EVENT_BYTES
    return chunk(event)


class StreamControl:
    """Hands the origin's connection to the test thread for the length of one response."""

    def __init__(self, conn: OriginConn, req: Request):
        self.conn = conn
        self.req = req
        self.done = threading.Event()


class LockstepStreams:
    """An origin whose responses the test thread writes, one event per client read."""

    def __init__(self):
        self.controls: "queue.Queue[StreamControl]" = queue.Queue()
        self.streams = 0

    def handler(self, conn: OriginConn, req: Request):
        conn.send(SSE_HEAD)
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
            control.conn.send(LAST_CHUNK)
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
    streams = LockstepStreams()
    origin = stack.origin(streams.handler)
    sl, counter = counted_sluice(stack, tmp_path, origin.port)

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

    a4 = counter.read()
    for _ in range(CONNECTIONS):
        with RawConn(sl.port) as c:
            streams.stream(c, EVENTS_PER_REQUEST)
    a5 = counter.read()

    per_event = (a2 - a1) / (N2 - N1)
    per_request = (a3 - a2) / REQUESTS
    per_connection = (a5 - a4) / CONNECTIONS
    numbers = (f"{sl.args[0]}: counts A0={a0} A1={a1} (+{N1} events) A2={a2} (+{N2} events) "
               f"A3={a3} (+{REQUESTS} requests of {EVENTS_PER_REQUEST} events) A4={a4} A5={a5} "
               f"(+{CONNECTIONS} connections); stream of {N1}: {a1 - a0} allocations, stream of {N2}: "
               f"{a2 - a1} ({N2 / seconds:.0f} events/s in lock step); per extra event {per_event:.5f}, "
               f"per keep-alive request {per_request:.1f}, per new connection + request {per_connection:.1f}")
    print(numbers)
    assert per_event < PER_EVENT_LIMIT, f"sluice allocates per chunk: {numbers}"
    assert per_request < PER_REQUEST_LIMIT, f"sluice allocates too much per request: {numbers}"
    assert per_connection < PER_CONNECTION_LIMIT, f"sluice allocates too much per connection: {numbers}"


#: Allocations OpenSSL 3.0 (Debian 12's libssl3) makes inside each SSL_write_ex, whatever the caller does: 40-byte
#: CRYPTO_zalloc calls from libssl, one per WPACKET its record layer initialises (WPACKET_init allocates its
#: sub-packet list), two per TLS 1.2 record and three per TLS 1.3 record (traced with gdb on CRYPTO_zalloc;
#: glibc serves them from its per-thread cache). The limits below are exactly these: one allocation more
#: per event would be sluice's, and fails the test.
OPENSSL_PER_RECORD = {"1.2": 2, "1.3": 3}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_no_allocation_per_chunk_over_tls(stack, tmp_path, pki, version):
    """The same lock step with the client on a TLS listener: each event is one SSL_write. sluice's part allocates
    nothing (OpenSSL keeps its record buffers: SSL_MODE_RELEASE_BUFFERS is off; the BIO pair is fixed-size);
    what is counted per event is OpenSSL's own per-record allocations."""
    limit = OPENSSL_PER_RECORD[version] + PER_EVENT_LIMIT
    streams = LockstepStreams()
    origin = stack.origin(streams.handler)
    cfg = tmp_path / "tls.conf"
    cfg.write_text(f"listen 127.0.0.1:0 tls\nworkers 1\ntls {{\n certificate {pki / 'server.pem'}\n key {pki / 'server.key'}\n}}\n"
                   f"upstream o {{\n server http://127.0.0.1:{origin.port}\n}}\nroute / {{\n upstream o\n}}\n")
    sl, counter = counted_sluice(stack, tmp_path, origin.port, ["--config", str(cfg)])
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.minimum_version = context.maximum_version = (ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3)
    with RawConn(sl.port) as client:
        client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
        client.sock.settimeout(10)
        for _ in range(WARMUP_STREAMS):
            streams.stream(client, WARMUP_EVENTS)
        a1 = counter.read()
        streams.stream(client, N1)
        a2 = counter.read()
        streams.stream(client, N2)
        a3 = counter.read()
    per_event = ((a3 - a2) - (a2 - a1)) / (N2 - N1)
    numbers = (f"TLS {version}: stream of {N1} events {a2 - a1} allocations, of {N2} events {a3 - a2}; "
               f"per extra event {per_event:.5f}")
    print(numbers)
    assert per_event < limit, f"the TLS path allocates per chunk: {numbers}"


# -- saturated streams --------------------------------------------------------------------------------

SATURATED_FRAME = b"%x\r\n" % EVENT_BYTES + b"data: " + b"t" * (EVENT_BYTES - 8) + b"\n\n" + b"\r\n"
SATURATED_BATCH = 1000


def saturated_handler(conn: OriginConn, req: Request):
    """/flood/<n>: n events written back to back (1000 per send), then the last chunk."""
    n = int(req.target.rsplit("/", 1)[1])
    conn.send(SSE_HEAD)
    batch = SATURATED_FRAME * SATURATED_BATCH
    for _ in range(n // SATURATED_BATCH):
        conn.send(batch)
    conn.send(SATURATED_FRAME * (n % SATURATED_BATCH) + LAST_CHUNK)
    return True


def read_saturated(client: RawConn, n: int) -> None:
    """Read one /flood/<n> response as fast as possible; its body must be the origin's bytes exactly."""
    head = client.read_head()
    assert head.status == 200 and head.header("transfer-encoding") == "chunked", head.head_raw
    want = len(SATURATED_FRAME) * n + 5
    expected = hashlib.sha256()
    batch = SATURATED_FRAME * SATURATED_BATCH
    for _ in range(n // SATURATED_BATCH):
        expected.update(batch)
    expected.update(SATURATED_FRAME * (n % SATURATED_BATCH) + b"0\r\n\r\n")
    got = hashlib.sha256(bytes(client.buf))
    size = len(client.buf)
    client.buf.clear()
    client.sock.settimeout(30)
    while size < want:
        data = client.sock.recv(1 << 20)
        if not data:
            raise AssertionError(f"connection ended after {size} of {want} bytes")
        got.update(data)
        size += len(data)
    assert size == want, f"{size} bytes, expected {want}"
    assert got.digest() == expected.digest(), "the body differs from what the origin wrote"


def test_no_allocation_in_saturated_stream(stack, tmp_path):
    origin = stack.origin(saturated_handler)
    sl, counter = counted_sluice(stack, tmp_path, origin.port)
    with RawConn(sl.port) as client:
        for _ in range(2):  # warm-up: includes round-budget yields, so one-time growth happens here
            client.send(request_bytes("GET", f"/flood/{SATURATED_WARMUP_EVENTS}"))
            read_saturated(client, SATURATED_WARMUP_EVENTS)
        # A short flood first: the per-request cost (the completion record's strings) cancels out.
        a0 = counter.read()
        client.send(request_bytes("GET", f"/flood/{SATURATED_WARMUP_EVENTS}"))
        read_saturated(client, SATURATED_WARMUP_EVENTS)
        a1 = counter.read()
        t0 = time.monotonic()
        client.send(request_bytes("GET", f"/flood/{SATURATED_EVENTS}"))
        read_saturated(client, SATURATED_EVENTS)
        seconds = time.monotonic() - t0
        a2 = counter.read()
    megabytes = len(SATURATED_FRAME) * SATURATED_EVENTS / 1e6
    extra = (a2 - a1) - (a1 - a0)
    numbers = (f"{sl.args[0]}: {a2 - a1} allocations in a saturated stream of {SATURATED_EVENTS} events "
               f"({megabytes:.0f} MB in {seconds:.2f} s) vs {a1 - a0} in one of {SATURATED_WARMUP_EVENTS}: "
               f"{extra} more; counts {a0}, {a1}, {a2}")
    print(numbers)
    assert extra <= SATURATED_LIMIT, f"sluice allocates while streaming at full speed: {numbers}"
