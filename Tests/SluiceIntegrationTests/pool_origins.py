"""Origins for the upstream-pool tests (test_pool_*.py): a fleet of scripted origins, each on its own loopback port,
in front of which sluice balances one upstream.

Each `PoolOrigin` wraps an `origin.Origin` (so the `stack` fixture stops it and checks it saw no errors) and adds:
  - what it serves, from the request target: `/health` answers `health_status` (a probe); `/v1/chat/completions`
    streams an OpenAI reply whose text depends only on the prompt (the same from every origin, so a client cannot
    tell which one answered except by the `X-Origin` field); any other target streams SSE events, shaped by its
    query: `events` (default 3), `gap` (ms between events, default 10) and `head_delay` (ms before the head);
  - per-origin faults, settable while it runs: `status` (answer every request with it), `cut_after_head` (a 200
    head and that many body bytes, then a TCP reset), `kill()` (reset every connection, then refuse connects) and
    `restart()` (listen again on the same port);
  - records: every request as a `Seen` (its `X-Request-Id`, which sluice keeps when the client sends one, the body's
    sha256, when it arrived), and how many streams it holds at once (`active`, `peak`, shared with the fleet's
    condition so a test can wait on any of it).
Every wait is bounded and every handler checks for a kill between writes, so a kill takes effect within one gap.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from origin import LAST_CHUNK, OriginStopping, PeerClosed, chunk, respond
from rawhttp import Response, get
from streams import OPENAI_DONE, openai_chunk, sse, sse_head

#: How often a waiting handler looks at the origin's stop flag (a kill wakes it at once).
STOP_POLL = 0.05


@dataclass
class Seen:
    """One request as an origin received it."""

    origin: int
    #: How many times the origin had been restarted when it came.
    generation: int
    request_id: Optional[str]
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_sha256: Optional[str]
    body_length: Optional[int]
    at: float

    @property
    def probe(self) -> bool:
        return self.target.split("?")[0] == "/health"

    def header(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None


class Killed(Exception):
    """The origin was killed while a handler waited or wrote."""


def openai_reply(body: bytes) -> str:
    """The reply every origin streams for a chat request: a function of the last message only."""
    try:
        messages = json.loads(body).get("messages") or [{}]
        prompt = str(messages[-1].get("content", ""))
    except (ValueError, AttributeError):
        prompt = ""
    return f"Reply to «{prompt[:40]}»: the quick brown fox jumps over the lazy dog, twice; done."


class PoolOrigin:
    """One origin of a fleet; see the module's documentation."""

    def __init__(self, fleet: "Fleet", index: int, *, read_body: bool = True):
        self.fleet = fleet
        self.index = index
        self.read_body = read_body
        #: Answer every (non-probe) request with this status and a JSON error body, after reading its body.
        self.status: Optional[int] = None
        #: Send a 200 head and this many body bytes of a Content-Length response, then reset the connection.
        self.cut_after_head: Optional[int] = None
        self.health_status = 200
        self.generation = 0
        self.active = 0
        self.peak = 0
        #: X-Request-Id → "waiting" (no response byte sent yet) or "streaming", for the requests it holds now.
        self.phase: dict[str, str] = {}
        self._killed = threading.Event()
        #: Held around a request's first write and by kill(), so a kill sees each request's phase as it stays: a
        #: request "waiting" then gets no byte at all.
        self._first_write = threading.Lock()
        self.origin = fleet.stack.origin(self._handle, read_body=read_body)
        self.port = self.origin.port

    # -- what a test reads --------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The server's address as sluice logs it (`server` in the record and the metrics)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, *, probes: bool = False) -> list[Seen]:
        """Requests this origin received (probes only when `probes`), oldest first."""
        with self.fleet.cond:
            return [s for s in self.fleet.log if s.origin == self.index and s.probe == probes]

    def accepted(self) -> int:
        """Connections the current listener accepted (a restart starts again at 0)."""
        with self.origin.cond:
            return len(self.origin.connections)

    def reset_peak(self) -> None:
        with self.fleet.cond:
            self.peak = self.active

    # -- faults -------------------------------------------------------------------------------------------

    def kill(self, timeout: float = 5.0) -> dict[str, str]:
        """Reset every stream in flight (handlers see the kill between writes and reset), reset requests that
        arrive meanwhile before their head, then close the listener: connects are refused from then on. Returns
        the phase of each request it held at the kill."""
        with self._first_write, self.fleet.cond:
            self._killed.set()
            held = dict(self.phase)
        self.fleet.wait(lambda: self.active == 0, timeout, f"origin {self.index}'s streams to reset")
        self.origin.close()
        return held

    def restart(self) -> None:
        """Listen again on the same port, healthy (faults kept as set)."""
        assert self._killed.is_set(), "restart() follows kill()"
        self._killed.clear()
        self.generation += 1
        self.origin = self.fleet.stack.origin(self._handle, read_body=self.read_body, bind=("127.0.0.1", self.port))

    # -- serving ------------------------------------------------------------------------------------------

    def _wait(self, conn, seconds: float) -> None:
        """Sleep up to `seconds`, raising Killed on a kill and OriginStopping when the origin stops."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._killed.wait(min(left, STOP_POLL)):
                raise Killed()
            if conn.origin.stopping.is_set():
                raise OriginStopping()

    def _send(self, conn, request_id: Optional[str], data: bytes) -> None:
        """Write unless killed; the request's phase becomes "streaming" with its first byte."""
        if self.phase.get(request_id) != "waiting":
            if self._killed.is_set():
                raise Killed()
            conn.send(data)
            return
        with self._first_write:
            if self._killed.is_set():
                raise Killed()
            conn.send(data)
            with self.fleet.cond:
                self.phase[request_id] = "streaming"
                self.fleet.cond.notify_all()

    def _handle(self, conn, req) -> Optional[bool]:
        body = req.body if self.read_body else None
        seen = Seen(self.index, self.generation, req.header("x-request-id"), req.method, req.target, list(req.headers),
                    hashlib.sha256(body).hexdigest() if body is not None else None,
                    len(body) if body is not None else None, req.head_at)
        with self.fleet.cond:
            self.fleet.log.append(seen)
            if not seen.probe:
                self.active += 1
                self.peak = max(self.peak, self.active)
                self.phase[seen.request_id] = "waiting"
            self.fleet.cond.notify_all()
        try:
            if self._killed.is_set():
                raise Killed()
            if seen.probe:
                respond(conn, self.health_status, b"{}", [("Content-Type", "application/json")])
                return None
            return self._serve(conn, req)
        except Killed:
            conn.abort()
            return False
        except PeerClosed:
            return False
        finally:
            if not seen.probe:
                with self.fleet.cond:
                    self.active -= 1
                    self.phase.pop(seen.request_id, None)
                    self.fleet.cond.notify_all()

    def _serve(self, conn, req) -> Optional[bool]:
        rid = req.header("x-request-id")
        origin_field = ("X-Origin", str(self.index))
        if self.status is not None:
            error = json.dumps({"error": {"message": f"origin {self.index} answers {self.status}",
                                          "type": "test_fault"}}).encode()
            respond(conn, self.status, error, [("Content-Type", "application/json"), origin_field], reason="Scripted")
            return None if self.read_body else False  # an unread body would be parsed as the next request
        if self.cut_after_head is not None:
            self._send(conn, rid, b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Origin: "
                       + str(self.index).encode() + b"\r\nContent-Length: 1000000\r\n\r\n"
                       + b"c" * self.cut_after_head)
            self._wait(conn, 0.05)
            raise Killed()  # the reset, after the client has the head and some body
        url = urlsplit(req.target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self._wait(conn, int(query.get("head_delay", "0")) / 1000)
        if url.path == "/v1/chat/completions":
            return self._openai(conn, req, origin_field)
        gap = int(query.get("gap", "10")) / 1000
        self._send(conn, rid, sse_head("Cache-Control: no-cache", f"X-Origin: {self.index}"))
        for n in range(int(query.get("events", "3"))):
            if n:
                self._wait(conn, gap)
            self._send(conn, rid, chunk(sse({"origin": self.index, "n": n})))
        self._send(conn, rid, LAST_CHUNK)
        return None

    def _openai(self, conn, req, origin_field) -> Optional[bool]:
        rid = req.header("x-request-id")
        request = json.loads(req.body or b"{}")
        text = openai_reply(req.body)
        if not request.get("stream"):
            doc = {"id": "chatcmpl-pool", "object": "chat.completion", "created": 1, "model": request.get("model", "m"),
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"}]}
            respond(conn, 200, json.dumps(doc).encode(), [("Content-Type", "application/json"), origin_field])
            return None
        self._send(conn, rid, sse_head("Cache-Control: no-cache", f"X-Origin: {self.index}"))
        self._send(conn, rid, chunk(openai_chunk({"role": "assistant", "content": ""})))
        words = text.split(" ")
        for n, word in enumerate(words):
            self._wait(conn, 0.002)
            self._send(conn, rid, chunk(openai_chunk({"content": word if n == 0 else " " + word})))
        self._send(conn, rid, chunk(openai_chunk({}, "stop")) + chunk(OPENAI_DONE) + LAST_CHUNK)
        return None


class Fleet:
    """`n` pool origins sharing one log and one condition; those in `unread_bodies` hand requests to their handler
    right after the head, never reading a body (their `status` goes out before any body byte is read)."""

    def __init__(self, stack, n: int, *, unread_bodies=()):
        self.stack = stack
        self.cond = threading.Condition()
        self.log: list[Seen] = []
        self.origins = [PoolOrigin(self, i, read_body=i not in unread_bodies) for i in range(n)]

    def __getitem__(self, index: int) -> PoolOrigin:
        return self.origins[index]

    def __iter__(self):
        return iter(self.origins)

    def __len__(self) -> int:
        return len(self.origins)

    def index_of(self, label: Optional[str]) -> Optional[int]:
        """The origin whose address is `label` (a record's `server`), None for none."""
        return next((o.index for o in self.origins if o.label == label), None)

    def where(self, request_id: str) -> list[int]:
        """The origins that received the request with this X-Request-Id, in order of arrival."""
        with self.cond:
            return [s.origin for s in self.log if s.request_id == request_id]

    def requests(self) -> list[Seen]:
        """Every request but the probes."""
        with self.cond:
            return [s for s in self.log if not s.probe]

    def wait(self, predicate, timeout: float, what: str) -> None:
        """Block until predicate() holds (checked under the fleet's condition) or fail."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self.cond.wait(min(left, 0.1))

    def wait_seen(self, request_id: str, timeout: float = 5.0) -> int:
        """Wait until some origin has the request; returns which."""
        self.wait(lambda: any(s.request_id == request_id for s in self.log), timeout, f"request {request_id}")
        return self.where(request_id)[0]

    def server_lines(self, options: Optional[dict] = None) -> list[str]:
        """`server` lines for every origin, `options` mapping an index to what follows its URL."""
        return [" ".join(filter(None, [o.url, (options or {}).get(o.index, "")])) for o in self.origins]


def write_pool_config(path: Path, servers: list[str], pool: Optional[dict] = None, *, workers: int = 1,
                      log: Optional[dict] = None, admin: Optional[str] = None, timeouts: Optional[dict] = None,
                      name: str = "llm") -> Path:
    """A config file with one upstream pool `name` (one `server` line per entry of `servers`, then the `pool`
    keys in order) behind route `/`, and optional `log`, `admin` and `timeouts` blocks."""
    lines = ["listen 127.0.0.1:0", f"workers {workers}"]
    for block, keys in (("timeouts", timeouts), ("log", log)):
        if keys:
            lines += [block + " {", *[f"    {k} {v}" for k, v in keys.items()], "}"]
    if admin is not None:
        lines += ["admin {", f"    listen {admin}", "}"]
    lines.append(f"upstream {name} {{")
    lines += [f"    server {server}" for server in servers]
    lines += [f"    {k} {v}" for k, v in (pool or {}).items()]
    lines += ["}", "route / {", f"    upstream {name}", "}", ""]
    path.write_text("\n".join(lines))
    return path


class Dispatcher:
    """Sends requests one at a time as far as sluice can tell: each waits until an origin has the one before, so
    sluice chooses servers in the order the test numbers its requests (round robin's turns are that sequence)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.lock = threading.Lock()
        self.sent = 0

    def send(self, conn, make, timeout: float = 5.0) -> int:
        """`make(number)` gives the request's bytes and X-Request-Id for its place in the sequence; they go out on
        `conn` and an origin receives them before the next request is made. Returns the number."""
        with self.lock:
            number = self.sent
            self.sent += 1
            raw, request_id = make(number)
            conn.send(raw)
            self.fleet.wait_seen(request_id, timeout)
            return number


def fetch(port: int, target: str, request_id: str, headers=(), method: str = "GET", body: bytes = b"",
          timeout: float = 10.0) -> Response:
    """One request on a fresh connection, carrying `request_id` as its X-Request-Id (sluice keeps the client's, so
    the origins and the completion record see the same id)."""
    return get(port, target, [("X-Request-Id", request_id), *headers], method, body, timeout=timeout)
