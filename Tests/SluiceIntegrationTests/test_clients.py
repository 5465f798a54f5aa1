"""10. Real clients against `sluice demo`: curl -N and the official openai SDK."""

import json
import os
import select
import signal
import statistics
import subprocess
import time

import pytest

from demo_text import reply_text
from sluice_proc import REPO

WORD_GAP = 0.040
BODY = {"model": "sluice-demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def demo(stack):
    return stack.sluice(["demo", "--listen", "127.0.0.1:0"])


@pytest.fixture
def expected():
    text, source = reply_text("hi")
    return text


def _assert_spread(times: list[float], n_words: int, what: str):
    """Pieces arrive one by one, about WORD_GAP apart, not in one burst."""
    assert len(times) >= n_words, f"{what}: {len(times)} pieces for {n_words} words"
    span = times[-1] - times[0]
    assert span >= 0.5 * WORD_GAP * (n_words - 1), f"{what}: all pieces within {span:.3f}s"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert statistics.median(gaps) >= WORD_GAP / 3, f"{what}: pieces arrived in bursts; gaps {gaps}"


def test_curl_streams_demo_events(demo, expected, tmp_path):
    hdrs = tmp_path / "headers.txt"
    p = subprocess.Popen(["curl", "-sS", "-N", "--max-time", "30", "-D", str(hdrs),
                          "-H", "Content-Type: application/json", "-H", "Accept: text/event-stream",
                          "-d", json.dumps({**BODY, "stream": True}),
                          f"http://127.0.0.1:{demo.port}/v1/chat/completions"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reads: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + 30
    fd = p.stdout.fileno()
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            reads.append((time.monotonic(), data))
        rc = p.wait(10)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
    assert rc == 0, p.stderr.read().decode()

    # Re-split into SSE events, stamping each with the time its last byte arrived.
    buf, events = b"", []
    for t, data in reads:
        buf += data
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            events.append((t, ev.decode("utf-8")))
    pieces, times, done = [], [], False
    for t, ev in events:
        lines = [ln[len("data:"):].strip() for ln in ev.splitlines() if ln.startswith("data:")]
        if not lines:
            continue
        payload = "\n".join(lines)
        if payload == "[DONE]":
            done = True
            continue
        assert not done, "event after [DONE]"
        obj = json.loads(payload)
        assert obj["object"] == "chat.completion.chunk"
        content = (obj["choices"][0].get("delta") or {}).get("content")
        if content:
            pieces.append(content)
            times.append(t)
    assert "".join(pieces) == expected
    _assert_spread(times, len(expected.split()), "curl")
    head = hdrs.read_text().lower()
    assert "content-type: text/event-stream" in head
    assert "x-accel-buffering: no" in head


def _client(port):
    from openai import OpenAI
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-sluice-test", max_retries=0, timeout=30)


def test_openai_sdk_streaming_deltas_arrive_one_by_one(demo, expected, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    client = _client(demo.port)
    t0 = time.monotonic()
    stream = client.chat.completions.create(stream=True, **BODY)
    pieces, times = [], []
    for chunk in stream:
        assert time.monotonic() - t0 < 30
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            times.append(time.monotonic())
    assert "".join(pieces) == expected
    _assert_spread(times, len(expected.split()), "openai SDK")


def test_openai_sdk_non_streaming(demo, expected, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    client = _client(demo.port)
    resp = client.chat.completions.create(stream=False, **BODY)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == expected


def test_demo_reply_source(expected):
    """Make it visible when the expected text could not be derived from the Swift source."""
    text, source = reply_text("hi")
    assert text == expected
    src = REPO / "Sources" / "SluiceOrigin"
    defined = src.is_dir() and any("func replyText" in f.read_text(encoding="utf-8") for f in src.rglob("*.swift"))
    assert source != "spec" or not defined, \
        "replyText exists in Sources/SluiceOrigin but demo_text.py could not read it; update demo_text.py"
