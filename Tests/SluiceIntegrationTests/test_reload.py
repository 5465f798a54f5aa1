"""Reload with feedback (issue 14): POST /reload on the admin listener applies the file and answers with the outcome
(generation, or the error with file:line), GET /reload-status shows the last outcome whatever triggered it (SIGHUP
included), `sluice reload --admin/--pid` prints it and exits 0 or 1, and reloads asked for while one runs wait for
one more reload, which serves them together."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time

from origin import respond, unused_port
from rawhttp import get
from sluice_proc import run_cli, write_routes_config


def _tagged(tag: str):
    """An origin handler answering `TAG:target`, so a test can tell which upstream served a request."""
    def handler(conn, req):
        respond(conn, 200, f"{tag}:{req.target}".encode(), [("Content-Type", "text/plain")])
    return handler


def _post(port: int, path: str = "/reload", timeout: float = 10.0, body: bytes | None = None):
    """POST `path` on the admin listener: (status, headers, parsed JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body)
        r = conn.getresponse()
        text = r.read().decode()
        headers = {k.lower(): v for k, v in r.getheaders()}
        try:
            return r.status, headers, json.loads(text)
        except ValueError:
            return r.status, headers, text
    finally:
        conn.close()


def _status(sl) -> dict:
    code, headers, body = sl.scrape("/reload-status")
    assert code == 200 and headers["content-type"] == "application/json", (code, headers, body)
    return json.loads(body)


def _status_of_reload(sl, number: int) -> dict:
    """/reload-status once reload `number` is its last one: the reload thread logs its line just before it
    records the outcome, so a client that saw the line may ask a moment too early."""
    deadline = time.monotonic() + 3
    while True:
        status = _status(sl)
        if (status.get("last") or {}).get("reload", 0) >= number or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


class Setup:
    """Two tagged origins, a config file whose routes can be rewritten, and sluice with an admin listener."""

    def __init__(self, stack, *, admin: bool = True):
        self.stack = stack
        self.a = stack.origin(_tagged("a"))
        self.b = stack.origin(_tagged("b"))
        self.upstreams = {"a": f"http://127.0.0.1:{self.a.port}", "b": f"http://127.0.0.1:{self.b.port}"}
        self.port = unused_port()
        self.cfg = stack.tmp_path / "reload.conf"
        self.admin = "127.0.0.1:0" if admin else None
        self.write([("/", "a", {})])
        self.sl = stack.sluice(["--config", str(self.cfg)])
        self.admin_addr = f"127.0.0.1:{self.sl.admin_port}" if admin else None

    def config_text(self, routes) -> str:
        tmp = self.stack.tmp_path / "render.conf"
        write_routes_config(tmp, upstreams=self.upstreams, routes=routes, listen=f"127.0.0.1:{self.port}", admin=self.admin)
        return tmp.read_text()

    def write(self, routes) -> None:
        """Rewrite the file atomically, as a config-management tool would."""
        tmp = self.cfg.with_suffix(".new")
        tmp.write_text(self.config_text(routes))
        os.replace(tmp, self.cfg)

    def break_file(self) -> int:
        """Append an upstream with a bad server URL; returns the line to blame."""
        text = self.cfg.read_text()
        self.cfg.write_text(text + "upstream broken {\n    server ftp://nowhere\n}\n")
        return len(text.splitlines()) + 2

    def body(self, target: str) -> bytes:
        return get(self.port, target).body


def test_post_reload_applies_a_new_route_and_answers_with_the_generation(stack):
    s = Setup(stack)
    assert s.body("/new/x") == b"a:/new/x"
    before = _status(s.sl)
    assert before["generation"] == 1 and before["started"] == 0 and before["last"] is None
    assert before["in_progress"] is False and before["reloadable"] is True and before["pid"] == s.sl.pid

    s.write([("/", "a", {}), ("/new", "b", {})])
    code, headers, outcome = _post(s.sl.admin_port)
    assert code == 200 and headers["content-type"] == "application/json", (code, outcome)
    assert outcome["result"] == "applied" and outcome["generation"] == 2, outcome
    assert outcome["reload"] == 1 and outcome["trigger"] == "admin" and outcome["requests"] == 1 and outcome["kept"] == []
    assert "error" not in outcome
    # Answered only once the reload finished: the new route serves at once.
    assert s.body("/new/x") == b"b:/new/x"
    assert s.body("/other") == b"a:/other"

    status = _status(s.sl)
    assert status["generation"] == 2 and status["started"] == 1 and status["in_progress"] is False
    assert status["last"] == outcome
    line = s.sl.wait_stderr(lambda o: o.get("msg") == "POST /reload: configuration reloaded", 5, "the reloaded line")
    assert line["trigger"] == "admin" and line["reload"] == 1 and line["level"] == "info"


def test_post_reload_with_a_broken_file_fails_with_file_and_line_and_the_old_config_serves(stack):
    s = Setup(stack)
    s.write([("/", "a", {}), ("/new", "b", {})])
    line = s.break_file()
    code, _, outcome = _post(s.sl.admin_port)
    assert code == 422, (code, outcome)
    assert outcome["result"] == "failed" and outcome["generation"] == 1, outcome
    assert outcome["error"].startswith(f"{s.cfg}:{line}: "), outcome
    assert "ftp" in outcome["error"]
    assert outcome["file"] == str(s.cfg) and outcome["line"] == line
    # The running configuration stays: /new still goes to a.
    assert s.body("/new/x") == b"a:/new/x"
    assert _status(s.sl)["last"] == outcome
    logged = s.sl.wait_stderr(lambda o: "reload failed" in o.get("msg", ""), 5, "the reload error")
    assert logged["level"] == "error" and logged["msg"].startswith("POST /reload: ")
    assert logged["file"] == str(s.cfg) and logged["line"] == line and logged["trigger"] == "admin"
    assert s.sl.alive()


def test_get_never_reloads_and_other_methods_are_refused(stack):
    s = Setup(stack)
    s.write([("/", "a", {}), ("/new", "b", {})])
    code, headers, body = s.sl.scrape("/reload")
    assert code == 405 and headers["allow"] == "POST", (code, headers, body)
    code, headers, _ = _post(s.sl.admin_port, "/reload-status")
    assert code == 405 and headers["allow"] == "GET, HEAD"
    # A body is refused rather than ignored: it would suggest it meant something.
    code, _, outcome = _post(s.sl.admin_port, body=b"{}")
    assert code == 400 and outcome["result"] == "failed"
    assert _status(s.sl)["started"] == 0
    assert s.body("/new/x") == b"a:/new/x"


def test_reload_status_shows_what_sighup_did(stack):
    s = Setup(stack)
    s.write([("/", "a", {}), ("/new", "b", {})])
    os.kill(s.sl.pid, signal.SIGHUP)
    # SIGHUP's own line is unchanged (and says which reload it was).
    logged = s.sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
    assert logged["trigger"] == "signal" and logged["reload"] == 1
    status = _status_of_reload(s.sl, 1)
    assert status["generation"] == 2 and status["last"]["trigger"] == "signal", status
    assert status["last"]["result"] == "applied" and status["last"]["reload"] == 1
    assert s.body("/new/x") == b"b:/new/x"

    line = s.break_file()
    os.kill(s.sl.pid, signal.SIGHUP)
    s.sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: reload failed"), 5, "the reload error")
    last = _status_of_reload(s.sl, 2)["last"]
    assert last["reload"] == 2 and last["trigger"] == "signal" and last["result"] == "failed", last
    assert last["generation"] == 2 and last["error"].startswith(f"{s.cfg}:{line}: ") and last["line"] == line


def test_cli_reload_admin_prints_the_outcome_and_exits_0_or_1(stack):
    s = Setup(stack)
    s.write([("/", "a", {}), ("/new", "b", {})])
    r = run_cli(["reload", "--admin", s.admin_addr])
    assert r.returncode == 0, r
    assert r.stdout.decode() == "reload applied (generation 2)\n" and r.stderr == b""
    assert s.body("/new/x") == b"b:/new/x"

    line = s.break_file()
    r = run_cli(["reload", "--admin", s.admin_addr])
    assert r.returncode == 1 and r.stdout == b"", r
    err = r.stderr.decode().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith(f"sluice: reload failed: {s.cfg}:{line}: "), err
    assert err[1] == "hint: the running configuration (generation 2) stays; fix the file and reload again"
    assert s.body("/new/x") == b"b:/new/x"


def test_cli_reload_pid_without_admin_sends_sighup_and_says_where_the_outcome_is(stack):
    s = Setup(stack, admin=False)
    s.write([("/", "a", {}), ("/new", "b", {})])
    r = run_cli(["reload", "--pid", str(s.sl.pid)])
    assert r.returncode == 0 and r.stderr == b"", r
    out = r.stdout.decode()
    assert out.startswith(f"SIGHUP sent to pid {s.sl.pid}; ") and "/reload-status" in out and out.count("\n") == 1, out
    s.sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
    assert s.body("/new/x") == b"b:/new/x"


def test_cli_reload_pid_with_admin_waits_for_the_outcome(stack):
    s = Setup(stack)
    s.write([("/", "a", {}), ("/new", "b", {})])
    r = run_cli(["reload", "--pid", str(s.sl.pid), "--admin", s.admin_addr])
    assert r.returncode == 0, r
    assert r.stdout.decode() == "reload applied (generation 2)\n"
    assert _status(s.sl)["last"]["trigger"] == "signal"

    line = s.break_file()
    r = run_cli(["reload", "--pid", str(s.sl.pid), "--admin", s.admin_addr])
    assert r.returncode == 1, r
    err = r.stderr.decode().splitlines()
    assert len(err) == 2 and err[0].startswith(f"sluice: reload failed: {s.cfg}:{line}: "), err
    assert _status(s.sl)["last"]["reload"] == 2


def test_cli_reload_refuses_to_signal_a_process_that_is_not_sluice(stack):
    # SIGHUP ends most programs: a wrong pid must cost nothing. `sleep` stands in for the wrong process.
    victim = subprocess.Popen(["sleep", "30"])
    try:
        r = run_cli(["reload", "--pid", str(victim.pid)])
        assert r.returncode == 1, r
        err = r.stderr.decode().splitlines()
        assert err[0] == f"sluice: pid {victim.pid} is 'sleep', not sluice; no signal sent", err
        assert err[1].startswith("hint: ")
        time.sleep(0.1)
        assert victim.poll() is None, "the process was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_cli_reload_unreachable_admin_is_one_error_and_a_hint(stack):
    port = unused_port()
    r = run_cli(["reload", "--admin", f"127.0.0.1:{port}"])
    assert r.returncode == 1 and r.stdout == b"", r
    err = r.stderr.decode().splitlines()
    assert err == [f"sluice: cannot reach the admin listener at 127.0.0.1:{port}: connect: Connection refused",
                   f"hint: is sluice running with --admin 127.0.0.1:{port} (or listen 127.0.0.1:{port} in its admin block)? "
                   "without one, `sluice reload --pid N` signals it"], err
    r = run_cli(["reload", "--pid", "999999999"])  # above any pid_max
    assert r.returncode == 1 and r.stderr.decode().startswith("sluice: no process with pid 999999999\nhint: "), r


def test_reload_without_a_config_file_is_refused(stack):
    origin = stack.origin()
    sl = stack.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin.port}", "--admin", "127.0.0.1:0"])
    code, _, outcome = _post(sl.admin_port)
    assert code == 409 and outcome["result"] == "failed" and "without a configuration file" in outcome["error"], outcome
    assert _status(sl)["reloadable"] is False
    r = run_cli(["reload", "--admin", f"127.0.0.1:{sl.admin_port}"])
    assert r.returncode == 1 and "without a configuration file" in r.stderr.decode(), r
    # --pid with --admin reads that first and sends nothing.
    r = run_cli(["reload", "--pid", str(sl.pid), "--admin", f"127.0.0.1:{sl.admin_port}"])
    assert r.returncode == 1 and "no signal sent" in r.stderr.decode(), r


class FifoConfig:
    """The config "file" is a named pipe: each read of it (start-up, then every reload) blocks until the test
    feeds it a text, so a reload can be held in progress for as long as the test likes."""

    def __init__(self, path):
        self.path = path
        os.mkfifo(path)

    def feed(self, text: str) -> None:
        """Blocks until sluice opens the pipe, then hands it `text` and end of file."""
        with open(self.path, "w") as f:
            f.write(text)

    def feed_later(self, text: str) -> threading.Thread:
        t = threading.Thread(target=self.feed, args=(text,), daemon=True)
        t.start()
        return t


def _wait_status(sl, predicate, what: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(sl)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"{what}: {status}"
        time.sleep(0.02)


def _background_post(port: int, results: list) -> threading.Thread:
    """POST /reload from a thread; the answer, or the exception (a connection cut by the exit), goes to `results`."""
    def run():
        try:
            results.append(_post(port, timeout=20))
        except OSError as e:
            results.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_requests_during_a_reload_are_coalesced_into_the_next_one(stack):
    s = Setup.__new__(Setup)  # the routes and origins of Setup, but the file is a pipe
    s.stack, s.a, s.b = stack, stack.origin(_tagged("a")), stack.origin(_tagged("b"))
    s.upstreams = {"a": f"http://127.0.0.1:{s.a.port}", "b": f"http://127.0.0.1:{s.b.port}"}
    s.port, s.admin = unused_port(), "127.0.0.1:0"
    fifo = FifoConfig(stack.tmp_path / "pipe.conf")
    fifo.feed_later(s.config_text([("/", "a", {})]))
    sl = stack.sluice(["--config", str(fifo.path)])

    first: list = []
    _background_post(sl.admin_port, first)
    # Reload 1 now waits on the pipe; the admin listener still answers.
    _wait_status(sl, lambda st: st["in_progress"] and st["started"] == 1, "reload 1 never started")
    later: list = []
    threads = [_background_post(sl.admin_port, later) for _ in range(2)]
    _wait_status(sl, lambda st: st["queued"] == 2, "the requests were not queued behind reload 1")
    os.kill(sl.pid, signal.SIGHUP)
    status = _wait_status(sl, lambda st: st["queued"] == 3, "the signal was not queued behind reload 1")
    assert status["started"] == 1 and status["last"] is None
    sl.wait_stderr(lambda o: o.get("msg", "").startswith("reload requested while one runs"), 5, "the queued line")

    fifo.feed(s.config_text([("/", "a", {}), ("/one", "b", {})]))   # reload 1 reads this
    fifo.feed(s.config_text([("/", "a", {}), ("/two", "b", {})]))   # reload 2, for the three queued requests
    for t in threads:
        t.join(10)
    deadline = time.monotonic() + 10
    while not first and time.monotonic() < deadline:
        time.sleep(0.02)
    (code, _, one), = first
    assert code == 200 and one["reload"] == 1 and one["requests"] == 1 and one["generation"] == 2, one
    assert len(later) == 2
    for code, _, two in later:
        assert code == 200, two
        # Not folded into reload 1, which read the file before they asked: a reload of their own, shared.
        assert two["reload"] == 2 and two["requests"] == 3 and two["generation"] == 3 and two["trigger"] == "admin", two
    assert later[0][2] == later[1][2]
    assert get(s.port, "/two/x").body == b"b:/two/x"
    assert get(s.port, "/one/x").body == b"a:/one/x"
    final = _status(sl)
    assert final["started"] == 2 and final["in_progress"] is False and final["queued"] == 0


def test_draining_answers_queued_reload_requests(stack):
    s = Setup.__new__(Setup)
    s.stack, s.a, s.b = stack, stack.origin(_tagged("a")), stack.origin(_tagged("b"))
    s.upstreams = {"a": f"http://127.0.0.1:{s.a.port}", "b": f"http://127.0.0.1:{s.b.port}"}
    s.port, s.admin = unused_port(), "127.0.0.1:0"
    fifo = FifoConfig(stack.tmp_path / "pipe.conf")
    fifo.feed_later(s.config_text([("/", "a", {})]))
    sl = stack.sluice(["--config", str(fifo.path)])
    first: list = []
    _background_post(sl.admin_port, first)
    _wait_status(sl, lambda st: st["in_progress"], "reload 1 never started")
    queued: list = []
    t = _background_post(sl.admin_port, queued)
    _wait_status(sl, lambda st: st["queued"] == 1, "the request was not queued")
    os.kill(sl.pid, signal.SIGTERM)
    t.join(10)
    (code, _, outcome), = queued
    assert code == 503 and outcome == {"result": "failed", "error": "sluice is draining; no reload runs any more"}, outcome
    assert sl.wait_exit(10) == 0
