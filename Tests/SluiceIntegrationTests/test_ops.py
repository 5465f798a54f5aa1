"""Operations: SIGTERM drains, SIGHUP reloads, /healthz and /readyz report it."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from origin import unused_port
from rawhttp import RawConn, get, request_bytes
from sluice_proc import wait_records, write_routes_config
from streams import BARE_SSE_HEAD, LAST_CHUNK, chunk

STREAMS = 20


def sse_handler(tag: str, events: int, gap: float):
    """An origin streaming `events` SSE events, each naming `tag` and the request path, so the client can tell
    byte for byte which origin answered and that nothing was lost: `gap` s apart for the long streams under
    /s/, back to back for any other path."""

    def handler(conn, req):
        conn.send(BARE_SSE_HEAD)
        for i in range(events):
            if i and req.target.startswith("/s/"):
                conn.sleep(gap)
            conn.send(chunk(_event(tag, req.target, i)))
        conn.send(LAST_CHUNK)

    return handler


def _event(tag: str, target: str, i: int) -> bytes:
    return f"data: {{\"origin\":\"{tag}\",\"path\":\"{target}\",\"n\":{i}}}\n\n".encode()


def _expected(tag: str, target: str, events: int) -> bytes:
    return b"".join(_event(tag, target, i) for i in range(events))


class StreamClient(threading.Thread):
    """Reads one streamed response on its own connection; `started` is set once the head arrived."""

    def __init__(self, port: int, target: str, timeout: float = 30.0):
        super().__init__(daemon=True)
        self.port, self.target, self.timeout = port, target, timeout
        self.started = threading.Event()
        self.response = None
        self.error = None

    def run(self):
        try:
            with RawConn(self.port, timeout=self.timeout) as c:
                c.send(request_bytes("GET", self.target, [("Accept", "text/event-stream")]))
                head = c.read_head()
                self.started.set()
                # The head was consumed; put its bytes back so read_response parses the whole message.
                c.buf[:0] = head.head_raw
                self.response = c.read_response()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.started.set()


def _start_streams(port: int, count: int, prefix: str = "/s") -> list[StreamClient]:
    clients = [StreamClient(port, f"{prefix}/{i}") for i in range(count)]
    for c in clients:
        c.start()
    for c in clients:
        assert c.started.wait(10), "stream did not start"
        assert c.error is None, c.error
    return clients


def _refused(port: int) -> bool:
    """True once nothing listens on `port`; a connect caught while the workers close their descriptors of the
    socket may be reset instead, which is not refused yet."""
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.close()


def _config(stack, upstreams, routes, **kw):
    stack._n += 1
    return write_routes_config(stack.tmp_path / f"ops{stack._n}.conf", upstreams=upstreams, routes=routes, **kw)


def test_sigterm_drains_streams_in_flight_then_exits_0(stack):
    origin = stack.origin(sse_handler("a", events=15, gap=0.1))
    log = stack.tmp_path / "completions.jsonl"
    cfg = _config(stack, {"a": f"http://127.0.0.1:{origin.port}"}, [("/", "a", {})], workers=2,
                  log={"file": str(log)}, admin="127.0.0.1:0")
    sl = stack.sluice(["--config", str(cfg)])
    port = sl.port
    assert sl.scrape("/readyz")[0] == 200
    assert sl.scrape("/healthz")[0] == 200
    # An idle keep-alive connection: drain closes it at once.
    idle = RawConn(port)
    idle.send(request_bytes("GET", "/idle"))
    idle_first = idle.read_response()
    assert idle_first.status == 200 and idle_first.complete

    clients = _start_streams(port, STREAMS)
    signalled = time.monotonic()
    os.kill(sl.pid, signal.SIGTERM)
    sl.wait_stderr(lambda o: o.get("msg") == "draining", 5, "the draining line")
    assert sl.scrape("/readyz")[0] == 503, "readyz must fail as soon as draining starts"
    assert sl.scrape("/healthz")[0] == 200, "the process is still alive while draining"
    deadline = time.monotonic() + 2
    while not _refused(port):
        assert time.monotonic() < deadline, "new connections still accepted 2 s into the drain"
        time.sleep(0.02)
    refused_after = time.monotonic() - signalled
    assert idle.closed_within(2), "an idle keep-alive connection stayed open during the drain"
    idle.close()

    for c in clients:
        c.join(15)
        assert c.error is None, c.error
        assert c.response.complete, f"{c.target}: truncated by the drain"
        assert c.response.body == _expected("a", c.target, 15), f"{c.target}: bytes differ"
    assert sl.wait_exit(10) == 0
    assert refused_after < 1.0, f"listener refused only after {refused_after:.2f} s"
    records = [r for r in wait_records(log, STREAMS + 1) if r["path"].startswith("/s/")]
    assert len(records) == STREAMS
    assert {r["end"] for r in records} == {"complete"}
    assert sorted(r["path"] for r in records) == sorted(c.target for c in clients)


def test_drain_timeout_aborts_what_is_left_and_logs_drain(stack):
    origin = stack.origin(sse_handler("a", events=100, gap=0.1))  # ~10 s
    log = stack.tmp_path / "completions.jsonl"
    cfg = _config(stack, {"a": f"http://127.0.0.1:{origin.port}"}, [("/", "a", {})], log={"file": str(log)})
    with open(cfg, "a") as f:
        f.write("drain_timeout 2s\n")
    sl = stack.sluice(["--config", str(cfg)])
    [client] = _start_streams(sl.port, 1)
    signalled = time.monotonic()
    os.kill(sl.pid, signal.SIGTERM)
    assert sl.wait_exit(10) == 0
    took = time.monotonic() - signalled
    assert 1.8 <= took < 4.0, f"exited {took:.2f} s after SIGTERM with drain_timeout 2s"
    client.join(5)
    assert client.error is None, client.error
    assert not client.response.complete, "an aborted stream must not end cleanly"
    [record] = wait_records(log, 1)
    assert record["end"] == "drain"


def test_second_sigterm_exits_at_once(stack):
    origin = stack.origin(sse_handler("a", events=100, gap=0.1))
    log = stack.tmp_path / "completions.jsonl"
    cfg = _config(stack, {"a": f"http://127.0.0.1:{origin.port}"}, [("/", "a", {})], log={"file": str(log)})
    sl = stack.sluice(["--config", str(cfg)])
    [client] = _start_streams(sl.port, 1)
    os.kill(sl.pid, signal.SIGTERM)
    sl.wait_stderr(lambda o: o.get("msg") == "draining", 5, "the draining line")
    assert sl.alive(), "the first SIGTERM must wait for the stream (drain_timeout defaults to 300 s)"
    signalled = time.monotonic()
    os.kill(sl.pid, signal.SIGTERM)
    assert sl.wait_exit(5) == 0
    assert time.monotonic() - signalled < 2.0
    client.join(5)
    assert not client.response.complete
    [record] = wait_records(log, 1)
    assert record["end"] == "drain"


def test_idle_process_drains_at_once(stack):
    origin = stack.origin()
    sl = stack.proxy(origin)
    assert get(sl.port, "/x").status == 200
    signalled = time.monotonic()
    os.kill(sl.pid, signal.SIGINT)
    assert sl.wait_exit(5) == 0
    # "At once" against a drain_timeout of 300 s; the margin is for the sanitizer builds on a loaded machine.
    assert time.monotonic() - signalled < 3.0


def test_reload_moves_new_requests_and_keeps_running_streams(stack):
    old = stack.origin(sse_handler("old", events=20, gap=0.1))
    new = stack.origin(sse_handler("new", events=2, gap=0.01))
    port = unused_port()
    upstreams = {"old": f"http://127.0.0.1:{old.port}", "new": f"http://127.0.0.1:{new.port}"}
    cfg = _config(stack, upstreams, [("/", "old", {})], listen=f"127.0.0.1:{port}", workers=2)
    sl = stack.sluice(["--config", str(cfg)])
    clients = _start_streams(port, 5)

    # A client hammering the listener through the reload: every connection must be accepted.
    stop = threading.Event()
    outcomes = {"ok": 0, "refused": 0, "other": []}

    def hammer():
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline and outcomes["ok"] < 2000:
            try:
                r = get(port, "/hammer", timeout=5)
                if r.status == 200 and r.complete:
                    outcomes["ok"] += 1
                else:
                    outcomes["other"].append((r.status, r.complete))
            except ConnectionRefusedError:
                outcomes["refused"] += 1
            except Exception as exc:  # noqa: BLE001
                outcomes["other"].append(repr(exc))

    hammerer = threading.Thread(target=hammer, daemon=True)
    hammerer.start()
    time.sleep(0.3)
    _config_over(cfg, upstreams, [("/", "new", {})], listen=f"127.0.0.1:{port}", workers=2)
    os.kill(sl.pid, signal.SIGHUP)
    sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
    time.sleep(0.3)
    stop.set()
    hammerer.join(10)
    assert outcomes["refused"] == 0 and not outcomes["other"], outcomes
    assert outcomes["ok"] > 10, outcomes

    fresh = get(port, "/after")
    assert fresh.status == 200 and fresh.body == _expected("new", "/after", 2)
    for c in clients:
        c.join(10)
        assert c.error is None, c.error
        assert c.response.complete and c.response.body == _expected("old", c.target, 20), c.target
    assert not any(r.target.startswith("/s/") for r in new.requests), "a running stream moved to the new upstream"


def _config_over(path, upstreams, routes, **kw):
    """Rewrite the config file in place, atomically (as a config-management tool would)."""
    tmp = path.with_suffix(".new")
    write_routes_config(tmp, upstreams=upstreams, routes=routes, **kw)
    os.replace(tmp, path)


def test_invalid_config_on_reload_keeps_the_running_one(stack):
    origin = stack.origin()
    port = unused_port()
    cfg = _config(stack, {"a": f"http://127.0.0.1:{origin.port}"}, [("/", "a", {})], listen=f"127.0.0.1:{port}")
    sl = stack.sluice(["--config", str(cfg)])
    text = cfg.read_text()
    cfg.write_text(text + "upstream broken {\n    server ftp://nowhere\n}\n")
    os.kill(sl.pid, signal.SIGHUP)
    line = sl.wait_stderr(lambda o: "reload failed" in o.get("msg", ""), 5, "the reload error")
    assert line["level"] == "error"
    assert line["file"] == str(cfg) and line["line"] == len(text.splitlines()) + 2, line
    assert get(port, "/still").body == b"/still"
    assert sl.alive()


def test_reload_binds_new_listeners_and_closes_removed_ones(stack):
    origin = stack.origin()
    first, second = unused_port(), unused_port()
    upstreams = {"a": f"http://127.0.0.1:{origin.port}"}
    cfg = _config(stack, upstreams, [("/", "a", {})], listen=f"127.0.0.1:{first}", workers=2)
    sl = stack.sluice(["--config", str(cfg)])
    assert get(first, "/one").status == 200
    _config_over(cfg, upstreams, [("/", "a", {})], listen=f"127.0.0.1:{second}", workers=2)
    os.kill(sl.pid, signal.SIGHUP)
    line = sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
    assert line["listeners"] == [f"127.0.0.1:{second}"]
    deadline = time.monotonic() + 2
    while not _refused(first):
        assert time.monotonic() < deadline, "the removed listener still accepts"
        time.sleep(0.02)
    assert get(second, "/two").body == b"/two"


def test_reload_keeps_restart_only_settings_and_says_so(stack):
    origin = stack.origin()
    upstreams = {"a": f"http://127.0.0.1:{origin.port}"}
    port = unused_port()
    cfg = _config(stack, upstreams, [("/", "a", {})], listen=f"127.0.0.1:{port}", workers=1)
    sl = stack.sluice(["--config", str(cfg)])
    _config_over(cfg, upstreams, [("/", "a", {})], listen=f"127.0.0.1:{port}", workers=3)
    os.kill(sl.pid, signal.SIGHUP)
    warning = sl.wait_stderr(lambda o: "needs a restart" in o.get("msg", ""), 5, "the restart warning")
    assert "workers" in warning["setting"]
    sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
    assert get(port, "/ok").status == 200
