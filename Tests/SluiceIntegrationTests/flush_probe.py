"""The flush measurement: an origin writes SSE events GAP apart, and the client checks that each
reaches it before the next is written. Used by test_flush.py on its own and by
test_completion_log_sinks.py before and after the log sink blocks."""

from __future__ import annotations

import statistics
import time

from origin import LAST_CHUNK, SSE_HEAD, chunk
from rawhttp import ChunkedDecoder, RawConn, request_bytes

EVENTS = 5
GAP = 0.3
#: Added delay allowed per event; the origin and the client share one monotonic clock.
MEDIAN_LIMIT = 0.020
#: Any single event may be late by scheduling noise, but never by anything near GAP.
MAX_LIMIT = 0.060


def _events():
    return [f"id: {i}\nevent: tick\ndata: {{\"n\": {i}, \"pad\": \"{'x' * (i * 7)}\"}}\n\n".encode() for i in range(EVENTS)]


class FlushProbe:
    """The origin side (`serve`, as a handler or one route of one) and the client side (`check`)."""

    def __init__(self):
        self.events = _events()
        self.write_times: list[float] = []

    def serve(self, conn) -> None:
        self.write_times = []
        conn.send(SSE_HEAD)
        for i, ev in enumerate(self.events):
            if i:
                conn.sleep(GAP)
            self.write_times.append(conn.send(chunk(ev)))
        conn.send(LAST_CHUNK)

    def check(self, port: int, target: str = "/flush") -> list[float]:
        """Each event reaches the client before the next is written; median added delay under
        MEDIAN_LIMIT, none over MAX_LIMIT. Returns the added delay of each event (s)."""
        events = self.events
        with RawConn(port) as c:
            c.send(request_bytes("GET", target, [("Accept", "text/event-stream")]))
            resp = c.read_head()
            assert resp.status == 200
            assert resp.header("transfer-encoding") == "chunked"
            dec = ChunkedDecoder()
            dec.feed(bytes(c.buf))
            c.buf.clear()
            got_at: list[float] = []
            bounds = [sum(len(e) for e in events[: i + 1]) for i in range(len(events))]
            now = time.monotonic()
            while True:
                # Stamp every event completed by the bytes decoded so far.
                while len(got_at) < len(events) and len(dec.data) >= bounds[len(got_at)]:
                    got_at.append(now)
                if len(got_at) == len(events):
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
        assert len(self.write_times) == len(events)
        delays = [g - w for g, w in zip(got_at, self.write_times)]
        for i in range(1, len(events)):
            # Received before the origin even wrote the next one.
            assert got_at[i - 1] < self.write_times[i], f"event {i - 1} held back until event {i} was written: {delays}"
        assert max(delays) < MAX_LIMIT, f"per-event added delay (s): {delays}"
        assert statistics.median(delays) < MEDIAN_LIMIT, f"per-event added delay (s): {delays}"
        return delays
