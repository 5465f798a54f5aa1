"""1. Flush: every event the origin writes reaches the client at once, not batched."""

import time

from flush_probe import FlushProbe
from rawhttp import RawConn, request_bytes


def test_each_sse_event_is_flushed_before_the_next_is_written(stack):
    probe = FlushProbe()
    origin = stack.origin(lambda conn, req: probe.serve(conn))
    sl = stack.proxy(origin, workers=2)
    delays = probe.check(sl.port, "/v1/stream")
    print("per-event added delay (ms):", [round(d * 1000, 2) for d in delays])


def test_event_split_across_writes_is_forwarded_piecewise(stack):
    """Half an event is forwarded without waiting for the other half (no line buffering)."""
    first_half, second_half = b"data: hello wo", b"rld\n\n"
    sent_second = []

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
                  + str(len(first_half + second_half)).encode() + b"\r\n\r\n" + first_half)
        # Long enough that scheduling noise on a loaded 2-core CI machine cannot blur the order.
        conn.sleep(2.0)
        sent_second.append(conn.send(second_half))

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port) as c:
        t0 = time.monotonic()
        c.send(request_bytes("GET", "/"))
        resp = c.read_head()
        assert resp.status == 200
        while len(c.buf) < len(first_half):
            assert c.recv_some(5.0), "stream ended early"
        t_first = time.monotonic()
        assert bytes(c.buf) == first_half
        while len(c.buf) < len(first_half + second_half):
            assert c.recv_some(5.0), "stream ended early"
        assert bytes(c.buf) == first_half + second_half
    assert sent_second and t_first < sent_second[0], "the first half waited for the second"
    assert t_first - t0 < 1.5
