"""1. Flush: every event the origin writes reaches the client at once, not batched."""

import statistics
import time

from rawhttp import ChunkedDecoder, RawConn, request_bytes

EVENTS = 5
GAP = 0.3
#: Added delay allowed per event; the origin and the client share one monotonic clock.
MEDIAN_LIMIT = 0.020
#: Any single event may be late by scheduling noise, but never by anything near GAP.
MAX_LIMIT = 0.060


def _events():
    return [f"id: {i}\nevent: tick\ndata: {{\"n\": {i}, \"pad\": \"{'x' * (i * 7)}\"}}\n\n".encode() for i in range(EVENTS)]


def test_each_sse_event_is_flushed_before_the_next_is_written(stack):
    events = _events()
    write_times: list[float] = []

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i, ev in enumerate(events):
            if i:
                conn.sleep(GAP)
            write_times.append(conn.send(f"{len(ev):x}\r\n".encode() + ev + b"\r\n"))
        conn.send(b"0\r\n\r\n")

    origin = stack.origin(handler)
    sl = stack.proxy(origin, workers=2)
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/v1/stream", [("Accept", "text/event-stream")]))
        resp = c.read_head()
        assert resp.status == 200
        assert resp.header("transfer-encoding") == "chunked"
        dec = ChunkedDecoder()
        dec.feed(bytes(c.buf))
        c.buf.clear()
        got_at: list[float] = []
        bounds = [sum(len(e) for e in events[: i + 1]) for i in range(EVENTS)]
        now = time.monotonic()
        while True:
            # Stamp every event completed by the bytes decoded so far.
            while len(got_at) < EVENTS and len(dec.data) >= bounds[len(got_at)]:
                got_at.append(now)
            if len(got_at) == EVENTS:
                break
            assert not dec.done, "stream ended before all events arrived"
            assert c.recv_some(5.0), "sluice closed the stream early"
            now = time.monotonic()
            dec.feed(bytes(c.buf))
            c.buf.clear()
        while not dec.done:  # the terminator
            assert c.recv_some(5.0), "sluice closed the stream before the terminator"
            dec.feed(bytes(c.buf))
            c.buf.clear()
        assert bytes(dec.data) == b"".join(events)

    assert len(write_times) == EVENTS and len(got_at) == EVENTS
    delays = [g - w for g, w in zip(got_at, write_times)]
    print("per-event added delay (ms):", [round(d * 1000, 2) for d in delays])
    for i in range(1, EVENTS):
        # Received before the origin even wrote the next one.
        assert got_at[i - 1] < write_times[i], f"event {i - 1} held back until event {i} was written: {delays}"
    assert max(delays) < MAX_LIMIT, f"per-event added delay (s): {delays}"
    assert statistics.median(delays) < MEDIAN_LIMIT, f"per-event added delay (s): {delays}"


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
