"""Scripted origin server for the sluice integration tests.

A threaded TCP server on 127.0.0.1:0. Each accepted connection gets its own
thread, which parses requests (request line, header fields, Content-Length and
chunked bodies) and records everything; then it calls the test's handler,
which writes raw bytes with whatever framing and timing the test needs.

Everything the origin observed is on the `Origin` object:
  - `connections`: one `OriginConn` per accepted connection, with open/close
    times, the reason it ended and how many bytes the handler managed to send;
  - `heads`: every request head, recorded as soon as the head is complete
    (before the body is read), so a test can prove nothing was forwarded;
  - `requests`: every request whose body was read completely.

All socket IO is non-blocking plus select(), so a handler can tell a blocked
write (`SendStalled`, `conn.bytes_sent` stops growing) from a peer that went
away (`PeerClosed`), and every wait is bounded.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

#: Bound on a request head the origin accepts; sluice itself limits heads to 64 KiB.
MAX_HEAD = 1 << 20
#: Default bound on how long a recv() may wait for the peer.
RECV_TIMEOUT = 30.0


class PeerClosed(Exception):
    """The peer closed or reset the connection."""


class SendStalled(Exception):
    """A send made no progress for the whole stall timeout (the peer is not reading)."""


class OriginStopping(Exception):
    """The origin is shutting down; handlers unwind."""


class BadRequest(Exception):
    """What sluice sent the origin does not parse as HTTP/1.1."""


@dataclass
class Request:
    """One request as the origin received it."""

    conn_id: int
    method: str
    target: str
    version: str
    #: Header fields in order, names as sent (not case-folded).
    headers: list[tuple[str, str]]
    #: The decoded body (chunked framing removed).
    body: bytes = b""
    #: The body bytes exactly as they came off the wire (chunked framing kept).
    raw_body: bytes = b""
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)
    head_at: float = 0.0
    body_done_at: float = 0.0

    def values(self, name: str) -> list[str]:
        """All values of the field `name` (case-insensitive), one per field line."""
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name: str) -> Optional[str]:
        """The field's combined value (lines joined by ", "), or None if absent."""
        vs = self.values(name)
        return ", ".join(vs) if vs else None


class OriginConn:
    """One accepted connection; the handler writes through it."""

    def __init__(self, origin: "Origin", cid: int, sock: socket.socket, peer):
        self.origin = origin
        self.id = cid
        self.sock = sock
        self.peer = peer
        self.opened_at = time.monotonic()
        #: When the origin saw the connection end (EOF, reset, or its own close).
        self.closed_at: Optional[float] = None
        #: "eof", "reset", "local", "stopping", "stalled", "bad-request", "timeout"
        self.close_reason: Optional[str] = None
        self.bytes_sent = 0
        self.requests: list[Request] = []
        self.stalled = False
        self._buf = bytearray()
        self.lock = threading.Lock()

    # -- recording -----------------------------------------------------------

    def _mark_closed(self, reason: str) -> None:
        with self.origin.cond:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
                self.close_reason = reason
            self.origin.cond.notify_all()

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    # -- receiving -----------------------------------------------------------

    def _recv_more(self, timeout: float = RECV_TIMEOUT) -> None:
        """Append at least one byte to the buffer or raise PeerClosed / TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            if self.origin.stopping.is_set():
                raise OriginStopping()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("origin: peer sent nothing in time")
            r, _, _ = select.select([self.sock], [], [], min(left, 0.1))
            if not r:
                continue
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                self._mark_closed("reset")
                raise PeerClosed()
            if not data:
                self._mark_closed("eof")
                raise PeerClosed()
            self._buf += data
            return

    def _read_line(self, limit: int = MAX_HEAD) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 2]
                return line
            if len(self._buf) > limit:
                raise BadRequest("line too long")
            self._recv_more()

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._recv_more()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_request(self, first_timeout: float = RECV_TIMEOUT) -> Request:
        """Parse one request; raise PeerClosed if the peer closes between requests."""
        # Head: wait for the blank line.
        deadline = time.monotonic() + first_timeout
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > MAX_HEAD:
                raise BadRequest("head too large")
            self._recv_more(max(0.01, deadline - time.monotonic()))
        end = self._buf.find(b"\r\n\r\n")
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ")
        except ValueError:
            raise BadRequest(f"bad request line {lines[0]!r}")
        headers = []
        for ln in lines[1:]:
            name, sep, value = ln.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(f"bad field line {ln!r}")
            headers.append((name, value.strip(" \t")))
        req = Request(self.id, method, target, version, headers, head_at=time.monotonic())
        with self.origin.cond:
            self.origin.heads.append(req)
            self.origin.cond.notify_all()
        if req.header("expect") and req.header("expect").lower() == "100-continue" \
                and self.origin.send_100_continue:
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not self.origin.read_body:
            return req  # the handler decides whether to read the body at all
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te is not None:
            if te.lower().replace(" ", "").split(",")[-1] != "chunked":
                raise BadRequest(f"origin got unchunked transfer-coding {te!r}")
            req.chunked = True
            raw = bytearray()
            body = bytearray()
            while True:
                line = self._read_line(4096)
                raw += line + b"\r\n"
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                data = self._read_exact(size + 2)
                raw += data
                if data[-2:] != b"\r\n":
                    raise BadRequest("chunk data not followed by CRLF")
                body += data[:-2]
            while True:  # trailer section
                line = self._read_line(65536)
                raw += line + b"\r\n"
                if not line:
                    break
                n, _, v = line.decode("latin-1").partition(":")
                req.trailers.append((n, v.strip()))
            req.body, req.raw_body = bytes(body), bytes(raw)
        elif cl is not None:
            req.body = req.raw_body = self._read_exact(int(cl))
        req.body_done_at = time.monotonic()
        with self.origin.cond:
            self.requests.append(req)
            self.origin.requests.append(req)
            self.origin.cond.notify_all()
        return req

    def wait_peer_closed(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the peer to close; True if it did.

        This reads: bytes that arrive meanwhile are buffered for the next
        read_request(). A handler that must not read (backpressure) uses sleep().
        """
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._recv_more(left)
            except PeerClosed:
                return True
            except TimeoutError:
                return False
        return True

    # -- sending -------------------------------------------------------------

    def send(self, data: bytes, stall_timeout: float = 10.0) -> float:
        """Write all of `data`; return the monotonic time just before the first byte went out.

        Raises PeerClosed when the peer is gone, SendStalled when no byte could be
        written for `stall_timeout` seconds (the peer stopped reading).
        """
        view = memoryview(data)
        t0 = time.monotonic()
        off = 0
        last_progress = t0
        while off < len(view):
            if self.origin.stopping.is_set():
                raise OriginStopping()
            try:
                n = self.sock.send(view[off:off + 262144])
            except BlockingIOError:
                n = 0
            except (BrokenPipeError, ConnectionResetError):
                self._mark_closed("reset")
                raise PeerClosed()
            if n:
                off += n
                with self.lock:
                    self.bytes_sent += n
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress > stall_timeout:
                self.stalled = True
                raise SendStalled()
            select.select([], [self.sock], [], 0.05)
        return t0

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (with OriginStopping) when the origin shuts down."""
        if self.origin.stopping.wait(seconds):
            raise OriginStopping()

    def close(self) -> None:
        """Close the connection from the origin side (FIN)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._mark_closed("local")

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.sock.close()
        self._mark_closed("local")


#: A handler answers one request. Return False to close the connection after it,
#: anything else to read the next request on the same connection.
Handler = Callable[[OriginConn, Request], Optional[bool]]


def respond(conn: OriginConn, status: int = 200, body: bytes = b"", headers=(),
            reason: str = "OK", chunked: bool = False) -> None:
    """Write a simple response: Content-Length by default, or one chunk + terminator."""
    head = [f"HTTP/1.1 {status} {reason}"]
    head += [f"{k}: {v}" for k, v in headers]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body
    conn.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)


def echo_handler(conn: OriginConn, req: Request) -> None:
    """200 with the request target as the body."""
    respond(conn, 200, req.target.encode(), [("Content-Type", "text/plain")])


# For handlers that write events themselves; they live in streams.py with the other stream builders.
from streams import LAST_CHUNK, SSE_HEAD, chunk  # noqa: E402,F401  (re-exported)


class Origin:
    """The scripted origin. Use as a context manager or call close()."""

    def __init__(self, handler: Handler = echo_handler, *, backlog: int = 128,
                 sndbuf: Optional[int] = None, rcvbuf: Optional[int] = None,
                 send_100_continue: bool = True, read_body: bool = True, bind: tuple[str, int] = ("127.0.0.1", 0)):
        self.handler = handler
        self.sndbuf = sndbuf
        self.send_100_continue = send_100_continue
        #: False: requests are handed to the handler right after the head, body unread
        #: (and not recorded in `requests`).
        self.read_body = read_body
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.connections: list[OriginConn] = []
        self.heads: list[Request] = []
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Buffer sizes are set on the listener so accepted sockets inherit them
        # before the handshake (the receive window is fixed then).
        if sndbuf:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind(bind)
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"origin-accept-{self.port}", daemon=True)
        self._acceptor.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept_loop(self) -> None:
        self.lsock.setblocking(False)
        while not self.stopping.is_set():
            r, _, _ = select.select([self.lsock], [], [], 0.05)
            if not r:
                continue
            try:
                sock, peer = self.lsock.accept()
            except (BlockingIOError, OSError):
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cond:
                conn = OriginConn(self, len(self.connections), sock, peer)
                self.connections.append(conn)
                self.cond.notify_all()
            t = threading.Thread(target=self._serve, args=(conn,), name=f"origin-conn-{conn.id}", daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: OriginConn) -> None:
        try:
            while True:
                req = conn.read_request()
                keep = self.handler(conn, req)
                if keep is False or conn.closed:
                    break
        except (PeerClosed, OriginStopping):
            pass
        except SendStalled:
            conn._mark_closed("stalled")
        except TimeoutError:
            conn._mark_closed("timeout")
        except BadRequest as e:
            self.errors.append(f"conn {conn.id}: {e}")
            conn._mark_closed("bad-request")
        except Exception as e:  # a handler bug must show up in the test, not vanish
            self.errors.append(f"conn {conn.id}: {type(e).__name__}: {e}")
        finally:
            if not conn.closed:
                conn.close()
            else:
                try:
                    conn.sock.close()
                except OSError:
                    pass

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Block until predicate() holds (checked under the origin's lock) or fail."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"origin: timed out after {timeout}s waiting for {what}")
                self.cond.wait(min(left, 0.1))

    def close(self) -> None:
        self.stopping.set()
        self._acceptor.join(2)
        self.lsock.close()
        for t in self._threads:
            t.join(2)
        for c in self.connections:
            try:
                c.sock.close()
            except OSError:
                pass


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BlackHole:
    """A listener whose accept queue is full and never drained, so further SYNs are dropped.

    Linux drops a SYN when the accept queue of the listener is full; with backlog 0
    the queue holds one connection. Dummy connections fill it (bounded to a few tries).
    """

    def __init__(self, max_fill: int = 8):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.dummies: list[socket.socket] = []
        self.full = False
        for _ in range(max_fill):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", self.port))
            self.dummies.append(s)
            if err not in (0, errno.EINPROGRESS):
                continue
            _, w, _ = select.select([], [s], [], 0.3)
            if not w:  # this SYN was dropped: the queue is full
                self.full = True
                break

    def close(self) -> None:
        for s in self.dummies:
            s.close()
        self.lsock.close()
