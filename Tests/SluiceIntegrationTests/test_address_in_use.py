"""An address another process holds is refused (issue 12, item 11): at start-up (listen and admin addresses,
held by a second sluice or by a plain socket) with one JSON error line naming the address and exit 1, while
the first process keeps serving; on SIGHUP, a reload onto a held address is refused and the old listener keeps
serving. Each address is one socket shared by the workers, so 2+ workers, port 0 and a reload that switches TLS
on the same address still work."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time

import pytest

from origin import unused_port
from rawhttp import get
from sluice_proc import Sluice, write_routes_config


def _config(stack, origin, *, listen="127.0.0.1:0", workers=1, admin=None, extra=""):
    stack._n += 1
    path = stack.tmp_path / f"inuse{stack._n}.conf"
    write_routes_config(path, upstreams={"a": f"http://127.0.0.1:{origin.port}"}, routes=[("/", "a", {})],
                        listen=listen, workers=workers, admin=admin)
    if extra:
        path.write_text(path.read_text() + extra)
    return path


def _refused_start(args) -> dict:
    """Start sluice with `args`, expect it to exit 1 before ready; returns its error line."""
    s = Sluice(args, wait_ready=False)
    try:
        rc = s.wait_exit(10)
        assert rc is not None, "sluice kept running on an address another process holds"
        assert rc == 1, rc
    finally:
        s.stop()
    objs = s.log_objects()
    assert not any(o.get("msg") == "ready" for o in objs), objs
    errors = [o for o in objs if o.get("level") == "error"]
    assert len(errors) == 1, objs
    return errors[0]


def _assert_serves(port: int, n: int = 5):
    for i in range(n):
        r = get(port, f"/still-{i}")
        assert r.status == 200 and r.body == f"/still-{i}".encode(), (r.status, r.body)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_second_sluice_on_the_same_listen_address_exits_and_the_first_keeps_serving(stack, workers):
    origin = stack.origin()
    first = stack.sluice(["--config", str(_config(stack, origin, workers=workers))])
    address = first.ready["listeners"][0]
    line = _refused_start(["--listen", address, "--upstream", f"http://127.0.0.1:{origin.port}", "--workers", str(workers)])
    assert line["msg"] == "cannot start"
    assert line["address"] == address
    assert "in use by another process" in line["error"] and address in line["error"]
    # Every new connection still reaches the first process (none is split off to a second one).
    _assert_serves(first.port, 20)
    assert first.alive()


def test_a_second_sluice_on_the_same_admin_address_exits_and_the_first_keeps_serving(stack):
    origin = stack.origin()
    first = stack.sluice(["--config", str(_config(stack, origin, admin="127.0.0.1:0"))])
    admin = first.ready["admin"]
    line = _refused_start(["--config", str(_config(stack, origin, admin=admin))])
    assert line["address"] == admin
    assert "admin listener" in line["error"] and "in use by another process" in line["error"]
    for _ in range(10):
        assert first.scrape("/readyz")[0] == 200
    # The second process bound its public listener before failing on the admin one and released it on exit;
    # the first is untouched.
    _assert_serves(first.port)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_port_a_plain_socket_listens_on_is_refused(stack, host):
    busy = socket.socket()
    busy.bind((host, 0))
    busy.listen(8)
    port = busy.getsockname()[1]
    try:
        line = _refused_start(["--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{unused_port()}"])
        assert line["address"] == f"127.0.0.1:{port}" and "in use by another process" in line["error"]
        line = _refused_start(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{unused_port()}",
                               "--admin", f"127.0.0.1:{port}"])
        assert line["address"] == f"127.0.0.1:{port}" and "in use by another process" in line["error"]
    finally:
        busy.close()


def test_a_reload_onto_a_held_address_is_refused_and_the_old_listener_keeps_serving(stack):
    origin = stack.origin()
    old_port = unused_port()
    cfg = _config(stack, origin, listen=f"127.0.0.1:{old_port}", workers=2)
    sl = stack.sluice(["--config", str(cfg)])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(8)
    held = busy.getsockname()[1]
    try:
        cfg.write_text(cfg.read_text().replace(f"listen 127.0.0.1:{old_port}", f"listen 127.0.0.1:{held}"))
        os.kill(sl.pid, signal.SIGHUP)
        line = sl.wait_stderr(lambda o: "reload failed" in o.get("msg", ""), 5, "the reload error")
        assert line["level"] == "error" and line["address"] == f"127.0.0.1:{held}"
        assert "in use by another process" in line["error"]
        _assert_serves(old_port)
        # The held port is still only the plain socket's: a connection lands in its queue.
        client = socket.create_connection(("127.0.0.1", held))
        busy.settimeout(2)
        conn, _ = busy.accept()
        conn.close()
        client.close()
        # A reload that can bind goes through afterwards: nothing was left half-applied.
        fresh = unused_port()
        cfg.write_text(cfg.read_text().replace(f"listen 127.0.0.1:{held}", f"listen 127.0.0.1:{fresh}"))
        os.kill(sl.pid, signal.SIGHUP)
        done = sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")
        assert done["listeners"] == [f"127.0.0.1:{fresh}"]
        _assert_serves(fresh)
    finally:
        busy.close()


def test_several_workers_and_port_0_serve_and_release_the_address_on_exit(stack):
    origin = stack.origin()
    first = stack.sluice(["--config", str(_config(stack, origin, workers=4))])
    port = first.port
    errors: list = []

    def client(n):
        try:
            _assert_serves(port, n)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(10,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert first.stop() == 0
    # The address is free again at once (SO_REUSEADDR: connections in TIME_WAIT do not hold it).
    again = stack.sluice(["--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{origin.port}", "--workers", "2"])
    assert again.port == port
    _assert_serves(port)


def test_a_reload_that_switches_tls_on_the_same_address_keeps_it(stack, pki):
    origin = stack.origin()
    port = unused_port()
    tls_block = f"tls {{\n    certificate {pki / 'server.pem'}\n    key {pki / 'server.key'}\n}}\n"
    cfg = _config(stack, origin, listen=f"127.0.0.1:{port}", workers=2, extra=tls_block)
    sl = stack.sluice(["--config", str(cfg)])
    _assert_serves(port)
    cfg.write_text(cfg.read_text().replace(f"listen 127.0.0.1:{port}", f"listen 127.0.0.1:{port} tls"))
    os.kill(sl.pid, signal.SIGHUP)
    line = sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded")
                          or "reload failed" in o.get("msg", ""), 5, "the reload outcome")
    assert line["msg"].startswith("SIGHUP: configuration reloaded"), line
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    for _ in range(4):  # both workers' descriptors of the one socket
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"/tls"), data[:200]
