"""Issue 14: the official anthropic SDK against `sluice demo` (the demo backend's POST /v1/messages), the
completion record of an Anthropic stream, and `sluice demo --backend-port N`."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from demo_text import reply_text
from origin import unused_port
from sluice_proc import Sluice, wait_records
from test_clients import WORD_GAP, _assert_spread

anthropic = pytest.importorskip("anthropic", reason="pip install anthropic (.ci/run installs it)")

MODEL = "claude-sluice-demo"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "completions.jsonl"


@pytest.fixture
def demo(stack, log_path):
    return stack.sluice(["demo", "--listen", "127.0.0.1:0", "--log-file", str(log_path)])


@pytest.fixture
def expected():
    return reply_text("hi")[0]


def _client(port):
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-sluice-test", max_retries=0,
                               timeout=30)


def _backend_port(sluice: Sluice) -> int:
    """The demo backend's port, from the ready line's `upstreams` (`default=http://127.0.0.1:N`)."""
    [upstream] = sluice.ready["upstreams"]
    return int(upstream.rsplit(":", 1)[1])


def test_anthropic_sdk_non_streaming(demo, expected):
    message = _client(demo.port).messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == expected
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 1
    assert message.usage.output_tokens == len(expected.split(" "))


def test_anthropic_sdk_stream_helper_deltas_arrive_one_by_one(demo, expected):
    pieces, times = [], []
    t0 = time.monotonic()
    with _client(demo.port).messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        for text in stream.text_stream:
            assert time.monotonic() - t0 < 30
            pieces.append(text)
            times.append(time.monotonic())
        final = stream.get_final_message()
    assert "".join(pieces) == expected
    _assert_spread(times, len(expected.split()), "anthropic SDK messages.stream")
    assert final.content[0].text == expected
    assert final.model == MODEL
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 1
    assert final.usage.output_tokens == len(pieces)


def test_anthropic_sdk_raw_events_in_order_and_spread(demo, expected):
    """`create(stream=True)` yields Anthropic's events in their documented order; the first and the last
    arrive far apart (the stream is not buffered whole)."""
    events, stamps = [], []
    for event in _client(demo.port).messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True):
        events.append(event)
        stamps.append(time.monotonic())
    types = [e.type for e in events]
    n = len(expected.split(" "))
    assert types == (["message_start", "content_block_start"] + ["content_block_delta"] * n
                     + ["content_block_stop", "message_delta", "message_stop"]), types
    start, delta = events[0], events[-2]
    assert start.message.model == MODEL and start.message.content == []
    assert start.message.usage.input_tokens == 1 and start.message.usage.output_tokens == 1
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == n
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == expected
    assert all(e.delta.type == "text_delta" for e in events if e.type == "content_block_delta")
    assert stamps[-1] - stamps[0] >= 0.5 * WORD_GAP * (n - 1), f"all events within {stamps[-1] - stamps[0]:.3f}s"


def test_anthropic_max_tokens_cuts_the_reply(demo, expected):
    message = _client(demo.port).messages.create(model=MODEL, max_tokens=3, messages=MESSAGES)
    assert message.content[0].text == "".join(expected.split(" ")[:1] + [" " + w for w in expected.split(" ")[1:3]])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_anthropic_stream_completion_record_has_model_and_usage(demo, log_path, expected):
    with _client(demo.port).messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text == expected
    [rec] = wait_records(log_path, 1)
    assert rec["method"] == "POST" and rec["path"] == "/v1/messages", rec
    assert rec["status"] == 200 and rec["end"] == "complete", rec
    assert rec["model"] == MODEL, rec
    n = len(expected.split(" "))
    assert rec["usage"] == {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": 1 + n}, rec
    assert rec.get("usage_source", "reported") == "reported", rec
    # message_start, content_block_start, ping, n deltas, content_block_stop, message_delta, message_stop.
    assert rec["sse_events"] == n + 6, rec


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not a valid JSON object"),
    (json.dumps({"model": MODEL, "messages": MESSAGES}).encode(), "max_tokens: Field required"),
    (json.dumps({"max_tokens": 10, "messages": MESSAGES}).encode(), "model: Field required"),
    (json.dumps({"model": MODEL, "max_tokens": 10}).encode(), "messages: Field required"),
    (json.dumps({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "stream": 1}).encode(), "stream"),
])
def test_malformed_messages_body_gets_an_anthropic_error(demo, body, fragment):
    req = urllib.request.Request(f"http://127.0.0.1:{demo.port}/v1/messages", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    payload = json.loads(info.value.read())
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error", payload
    assert fragment in payload["error"]["message"], payload


def test_anthropic_sdk_raises_its_bad_request_error(demo):
    with pytest.raises(anthropic.BadRequestError) as info:
        _client(demo.port).messages.create(model=MODEL, max_tokens=0, messages=MESSAGES)
    assert info.value.status_code == 400
    assert "max_tokens" in str(info.value)


# --- --backend-port -------------------------------------------------------------------------------------------


def test_backend_port_puts_the_mock_backend_there(stack, expected):
    port = unused_port()
    sluice = stack.sluice(["demo", "--listen", "127.0.0.1:0", "--backend-port", str(port)])
    assert _backend_port(sluice) == port
    # Straight to the backend, bypassing sluice: both APIs answer on the chosen port.
    message = _client(port).messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)
    assert message.content[0].text == expected
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read() == b"ok"
    # And through sluice, which forwards there.
    assert _client(sluice.port).messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES).content[0].text == expected


def test_backend_port_zero_picks_a_free_port(stack):
    sluice = stack.sluice(["demo", "--listen", "127.0.0.1:0", "--backend-port", "0"])
    port = _backend_port(sluice)
    assert port != 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert r.status == 200


def test_busy_backend_port_is_one_error_line_with_a_hint(stack):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        s = Sluice(["demo", "--listen", "127.0.0.1:0", "--backend-port", str(port)], wait_ready=False)
        try:
            assert s.wait_exit(10) == 1
        finally:
            s.stop()
        objs = s.log_objects()
        assert len(objs) == 1, objs
        [line] = objs
        assert line["level"] == "error" and line["msg"] == "cannot start the demo backend", line
        assert line["address"] == f"127.0.0.1:{port}", line
        assert "Address already in use" in line["error"], line
        assert "--backend-port" in line["hint"], line
        assert s.stdout == b"", s.stdout  # no banner for a demo that did not start
    finally:
        holder.close()
