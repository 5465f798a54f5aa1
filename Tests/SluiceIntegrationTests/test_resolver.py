"""Upstream host names: every address a name has takes new connections in turn, a refused connect moves on to the
next address, and the name is looked up again every `resolve_interval`, following a backend that moves while open
streams stay where they are. sluice runs in a private mount namespace whose /etc/hosts and /etc/resolv.conf are
files of the test's, so the name's addresses are the test's to change."""

import http.client
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from origin import Origin, respond
from streams import BARE_SSE_HEAD, LAST_CHUNK, chunk

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a private /etc/hosts needs root and unshare (util-linux)")

NAME = "llm.sluice-test"


class Names:
    """The hosts file sluice sees, rewritten in place (a bind mount follows the inode, not the path)."""

    def __init__(self, tmp_path: Path):
        self.hosts = tmp_path / "hosts"
        self.hosts.write_text("")
        # A lookup that misses the hosts file fails at once: nothing answers DNS on 127.0.0.1.
        self.resolv = tmp_path / "resolv.conf"
        self.resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")

    def set(self, *addresses: str):
        with open(self.hosts, "r+") as f:
            f.truncate(0)
            f.write("".join(f"{address} {NAME}\n" for address in addresses))

    @property
    def launcher(self) -> tuple[str, ...]:
        script = f'mount --bind {self.hosts} /etc/hosts && mount --bind {self.resolv} /etc/resolv.conf && exec "$@"'
        return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")


def _named_handler(label: bytes, stream_seconds: float = 0.0):
    """Answers with `label`; on /stream, `label` ten times over `stream_seconds`, chunked."""
    def handler(conn, req):
        if req.target != "/stream":
            respond(conn, 200, label, [("Content-Type", "text/plain")])
            return
        conn.send(BARE_SSE_HEAD)
        for _ in range(10):
            conn.sleep(stream_seconds / 10)
            event = b"data: " + label + b"\n\n"
            conn.send(chunk(event))
        conn.send(LAST_CHUNK)
    return handler


def _config(stack, port: int, *, resolve_interval: str = "1s", extra: str = "", workers: int = 2) -> Path:
    stack._n += 1
    path = stack.tmp_path / f"resolver{stack._n}.conf"
    path.write_text(f"""listen 127.0.0.1:0
workers {workers}
timeouts {{
    upstream_connect 1s
}}
upstream llm {{
    server http://{NAME}:{port}
    resolve_interval {resolve_interval}
    {extra}
}}
route / {{
    upstream llm
}}
admin {{
    listen 127.0.0.1:0
}}
""")
    return path


def _get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _second_origin(handler, port: int) -> Origin:
    """An origin on 127.0.0.2 at `port` (the first one's): one name, one port, two addresses."""
    return Origin(handler, bind=("127.0.0.2", port))


def test_every_address_takes_connections_and_a_refused_one_moves_to_the_next(stack, tmp_path):
    names = Names(tmp_path)
    alive = stack.origin(_named_handler(b"alive"))
    names.set("127.0.0.3", "127.0.0.1")  # nothing listens on 127.0.0.3
    sl = stack.sluice(["--config", str(_config(stack, alive.port, extra="max_idle 0"))], launcher=names.launcher)
    answers = [_get(sl.port, f"/r{i}") for i in range(20)]
    assert answers == [(200, b"alive")] * 20
    assert [r.target for r in alive.requests] == [f"/r{i}" for i in range(20)]
    # Each address is a server of the pool, chosen at random among equals (sequential requests: none has a stream
    # in flight); a request that met the dead address went to the live one, and after max_fails (3) refused connects
    # the dead address was ejected, so it cost at most three refused connects, not one every other request. The
    # chance that 20 requests never met it is 2^-20.
    retries = [o for o in sl.log_objects() if o.get("msg") == "retrying the request on another server"]
    assert 1 <= len(retries) <= 3 and all("127.0.0.3" in r["server"] and r["reason"] == "connect_error" for r in retries), retries
    _, _, metrics = sl.scrape()
    assert f'sluice_upstream_retries_total{{upstream="llm",reason="connect_error"}} {len(retries)}' in metrics.splitlines()


def test_when_every_address_refuses_the_client_gets_a_502_and_the_log_names_the_last(stack, tmp_path):
    """The client learns the upstream's name only; the operator's warning names the name, port and last address."""
    names = Names(tmp_path)
    probe = stack.origin()
    port = probe.port
    probe.close()  # the port is now closed on every loopback address
    names.set("127.0.0.3", "127.0.0.4")
    sl = stack.sluice(["--config", str(_config(stack, port))], launcher=names.launcher)
    status, body = _get(sl.port)
    assert status == 502, body
    assert b"upstream_unreachable" in body and b"127.0.0." not in body and str(port).encode() not in body, body
    deadline = time.monotonic() + 3
    while not any('"upstream error"' in line and f"{NAME}:{port}" in line and "127.0.0." in line for line in sl.stderr_lines):
        assert time.monotonic() < deadline, sl.stderr_lines
        time.sleep(0.02)


def test_a_moved_name_is_followed_and_open_streams_stay_where_they_are(stack, tmp_path):
    names = Names(tmp_path)
    old = stack.origin(_named_handler(b"old", stream_seconds=3.0))
    new = _second_origin(_named_handler(b"new"), old.port)
    try:
        names.set("127.0.0.1")
        # One worker: the connection the first request leaves pooled is the one the request after the move meets.
        sl = stack.sluice(["--config", str(_config(stack, old.port, workers=1))], launcher=names.launcher)
        assert _get(sl.port) == (200, b"old")

        streamed: dict = {}

        def stream():
            streamed["answer"] = _get(sl.port, "/stream")

        reader = threading.Thread(target=stream)
        reader.start()
        old.wait_for(lambda: any(r.target == "/stream" for r in old.requests), 5, "the stream request")
        assert _get(sl.port) == (200, b"old")  # leaves an idle connection to the old address in the pool
        names.set("127.0.0.2")
        changed = sl.wait_stderr(lambda o: o.get("msg") == "upstream addresses changed", 5, "the address change")
        assert changed["upstream"] == "llm" and changed["host"] == NAME
        assert changed["addresses"] == [f"127.0.0.2:{old.port}"]
        # The idle connection to the old address is dropped, not reused: the request goes to the new one.
        assert _get(sl.port) == (200, b"new")
        reader.join(10)
        # The stream that was open before the move finished from the old backend, byte for byte.
        assert streamed["answer"] == (200, b"data: old\n\n" * 10)
        assert [r.target for r in new.requests] == ["/"]
    finally:
        new.close()


def test_a_failed_lookup_keeps_the_last_addresses_and_is_logged_once(stack, tmp_path):
    names = Names(tmp_path)
    origin = stack.origin(_named_handler(b"up"))
    names.set("127.0.0.1")
    sl = stack.sluice(["--config", str(_config(stack, origin.port))], launcher=names.launcher)
    names.set()  # the name disappears; DNS has no answer either
    failed = sl.wait_stderr(lambda o: o.get("msg", "").startswith("upstream name lookup failed"), 5, "the lookup failure")
    assert failed["level"] == "warn" and NAME in failed["error"] and failed["addresses"] == [f"127.0.0.1:{origin.port}"]
    assert _get(sl.port) == (200, b"up")
    time.sleep(2.5)  # two more failed lookups
    failures = [o for o in sl.log_objects() if o.get("msg", "").startswith("upstream name lookup failed")]
    assert len(failures) == 1, "a failing name must be logged once per streak, not every interval"
    names.set("127.0.0.1")
    sl.wait_stderr(lambda o: o.get("msg") == "upstream name resolves again", 5, "the recovery")
    assert _get(sl.port) == (200, b"up")
