"""2. Byte identity: what the client reads is exactly what the origin wrote."""

import hashlib
import random

import pytest

from rawhttp import RawConn, request_bytes

TOTAL = 3 * 1024 * 1024
MAX_PIECE = 256 * 1024


def _sizes(rng: random.Random, total: int) -> list[int]:
    """Sizes from 1 B to 256 KiB, log-uniform, summing to `total`."""
    out, left = [], total
    while left:
        n = min(left, max(1, int(2 ** rng.uniform(0, 18))))
        out.append(n)
        left -= n
    return out


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, off = [], 0
    for n in sizes:
        out.append(data[off:off + n])
        off += n
    assert off == len(data)
    return out


def _chunk_frame(piece: bytes, upper: bool) -> bytes:
    size = f"{len(piece):X}" if upper else f"{len(piece):x}"
    return size.encode() + b"\r\n" + piece + b"\r\n"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("seed", [1, 2])
def test_chunked_random_chunk_sizes_identical_framing(stack, seed):
    rng = random.Random(seed)
    payload = rng.randbytes(TOTAL)
    pieces = _split(payload, _sizes(rng, TOTAL))
    wire = b"".join(_chunk_frame(p, rng.random() < 0.3) for p in pieces) + b"0\r\n\r\n"
    # The origin's write boundaries are independent of the chunk boundaries.
    writes = _split(wire, _sizes(rng, len(wire)))

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for w in writes:
            conn.send(w)

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port, timeout=30) as c:
        c.send(request_bytes("GET", f"/blob/{seed}"))
        r = c.read_response()
    assert r.status == 200 and r.framing == "chunked" and r.complete
    assert _sha(r.body) == _sha(payload)
    assert r.chunk_sizes == [len(p) for p in pieces] + [0], "chunk boundaries changed"
    assert _sha(r.raw_body) == _sha(wire), "chunked framing bytes differ from the origin's"


@pytest.mark.parametrize("seed", [3])
def test_content_length_random_writes(stack, seed):
    rng = random.Random(seed)
    payload = rng.randbytes(TOTAL)
    writes = _split(payload, _sizes(rng, TOTAL))

    def handler(conn, req):
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n".encode())
        for w in writes:
            conn.send(w)

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port, timeout=30) as c:
        c.send(request_bytes("GET", "/cl"))
        r = c.read_response()
        assert r.status == 200 and r.framing == "length" and r.complete
        assert r.header("content-length") == str(len(payload))
        assert _sha(r.body) == _sha(payload)
        # Nothing after the body: the connection is idle and reusable.
        c.send(request_bytes("GET", "/again"))
        r2 = c.read_response()
        assert r2.status == 200 and len(r2.body) == len(payload)


@pytest.mark.parametrize("seed", [4])
def test_close_delimited_random_writes(stack, seed):
    rng = random.Random(seed)
    payload = rng.randbytes(TOTAL)
    writes = _split(payload, _sizes(rng, TOTAL))

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        for w in writes:
            conn.send(w)
        conn.close()
        return False

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port, timeout=30) as c:
        c.send(request_bytes("GET", "/close"))
        r = c.read_response()
    assert r.status == 200 and r.complete, f"framing={r.framing}"
    assert _sha(r.body) == _sha(payload)


def _sse_text() -> bytes:
    parts = [
        ": keep-alive comment\n\n",
        "event: delta\ndata: {\"text\": \"héllo wörld\"}\n\n",
        "data: first line\ndata: second line\ndata: third line\n\n",
        "id: 42\r\nevent: crlf\r\ndata: CRLF line ends\r\n\r\n",
        "data: mixed line ends\r\ndata: lf here\n\n",
        "data: 日本語のテキスト 🎉🚀 Ελληνικά Кириллица\n\n",
        ":comment with no space\n",
        "retry: 1500\n\n",
        "data:\n\n",
        "data: " + "ünïcödé " * 500 + "\n\n",
        "data: [DONE]\n\n",
    ]
    return "".join(parts).encode("utf-8")


def _split_inside_multibyte(data: bytes, rng: random.Random) -> list[bytes]:
    """Cut at random points and also in the middle of every few multi-byte UTF-8 characters."""
    cuts = set(rng.sample(range(1, len(data)), 40))
    mid = [i for i in range(1, len(data)) if 0x80 <= data[i] < 0xC0]  # continuation bytes
    cuts |= set(mid[::7])
    cuts = sorted(cuts)
    out, prev = [], 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out


@pytest.mark.parametrize("line_mode", ["as-is", "all-crlf"])
def test_sse_multibyte_split_across_writes(stack, line_mode):
    rng = random.Random(7)
    text = _sse_text()
    if line_mode == "all-crlf":
        text = text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    writes = _split_inside_multibyte(text, rng)
    assert any(w and 0x80 <= w[0] < 0xC0 for w in writes), "test must split inside a character"
    wire = b"".join(_chunk_frame(w, False) for w in writes) + b"0\r\n\r\n"

    def handler(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for i, w in enumerate(writes):
            conn.send(_chunk_frame(w, False))
            if i % 5 == 0:
                conn.sleep(0.002)  # let some writes reach sluice as separate reads
        conn.send(b"0\r\n\r\n")

    sl = stack.proxy(stack.origin(handler))
    with RawConn(sl.port) as c:
        c.send(request_bytes("GET", "/sse", [("Accept", "text/event-stream")]))
        r = c.read_response()
    assert r.status == 200 and r.complete
    assert r.body == text
    assert _sha(r.raw_body) == _sha(wire), "chunked framing differs"
    r.body.decode("utf-8")  # still valid UTF-8 end to end


def test_sse_content_length_and_close_delimited(stack):
    text = _sse_text()
    rng = random.Random(11)
    writes = _split_inside_multibyte(text, rng)

    def handler(conn, req):
        if req.target == "/cl":
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(text)}\r\n\r\n".encode())
            for w in writes:
                conn.send(w)
            return None
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        for w in writes:
            conn.send(w)
        conn.close()
        return False

    sl = stack.proxy(stack.origin(handler))
    for target in ("/cl", "/close"):
        with RawConn(sl.port) as c:
            c.send(request_bytes("GET", target))
            r = c.read_response()
        assert r.status == 200 and r.complete, target
        assert _sha(r.body) == _sha(text), target
