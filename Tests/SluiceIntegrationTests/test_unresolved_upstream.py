"""Start-up that does not lie (issue 14): a routed upstream whose name does not resolve at start-up is retried in
the background (its routes answer 502 `upstream_unresolved`, `/readyz` is 503 naming it, liveness stays 200)
instead of refusing to start; `resolve_at_start required` refuses, with file:line and the resolver's message.
`sluice check` says which it will be. RFC 6761 §6.4 names ending in `.invalid` never resolve, online or not; the
test of a name that appears later runs sluice in a private mount namespace whose /etc/hosts the test rewrites."""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from sluice_proc import REPO, log_config, wait_records, run_cli
from test_resolver import NAME, Names, _get

DEAD = "name.invalid"


def _resolver_message(host: str) -> str:
    """What getaddrinfo says about `host` here (Python's gaierror carries gai_strerror's text)."""
    try:
        socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return error.strerror
    raise AssertionError(f"{host} resolves on this machine")


def _config(tmp_path: Path, origin_port: int, *, top: str = "", dead: str = "", log: Path | None = None,
            admin: bool = True) -> Path:
    """Upstream `live` (the origin) on `/`, `dead` (a name that never resolves) on `/dead/`, `spare` (also
    unresolvable) on no route; `top` and `dead` are extra lines at the top level and in `dead`'s block."""
    text = f"""listen 127.0.0.1:0
workers 2
{top}
upstream live {{
    server http://127.0.0.1:{origin_port}
}}
upstream dead {{
    server http://{DEAD}:8000
    {dead}
}}
upstream spare {{
    server https://spare.invalid
}}
route / {{
    upstream live
}}
route /dead/ {{
    upstream dead
}}
"""
    if admin:
        text += "admin {\n    listen 127.0.0.1:0\n}\n"
    if log is not None:
        text += "log {\n" + "".join(f"    {k} {v}\n" for k, v in log_config(log).items()) + "}\n"
    path = tmp_path / "unresolved.conf"
    path.write_text(text)
    return path


DEAD_SERVER_LINE = 8
SPARE_BLOCK_LINE = 11




def test_config_line_numbers_are_as_documented(tmp_path):
    lines = _config(tmp_path, 1).read_text().splitlines()
    assert lines[DEAD_SERVER_LINE - 1].strip() == f"server http://{DEAD}:8000"
    assert lines[SPARE_BLOCK_LINE - 1] == "upstream spare {"


def test_an_unresolved_upstream_starts_answers_502_and_holds_readiness(stack, tmp_path):
    origin = stack.origin()
    log = tmp_path / "completions.jsonl"
    sl = stack.sluice(["--config", str(_config(tmp_path, origin.port, log=log))])
    assert sl.ready["unresolved_upstreams"] == ["dead"]
    objects = sl.log_objects()
    [warning] = [o for o in objects if o.get("msg", "").startswith("upstream name does not resolve")]
    assert warning["level"] == "warn" and warning["upstream"] == "dead" and warning["host"] == DEAD
    # The resolver's own words (gai_strerror), not a stale errno's ": Success".
    assert warning["error"] == f"getaddrinfo({DEAD}): {_resolver_message(DEAD)}", warning
    [unused] = [o for o in objects if o.get("msg", "").startswith("upstream not used by any route")]
    assert unused["upstream"] == "spare"
    assert not any("spare" in json.dumps(o) for o in objects if "resolve" in o.get("msg", "")), "an unused name is not looked up"

    # Readiness: 503 naming the routed upstream (not the unused one); liveness unaffected.
    status, _, body = sl.scrape("/readyz")
    assert status == 503 and body == f"not ready: upstream 'dead' ({DEAD}:8000) does not resolve yet: " \
                                      f"getaddrinfo({DEAD}): {_resolver_message(DEAD)}\n", body
    assert sl.scrape("/healthz")[0] == 200

    # The route answers 502 upstream_unresolved naming the upstream only; the other route works.
    status, body = _get(sl.port, "/dead/x")
    assert status == 502, body
    error = json.loads(body)["error"]
    assert error["type"] == "upstream_unresolved" and "'dead'" in error["message"], error
    assert DEAD not in body.decode() and "getaddrinfo" not in body.decode(), body
    assert _get(sl.port, "/ok") == (200, b"/ok")

    records = {r["path"]: r for r in wait_records(log, 2)}
    dead = records["/dead/x"]
    assert (dead["status"], dead["end"]) == (502, "upstream_unresolved"), dead
    assert DEAD in dead["error"] and dead["upstream"] is None, dead
    assert records["/ok"]["end"] == "complete"
    metrics = sl.scrape()[2].splitlines()
    assert 'sluice_exchanges_total{end="upstream_unresolved"} 1' in metrics
    # The operator's warning for the failed exchange names the host; nothing else about it is logged per retry.
    sl.wait_stderr(lambda o: o.get("msg") == "upstream error" and o.get("status") == 502 and DEAD in o.get("error", ""),
                   5, "the upstream error line")


def test_check_warns_with_file_and_line_and_exits_0(tmp_path):
    cfg = _config(tmp_path, 1)
    p = run_cli(["check", "--config", str(cfg)])
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert p.stdout.decode() == f"{cfg}: ok\n"
    lines = err.splitlines()
    message = _resolver_message(DEAD)
    [dead] = [ln for ln in lines if "upstream 'dead'" in ln]
    assert dead.startswith(f"{cfg}:{DEAD_SERVER_LINE}: warning: ") and dead.endswith(f"getaddrinfo({DEAD}): {message}"), dead
    assert "502 upstream_unresolved" in dead
    assert f"{cfg}:{SPARE_BLOCK_LINE}: warning: upstream 'spare' is not used by any route; start-up does not look up its name" in lines
    assert not any(ln.endswith("Success") for ln in lines), err


def test_check_under_required_is_an_error_with_file_line_and_the_resolvers_message(tmp_path):
    for top, dead in (("resolve_at_start required", ""), ("", "resolve_at_start required")):
        cfg = _config(tmp_path, 1, top=top, dead=dead)
        p = run_cli(["check", "--config", str(cfg)])
        err = p.stderr.decode()
        assert p.returncode == 1 and p.stdout == b"", err
        [line] = [ln for ln in err.splitlines() if "upstream 'dead'" in ln]
        assert line == (f"{cfg}:{DEAD_SERVER_LINE}: upstream 'dead' ({DEAD}) does not resolve, and resolve_at_start is "
                        f"required: start-up would refuse: getaddrinfo({DEAD}): {_resolver_message(DEAD)}"), line


def test_start_under_required_refuses_with_one_json_line(tmp_path):
    cfg = _config(tmp_path, 1, dead="resolve_at_start required")
    p = run_cli(["--config", str(cfg)])
    assert p.returncode == 1
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["level"] == "error" and line["msg"] == "cannot start", line
    assert (line["file"], line["line"]) == (str(cfg), DEAD_SERVER_LINE), line
    assert line["error"] == (f"upstream 'dead' does not resolve (resolve_at_start required): "
                             f"getaddrinfo({DEAD}): {_resolver_message(DEAD)}"), line


def test_the_shipped_example_passes_check_and_starts_offline(stack, tmp_path):
    """The example's https upstream (api.example.com) is on no route: `check` warns, start-up does not look it up."""
    example = REPO / "proxy.conf.example"
    p = run_cli(["check", "--config", str(example)])
    assert p.returncode == 0, p.stderr.decode()
    assert "upstream 'hosted' is not used by any route" in p.stderr.decode()
    sl = stack.sluice(["--config", str(example), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
    assert sl.ready["unresolved_upstreams"] == []
    assert sl.scrape("/readyz")[:3:2] == (200, "ready\n")
    objects = sl.log_objects()
    assert any(o.get("msg", "").startswith("upstream not used by any route") and o["upstream"] == "hosted" for o in objects)
    assert not any("resolve" in o.get("msg", "") or "lookup" in o.get("msg", "") for o in objects), objects


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a private /etc/hosts needs root and unshare (util-linux)")
def test_a_name_that_appears_later_is_found_and_served(stack, tmp_path):
    names = Names(tmp_path)  # empty hosts file, DNS refused at once: NAME does not resolve
    origin = stack.origin()
    cfg = tmp_path / "later.conf"
    cfg.write_text(f"listen 127.0.0.1:0\nworkers 2\nupstream llm {{\n    server http://{NAME}:{origin.port}\n"
                   f"    resolve_interval 1s\n}}\nroute / {{\n    upstream llm\n}}\nadmin {{\n    listen 127.0.0.1:0\n}}\n")
    sl = stack.sluice(["--config", str(cfg)], launcher=names.launcher)
    assert sl.ready["unresolved_upstreams"] == ["llm"]
    status, _, body = sl.scrape("/readyz")
    assert status == 503 and f"upstream 'llm' ({NAME}:{origin.port}) does not resolve yet" in body, body
    status, body = _get(sl.port, "/early")
    assert status == 502 and json.loads(body)["error"]["type"] == "upstream_unresolved", body
    # Retries at 1 s, then every 1 s (resolve_interval caps the backoff): two or more fail meanwhile, unlogged.
    time.sleep(2.5)
    names.set("127.0.0.1")
    resolved = sl.wait_stderr(lambda o: o.get("msg") == "upstream name resolves; its routes are served", 5, "the resolution")
    assert resolved["upstream"] == "llm" and resolved["addresses"] == [f"127.0.0.1:{origin.port}"], resolved
    failures = [o for o in sl.log_objects() if "does not resolve" in o.get("msg", "") or "lookup failed" in o.get("msg", "")]
    assert len(failures) == 1, "one line when the failure began, none per retry"
    assert sl.scrape("/readyz")[:3:2] == (200, "ready\n")
    assert _get(sl.port, "/later") == (200, b"/later")
    assert [r.target for r in origin.requests] == ["/later"]
