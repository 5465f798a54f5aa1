"""A strict raw-socket HTTP/1.x client that keeps the exact bytes it received.

Strict on purpose: the head must use CRLF line ends and end in CRLFCRLF, and a
chunked body is decoded by a strict decoder, so a malformed answer from sluice
fails the test instead of being papered over.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_TIMEOUT = 10.0


class ChunkedDecoder:
    """Incremental strict decoder for a chunked body (RFC 9112 section 7.1)."""

    def __init__(self):
        self.buf = bytearray()
        self.raw = bytearray()  # every byte of the chunked body fed so far, up to the end
        self.data = bytearray()
        self.sizes: list[int] = []
        self.done = False
        self._state = "size"
        self._left = 0

    def feed(self, data: bytes) -> bytes:
        """Feed bytes; return the bytes past the end of the body (non-empty only once done)."""
        self.buf += data
        while not self.done:
            if self._state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > 1024:
                        raise AssertionError(f"chunk-size line too long: {bytes(self.buf[:80])!r}")
                    return b""
                line = bytes(self.buf[:i])
                self.raw += self.buf[: i + 2]
                del self.buf[: i + 2]
                size_s = line.split(b";")[0]
                if not size_s or any(c not in b"0123456789abcdefABCDEF" for c in size_s):
                    raise AssertionError(f"bad chunk-size line {line!r}")
                self._left = int(size_s, 16)
                self.sizes.append(self._left)
                self._state = "data" if self._left else "trailer"
            elif self._state == "data":
                if not self.buf:
                    return b""
                n = min(self._left, len(self.buf))
                self.data += self.buf[:n]
                self.raw += self.buf[:n]
                del self.buf[:n]
                self._left -= n
                if self._left == 0:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(self.buf) < 2:
                    return b""
                if bytes(self.buf[:2]) != b"\r\n":
                    raise AssertionError(f"chunk data not followed by CRLF: {bytes(self.buf[:10])!r}")
                self.raw += b"\r\n"
                del self.buf[:2]
                self._state = "size"
            elif self._state == "trailer":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    return b""
                self.raw += self.buf[: i + 2]
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                if not line:
                    self.done = True
        rest = bytes(self.buf)
        self.buf.clear()
        return rest


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    head_raw: bytes
    body: bytes = b""
    #: Body bytes as received (chunked framing included).
    raw_body: bytes = b""
    #: "length", "chunked", "close" or "none".
    framing: str = "none"
    #: True when the body ended the way its framing says (CL reached, last chunk, or EOF for close).
    complete: bool = True
    chunk_sizes: list[int] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name: str) -> Optional[str]:
        vs = self.values(name)
        return ", ".join(vs) if vs else None

    def json(self):
        return json.loads(self.body)

    @property
    def status_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


class RawConn:
    """One client connection to sluice."""

    def __init__(self, port: int, *, rcvbuf: Optional[int] = None, timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        #: How the connection ended: None (open), "eof" or "reset".
        self.ended: Optional[str] = None
        #: (monotonic time, bytes) for every recv, when record=True.
        self.recvs: list[tuple[float, bytes]] = []
        self.record = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_some(self, timeout: Optional[float] = None, size: int = 65536) -> bytes:
        """Receive into the buffer; returns the new bytes, b"" on EOF/reset. Raises TimeoutError."""
        if self.eof:
            return b""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            raise TimeoutError("client: no data from sluice in time")
        except ConnectionResetError:
            self.eof, self.ended = True, "reset"
            return b""
        if not data:
            self.eof, self.ended = True, "eof"
            return b""
        if self.record:
            self.recvs.append((time.monotonic(), data))
        self.buf += data
        return data

    def _need(self, deadline: float) -> bool:
        """Read more; False on EOF."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("client: response not complete in time")
        return bool(self.recv_some(left))

    def read_head(self, timeout: Optional[float] = None) -> Response:
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._need(deadline):
                raise ConnectionError(f"connection ended ({self.ended}) before a complete head; got {bytes(self.buf[:200])!r}")
        end = self.buf.find(b"\r\n\r\n")
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        lines = head.split(b"\r\n")
        for ln in lines:
            assert b"\n" not in ln and b"\r" not in ln, f"bare CR/LF in response head: {head!r}"
        parts = lines[0].decode("latin-1").split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"bad status line {lines[0]!r}"
        headers = []
        for ln in lines[1:]:
            name, sep, value = ln.decode("latin-1").partition(":")
            assert sep and name and name == name.strip(), f"bad response field line {ln!r}"
            headers.append((name, value.strip(" \t")))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers, head + b"\r\n\r\n")

    def read_response(self, method: str = "GET", timeout: Optional[float] = None,
                      skip_interim: bool = True) -> Response:
        """Read one full response (following its framing). Incomplete bodies are marked complete=False."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            r = self.read_head(max(0.01, deadline - time.monotonic()))
            if 100 <= r.status < 200 and r.status != 101 and skip_interim:
                continue
            break
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            r.framing = "none"
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if te is not None:
            assert te.lower().replace(" ", "").split(",")[-1] == "chunked", f"unexpected TE {te!r}"
            r.framing = "chunked"
            dec = ChunkedDecoder()
            rest = dec.feed(bytes(self.buf))
            self.buf.clear()
            while not dec.done:
                new = b""
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("client: chunked body not complete in time")
                new = self.recv_some(left)
                if not new:
                    break
                rest = dec.feed(bytes(self.buf))
                self.buf.clear()
            self.buf += rest
            r.body, r.raw_body, r.chunk_sizes, r.complete = bytes(dec.data), bytes(dec.raw), dec.sizes, dec.done
            if not dec.done:
                r.raw_body = bytes(dec.raw) + bytes(dec.buf)
        elif cl is not None:
            r.framing = "length"
            n = int(cl)
            while len(self.buf) < n:
                if not self._need(deadline):
                    break
            r.body = r.raw_body = bytes(self.buf[:n])
            del self.buf[:n]
            r.complete = len(r.body) == n
        else:
            r.framing = "close"
            while self._need(deadline):
                pass
            r.body = r.raw_body = bytes(self.buf)
            self.buf.clear()
            r.complete = self.ended == "eof"
        return r

    def read_until_close(self, timeout: Optional[float] = None) -> bytes:
        """Read until EOF or reset; returns everything buffered. Raises TimeoutError if still open."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._need(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def closed_within(self, timeout: float) -> bool:
        """True if the peer closed (EOF or reset) within `timeout`; extra bytes are buffered."""
        try:
            self.read_until_close(timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def request_bytes(method: str = "GET", target: str = "/", headers=(), body: bytes = b"",
                  version: str = "HTTP/1.1", host: Optional[str] = "sluice.test") -> bytes:
    """Serialize a request; adds Host (unless None) and Content-Length when a body is given."""
    lines = [f"{method} {target} {version}"]
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(port: int, target: str = "/", headers=(), method: str = "GET", body: bytes = b"",
        version: str = "HTTP/1.1", timeout: float = DEFAULT_TIMEOUT) -> Response:
    """One request on a fresh connection."""
    with RawConn(port, timeout=timeout) as c:
        c.send(request_bytes(method, target, headers, body, version))
        return c.read_response(method)
