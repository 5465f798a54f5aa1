"""11. Rate limits, what crosses the wire: keys from a header never written in clear, `key client`
taking X-Forwarded-For only from trusted proxies, and an upstream's own 429 and x-ratelimit-*
fields passed through. Shared helpers: rate_limit_common.py."""

from __future__ import annotations

import uuid

import pytest

from origin import respond
from rate_limit_common import HEX16, Metrics, auth, one
from rawhttp import get
from sluice_proc import Sluice, log_config, wait_records, write_routes_config


# --------------------------------------------------------------------------------------------
# 5. Keys from a header are never written in clear
# --------------------------------------------------------------------------------------------

def test_header_keys_never_in_clear(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    rules = {"by_auth": {"key": "header authorization", "requests": "1/min burst 2"},
             "by_apikey": {"key": "header x-api-key", "requests": "1/min burst 2"}}
    routes = [("/a/", "o", {"limit": "by_auth"}), ("/k/", "o", {"limit": "by_apikey"}),
              ("/both/", "o", {"limit": ["by_auth", "by_apikey"]})]
    up = {"o": f"http://127.0.0.1:{origin.port}"}

    def start(n: int, log_path) -> Sluice:
        cfg = write_routes_config(tmp_path / f"keys{n}.conf", upstreams=up, routes=routes, rate_limits=rules,
                                  log=log_config(log_path))
        return Sluice(["--config", str(cfg)])  # stopped by the test (all output flushed), so not from `stack`

    sl = start(1, log)
    try:
        _keys_never_in_clear(sl, start, tmp_path, log)
    finally:
        sl.stop()


def _keys_never_in_clear(sl, start, tmp_path, log):
    tag = uuid.uuid4().hex
    s1, s2 = f"sk-secret-XYZ-{tag}-one", f"sk-secret-XYZ-{tag}-two"
    x1, x2 = f"xk-secret-{tag}-alpha", f"xk-secret-{tag}-beta"
    secrets = [s1, s2, x1, x2]

    def run(path, headers, want):
        r = get(sl.port, path, headers)
        assert r.status == want, f"{path} {headers}: {r.status_line}"
        for s in secrets:
            assert s.encode() not in r.head_raw + r.body, f"{path}: the key came back in the response"
        return r

    plan = [("/a/1", [("Authorization", f"Bearer {s1}")], 200),
            ("/a/2", [("Authorization", f"Bearer {s1}")], 200),
            ("/a/3", [("Authorization", f"Bearer {s1}")], 429),     # burst 2 used up
            ("/a/4", [("authorization", f"Bearer {s1}")], 429),     # field names are case-insensitive
            ("/a/5", [("Authorization", f"Bearer {s2}")], 200),     # another value, another budget
            ("/k/1", [("x-api-key", x1)], 200),
            ("/k/2", [("X-Api-Key", x1)], 200),
            ("/k/3", [("x-api-key", x1)], 429),
            ("/k/4", [("x-api-key", x2)], 200),
            ("/both/1", [("Authorization", f"Bearer {s2}"), ("x-api-key", x2)], 200),
            ("/both/2", [("Authorization", f"Bearer {s2}"), ("x-api-key", x2)], 429),
            ("/a/n1", [], 200), ("/a/n2", [], 200), ("/a/n3", [], 429)]  # no header: one shared budget
    for path, headers, want in plan:
        run(path, headers, want)
    recs = {r["path"]: r for r in wait_records(log, len(plan))}
    assert len(recs) == len(plan)
    for path, rec in recs.items():
        assert isinstance(rec["rate_limit_key"], str) and HEX16.fullmatch(rec["rate_limit_key"]), (path, rec)
    h = {p: recs[p]["rate_limit_key"] for p in recs}
    assert h["/a/1"] == h["/a/2"] == h["/a/3"] == h["/a/4"], "one Authorization value, one key"
    assert h["/a/5"] != h["/a/1"]
    assert h["/k/1"] == h["/k/2"] == h["/k/3"] and h["/k/4"] != h["/k/1"]
    assert h["/a/n1"] == h["/a/n2"] == h["/a/n3"] and h["/a/n1"] not in (h["/a/1"], h["/a/5"])
    assert [recs[p]["rate_limit_decision"] for p in ("/a/1", "/a/3", "/k/3", "/both/2")] == \
        ["allowed", "rejected", "rejected", "rejected"]

    # The hash is keyed per process: the same value gives another hash in another sluice.
    log2 = tmp_path / "c2.jsonl"
    sl2 = start(2, log2)
    try:
        assert get(sl2.port, "/a/1", [("Authorization", f"Bearer {s1}")]).status == 200
        rec2, = wait_records(log2, 1)
        assert HEX16.fullmatch(rec2["rate_limit_key"]) and rec2["rate_limit_key"] != h["/a/1"]
    finally:
        sl2.stop()
    assert sl.stop() == 0 and sl2.stop() == 0
    sl.log_objects()
    sl2.log_objects()
    blobs = {"completion log": log.read_bytes() + log2.read_bytes(),
             "stderr": "\n".join(sl.stderr_lines + sl2.stderr_lines).encode(),
             "stdout": bytes(sl.stdout) + bytes(sl2.stdout)}
    for where, blob in blobs.items():
        for s in secrets:
            for variant in (s, s.lower(), s[len("sk-secret-"):] if s.startswith("sk-") else s[len("xk-secret-"):]):
                assert variant.encode() not in blob, f"key value {variant!r} written in clear to {where}"
        assert tag.encode() not in blob, f"part of a key value written to {where}"


# --------------------------------------------------------------------------------------------
# 6. `key client`: X-Forwarded-For only from trusted proxies
# --------------------------------------------------------------------------------------------

#: (X-Forwarded-For or None, status with 127.0.0.1 trusted). 1/min burst 1 per client.
XFF_PLAN = [("203.0.113.7", 200),
            ("203.0.113.7", 429),
            ("203.0.113.8", 200),
            ("198.51.100.9, 127.0.0.1", 200),   # the trusted hop is skipped: client 198.51.100.9
            ("1.2.3.4, 203.0.113.8", 429),      # a prepended address does not pick the key
            (None, 200),                        # no header: the peer, 127.0.0.1
            ("198.51.100.9", 429),
            ("2001:db8::1", 200)]


@pytest.mark.parametrize("trusted", ["127.0.0.1/32", None, "10.0.0.0/8 ::1/128"])
def test_key_client_x_forwarded_for_only_from_trusted_proxies(stack, tmp_path, trusted):
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"}, [("/", "o", {"limit": "per_client"})],
                            rate_limits={"per_client": {"key": "client", "requests": "1/min burst 1"}},
                            trusted_proxies=trusted, log=log_config(log))
    believed = trusted == "127.0.0.1/32"
    got = []
    for i, (xff, status) in enumerate(XFF_PLAN):
        hdrs = [("X-Forwarded-For", xff)] if xff else []
        r = get(sl.port, f"/c/{i}", hdrs)
        got.append(r.status)
    want = [s for _, s in XFF_PLAN] if believed else [200] + [429] * (len(XFF_PLAN) - 1)
    assert got == want, "statuses for X-Forwarded-For " + ", ".join(
        f"{x!r}: {g} (want {w})" for (x, _), g, w in zip(XFF_PLAN, got, want))
    recs = sorted(wait_records(log, len(XFF_PLAN)), key=lambda r: int(r["path"].rsplit("/", 1)[1]))
    keys = [r["rate_limit_key"] for r in recs]
    assert all(isinstance(k, str) and HEX16.fullmatch(k) for k in keys), keys
    if believed:
        assert keys[0] == keys[1] and keys[2] == keys[4] and keys[3] == keys[6]
        assert len({keys[0], keys[2], keys[3], keys[5], keys[7]}) == 5, keys
    else:
        assert len(set(keys)) == 1, keys


# --------------------------------------------------------------------------------------------
# 7. An upstream's own 429 passes through unchanged
# --------------------------------------------------------------------------------------------

UPSTREAM_429_BODY = b'{"error":{"message":"upstream: slow down","type":"requests","code":"rate_limit_exceeded"}}'
UPSTREAM_FIELDS = [("x-ratelimit-limit-requests", "60"), ("x-ratelimit-remaining-requests", "0"),
                   ("x-ratelimit-reset-requests", "7s"), ("x-upstream-marker", "kept")]


def _upstream_429(conn, req):
    respond(conn, 429, UPSTREAM_429_BODY,
            [("Content-Type", "application/json"), ("Retry-After", "7")] + UPSTREAM_FIELDS,
            reason="Too Many Requests")


def _upstream_429_stack(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    origin = stack.origin(_upstream_429)
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"},
                            [("/plain/", "o", {}), ("/limited/", "o", {"limit": "per_user"})],
                            rate_limits={"per_user": {"key": "header authorization", "requests": "100/s"}},
                            log=log_config(log), admin="127.0.0.1:0")
    return origin, sl, log


def test_upstream_429_passes_through(stack, tmp_path):
    origin, sl, log = _upstream_429_stack(stack, tmp_path)
    for i, path in enumerate(["/plain/x", "/limited/x", "/limited/y"]):
        r = get(sl.port, path, auth("sk-up"))
        assert r.status == 429 and r.reason == "Too Many Requests", r.status_line
        assert r.values("Retry-After") == ["7"], f"{path}: Retry-After {r.values('Retry-After')}"
        assert r.body == UPSTREAM_429_BODY
        assert one(r, "Content-Type") == "application/json"
        for name, value in UPSTREAM_FIELDS:
            assert value in r.values(name), f"{path}: upstream's {name}: {value} lost: {r.values(name)}"
    assert len(origin.heads) == 3
    recs = wait_records(log, 3)
    assert all(r["status"] == 429 and r["end"] == "complete" for r in recs), recs
    assert [r["rate_limit_decision"] for r in recs] == [None, "allowed", "allowed"], recs
    assert Metrics(sl).get("sluice_rate_limit_rejections_total", rule="per_user") == 0


def test_upstream_rate_limit_fields_not_duplicated(stack, tmp_path):
    """When the upstream sends its own x-ratelimit-* fields (OpenAI does, on every response), a
    limited route must not add a second field of the same name: clients read one value, and two
    lines are combined into `60, 100`, which no client parses."""
    _, sl, _ = _upstream_429_stack(stack, tmp_path)
    r = get(sl.port, "/limited/x", auth("sk-up"))
    assert r.status == 429
    dup = {n: r.values(n) for n, _ in UPSTREAM_FIELDS if len(r.values(n)) > 1}
    assert not dup, "x-ratelimit-* fields repeated (upstream's and sluice's):\n" + r.head_raw.decode("latin-1")
