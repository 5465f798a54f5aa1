"""6. Backpressure: a slow client makes sluice stop reading from the upstream."""

import select
import socket
import time

from origin import OriginStopping, PeerClosed, SendStalled, respond
from rawhttp import RawConn, request_bytes

PUSH = 200 * 1024 * 1024
READ_PER_SECOND = 1024
SECONDS = 10
RSS_GROWTH_LIMIT_KIB = 16 * 1024
#: Kernel socket buffers on both sides may hold several MiB, as the kernel's autotuning grows them (up to
#: tcp_rmem's maximum, 32 MiB on the CI machine, for sluice's upstream socket); sluice's own queue holds 64 KiB.
#: Seen: 3.9-5.3 MiB in most runs, 8.8 MiB once. A sluice that kept reading would pass this bound within a
#: second (the origin pushes 200 MiB), and LATE_GROWTH_LIMIT checks that the origin stays blocked.
ORIGIN_SENT_LIMIT = 16 * 1024 * 1024
#: Over the last seconds the origin may only gain what the client drained plus slack.
LATE_GROWTH_LIMIT = 512 * 1024


def test_slow_client_bounds_memory_and_blocks_origin(stack):
    piece = b"B" * 65536

    def handler(conn, req):
        if req.target == "/warm":
            return respond(conn, 200, b"warm")
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {PUSH}\r\n\r\n".encode())
        sent = 0
        try:
            while sent < PUSH:
                conn.send(piece, stall_timeout=SECONDS + 20)
                sent += len(piece)
        except (SendStalled, PeerClosed, OriginStopping):
            pass
        return False

    origin = stack.origin(handler, sndbuf=65536)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:  # one warm-up request so buffers and pools exist
        c.send(request_bytes("GET", "/warm"))
        assert c.read_response().body == b"warm"
    rss0 = sl.rss_kib()

    samples = []  # (t, origin bytes sent, rss KiB)
    received = 0
    with RawConn(sl.port, rcvbuf=4096, timeout=5) as c:
        c.send(request_bytes("GET", "/flood"))
        origin.wait_for(lambda: any(h.target == "/flood" for h in origin.heads), 5, "the flood request")
        flood = origin.connections[[h for h in origin.heads if h.target == "/flood"][0].conn_id]
        origin.wait_for(lambda: flood.bytes_sent > 0, 5, "the flood to start")
        t0 = time.monotonic()
        for sec in range(SECONDS):
            # 1 KiB per second, paced against the start time so the loop stays bounded.
            data = c.recv_some(5, size=READ_PER_SECOND)
            assert data, "sluice closed the slow client"
            received += len(data)
            with flood.lock:
                samples.append((time.monotonic() - t0, flood.bytes_sent, sl.rss_kib()))
            time.sleep(max(0.0, t0 + sec + 1 - time.monotonic()))
        assert sl.alive()

    peak_rss = max(s[2] for s in samples)
    sent_final = samples[-1][1]
    late = [s for s in samples if s[0] >= SECONDS - 4.5]
    report = ", ".join(f"t={t:.1f}s sent={b / 1048576:.2f}MiB rss={r / 1024:.1f}MiB" for t, b, r in samples)
    print(f"rss0={rss0 / 1024:.1f}MiB received={received}B; {report}")
    assert received > 0
    assert sent_final < ORIGIN_SENT_LIMIT, f"origin could write far ahead of the client: {report}"
    assert late[-1][1] - late[0][1] < LATE_GROWTH_LIMIT, f"origin writes did not stop: {report}"
    assert peak_rss - rss0 < RSS_GROWTH_LIMIT_KIB, f"sluice RSS grew from {rss0 / 1024:.1f}MiB: {report}"


#: Under the default max_request_body (32m), so sluice has to forward it, not reject it.
UPLOAD = 30 * 1024 * 1024
UPLOAD_SECONDS = 6
UPLOAD_SENT_LIMIT = 16 * 1024 * 1024


def test_slow_origin_blocks_upload_and_bounds_memory(stack):
    """The other direction: an origin that never reads the body makes the client's sends block."""
    def handler(conn, req):
        if req.target == "/warm":
            return respond(conn, 200, b"warm")
        conn.sleep(UPLOAD_SECONDS + 10)  # never reads the body (ends early when the origin stops)
        return False

    origin = stack.origin(handler, read_body=False, rcvbuf=65536)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/warm"))
        assert c.read_response().body == b"warm"
    rss0 = sl.rss_kib()

    c = RawConn(sl.port, timeout=5)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        c.send(f"POST /upload HTTP/1.1\r\nHost: sluice.test\r\nContent-Type: application/octet-stream\r\n"
               f"Content-Length: {UPLOAD}\r\n\r\n".encode())
        c.sock.setblocking(False)
        piece = b"U" * 65536
        sent, samples = 0, []
        t0 = time.monotonic()
        next_sample = t0
        while time.monotonic() - t0 < UPLOAD_SECONDS and sent < UPLOAD:
            select.select([], [c.sock], [], 0.1)
            try:
                sent += c.sock.send(piece[: UPLOAD - sent])
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                raise AssertionError(f"sluice dropped the upload after {sent} bytes")
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - t0, sent, sl.rss_kib()))
                next_sample += 1.0
        samples.append((time.monotonic() - t0, sent, sl.rss_kib()))
    finally:
        c.close()
    report = ", ".join(f"t={t:.1f}s sent={b / 1048576:.2f}MiB rss={r / 1024:.1f}MiB" for t, b, r in samples)
    print(f"rss0={rss0 / 1024:.1f}MiB; {report}")
    late = [s for s in samples if s[0] >= UPLOAD_SECONDS - 3.5]
    assert not origin.requests and [h.target for h in origin.heads][-1] == "/upload", "upload not forwarded"
    assert sent < UPLOAD_SENT_LIMIT, f"the client could push far ahead of the origin: {report}"
    assert late[-1][1] - late[0][1] < LATE_GROWTH_LIMIT, f"client sends did not block: {report}"
    assert max(s[2] for s in samples) - rss0 < RSS_GROWTH_LIMIT_KIB, f"sluice RSS grew: {report}"
