"""WebSocket tunnels: the `websockets` library as client and origin through sluice. Echo byte for byte with
subprotocol and permessage-deflate negotiated end to end, pings, closes from either side, a push relayed at
once, resets either way, Realtime usage; each case's completion record (`end`, the `tunnel` object)."""

from __future__ import annotations

import json
import os
import time

import pytest
from websockets.exceptions import ConnectionClosed

from sluice_proc import wait_records
from websocket_origins import (RawWS, WSOrigin, client_frame, echo, frame_len, pushes, send, start, tunnel_of,
                               ws_client)

#: A push must reach the client this soon after the origin sent it (best of PUSHES).
PUSH_LIMIT = 0.005
PUSHES = 8
#: Either side must notice a reset of the other this soon.
RESET_LIMIT = 1.0


def _ended(origin, c, timeout: float = 5.0):
    origin.wait_for(lambda: c.ended_at is not None, timeout, "the end of the origin's connection")


def test_text_and_1mib_binary_echo_byte_exact_with_subprotocol_and_deflate(stack):
    origin = WSOrigin(echo, subprotocols=["chat"])
    sl, log = start(stack, origin)
    text = "héllo, tunnel! " * 400
    blob = os.urandom(1 << 20)
    with ws_client(sl.port, "/v1/realtime?model=m", compression="deflate",
                   subprotocols=["sluice.test", "chat"]) as ws:
        assert ws.subprotocol == "chat", "the origin's subprotocol choice did not reach the client"
        assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(blob)
        got = ws.recv(timeout=30)
        assert isinstance(got, bytes) and len(got) == len(blob) and got == blob, "the 1 MiB echo differs"
        key = ws.request.headers["Sec-WebSocket-Key"]
    counter = ws.counter

    c = origin.conn()
    _ended(origin, c)
    assert [m for _, m in c.received] == [text, blob]
    assert c.subprotocol == "chat" and c.extensions == ["PerMessageDeflate"]
    assert c.close_code == 1000
    [hs] = origin.handshakes
    assert hs.path == "/v1/realtime?model=m"
    assert hs.values("Upgrade") == ["websocket"], hs.headers
    assert "upgrade" in [t.strip().lower() for t in hs.header("Connection").split(",")], hs.headers
    assert hs.values("Sec-WebSocket-Key") == [key], "Sec-WebSocket-Key must go through untouched"
    assert hs.values("Sec-WebSocket-Version") == ["13"]
    assert hs.values("Sec-WebSocket-Protocol") == ["sluice.test, chat"], hs.headers
    assert "permessage-deflate" in (hs.header("Sec-WebSocket-Extensions") or ""), hs.headers

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["method"] == "GET" and rec["path"] == "/v1/realtime", rec
    assert rec["end"] == "tunnel_client_closed", rec
    assert t["client_messages"] == 2 and t["upstream_messages"] == 2, t
    assert t["client_close_code"] == 1000 and t["upstream_close_code"] == 1000, t
    # Every byte each side put on the wire after the handshake, counted by the client's socket.
    assert t["client_bytes"] == counter.sent_after, (t, counter.sent_after)
    assert t["upstream_bytes"] == counter.received_after, (t, counter.received_after)
    assert t["client_bytes"] > len(blob) and t["upstream_bytes"] > len(blob), t
    assert t["first_upstream_message_ms"] is not None, t


def test_pings_both_ways_are_answered_and_count_as_bytes_not_messages(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin)
    with ws_client(sl.port) as ws:
        pong = ws.ping(b"client-ping")
        assert pong.wait(5), "the client's ping got no pong through the tunnel"
        ws.send("!ping")  # the origin pings the client and says pong-ok once the pong came back
        assert ws.recv(timeout=10) == "pong-ok"
    counter = ws.counter
    c = origin.conn()
    _ended(origin, c)
    assert c.pong_latency is not None

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "tunnel_client_closed", rec
    assert t["client_messages"] == 1 and t["upstream_messages"] == 1, f"pings or pongs counted as messages: {t}"
    # client: ping(11) + "!ping" + pong(11) + close; origin: pong(11) + ping(11) + "pong-ok" + close.
    want_client = frame_len(11, True) + frame_len(5, True) + frame_len(11, True) + frame_len(2, True)
    want_upstream = frame_len(11, False) + frame_len(11, False) + frame_len(7, False) + frame_len(2, False)
    assert (counter.sent_after, counter.received_after) == (want_client, want_upstream)
    assert (t["client_bytes"], t["upstream_bytes"]) == (want_client, want_upstream), t


def test_client_close_code_and_reason_reach_the_origin(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin)
    ws = ws_client(sl.port)
    ws.send("hello")
    assert ws.recv(timeout=5) == "hello"
    ws.close(4000, "client done")
    c = origin.conn()
    _ended(origin, c)
    assert (c.close_code, c.close_reason) == (4000, "client done")

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "tunnel_client_closed", rec
    assert t["client_close_code"] == 4000, t
    assert t["upstream_close_code"] == 4000, t  # websockets answers a close with the code it received
    assert (t["client_messages"], t["upstream_messages"]) == (1, 1), t
    assert t["client_bytes"] == ws.counter.sent_after and t["upstream_bytes"] == ws.counter.received_after, t


def test_origin_close_code_and_reason_reach_the_client(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin)
    ws = ws_client(sl.port)
    try:
        ws.send("!close 4001 origin done")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    finally:
        ws.close()
    assert closed.value.rcvd is not None, f"the client got no close frame: {closed.value!r}"
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "origin done")
    c = origin.conn()
    _ended(origin, c)
    assert c.close_code == 4001, "the client's answer to the close did not reach the origin"

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "tunnel_upstream_closed", rec
    assert t["upstream_close_code"] == 4001 and t["client_close_code"] == 4001, t
    assert (t["client_messages"], t["upstream_messages"]) == (1, 0), t


def test_a_push_reaches_the_client_at_once(stack):
    # Pushes 300 ms apart, the first 300 ms after the handshake; each is timed from just before the origin's
    # send() to the client's recv() on the same monotonic clock. A relay that coalesces writes or waits for a
    # timer misses the bound on every push.
    origin = WSOrigin(pushes([0.3] * PUSHES), compression=None)
    sl, log = start(stack, origin)
    arrivals = []
    with ws_client(sl.port) as ws:
        for i in range(PUSHES):
            assert ws.recv(timeout=5) == f"push {i}"
            arrivals.append(time.monotonic())
    c = origin.conn()
    delays = sorted(a - s for a, s in zip(arrivals, c.sent_at))
    assert len(delays) == PUSHES
    print(f"push delays (ms): {[round(d * 1000, 3) for d in delays]}")
    assert delays[0] < PUSH_LIMIT, f"best push delay {delays[0] * 1000:.2f} ms; all: {[round(d * 1000, 2) for d in delays]}"

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "tunnel_client_closed", rec
    assert t["upstream_messages"] == PUSHES and t["client_messages"] == 0, t
    # From the 101 to the first push: the origin waited 300 ms after its handshake.
    assert 250 <= t["first_upstream_message_ms"] < 1500, t
    assert t["duration_ms"] >= 0.3 * PUSHES * 1000 - 50, t


def test_origin_reset_reaches_the_client_within_1s(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin)
    ws = ws_client(sl.port)
    try:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send("!abort")  # the origin resets its TCP connection (transport.abort)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        noticed = time.monotonic()
    finally:
        ws.close()
    c = origin.conn()
    assert c.aborted_at is not None
    assert noticed - c.aborted_at < RESET_LIMIT, f"the client noticed the reset after {noticed - c.aborted_at:.3f} s"
    assert closed.value.rcvd is None or closed.value.rcvd.code != 1000, "a reset must not look like a clean close"

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "upstream_abort", rec
    assert t["upstream_close_code"] is None, t
    assert (t["client_messages"], t["upstream_messages"]) == (2, 1), t


def test_client_reset_reaches_the_origin_within_1s(stack):
    origin = WSOrigin(echo, compression=None)
    sl, log = start(stack, origin)
    raw = RawWS(sl.port)
    try:
        raw.handshake()
        raw.send(client_frame(0x1, b"hello"))
        raw.read_messages(1, timeout=5)
        assert raw.reader.frames == [(0x1, b"hello")]
        c = origin.conn()
        reset_at = time.monotonic()
        raw.reset()
    finally:
        raw.close()
    _ended(origin, c)
    assert c.ended_at - reset_at < RESET_LIMIT, f"the origin noticed the client's reset after {c.ended_at - reset_at:.3f} s"
    assert c.close_code is None, "the origin got a close frame nobody sent"

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "client_abort", rec
    assert t["client_close_code"] is None, t
    assert (t["client_messages"], t["upstream_messages"]) == (1, 1), t
    assert t["client_bytes"] == frame_len(5, True) and t["upstream_bytes"] == frame_len(5, False), t


def _done(input_tokens: int, output_tokens: int, details: bool = False) -> dict:
    usage = {"total_tokens": input_tokens + output_tokens, "input_tokens": input_tokens, "output_tokens": output_tokens}
    if details:  # what the Realtime API sends besides the three counts
        usage["input_token_details"] = {"cached_tokens": 0, "text_tokens": input_tokens, "audio_tokens": 0}
        usage["output_token_details"] = {"text_tokens": output_tokens, "audio_tokens": 0}
    return {"type": "response.done", "event_id": "event_1",
            "response": {"object": "realtime.response", "id": "resp_1", "status": "completed", "output": [],
                         "usage": usage}}


def _realtime(fragment_second: bool):
    """Four server messages: session.created, a delta and two response.done (10+20, then 5+7 with the token
    details the Realtime API adds), the second one fragmented in three frames if `fragment_second`."""
    async def script(ws, c):
        await send(ws, c, json.dumps({"type": "session.created", "session": {"model": "gpt-realtime"}}))
        await send(ws, c, json.dumps({"type": "response.text.delta", "delta": "Hel"}))
        await send(ws, c, json.dumps(_done(10, 20)))
        text = json.dumps(_done(5, 7, details=True))
        if fragment_second:  # one text message in a text frame and two continuation frames
            third = len(text) // 3
            await ws.send([text[:third], text[third:2 * third], text[2 * third:]])
        else:
            await send(ws, c, text)
        await echo(ws, c)
    return script


@pytest.mark.parametrize("fragment_second", [False, True], ids=["whole", "fragmented"])
def test_realtime_response_done_usage_is_summed_into_the_record(stack, fragment_second):
    origin = WSOrigin(_realtime(fragment_second), compression=None)
    sl, log = start(stack, origin)
    with ws_client(sl.port, "/v1/realtime?model=gpt-realtime") as ws:
        got = [json.loads(ws.recv(timeout=5)) for _ in range(4)]
    assert [m["type"] for m in got] == ["session.created", "response.text.delta", "response.done", "response.done"]
    assert got[3] == _done(5, 7, details=True)

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert t["upstream_messages"] == 4, f"a fragmented message is one message: {t}"
    usage = rec["usage"]
    assert usage is not None, rec
    # A message split over frames reaches the client whole (checked above) but is skipped by the usage tap, as
    # compressed ones are: only single-frame, uncompressed text is read (docs/websocket.md).
    want = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30} if fragment_second else \
        {"prompt_tokens": 15, "completion_tokens": 27, "total_tokens": 42}
    assert {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == want, rec
