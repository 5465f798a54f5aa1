"""What the rate-limit tests share (test_rate_limit.py, test_rate_limit_tokens.py,
test_rate_limit_headers.py): readers for the RateLimit, RateLimit-Policy and x-ratelimit-*
fields, the exact 429 check, /metrics samples, and a burst of requests sent at once."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from rawhttp import RawConn, request_bytes

HEX16 = re.compile(r"[0-9a-f]{16}")


def auth(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}")]


# --------------------------------------------------------------------------------------------
# Reading the rate-limit fields
# --------------------------------------------------------------------------------------------

def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out, cur, quoted, esc = [], "", False, False
    for ch in text:
        if quoted:
            cur += ch
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur += ch
        elif ch == sep:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def sf_list(value: str) -> dict[str, dict[str, str]]:
    """A Structured Field list of `"name";k=v;...` items: {name: {k: v}} (quotes kept off names,
    string parameter values unquoted)."""
    items = {}
    for item in _split_outside_quotes(value, ","):
        parts = _split_outside_quotes(item, ";")
        name = parts[0]
        assert name.startswith('"') and name.endswith('"'), f"SF item name is not a string: {item!r}"
        params = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k] = v[1:-1] if v.startswith('"') else v
        items[name[1:-1]] = params
    return items


def go_duration(text: str) -> float:
    """`1h2m3.5s`, `6m0s`, `20ms`, `0s` (OpenAI's x-ratelimit-reset-*) in seconds."""
    m = re.fullmatch(r"(\d+)ms", text)
    if m:
        return int(m.group(1)) / 1000
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d+)?)s", text)
    assert m, f"not a Go duration: {text!r}"
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + float(m.group(3))


def one(r, name: str) -> str:
    """The single value of field `name`; fails when it is absent or repeated."""
    vs = r.values(name)
    assert len(vs) == 1, f"expected exactly one {name} field, got {vs}; head:\n{r.head_raw.decode('latin-1')}"
    return vs[0]


def rejection_body(rule: str, kind: str, limit_text: str, retry_after: int) -> bytes:
    """The exact 429 body in OpenAI's error shape; `limit_text` is e.g. `5 per 1s`."""
    return json.dumps({"error": {
        "message": f"Rate limit reached for {rule} ({kind}): {limit_text}. Retry after {retry_after} s.",
        "type": "rate_limit_exceeded", "param": None, "code": "rate_limit_exceeded"}},
        separators=(",", ":")).encode()


def check_429(r, rule: str, kind: str, limit_text: str, retry_min: int = 1, retry_max: int = 1) -> int:
    """Everything a refusal must carry; returns Retry-After."""
    head = r.head_raw.decode("latin-1")
    assert r.status == 429, f"expected 429, got {r.status_line}; body {r.body[:200]!r}"
    assert r.complete, "429 body incomplete"
    ra_text = one(r, "Retry-After")
    assert re.fullmatch(r"[0-9]+", ra_text), f"Retry-After must be whole seconds: {ra_text!r}"
    ra = int(ra_text)
    assert retry_min <= ra <= retry_max, f"Retry-After {ra} not in [{retry_min}, {retry_max}]\n{head}"
    assert one(r, "Content-Type").split(";")[0].strip().lower() == "application/json", head
    want = rejection_body(rule, kind, limit_text, ra)
    assert r.body == want, f"429 body\n got  {r.body!r}\n want {want!r}"
    policy = sf_list(one(r, "RateLimit-Policy"))
    state = sf_list(one(r, "RateLimit"))
    assert f"{rule}-{kind}" in policy and f"{rule}-{kind}" in state, f"no {rule}-{kind} item\n{head}"
    if kind in ("requests", "tokens"):
        assert int(one(r, f"x-ratelimit-remaining-{kind}")) == 0, head
        assert state[f"{rule}-{kind}"]["r"] == "0", head
        go_duration(one(r, f"x-ratelimit-reset-{kind}"))
    return ra


class Metrics:
    def __init__(self, sl):
        status, _, text = sl.scrape()
        assert status == 200
        self.samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, f"no series {name}{labels} in /metrics"
        return self.samples[key]


def burst(port: int, n: int, prefix: str, headers) -> list:
    """n requests at once on n distinct connections, all connected before the first byte is sent;
    returns the responses in order (target `{prefix}{i}`)."""
    conns = [RawConn(port) for _ in range(n)]
    try:
        raws = [request_bytes("GET", f"{prefix}{i}", headers) for i in range(n)]
        for c, raw in zip(conns, raws):
            c.send(raw)
        return [c.read_response() for c in conns]
    finally:
        for c in conns:
            c.close()
