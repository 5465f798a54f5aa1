"""TLS: sluice terminating TLS on a listener and originating TLS to https upstreams (OpenSSL 3).

Certificates are made per test session by make-test-certificates.sh (the openssl command); no key is
committed. The origin side uses `openssl s_server` (a TLS server nobody here wrote) and, for streaming,
a small Python `ssl` server that records the SNI it was sent."""

from __future__ import annotations

import json
import os
import re
import signal
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from origin import unused_port
from rawhttp import get
from sluice_proc import SLUICE_BIN, wait_records
from streams import BARE_SSE_HEAD, LAST_CHUNK, chunk

HERE = Path(__file__).resolve().parent
EVENTS = 5
GAP = 0.3
#: As in test_flush: the added delay per event a TLS hop may cost.
MEDIAN_LIMIT = 0.020
MAX_LIMIT = 0.060


def _event(i: int) -> bytes:
    return f"id: {i}\ndata: {{\"n\": {i}, \"pad\": \"{'x' * (i * 9)}\"}}\n\n".encode()


def _expected() -> bytes:
    return b"".join(_event(i) for i in range(EVENTS))


class TLSOrigin:
    """An SSE origin over TLS: each request gets EVENTS chunked events GAP s apart; records send times and the
    SNI names clients sent."""

    def __init__(self, cert: Path, key: Path, gap: float = GAP):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.server_names: list = []
        self.context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        self.gap = gap
        self.sent_at: list[float] = []
        self.hosts: list[str] = []
        self.errors: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.listener.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        try:
            with self.context.wrap_socket(sock, server_side=True) as tls:
                tls.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    more = tls.recv(4096)
                    if not more:
                        return
                    head += more
                match = re.search(rb"\r\nhost: *([^\r]*)", head, re.I)
                self.hosts.append(match.group(1).decode() if match else "")
                tls.sendall(BARE_SSE_HEAD)
                for i in range(EVENTS):
                    if i:
                        time.sleep(self.gap)
                    event = _event(i)
                    self.sent_at.append(time.monotonic())
                    tls.sendall(chunk(event))
                tls.sendall(LAST_CHUNK)
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(repr(exc))

    def close(self):
        self.stopping.set()
        self.listener.close()


class SServer:
    """`openssl s_server -www` with `cert`: answers GET with a status page; -debug logs the SNI it receives."""

    def __init__(self, pki: Path, cert: str):
        self.port = unused_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", str(pki / f"{cert}.pem"),
             "-key", str(pki / f"{cert}.key"), "-www", "-debug",
             "-servername", "localhost", "-cert2", str(pki / f"{cert}.pem"), "-key2", str(pki / f"{cert}.key")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not start"
                time.sleep(0.05)

    def output(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return out.decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _tls_config(stack, pki: Path, upstream_url: str, *, upstream_keys: str = "", extra: str = "") -> Path:
    stack._n += 1
    path = stack.tmp_path / f"tls{stack._n}.conf"
    path.write_text(f"""listen 127.0.0.1:0 tls
workers 2
{extra}
tls {{
    certificate {pki / 'server.pem'}
    key {pki / 'server.key'}
    handshake_timeout 1s
}}
log {{
    file {stack.tmp_path / 'completions.jsonl'}
}}
upstream o {{
    server {upstream_url}
    {upstream_keys}
}}
route / {{
    upstream o
}}
""")
    return path


def _client_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _stream_over_tls(port: int, pki: Path, target: str = "/v1/stream"):
    """GET `target` over TLS with Python's ssl; returns (decoded body, arrival time of each event, ALPN)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with _client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n".encode())
            data = b""
            arrivals: list[float] = []
            body = b""
            while True:
                more = tls.recv(65536)
                now = time.monotonic()
                if not more:
                    break
                data += more
                head, sep, rest = data.partition(b"\r\n\r\n")
                if not sep:
                    continue
                body = _dechunk(rest)
                while len(arrivals) < EVENTS and len(body) >= len(b"".join(_event(i) for i in range(len(arrivals) + 1))):
                    arrivals.append(now)
                if rest.endswith(b"0\r\n\r\n"):
                    break
            return head, body, arrivals, tls.selected_alpn_protocol()


def _dechunk(data: bytes) -> bytes:
    out, rest = b"", data
    while b"\r\n" in rest:
        size_line, _, after = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0 or len(after) < size + 2:
            break
        out += after[:size]
        rest = after[size + 2:]
    return out


def _assert_flushed(sent_at: list[float], arrivals: list[float]):
    delays = [a - s for s, a in zip(sent_at, arrivals)]
    assert len(delays) == EVENTS, (sent_at, arrivals)
    delays.sort()
    assert delays[len(delays) // 2] < MEDIAN_LIMIT, f"events held back: {delays}"
    assert delays[-1] < MAX_LIMIT, f"an event was held back: {delays}"


def test_terminates_tls_and_flushes_each_event(stack, pki):
    origin = stack.origin(_plain_sse_handler)
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"))])
    assert sl.ready["tls_listeners"] == sl.ready["listeners"]
    head, body, arrivals, alpn = _stream_over_tls(sl.port, pki)
    assert head.startswith(b"HTTP/1.1 200")
    assert body == _expected()
    assert alpn == "http/1.1", "ALPN must settle on http/1.1 even when the client offers h2 first"
    _assert_flushed(_plain_sent_at, arrivals)
    forwarded = origin.requests[-1]
    assert forwarded.header("x-forwarded-proto") == "https"


_plain_sent_at: list[float] = []


def _plain_sse_handler(conn, req):
    _plain_sent_at.clear()
    conn.send(BARE_SSE_HEAD)
    for i in range(EVENTS):
        if i:
            conn.sleep(GAP)
        event = _event(i)
        _plain_sent_at.append(conn.send(chunk(event)))
    conn.send(LAST_CHUNK)


def test_curl_streams_through_tls_termination(stack, pki):
    origin = stack.origin(_plain_sse_handler)
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"))])
    result = subprocess.run(["curl", "-sS", "-N", "--max-time", "20", "--cacert", str(pki / "ca.pem"),
                             "--resolve", f"localhost:{sl.port}:127.0.0.1", f"https://localhost:{sl.port}/v1/curl"],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _expected()
    # curl, too, rejects a certificate it cannot verify: the test would notice a wrong chain.
    untrusted = subprocess.run(["curl", "-sS", "--max-time", "5", f"https://127.0.0.1:{sl.port}/"],
                               capture_output=True, timeout=10)
    assert untrusted.returncode == 60, untrusted


def test_https_client_to_https_origin_byte_for_byte_with_sni(stack, pki):
    origin = TLSOrigin(pki / "server.pem", pki / "server.key")
    try:
        cfg = _tls_config(stack, pki, f"https://localhost:{origin.port}", upstream_keys=f"tls_ca_file {pki / 'ca.pem'}")
        sl = stack.sluice(["--config", str(cfg)])
        for attempt in range(2):  # the second exchange reuses the pooled TLS connection
            head, body, arrivals, _ = _stream_over_tls(sl.port, pki, f"/v1/both/{attempt}")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert body == _expected()
            _assert_flushed(origin.sent_at[-EVENTS:], arrivals)
        assert origin.server_names and set(origin.server_names) == {"localhost"}, origin.server_names
        assert origin.hosts == [f"localhost:{origin.port}"] * 2, "an https upstream gets its own name as Host"
        assert not origin.errors, origin.errors
    finally:
        origin.close()


def test_origination_to_openssl_s_server(stack, pki):
    server = SServer(pki, "server")
    try:
        origin = f"https://localhost:{server.port}"
        sl = stack.sluice(["--config", str(_plain_listener_config(stack, pki, origin))])
        response = get(sl.port, "/")
        assert response.status == 200, response.body[:300]
        assert b"s_server" in response.body or b"Ciphers supported" in response.body, response.body[:300]
    finally:
        out = server.output()
        server.close()
    assert 'Hostname in TLS extension: "localhost"' in out, out[-2000:]


def _plain_listener_config(stack, pki: Path, upstream_url: str, upstream_keys: str = "") -> Path:
    stack._n += 1
    path = stack.tmp_path / f"origin{stack._n}.conf"
    path.write_text(f"""listen 127.0.0.1:0
log {{
    file {stack.tmp_path / 'completions.jsonl'}
}}
upstream o {{
    server {upstream_url}
    tls_ca_file {pki / 'ca.pem'}
    {upstream_keys}
}}
route / {{
    upstream o
}}
""")
    return path


@pytest.mark.parametrize("cert,reason", [
    ("wronghost", "certificate verify failed: hostname mismatch"),
    ("expired", "certificate verify failed: certificate has expired"),
    ("selfsigned", "certificate verify failed: self-signed certificate"),
])
def test_upstream_certificate_failures_are_502_with_the_reason(stack, pki, cert, reason):
    server = SServer(pki, cert)
    try:
        sl = stack.sluice(["--config", str(_plain_listener_config(stack, pki, f"https://localhost:{server.port}"))])
        response = get(sl.port, "/v1/chat")
        assert response.status == 502
        error = response.json()["error"]
        assert error["type"] == "upstream_tls_error"
        assert reason in error["message"], error
        [record] = wait_records(stack.tmp_path / "completions.jsonl", 1)
        assert record["end"] == "upstream_error" and reason in record["error"], record
    finally:
        server.close()


def test_verification_off_is_explicit_and_warned(stack, pki):
    server = SServer(pki, "selfsigned")
    try:
        cfg = _plain_listener_config(stack, pki, f"https://localhost:{server.port}", upstream_keys="tls_verify off")
        sl = stack.sluice(["--config", str(cfg)])
        warning = sl.wait_stderr(lambda o: "verification is off" in o.get("msg", ""), 5, "the verification warning")
        assert warning["level"] == "warn" and warning["upstream"] == "o"
        assert get(sl.port, "/").status == 200
    finally:
        server.close()


def test_stalled_handshake_is_dropped_and_does_not_hold_the_loop(stack, pki):
    origin = stack.origin(_plain_sse_handler)
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"))])
    stalled = socket.create_connection(("127.0.0.1", sl.port))
    stalled.sendall(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03")  # the first bytes of a ClientHello, then nothing
    started = time.monotonic()
    # Meanwhile another client is served at once (same loop, one worker would do too).
    _, body, _, _ = _stream_over_tls(sl.port, pki, "/v1/meanwhile")
    assert body == _expected()
    stalled.settimeout(5)
    assert stalled.recv(100) == b"", "the stalled handshake got an answer instead of a close"
    took = time.monotonic() - started
    assert 0.9 <= took < 3.0, f"dropped after {took:.2f} s with handshake_timeout 1s"
    stalled.close()


def test_key_that_does_not_match_is_a_startup_error_naming_the_files(stack, pki, tmp_path):
    cfg = tmp_path / "mismatch.conf"
    cfg.write_text(f"""listen 127.0.0.1:0 tls
tls {{
    certificate {pki / 'server.pem'}
    key {pki / 'other.key'}
}}
upstream o {{
    server http://127.0.0.1:9
}}
route / {{
    upstream o
}}
""")
    check = subprocess.run([SLUICE_BIN, "check", "--config", str(cfg)], capture_output=True, timeout=10)
    assert check.returncode == 1
    assert f"{pki / 'other.key'}" in check.stderr.decode() and f"{pki / 'server.pem'}" in check.stderr.decode()
    run = subprocess.run([SLUICE_BIN, "--config", str(cfg)], capture_output=True, timeout=10)
    assert run.returncode == 1
    line = json.loads(run.stderr.decode().strip().splitlines()[-1])
    assert "does not match the certificate" in line["error"] and str(pki / "other.key") in line["error"], line


def test_sighup_loads_a_renewed_certificate_for_new_connections_only(stack, pki):
    origin = stack.origin(_plain_sse_handler)
    cfg = _tls_config(stack, pki, f"http://127.0.0.1:{origin.port}")
    sl = stack.sluice(["--config", str(cfg)])
    port = sl.port
    context = _client_context(pki)
    old = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    old_certificate = old.getpeercert(binary_form=True)
    old.sendall(b"GET /v1/old HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first = old.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first

    cfg.write_text(cfg.read_text().replace(str(pki / "server.pem"), str(pki / "renewed.pem"))
                   .replace(str(pki / "server.key"), str(pki / "renewed.key")))
    os.kill(sl.pid, signal.SIGHUP)
    sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reload line")

    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost") as new:
        assert _pem(new.getpeercert(binary_form=True)) == (pki / "renewed.pem").read_text().strip()
    assert _pem(old_certificate) == (pki / "server.pem").read_text().strip()

    # The connection made before the reload keeps its session and finishes its stream.
    # The body, not the whole response, must end the chunked framing: a request id ending in 0 ends the head
    # with "0\r\n\r\n" too.
    data = first
    while not data.partition(b"\r\n\r\n")[2].endswith(b"0\r\n\r\n"):
        more = old.recv(65536)
        assert more, "the old TLS connection was cut by the reload"
        data += more
    assert _dechunk(data.partition(b"\r\n\r\n")[2]) == _expected()
    old.close()


def _pem(der: bytes) -> str:
    return ssl.DER_cert_to_PEM_cert(der).strip()


def test_plain_http_to_a_tls_listener_gets_a_readable_400_and_nothing_is_forwarded(stack, pki):
    origin = stack.origin(_plain_sse_handler)
    sl = stack.sluice(["--config", str(_tls_config(stack, pki, f"http://127.0.0.1:{origin.port}"))])
    # curl reads the answer as HTTP: the operator sees why, not "empty reply from server".
    result = subprocess.run(["curl", "-sS", "--max-time", "5", "-D", "-", f"http://127.0.0.1:{sl.port}/v1/plain"],
                            capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), result.stdout
    assert b"Connection: close" in head and b"X-Request-Id: " in head
    assert json.loads(body)["error"]["type"] == "plain_http_to_tls_listener"
    # A POST with a body still in flight gets the answer too (the close lingers, no reset eats it).
    with socket.create_connection(("127.0.0.1", sl.port), timeout=5) as raw:
        raw.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100_000)
        answer = b""
        while more := raw.recv(65536):
            answer += more
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # The listener still speaks TLS to the next client, and the origin saw none of the plain requests.
    _, body, _, _ = _stream_over_tls(sl.port, pki, "/v1/after")
    assert body == _expected()
    assert [r.target for r in origin.requests] == ["/v1/after"]
