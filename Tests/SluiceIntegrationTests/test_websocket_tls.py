"""WebSocket tunnels over TLS: `wss://` through a `listen ... tls` listener, to an `https://` upstream (a
`websockets` server with a certificate of the test CA, make-test-certificates.sh), and both at once."""

from __future__ import annotations

import os
import ssl

import pytest

from sluice_proc import wait_records
from websocket_origins import WSOrigin, ca_context, echo, frame_len, start, tunnel_of, ws_client


def _server_context(pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    return context


@pytest.mark.parametrize("client_tls,origin_tls", [(True, True), (True, False), (False, True)],
                         ids=["wss-to-https", "wss-to-http", "ws-to-https"])
def test_echo_through_tls(stack, pki, client_tls, origin_tls):
    origin = WSOrigin(echo, ssl_context=_server_context(pki) if origin_tls else None, compression=None)
    if origin_tls:
        sl, log = start(stack, origin, url=f"https://localhost:{origin.port}", pki=pki if client_tls else None,
                        upstream_lines=(f"tls_ca_file {pki / 'ca.pem'}",))
    else:
        sl, log = start(stack, origin, pki=pki)
    text = "over tls " * 10
    blob = os.urandom(256 * 1024)
    client = ws_client(sl.port, "/v1/realtime", tls=ca_context(pki) if client_tls else None,
                       host="localhost" if client_tls else "127.0.0.1")
    with client as ws:
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(blob)
        assert ws.recv(timeout=20) == blob, "the 256 KiB echo differs"
    c = origin.conn()
    origin.wait_for(lambda: c.ended_at is not None, 5, "the origin's end")
    assert [m for _, m in c.received] == [text, blob]
    assert c.close_code == 1000
    [hs] = origin.handshakes
    assert hs.header("Upgrade") == "websocket"

    [rec] = wait_records(log, 1)
    t = tunnel_of(rec)
    assert rec["end"] == "tunnel_client_closed", rec
    assert (t["client_messages"], t["upstream_messages"]) == (2, 2), t
    assert t["client_close_code"] == 1000 and t["upstream_close_code"] == 1000, t
    # The tunnel's bytes are the WebSocket frames, not the TLS records around them.
    want_client = frame_len(len(text), True) + frame_len(len(blob), True) + frame_len(2, True)
    want_upstream = frame_len(len(text), False) + frame_len(len(blob), False) + frame_len(2, False)
    assert (t["client_bytes"], t["upstream_bytes"]) == (want_client, want_upstream), t
