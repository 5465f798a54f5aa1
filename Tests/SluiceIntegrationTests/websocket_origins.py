"""What the WebSocket tunnel tests share (test_websocket*.py): a scripted `websockets` origin, a client
from the `websockets` library that counts its bytes on the wire, a raw-socket WebSocket client (for a
client that stops reading or resets), frame sizes, the config and the completion record's `tunnel` object.

The origin is the `websockets` asyncio server in a daemon thread with its own event loop, on
127.0.0.1:0 (optionally TLS, optionally a small SO_SNDBUF). Each test passes a script, an async
function `script(ws, conn)`; `conn` (a `WSConn`) records what the origin saw with `time.monotonic()`
stamps on the test's clock. `echo` answers every message with itself and obeys a few commands sent as
text messages (`!abort`: a TCP reset, `!close CODE REASON`, `!ping`). Every handshake sluice forwarded (also those the
origin refused) is in `WSOrigin.handshakes` with its header fields as sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Optional

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

#: The keys of the record's `tunnel` object.
TUNNEL_KEYS = {"protocol", "client_bytes", "upstream_bytes", "client_messages", "upstream_messages",
               "client_close_code", "upstream_close_code", "first_upstream_message_ms", "duration_ms"}
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------------------------
# The origin
# --------------------------------------------------------------------------------------------

@dataclass
class WSHandshake:
    """An opening handshake as the origin received it."""
    path: str
    headers: list  # (name, value) as sent
    at: float

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> Optional[str]:
        vs = self.values(name)
        return ", ".join(vs) if vs else None


@dataclass
class WSConn:
    """One WebSocket connection the origin accepted."""
    origin: "WSOrigin"
    ws: object
    path: str
    opened_at: float
    subprotocol: Optional[str] = None
    extensions: list = field(default_factory=list)
    #: (monotonic time, message) for every message received.
    received: list = field(default_factory=list)
    #: Monotonic time just before each message was handed to send().
    sent_at: list = field(default_factory=list)
    #: Bytes on the wire of the frames whose send() returned (payload + frame header, no compression).
    bytes_sent: int = 0
    #: The close frame the origin received: code and reason (None: none received).
    close_code: Optional[int] = None
    close_reason: Optional[str] = None
    #: When the script ended (the origin noticed the connection end, or finished on its own).
    ended_at: Optional[float] = None
    aborted_at: Optional[float] = None
    pong_latency: Optional[float] = None

    def note(self, **changes) -> None:
        with self.origin.cond:
            for k, v in changes.items():
                setattr(self, k, v)
            self.origin.cond.notify_all()

    def got(self, message) -> None:
        with self.origin.cond:
            self.received.append((time.monotonic(), message))
            self.origin.cond.notify_all()


Script = Callable[[object, WSConn], Awaitable[None]]


class WSOrigin:
    """A `websockets` server running `script` for every connection; stop with close()."""

    def __init__(self, script: Script, *, ssl_context: Optional[ssl.SSLContext] = None,
                 sndbuf: Optional[int] = None, subprotocols=None, compression: Optional[str] = "deflate"):
        self.script = script
        self.cond = threading.Condition()
        self.handshakes: list[WSHandshake] = []
        self.conns: list[WSConn] = []
        self.errors: list[str] = []
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf:  # inherited by accepted sockets
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        self.port = lsock.getsockname()[1]
        self._kw = dict(sock=lsock, ssl=ssl_context, subprotocols=subprotocols, compression=compression,
                        process_request=self._process_request, ping_interval=None, max_size=None,
                        close_timeout=2)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"ws-origin-{self.port}", daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the websockets origin did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except Exception as exc:  # noqa: BLE001 - reported by the fixture
            self.errors.append(f"origin loop: {type(exc).__name__}: {exc}")
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, **self._kw):
            self._started.set()
            await self._stop.wait()

    def _process_request(self, connection, request):
        with self.cond:
            self.handshakes.append(WSHandshake(request.path, list(request.headers.raw_items()), time.monotonic()))
            self.cond.notify_all()
        return None

    async def _handler(self, ws) -> None:
        c = WSConn(self, ws, ws.request.path, time.monotonic(), ws.subprotocol,
                   [type(e).__name__ for e in ws.protocol.extensions])
        with self.cond:
            self.conns.append(c)
            self.cond.notify_all()
        try:
            await self.script(ws, c)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - a script bug must fail the test
            self.errors.append(f"script: {type(exc).__name__}: {exc}")
        finally:
            rcvd = ws.protocol.close_rcvd
            c.note(ended_at=time.monotonic(), close_code=rcvd.code if rcvd else None,
                   close_reason=rcvd.reason if rcvd else None)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"websockets origin: no {what} within {timeout}s")
                self.cond.wait(min(left, 0.1))

    def conn(self, index: int = 0, timeout: float = 5.0) -> WSConn:
        self.wait_for(lambda: len(self.conns) > index, timeout, f"WebSocket connection #{index + 1}")
        return self.conns[index]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def stop():
            for c in self.conns:
                c.ws.transport.abort()
            self._stop.set()

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop already ended
            pass
        self._thread.join(10)


async def echo(ws, c: WSConn) -> None:
    """Echo every message; text commands: `!abort` (TCP reset), `!close CODE REASON`, `!ping` (a server ping,
    answered with the text `pong-ok` once the pong came back)."""
    async for msg in ws:
        c.got(msg)
        if isinstance(msg, str) and msg.startswith("!"):
            cmd, _, arg = msg.partition(" ")
            if cmd == "!abort":
                reset(ws, c)
                return
            if cmd == "!close":
                code, _, reason = arg.partition(" ")
                await ws.close(int(code), reason)
                return
            if cmd == "!ping":
                started = time.monotonic()
                waiter = await ws.ping(b"origin-ping")
                await asyncio.wait_for(waiter, 5)
                c.note(pong_latency=time.monotonic() - started)
                await send(ws, c, "pong-ok")
                continue
        await send(ws, c, msg)


def reset(ws, c: WSConn) -> None:
    """Reset the TCP connection: SO_LINGER 0, then abort the transport (a plain abort() would send a FIN when no
    unread bytes are left)."""
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.note(aborted_at=time.monotonic())
    ws.transport.abort()


async def send(ws, c: WSConn, message) -> None:
    """Send one message, stamping the time first and counting its frame bytes (uncompressed framing)."""
    with c.origin.cond:
        c.sent_at.append(time.monotonic())
    await ws.send(message)
    n = len(message.encode() if isinstance(message, str) else message)
    with c.origin.cond:
        c.bytes_sent += frame_len(n, masked=False)
        c.origin.cond.notify_all()


def pushes(delays: list[float]) -> Script:
    """Text messages `push i` at the given delays after the handshake (each from the previous push), then echo."""
    async def script(ws, c):
        for i, delay in enumerate(delays):
            await asyncio.sleep(delay)
            await send(ws, c, f"push {i}")
        await echo(ws, c)
    return script


def flood(total: int, piece: int = 65536) -> Script:
    """Binary messages of `piece` bytes as fast as the connection takes them, up to `total` bytes."""
    data = b"\xa5" * piece

    async def script(ws, c):
        sent = 0
        while sent < total:
            await send(ws, c, data)
            sent += piece
        await ws.wait_closed()
    return script


def frame_len(payload: int, masked: bool) -> int:
    """Bytes on the wire of one frame with `payload` bytes (RFC 6455 section 5.2)."""
    ext = 0 if payload < 126 else 2 if payload < 65536 else 8
    return 2 + ext + (4 if masked else 0) + payload


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

class CountingSocket(socket.socket):
    """A TCP socket that counts the bytes it sends and receives after the HTTP head (the opening handshake),
    what a tunnel relays; `sent_after` and `received_after` stay None until the head is complete."""

    def __init__(self):
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.count_lock = threading.Lock()
        self._sent_head = bytearray()
        self._recv_head = bytearray()
        self.sent_after: Optional[int] = None
        self.received_after: Optional[int] = None

    @staticmethod
    def _count(head: bytearray, after: Optional[int], data: bytes) -> Optional[int]:
        if after is not None:
            return after + len(data)
        head += data
        i = head.find(b"\r\n\r\n")
        return None if i < 0 else len(head) - i - 4

    def sendall(self, data, *flags):
        result = super().sendall(data, *flags)
        with self.count_lock:
            self.sent_after = self._count(self._sent_head, self.sent_after, bytes(data))
        return result

    def send(self, data, *flags):
        n = super().send(data, *flags)
        with self.count_lock:
            self.sent_after = self._count(self._sent_head, self.sent_after, bytes(data[:n]))
        return n

    def recv(self, size, *flags):
        data = super().recv(size, *flags)
        with self.count_lock:
            self.received_after = self._count(self._recv_head, self.received_after, data)
        return data


def ws_client(port: int, path: str = "/ws", *, compression: Optional[str] = None, host: str = "127.0.0.1",
              tls: Optional[ssl.SSLContext] = None, **kw):
    """A `websockets` sync client to sluice on `port`, over a `CountingSocket` (as `client.counter`; with `tls`
    it counts TLS records, not the tunnel's bytes). No keepalive pings, no message size limit, no proxy."""
    sock = CountingSocket()
    sock.settimeout(10)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    scheme = "wss" if tls else "ws"
    client = connect(f"{scheme}://{host}:{port}{path}", sock=sock, ssl=tls, proxy=None, compression=compression,
                     max_size=None, ping_interval=None, open_timeout=10, close_timeout=5, legacy=True, **kw)
    client.counter = sock
    return client


def upgrade_head(path: str = "/ws", key: Optional[str] = None, extra=(), host: str = "sluice.test") -> tuple[bytes, str]:
    """A WebSocket upgrade request head and its Sec-WebSocket-Key."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade", "Upgrade: websocket",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"] + [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: str = "") -> bytes:
    return client_frame(0x8, struct.pack("!H", code) + reason.encode())


class FrameReader:
    """Incremental parser of unmasked server frames that keeps only small payloads (control frames and data
    frames up to `keep` bytes); counts complete data messages and bytes."""

    def __init__(self, keep: int = 4096):
        self.keep = keep
        self.buf = bytearray()
        self.bytes = 0
        self.data_frames = 0
        self.messages = 0
        #: (opcode, payload or None when not kept) of every complete frame.
        self.frames: list = []
        self._left = 0
        self._cur: Optional[list] = None

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        self.buf += data
        while True:
            if self._cur is not None:
                take = min(self._left, len(self.buf))
                if self._cur[2] is not None:
                    self._cur[2] += self.buf[:take]
                del self.buf[:take]
                self._left -= take
                if self._left:
                    return
                fin, opcode, payload = self._cur
                self._cur = None
                self.frames.append((opcode, bytes(payload) if payload is not None else None))
                if opcode in (0x0, 0x1, 0x2):
                    self.data_frames += 1
                    self.messages += 1 if fin else 0
                continue
            if len(self.buf) < 2:
                return
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            assert not b1 & 0x80, "a frame from the server is masked"
            del self.buf[:off]
            self._cur = [bool(b0 & 0x80), b0 & 0x0F, bytearray() if n <= self.keep else None]
            self._left = n

    def close_code(self) -> Optional[int]:
        for opcode, payload in self.frames:
            if opcode == 0x8 and payload is not None and len(payload) >= 2:
                return struct.unpack("!H", payload[:2])[0]
        return None


class RawWS:
    """A WebSocket client on a raw socket: the handshake by hand, then whatever the test does (read nothing,
    reset, send a close frame and read to the end)."""

    def __init__(self, port: int, path: str = "/ws", *, rcvbuf: Optional[int] = None, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.path = path
        self.reader = FrameReader()
        self.sent_after = 0
        self.head = b""

    def handshake(self, timeout: float = 10.0) -> bytes:
        """Send the upgrade request, read the response head (bytes after it go to the frame reader); returns it."""
        request, key = upgrade_head(self.path)
        self.sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            more = self.sock.recv(65536)
            assert more, f"sluice closed before the response head: {data!r}"
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        self.head = head + b"\r\n\r\n"
        assert head.startswith(b"HTTP/1.1 101"), f"no 101: {head!r}"
        assert f"sec-websocket-accept: {accept_value(key)}".lower().encode() in head.lower(), head
        self.reader.feed(rest)
        return self.head

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)
        self.sent_after += len(frame)

    def read_messages(self, count: int, timeout: float = 10.0) -> None:
        """Read until the frame reader holds `count` complete data messages; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.reader.messages < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.reader.messages} of {count} messages within {timeout}s"
            r, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if r:
                data = self.sock.recv(1 << 20)
                assert data, f"sluice closed after {self.reader.messages} of {count} messages"
                self.reader.feed(data)

    def read_until_close(self, timeout: float) -> str:
        """Read (into the frame reader) until EOF or reset; returns "eof" or "reset". Fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"sluice kept the connection open {timeout}s; read {self.reader.bytes} bytes"
            r, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if not r:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return "reset"
            if not data:
                return "eof"
            self.reader.feed(data)

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# Config and records
# --------------------------------------------------------------------------------------------

def ws_config(path: Path, upstream_url: str, *, log: Path, route_keys: Optional[dict] = None,
              routes: Optional[list] = None, timeouts: Optional[dict] = None, rate_limits: Optional[dict] = None,
              admin: bool = False, top: tuple = (), upstream_lines: tuple = (), pki: Optional[Path] = None,
              workers: int = 1) -> Path:
    """A config with one upstream `o` at `upstream_url` and route `/` (with `route_keys`), or `routes`
    [(prefix, {key: value})]; `top` lines at the top level; with `pki` the listener terminates TLS."""
    lines = [f"listen 127.0.0.1:0{' tls' if pki else ''}", f"workers {workers}", *top]
    if pki:
        lines += ["tls {", f"    certificate {pki / 'server.pem'}", f"    key {pki / 'server.key'}", "}"]
    for name, keys in (rate_limits or {}).items():
        lines += [f"limit {name} {{"] + [f"    {k} {v}" for k, v in keys.items()] + ["}"]
    if timeouts:
        lines += ["timeouts {"] + [f"    {k} {v}" for k, v in timeouts.items()] + ["}"]
    lines += ["log {", f"    file {log}", "    stdout off", "}"]
    if admin:
        lines += ["admin {", "    listen 127.0.0.1:0", "}"]
    lines += ["upstream o {", f"    server {upstream_url}", *[f"    {x}" for x in upstream_lines], "}"]
    for prefix, keys in routes or [("/", route_keys or {})]:
        lines += [f"route {prefix} {{", "    upstream o"] + [f"    {k} {v}" for k, v in keys.items()] + ["}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(stack, origin, *, url: Optional[str] = None, **kw):
    """sluice (a `ws_config` with `kw`) in front of `origin` (a WSOrigin or an origin.Origin, registered with
    the stack, which closes it and checks its errors), at `url` if given; returns (sluice, log path)."""
    if origin is not None and origin not in stack.origins:
        stack.origins.append(origin)
    url = url or f"http://127.0.0.1:{origin.port}"
    stack._n += 1
    log = stack.tmp_path / f"ws{stack._n}.jsonl"
    cfg = ws_config(stack.tmp_path / f"ws{stack._n}.conf", url, log=log, **kw)
    return stack.sluice(["--config", str(cfg)]), log


def tunnel_of(rec: dict) -> dict:
    """The record's `tunnel` object, checked for shape: status 101, every key, sane types and times."""
    assert rec.get("status") == 101, f"not a tunnel record: {rec}"
    t = rec.get("tunnel")
    assert isinstance(t, dict), f"a 101 record without a tunnel object: {rec}"
    assert set(t) == TUNNEL_KEYS, f"tunnel keys {sorted(t)}, want {sorted(TUNNEL_KEYS)}"
    assert t["protocol"] == "websocket", t
    for k in ("client_bytes", "upstream_bytes", "client_messages", "upstream_messages"):
        assert isinstance(t[k], int) and t[k] >= 0, t
    for k in ("client_close_code", "upstream_close_code"):
        assert t[k] is None or isinstance(t[k], int), t
    assert isinstance(t["duration_ms"], (int, float)) and t["duration_ms"] >= 0, t
    if t["first_upstream_message_ms"] is not None:
        assert 0 <= t["first_upstream_message_ms"] <= t["duration_ms"], t
    return t


def only_record(recs: list, **match) -> dict:
    """The single record whose fields equal `match`."""
    found = [r for r in recs if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"want one record with {match}, got {len(found)}: {recs}"
    return found[0]


def ca_context(pki: Path) -> ssl.SSLContext:
    """A client context that trusts the test CA of make-test-certificates.sh."""
    return ssl.create_default_context(cafile=str(pki / "ca.pem"))
