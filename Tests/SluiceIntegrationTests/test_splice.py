"""Issue 15: bodies sluice need not see (Content-Length or close-delimited, not an event stream or JSON, plain
connections) go from the upstream socket to the client socket through a pipe with splice(2). The bytes, the framing,
backpressure, truncation, cancellation and connection reuse must be exactly as for copied bodies; a spliced body is
recognised by the pipe in sluice's descriptor table while its client stalls."""

from __future__ import annotations

import hashlib
import os
import random
import time

from rawhttp import RawConn, request_bytes

BODY = 8 * 1024 * 1024


def pipes_of(pid: int) -> int:
    """How many pipe descriptors the process holds now."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                count += 1
        except OSError:
            pass  # closed while we looked
    return count


def body_after_pause(payload: bytes, content_type: bytes = b"application/octet-stream", length: bool = True):
    """A handler that sends the head, pauses (so the body arrives in reads of its own, the spliced path), then the
    body in 256 KiB writes."""
    def handler(conn, req):
        framing = b"Content-Length: %d\r\n" % len(payload) if length else b"Connection: close\r\n"
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n" + framing + b"\r\n")
        conn.sleep(0.05)
        for offset in range(0, len(payload), 256 * 1024):
            conn.send(payload[offset:offset + 256 * 1024])
        if not length:
            conn.close()
            return False
    return handler


def test_a_length_body_is_spliced_byte_exact_and_both_connections_are_reused(stack):
    payload = random.Random(15).randbytes(BODY)
    origin = stack.origin(body_after_pause(payload))
    sl = stack.proxy(origin)
    pipes_before = pipes_of(sl.pid)
    with RawConn(sl.port, rcvbuf=16384, timeout=30) as c:
        c.send(request_bytes("GET", "/blob"))
        head = c.read_head()
        assert head.status == 200 and head.header("content-length") == str(BODY)
        time.sleep(0.5)  # the client reads nothing: the body waits in sluice's pipe, not in a buffer
        assert pipes_of(sl.pid) == pipes_before + 2, "no pipe while a Content-Length body streamed to a stalled client"
        received = bytearray(c.buf)
        c.buf.clear()
        while len(received) < BODY:
            piece = c.recv_some(10)
            assert piece, f"connection ended after {len(received)} of {BODY} body bytes"
            received += piece
            c.buf.clear()
        assert len(received) == BODY and hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        # The same client connection and the same upstream connection serve the next request.
        c.send(request_bytes("GET", "/blob"))
        again = c.read_response(timeout=30)
        assert again.status == 200 and again.complete and again.body == payload
    assert len(origin.connections) == 1, "a cleanly ended spliced body's upstream connection was not reused"


def test_bytes_after_a_spliced_body_are_never_a_response(stack):
    """The server sends a second 'response' glued to the end of a spliced body: the body is read to its exact length,
    so the glued bytes stay in the socket; sluice must notice them and not reuse that connection, or the next
    request on it would get them as its answer."""
    payload = random.Random(16).randbytes(1000)  # body and glued bytes in one segment, read by one splice
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"
    served = []

    def handler(conn, req):
        served.append(req.target)
        if len(served) > 1:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ngood")
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                  % len(payload))
        conn.sleep(0.05)
        conn.send(payload + smuggled)

    origin = stack.origin(handler)
    sl = stack.proxy(origin)
    with RawConn(sl.port, timeout=30) as c:
        c.send(request_bytes("GET", "/first"))
        first = c.read_response()
        assert first.complete and first.body == payload
        time.sleep(0.2)
        c.send(request_bytes("GET", "/second"))
        second = c.read_response()
        assert second.body == b"good", f"the bytes after the spliced body answered the next request: {second.body!r}"
        assert not c.buf
    assert len(origin.connections) == 2, "the connection that sent bytes after its response was reused"


def test_a_close_delimited_body_is_spliced_to_its_end(stack):
    payload = random.Random(17).randbytes(3 * 1024 * 1024)
    sl = stack.proxy(stack.origin(body_after_pause(payload, length=False)))
    with RawConn(sl.port, timeout=30) as c:
        c.send(request_bytes("GET", "/until-close"))
        r = c.read_response()
        assert r.framing == "close" and r.complete and r.body == payload


def test_an_upstream_cut_mid_spliced_body_truncates_the_response(stack):
    payload = random.Random(18).randbytes(1024 * 1024)

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                  % (4 * len(payload)))
        conn.sleep(0.05)
        conn.send(payload)
        conn.close()
        return False

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port, timeout=30) as c:
        c.send(request_bytes("GET", "/cut"))
        r = c.read_response()
        assert not r.complete and r.body == payload, "a truncated spliced body must end short of its length"
        assert c.closed_within(5)


def test_a_client_gone_mid_spliced_body_closes_its_upstream_at_once(stack):
    conns = []

    def handler(conn, req):
        conns.append(conn)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                  % (1 << 40))
        conn.sleep(0.05)
        piece = b"x" * 65536
        while not conn.closed:
            conn.send(piece)
            conn.sleep(0.01)

    sl = stack.proxy(stack.origin(handler))
    c = RawConn(sl.port, timeout=30)
    c.send(request_bytes("GET", "/endless"))
    assert c.read_head().status == 200
    got = 0
    while got < 1024 * 1024:
        got += len(c.recv_some(10))
        c.buf.clear()
    c.close()
    start = time.monotonic()
    assert conns[0].wait_peer_closed(5), "the upstream of a spliced body stayed open after its client left"
    assert time.monotonic() - start < 1.0


def test_event_streams_and_json_are_not_spliced(stack):
    """The tap reads event streams and JSON bodies (TTFT, usage, model), so those are copied, never spliced."""
    for content_type in (b"text/event-stream", b"application/json"):
        payload = b"data: " + b"y" * (BODY // 4) + b"\n\n"
        sl = stack.proxy(stack.origin(body_after_pause(payload, content_type=content_type)))
        pipes_before = pipes_of(sl.pid)
        with RawConn(sl.port, rcvbuf=16384, timeout=30) as c:
            c.send(request_bytes("GET", "/tapped"))
            assert c.read_head().status == 200
            time.sleep(0.5)
            assert pipes_of(sl.pid) == pipes_before, f"a {content_type.decode()} body went through a pipe"
            received = len(c.buf)
            c.buf.clear()
            while received < len(payload):
                piece = c.recv_some(10)
                assert piece
                received += len(piece)
                c.buf.clear()
