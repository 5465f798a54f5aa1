"""11. Command line: help, version, check, flag errors, startup failures, ready line, SIGTERM."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from origin import unused_port
from rawhttp import RawConn, get
from sluice_proc import REPO, SLUICE_BIN, Sluice, run_cli

GOOD_CONFIG = """\
# a complete config
listen 127.0.0.1:0
workers 1
timeouts {
    client_header 10s
    client_body_idle 60s
    client_keepalive 60s
    client_write 60s
    upstream_connect 5s
    upstream_first_byte 300s
    upstream_idle 300s
    total off
    upstream_pool_idle 90s
}
limits {
    max_request_body 32m
    high_watermark 64k
    low_watermark 32k
}
upstream origin {
    server http://127.0.0.1:%d
}
route / {
    upstream origin
}
"""


def _out(p) -> str:
    return (p.stdout + p.stderr).decode("utf-8", "replace")


def _json_lines(text: str) -> list[dict]:
    objs = []
    for ln in text.splitlines():
        if ln.strip():
            obj = json.loads(ln)
            assert isinstance(obj, dict), ln
            objs.append(obj)
    return objs


def test_help():
    p = run_cli(["--help"])
    assert p.returncode == 0, _out(p)
    out = _out(p)
    for word in ("--listen", "--upstream", "--config", "--workers", "check", "demo"):
        assert word in out, f"--help does not mention {word}"


def _git(*args) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _version_line() -> tuple[str, str]:
    p = run_cli(["--version"])
    assert p.returncode == 0 and p.stderr == b"", _out(p)
    m = re.fullmatch(r"sluice (\d+\.\d+\.\d+\S*) \(commit ([0-9a-f]{4,40}|unknown)\)\n", p.stdout.decode())
    assert m, f"--version printed {p.stdout!r}"
    return m.group(1), m.group(2)


def test_version_prints_the_version_and_the_commit_built_from():
    """`sluice 0.1.0 (commit abc1234)`: the commit is `git rev-parse --short HEAD` of the tree the binary was
    built from (Plugins/BuildInfoPlugin), `unknown` outside a checkout."""
    version, commit = _version_line()
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        assert commit == "unknown", f"not in a git checkout, yet --version names commit {commit}"
        return
    if commit != head:
        # Say which failure it is: a binary built before the latest commit is stale, not mislabelled.
        head_time = int(_git("log", "-1", "--format=%ct", "HEAD") or 0)
        stale = commit != "unknown" and _git("merge-base", "--is-ancestor", commit, "HEAD") is not None \
            and os.path.getmtime(SLUICE_BIN) < head_time
        assert commit == head, (f"--version says commit {commit}, HEAD is {head}"
                                + ("; the binary predates HEAD: rebuild it" if stale else ""))


def test_version_matches_ready_line():
    version, commit = _version_line()
    s = Sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{unused_port()}", "--workers", "2"])
    try:
        assert s.ready["version"] == version
        assert s.ready["commit"] == commit
    finally:
        s.stop()


def test_version_is_defined_once_and_the_changelog_names_it():
    """The version string appears in exactly one source file, and CHANGELOG.md's newest release is it."""
    version, _ = _version_line()
    literal = f'"{version}"'
    holders = sorted(str(f.relative_to(REPO)) for f in [REPO / "Package.swift", *REPO.glob("Sources/**/*.swift")]
                     if literal in f.read_text(errors="replace"))
    assert holders == ["Sources/SluiceCore/BuildInfo.swift"], holders
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert releases[:1] == ["Unreleased"] and releases[1] == version, releases


def test_ready_line_shape(tmp_path):
    s = Sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{unused_port()}", "--workers", "2"])
    try:
        ready = s.ready
        assert ready["level"] == "info"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", ready["ts"]), ready["ts"]
        assert ready["workers"] == 2
        assert isinstance(ready["listeners"], list) and len(ready["listeners"]) == 1
        host, port = ready["listeners"][0].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert {"prefix": "/", "upstream": "default"} in ready["routes"]
        # The advertised port really is the listener.
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
    finally:
        s.stop()
    s.log_objects()


def test_sigterm_exits_cleanly():
    s = Sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{unused_port()}", "--workers", "2"])
    os.kill(s.pid, signal.SIGTERM)
    rc = s.wait_exit(5)
    s.stop()
    assert rc == 0, f"exit {rc} after SIGTERM"
    s.log_objects()


def test_check_good_config(tmp_path):
    cfg = tmp_path / "good.conf"
    cfg.write_text(GOOD_CONFIG % unused_port())
    p = run_cli(["check", "--config", str(cfg)])
    assert p.returncode == 0, _out(p)


def test_config_file_runs(stack, tmp_path):
    origin = stack.origin()
    cfg = tmp_path / "good.conf"
    cfg.write_text(GOOD_CONFIG % origin.port)
    s = stack.sluice(["--config", str(cfg)])
    assert s.ready["workers"] == 1
    r = get(s.port, "/via-config")
    assert r.status == 200 and r.body == b"/via-config"


def test_listen_flag_overrides_config(stack, tmp_path):
    origin = stack.origin()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cfg = tmp_path / "busy.conf"
        cfg.write_text((GOOD_CONFIG % origin.port).replace("listen 127.0.0.1:0",
                                                           f"listen 127.0.0.1:{busy.getsockname()[1]}"))
        s = stack.sluice(["--config", str(cfg), "--listen", "127.0.0.1:0"])
        assert s.port != busy.getsockname()[1]
        assert get(s.port, "/override").body == b"/override"
    finally:
        busy.close()


def _line_of(lines, word):
    return next(i + 1 for i, ln in enumerate(lines) if word in ln)


def _bad_configs(port):
    lines = (GOOD_CONFIG % port).splitlines()
    unknown_top = lines[:2] + ["frobnicate yes"] + lines[2:]              # line 3
    unknown_nested = lines[:5] + ["    client_dance 5s"] + lines[5:]      # line 6
    bad_duration = [ln.replace("client_header 10s", "client_header 10parsecs") for ln in lines]
    bad_size = [ln.replace("max_request_body 32m", "max_request_body lots") for ln in lines]
    unclosed = lines[:-1]  # drops the route's closing brace
    return {
        "unknown-top-level-key": (unknown_top, 3),
        "unknown-timeout-key": (unknown_nested, 6),
        "bad-duration": (bad_duration, _line_of(lines, "client_header")),
        "bad-size": (bad_size, _line_of(lines, "max_request_body")),
        "unclosed-block": (unclosed, None),
    }


def test_check_bad_configs_name_file_and_line(tmp_path):
    for name, (lines, line_no) in _bad_configs(unused_port()).items():
        cfg = tmp_path / f"{name}.conf"
        cfg.write_text("\n".join(lines) + "\n")
        p = run_cli(["check", "--config", str(cfg)])
        assert p.returncode == 1, f"{name}: exit {p.returncode}: {_out(p)}"
        if line_no is not None:
            assert f"{cfg}:{line_no}:" in _out(p), f"{name}: expected '{cfg}:{line_no}:' in {_out(p)!r}"
        else:
            assert re.search(re.escape(str(cfg)) + r":\d+:", _out(p)), f"{name}: {_out(p)!r}"


def test_run_with_bad_config_fails_with_json_error(tmp_path):
    lines, line_no = _bad_configs(unused_port())["unknown-top-level-key"]
    cfg = tmp_path / "bad.conf"
    cfg.write_text("\n".join(lines) + "\n")
    p = run_cli(["--config", str(cfg)])
    assert p.returncode != 0
    objs = _json_lines(p.stderr.decode())
    errors = [o for o in objs if o.get("level") == "error"]
    assert errors, p.stderr
    assert any(f"{cfg}:{line_no}" in json.dumps(o, ensure_ascii=False).replace("\\/", "/") for o in errors), errors


# Usage errors: exit 2, nothing on stdout, two lines on stderr (the error and a hint), never the whole help.
CLI_ERRORS = [
    (["check", "proxy.conf"],
     "sluice: unexpected argument 'proxy.conf'\nhint: did you mean `sluice check --config proxy.conf`?\n"),
    (["proxy.conf"],
     "sluice: unexpected argument 'proxy.conf'\nhint: did you mean `sluice --config proxy.conf`?\n"),
    (["--lsiten", "127.0.0.1:8080"],
     "sluice: unknown flag '--lsiten'\nhint: did you mean --listen? see sluice --help\n"),
    (["--port", "8080"],
     "sluice: unknown flag '--port'\nhint: did you mean --listen? see sluice --help\n"),
    (["--definitely-not-a-flag"],
     "sluice: unknown flag '--definitely-not-a-flag'\nhint: see sluice --help\n"),
    (["chekc", "--config", "proxy.conf"],
     "sluice: unknown command 'chekc'\nhint: did you mean `sluice check --config proxy.conf`?\n"),
    (["--workers", "2", "demo"],
     "sluice: unexpected argument 'demo': a command comes first\nhint: did you mean `sluice demo --workers 2`?\n"),
    (["http://127.0.0.1:8000"],
     "sluice: unexpected argument 'http://127.0.0.1:8000'\nhint: did you mean `sluice --upstream http://127.0.0.1:8000`?\n"),
    (["demo", "--upstream", "http://127.0.0.1:8000"],
     "sluice: '--upstream' is not accepted by 'sluice demo'\n"
     "hint: sluice demo runs its own backend; to proxy yours, run `sluice --upstream http://127.0.0.1:8000`\n"),
    (["check"],
     "sluice: 'sluice check' needs --config FILE\nhint: e.g. `sluice check --config proxy.conf`\n"),
    (["--listen"],
     "sluice: missing value for --listen: expected ADDR\nhint: e.g. --listen 127.0.0.1:8080\n"),
    (["--workers", "0"],
     "sluice: --workers must be a whole number from 1 to 256, got '0'\nhint: e.g. --workers 4\n"),
]


@pytest.mark.parametrize("args,stderr", CLI_ERRORS, ids=[" ".join(a) for a, _ in CLI_ERRORS])
def test_usage_error_is_one_line_and_a_hint(args, stderr):
    p = run_cli(args)
    assert p.returncode == 2, _out(p)
    assert p.stdout == b""
    assert p.stderr.decode() == stderr


def test_missing_upstream_is_an_error():
    p = run_cli(["--listen", "127.0.0.1:0"])
    assert p.returncode != 0, "no upstream and no config must not start a proxy"


@pytest.mark.parametrize("flag", ["--listen", "--admin"])
def test_address_in_use_says_so_and_how_to_choose_another(flag):
    """A busy port at start-up: exit 1 within seconds, one JSON error line whose hint names the flag to use."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    address = f"127.0.0.1:{busy.getsockname()[1]}"
    args = ["--listen", address] if flag == "--listen" else ["--listen", "127.0.0.1:0", "--admin", address]
    try:
        s = Sluice(args + ["--upstream", f"http://127.0.0.1:{unused_port()}", "--workers", "1"], wait_ready=False)
        t0 = time.monotonic()
        rc = s.wait_exit(5)
        s.stop()
        assert rc == 1, f"exit {rc}: sluice kept running on an address already in use" if rc is None else rc
        assert time.monotonic() - t0 < 5
        objs = s.log_objects()
        assert len(objs) == 1, s.stderr_lines
        line = objs[0]
        assert set(line) == {"ts", "level", "msg", "address", "error", "hint"}, line
        what = "listen on" if flag == "--listen" else "admin listener"
        assert (line["level"], line["msg"], line["address"]) == ("error", "cannot start", address)
        assert line["error"] == (f"{what} {address}: the address is in use by another process (bind: EADDRINUSE); "
                                 "stop it or choose another address")
        assert line["hint"] == f"another process listens there; choose another with {flag}"
    finally:
        busy.close()


def test_log_level_debug_shows_rejections_and_a_bad_level_is_refused(stack):
    origin = stack.origin()
    quiet = stack.proxy(origin)
    loud = stack.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin.port}"],
                        env=dict(os.environ, SLUICE_LOG_LEVEL="debug"))
    for sl in (quiet, loud):
        with RawConn(sl.port) as c:
            c.send(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert c.read_response().status == 400
    line = loud.wait_stderr(lambda o: o.get("msg") == "request rejected", 5, "the debug line")
    assert line["level"] == "debug" and line["status"] == 400
    assert not [o for o in quiet.log_objects() if o.get("level") == "debug"]
    bad = subprocess.run([SLUICE_BIN, "--version"], env=dict(os.environ, SLUICE_LOG_LEVEL="verbose"),
                         capture_output=True, timeout=10)
    assert bad.returncode == 2 and b"SLUICE_LOG_LEVEL must be debug, info, warn or error" in bad.stderr
