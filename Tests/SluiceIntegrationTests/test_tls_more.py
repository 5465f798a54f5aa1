"""TLS beyond test_tls.py: backpressure, keep-alive and pipelining, large bodies, failed handshakes, protocol and
cipher settings, CA directories, SNI override, upstream TLS pooling and replay, config errors.

Built on test_tls.py's helpers (config writer, client context, TLSOrigin). Clients are rawhttp's strict RawConn
with its socket wrapped in TLS; the TLS origin here is test_tls.TLSOrigin made keep-alive."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from origin import OriginStopping, PeerClosed, respond, unused_port
from rawhttp import RawConn, request_bytes
from sluice_proc import run_cli, wait_records
from test_tls import TLSOrigin, _client_context, _tls_config

DEBUG_ENV = {**os.environ, "SLUICE_LOG_LEVEL": "debug"}


def _tls_conn(port: int, pki: Path, context: ssl.SSLContext | None = None, **kw) -> RawConn:
    """A RawConn to sluice whose socket speaks TLS to `localhost` (the handshake happens here)."""
    conn = RawConn(port, **kw)
    try:
        conn.sock = (context or _client_context(pki)).wrap_socket(conn.sock, server_hostname="localhost")
    except BaseException:
        conn.close()
        raise
    return conn


def _tls_get(port: int, pki: Path, target: str):
    """GET `target` on a fresh TLS connection; returns the rawhttp Response."""
    with _tls_conn(port, pki) as c:
        c.send(request_bytes("GET", target))
        return c.read_response()


def _edit(cfg: Path, old: str, new: str) -> Path:
    """Replaces `old`, which must be there, in a config file test_tls._tls_config wrote."""
    text = cfg.read_text()
    assert old in text, f"{old!r} is not in {cfg}"
    cfg.write_text(text.replace(old, new))
    return cfg


def _with_tls_keys(cfg: Path, *lines: str) -> Path:
    """Adds `lines` to the `tls { }` block."""
    anchor = "    handshake_timeout 1s\n"
    return _edit(cfg, anchor, anchor + "".join(f"    {ln}\n" for ln in lines))


def _digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


class KeepAliveTLSOrigin(TLSOrigin):
    """A keep-alive TLS origin: each request (Content-Length body or none) is answered with its body, or its
    target when it has none. `drop(conn_index, request_index)` returns how to end the connection instead of
    answering: "fin" (no close_notify), "close_notify" or "rst"; None answers. Records (conn, target, body)."""

    def __init__(self, pki: Path, cert: str = "server", drop=None):
        self.drop = drop or (lambda conn, n: None)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[int, str, bytes]] = []
        super().__init__(pki / f"{cert}.pem", pki / f"{cert}.key")

    def _serve(self, sock):
        with self.lock:
            index = self.connections
            self.connections += 1
        try:
            with self.context.wrap_socket(sock, server_side=True) as tls:
                tls.settimeout(10)
                buf = b""
                for n in range(1000):
                    while b"\r\n\r\n" not in buf:
                        more = tls.recv(65536)
                        if not more:
                            return
                        buf += more
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                                   if ln.lower().startswith(b"content-length:")), 0)
                    while len(buf) < length:
                        more = tls.recv(1 << 20)
                        if not more:
                            return
                        buf += more
                    body, buf = buf[:length], buf[length:]
                    target = head.split(b" ")[1].decode()
                    with self.lock:
                        self.requests.append((index, target, body))
                    how = self.drop(index, n)
                    if how:
                        return self._end(tls, how)
                    answer = body or target.encode()
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer)
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(repr(exc))

    @staticmethod
    def _end(tls: ssl.SSLSocket, how: str):
        if how == "rst":
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif how == "close_notify":
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass  # sluice may close without answering the close_notify


@pytest.fixture
def tls_origin():
    """Starts KeepAliveTLSOrigins (the arguments of its constructor); closes them after the test."""
    started: list[KeepAliveTLSOrigin] = []

    def start(*args, **kw) -> KeepAliveTLSOrigin:
        started.append(KeepAliveTLSOrigin(*args, **kw))
        return started[-1]
    yield start
    for origin in started:
        origin.close()


# --- termination -----------------------------------------------------------------------------------------


#: As test_backpressure: kernel buffers may hold a few MiB; sluice's own queue and BIO pair well under 1 MiB.
PUSH = 200 << 20
ORIGIN_SENT_LIMIT = 8 << 20
RSS_GROWTH_LIMIT_KIB = 16 << 10
STALL = 1.5


def test_slow_tls_reader_pauses_the_upstream_and_keeps_memory_bounded(stack, pki):
    """A TLS client that stops reading a 200 MiB push: the origin's writes stall (sluice stopped reading it)
    after a few MiB, sluice's RSS stays flat, and what the client did get is an exact prefix of the body."""
    head, piece = f"HTTP/1.1 200 OK\r\nContent-Length: {PUSH}\r\n\r\n".encode(), b"B" * 65536

    def handler(conn, req):
        if req.target == "/warm":
            return respond(conn, 200, b"warm")
        conn.send(head)
        try:
            for _ in range(PUSH // len(piece)):
                conn.send(piece, stall_timeout=STALL)
        except (PeerClosed, OriginStopping):
            pass  # SendStalled, the expected end, goes on to the origin, which records it
        return False

    origin = stack.origin(handler, sndbuf=65536)
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"))])
    assert _tls_get(sl.port, pki, "/warm").body == b"warm"  # buffers, pools and TLS state exist
    rss0 = sl.rss_kib()
    with _tls_conn(sl.port, pki, rcvbuf=4096, timeout=5) as c:
        c.send(request_bytes("GET", "/flood"))
        assert c.read_head().status == 200
        origin.wait_for(lambda: [h for h in origin.heads if h.target == "/flood"], 5, "the flood request")
        flood = origin.connections[[h for h in origin.heads if h.target == "/flood"][0].conn_id]
        samples = []
        while not flood.stalled:
            assert len(samples) < 40, "the origin never stalled: sluice kept reading for a client that does not"
            samples.append((flood.bytes_sent, sl.rss_kib()))
            time.sleep(0.2)
        samples.append((flood.bytes_sent, sl.rss_kib()))
        report = ", ".join(f"sent={b / 1048576:.2f}MiB rss={r / 1024:.1f}MiB" for b, r in samples)
        print(f"rss0={rss0 / 1024:.1f}MiB; {report}")
        assert samples[-1][0] < ORIGIN_SENT_LIMIT, f"the origin wrote far ahead of the client: {report}"
        assert max(r for _, r in samples) - rss0 < RSS_GROWTH_LIMIT_KIB, f"RSS grew from {rss0 / 1024:.1f}MiB: {report}"
        # The origin gave up and closed: sluice hands on what it holds, then ends the truncated response.
        received = c.read_until_close(10)
    assert 0 < len(received) <= flood.bytes_sent - len(head)
    assert received == b"B" * len(received)


def test_tls_listener_serves_keepalive_and_pipelining_with_a_plain_listener_alongside(stack, pki):
    origin = stack.origin()
    plain_port = unused_port()
    cfg = _tls_config(stack, pki, f"http://127.0.0.1:{origin.port}", extra=f"listen 127.0.0.1:{plain_port}")
    sl = stack.sluice(["--config", str(cfg)])
    assert sl.ready["listeners"] == [f"127.0.0.1:{sl.port}", f"127.0.0.1:{plain_port}"]
    assert sl.ready["tls_listeners"] == sl.ready["listeners"][:1]
    with _tls_conn(sl.port, pki) as c:
        c.send(b"".join(request_bytes("GET", f"/p/{i}") for i in range(3)))  # one TLS record, three requests
        for i in range(3):
            r = c.read_response()
            assert (r.status, r.body) == (200, f"/p/{i}".encode())
        for i in range(20):
            c.send(request_bytes("GET", f"/k/{i}"))
            r = c.read_response()
            assert (r.status, r.body) == (200, f"/k/{i}".encode())
    with RawConn(plain_port) as c:
        c.send(request_bytes("GET", "/plain"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"/plain")
    assert [(q.target, q.header("x-forwarded-proto")) for q in origin.requests] == \
        [(f"/p/{i}", "https") for i in range(3)] + [(f"/k/{i}", "https") for i in range(20)] + [("/plain", "http")]
    # Keep-alive on both sides: the TLS client's 23 requests went over one upstream connection.
    assert {q.conn_id for q in origin.requests[:23]} == {0}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_large_upload_and_response_over_tls_are_byte_exact(stack, pki, tls_origin, scheme):
    """6 MiB up and the same 6 MiB back, through TLS termination (and origination with https): each record
    boundary and partial TLS write on the way must keep every byte."""
    upload = os.urandom(6 << 20)
    if scheme == "http":
        origin = stack.origin(lambda conn, req: respond(conn, 200, req.body))
        cfg = _tls_config(stack, pki, f"http://127.0.0.1:{origin.port}")
    else:
        origin = tls_origin(pki)
        cfg = _tls_config(stack, pki, f"https://localhost:{origin.port}", upstream_keys=f"tls_ca_file {pki / 'ca.pem'}")
    sl = stack.sluice(["--config", str(cfg)])
    with _tls_conn(sl.port, pki, timeout=30) as c:
        c.send(request_bytes("POST", "/bulk", [("Content-Type", "application/octet-stream")], upload))
        r = c.read_response()
    received = origin.requests[0].body if scheme == "http" else origin.requests[0][2]
    assert _digest(received) == _digest(upload), "the upload changed on its way to the origin"
    assert r.status == 200 and r.complete
    assert _digest(r.body) == _digest(upload), "the response changed on its way to the client"
    assert not origin.errors


def test_failed_client_handshake_is_logged_at_debug_level_and_closed(stack, pki):
    origin = stack.origin()
    cfg = _tls_config(stack, pki, f"http://127.0.0.1:{origin.port}")
    sl = stack.sluice(["--config", str(cfg)], env=DEBUG_ENV)
    failed = "TLS handshake with a client failed"
    # A client that does not trust the test CA aborts the handshake with an alert.
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_conn(sl.port, pki, context=ssl.create_default_context(), timeout=5)
    line = sl.wait_stderr(lambda o: o.get("msg") == failed, 5, "the failed handshake")
    assert line["level"] == "debug" and line["client"] == "127.0.0.1" and "unknown ca" in line["error"], line
    # A handshake record that is not a ClientHello: a fatal unexpected_message alert, then the close.
    with RawConn(sl.port, timeout=5) as c:
        c.send(b"\x16\x03\x01\x00\x08" + b"\x63" * 8)
        answer = c.read_until_close(5)
    assert answer[:2] == b"\x15\x03" and answer[3:] == b"\x00\x02\x02\x0a", answer
    line = sl.wait_stderr(lambda o: o.get("msg") == failed and "unknown ca" not in o["error"], 5, "the second failure")
    assert line["level"] == "debug" and line["error"] == "unexpected message", line
    # Still serving; nothing of the failed connections reached the origin.
    assert _tls_get(sl.port, pki, "/ok").body == b"/ok"
    assert [h.target for h in origin.heads] == ["/ok"]


def test_min_version_ciphersuites_and_ciphers_are_applied(stack, pki):
    origin = stack.origin()
    tls12 = _client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2

    cfg = _with_tls_keys(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"),
                         "min_version 1.3", "ciphersuites TLS_CHACHA20_POLY1305_SHA256")
    sl = stack.sluice(["--config", str(cfg)])
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
        _tls_conn(sl.port, pki, context=tls12, timeout=5)
    with _tls_conn(sl.port, pki) as c:
        # Python's client prefers TLS_AES_256_GCM_SHA384: CHACHA20 is there only because sluice allows nothing else.
        assert (c.sock.version(), c.sock.cipher()[0]) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")

    # Default min_version 1.2 lets the same client in, with the one TLS 1.2 cipher `ciphers` allows.
    cfg = _with_tls_keys(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"),
                         "ciphers ECDHE-ECDSA-CHACHA20-POLY1305")
    sl = stack.sluice(["--config", str(cfg)])
    with _tls_conn(sl.port, pki, context=tls12) as c:
        assert (c.sock.version(), c.sock.cipher()[0]) == ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")
        c.send(request_bytes("GET", "/v12"))
        assert c.read_response().body == b"/v12"


# --- origination -----------------------------------------------------------------------------------------


def test_ca_directory_is_used_for_verification(stack, pki, tls_origin):
    origin = tls_origin(pki)
    hashed = stack.tmp_path / "cadir"
    hashed.mkdir()
    shutil.copy(pki / "ca.pem", hashed / "test-ca.pem")
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True, timeout=10)
    assert any(p.is_symlink() for p in hashed.iterdir()), "openssl rehash made no hash link"
    cfg = _tls_config(stack, pki, f"https://localhost:{origin.port}", upstream_keys=f"tls_ca_dir {hashed}")
    sl = stack.sluice(["--config", str(cfg)])
    r = _tls_get(sl.port, pki, "/via-dir")
    assert (r.status, r.body) == (200, b"/via-dir")
    # The same directory without the hash links: OpenSSL finds no CA in it, so the directory is what trusted it.
    bare = stack.tmp_path / "bare"
    bare.mkdir()
    shutil.copy(pki / "ca.pem", bare / "test-ca.pem")
    cfg = _tls_config(stack, pki, f"https://localhost:{origin.port}", upstream_keys=f"tls_ca_dir {bare}")
    sl = stack.sluice(["--config", str(cfg)])
    r = _tls_get(sl.port, pki, "/no-links")
    assert r.status == 502, r.body
    assert r.json()["error"]["message"].endswith("certificate verify failed: unable to get local issuer certificate")


def test_server_name_override_is_sent_as_sni_and_verified(stack, pki, tls_origin):
    """`tls_server_name` replaces the host for both SNI and the certificate check: an origin at 127.0.0.1 whose
    certificate names only wrong.example is accepted with the override and refused without it."""
    origin = tls_origin(pki, "wronghost")
    url, ca = f"https://127.0.0.1:{origin.port}", f"tls_ca_file {pki / 'ca.pem'}"
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, url, upstream_keys=f"{ca}\n    tls_server_name wrong.example"))])
    r = _tls_get(sl.port, pki, "/sni")
    assert (r.status, r.body) == (200, b"/sni")
    assert origin.server_names == ["wrong.example"] and not origin.errors, origin.errors
    # Without the override the IP is checked (and, an IP literal, not sent as SNI: RFC 6066 section 3).
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, url, upstream_keys=ca))])
    r = _tls_get(sl.port, pki, "/ip")
    assert r.status == 502
    assert r.json()["error"]["message"].endswith("certificate verify failed: IP address mismatch"), r.body
    assert origin.server_names == ["wrong.example", None]


def test_idle_tls_upstream_connections_are_pooled(stack, pki, tls_origin):
    """Two requests from two client connections, one after the other, share one upstream TLS connection."""
    origin = tls_origin(pki)
    cfg = _tls_config(stack, pki, f"https://localhost:{origin.port}", upstream_keys=f"tls_ca_file {pki / 'ca.pem'}")
    # One worker: the pool is per worker, so both client connections must land on the same one.
    sl = stack.sluice(["--config", str(_edit(cfg, "workers 2\n", "workers 1\n"))])
    for target in ("/one", "/two"):
        r = _tls_get(sl.port, pki, target)
        assert (r.status, r.body) == (200, target.encode())
    assert origin.connections == 1 and [(i, t) for i, t, _ in origin.requests] == [(0, "/one"), (0, "/two")]
    assert origin.server_names == ["localhost"], "more than one TLS handshake with the origin"
    assert not origin.errors, origin.errors


@pytest.mark.parametrize("how", ["fin", "close_notify", "rst"])
def test_pooled_tls_connection_closed_as_it_is_reused_is_replayed(stack, pki, tls_origin, how):
    """The origin reads the second request on a kept-alive TLS connection and closes it unanswered (its idle
    timer fired just then): the GET goes again on a fresh TLS connection and the client sees 200, once."""
    origin = tls_origin(pki, drop=lambda conn, n: how if n == 1 else None)
    log = stack.tmp_path / "completions.jsonl"
    cfg = _tls_config(stack, pki, f"https://localhost:{origin.port}", upstream_keys=f"tls_ca_file {pki / 'ca.pem'}")
    sl = stack.sluice(["--config", str(cfg)])
    with _tls_conn(sl.port, pki) as c:
        c.send(request_bytes("GET", "/one"))
        assert c.read_response().body == b"/one"
        c.send(request_bytes("GET", "/two"))
        r = c.read_response()
    assert (r.status, r.body) == (200, b"/two"), r.body[:300]
    assert [(i, t) for i, t, _ in origin.requests] == [(0, "/one"), (0, "/two"), (1, "/two")]
    assert not origin.errors, origin.errors
    records = wait_records(log, 2)
    assert [(x["path"], x["status"], x["end"]) for x in records] == [("/one", 200, "complete"), ("/two", 200, "complete")]


# --- configuration ---------------------------------------------------------------------------------------


_TAIL = "upstream o {\n    server http://127.0.0.1:9\n}\nroute / {\n    upstream o\n}\n"
_TLS_HEAD = "listen 127.0.0.1:0 tls\ntls {\n    certificate PKI/server.pem\n    key PKI/server.key\n"


def _upstream_with(scheme: str, key_line: str) -> str:
    """A config whose one upstream has `key_line` on its line 4."""
    return f"listen 127.0.0.1:0\nupstream o {{\n    server {scheme}://127.0.0.1:9\n    {key_line}\n}}\nroute / {{\n    upstream o\n}}\n"


@pytest.mark.parametrize("text, line, message", [
    pytest.param("listen 127.0.0.1:0 tls\n" + _TAIL, 1, "needs a 'tls { certificate PATH  key PATH }' block", id="no-block"),
    pytest.param("listen 127.0.0.1:0 tsl\n" + _TAIL, 1, "unexpected 'tsl' after the address", id="tsl"),
    pytest.param("listen 127.0.0.1:0 tls\ntls {\n    certificate PKI/server.pem\n}\n" + _TAIL, 2,
                 "the 'tls' block has no 'key'", id="no-key"),
    pytest.param(_TLS_HEAD + "    min_version 1.1\n}\n" + _TAIL, 5, "min_version must be 1.2 or 1.3, got '1.1'",
                 id="min-version"),
    pytest.param(_TLS_HEAD + "    handshake_timeout soon\n}\n" + _TAIL, 5, "bad duration 'soon'", id="handshake-timeout"),
    pytest.param(_upstream_with("http", "tls_verify off"), 4, "tls_* settings apply to https upstreams; upstream 'o' is http://",
                 id="tls-key-on-http"),
    pytest.param(_upstream_with("https", "tls_verify maybe"), 4, "tls_verify must be on, off, true, false, yes or no, got 'maybe'",
                 id="tls-verify"),
    pytest.param("listen 127.0.0.1:0 tls\ntls {\n    certificate /nonexistent/cert.pem\n    key PKI/server.key\n}\n" + _TAIL,
                 3, "/nonexistent/cert.pem", id="certificate-file"),
    pytest.param(_TLS_HEAD + "    ciphersuites TLS_NO_SUCH_SUITE\n}\n" + _TAIL, 5, "TLS_NO_SUCH_SUITE",
                 id="ciphersuites"),
    pytest.param(_TLS_HEAD + "    ciphers NO-SUCH-CIPHER\n}\n" + _TAIL, 5, "NO-SUCH-CIPHER", id="ciphers"),
    pytest.param("listen 127.0.0.1:0 tls\ntls {\n    certificate PKI/server.pem\n    key /nonexistent/key.pem\n}\n" + _TAIL,
                 4, "/nonexistent/key.pem", id="key-file"),
    pytest.param(_upstream_with("https", "tls_ca_file /nonexistent/ca.pem"), 4, "/nonexistent/ca.pem", id="ca-file"),
    pytest.param(_upstream_with("https", "tls_ca_dir /nonexistent/cas"), 4, "/nonexistent/cas", id="ca-dir"),
])
def test_tls_config_errors_name_file_and_line(tmp_path, pki, text, line, message):
    cfg = tmp_path / "bad.conf"
    cfg.write_text(text.replace("PKI", str(pki)))
    out = run_cli(["check", "--config", str(cfg)])
    err = out.stderr.decode()
    assert out.returncode == 1, (out.returncode, err)
    assert err.startswith(f"{cfg}:{line}: ") and message in err, err
    # Starting with it fails the same way, with file and line in the JSON error line.
    started = run_cli(["--config", str(cfg)])
    assert started.returncode == 1
    error = json.loads(started.stderr.decode().strip().splitlines()[-1])
    assert (error["file"], error["line"]) == (str(cfg), line) and message in error["error"], error


def test_check_accepts_a_good_tls_config(stack, pki):
    cfg = _with_tls_keys(_tls_config(stack, pki, "https://localhost:9",
                                     upstream_keys=f"tls_ca_file {pki / 'ca.pem'}\n    tls_server_name localhost"),
                         "min_version 1.3", "ciphers ECDHE+AESGCM:ECDHE+CHACHA20",
                         "ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")
    out = run_cli(["check", "--config", str(cfg)])
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() + out.stderr.decode() == f"{cfg}: ok\n"
