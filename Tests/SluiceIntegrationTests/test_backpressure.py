"""6. Backpressure: a slow client makes sluice stop reading from the upstream."""

import time

from origin import OriginStopping, PeerClosed, SendStalled, respond
from rawhttp import RawConn, request_bytes

PUSH = 200 * 1024 * 1024
READ_PER_SECOND = 1024
SECONDS = 10
RSS_GROWTH_LIMIT_KIB = 16 * 1024
#: Kernel socket buffers on both sides may hold a few MiB; sluice's own queue holds 64 KiB.
ORIGIN_SENT_LIMIT = 8 * 1024 * 1024
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
