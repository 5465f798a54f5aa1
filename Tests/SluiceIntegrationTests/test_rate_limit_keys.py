"""Issue 12, item 6: `key header authorization` gives one budget per credential however the
client spells the auth scheme (RFC 9110 §11.1: case-insensitive; §11.4: one or more SP before the
credentials), while the credentials themselves stay case-sensitive. Other header keys are only
OWS-trimmed."""

from __future__ import annotations

import re

from rawhttp import RawConn
from sluice_proc import wait_records

HEX16 = re.compile(r"[0-9a-f]{16}")

# Field lines as sent on the wire, `{}` standing for the token: the scheme's case, the whitespace
# after it (spaces, a tab) and the OWS around the value all differ.
SPELLINGS = [
    b"Authorization: Bearer {}",
    b"authorization: bearer  {}",
    b"AUTHORIZATION:\tBEARER \t {} ",
    b"Authorization:bEaReR\t{}\t",
]


def send(port: int, target: str, field_line: bytes):
    raw = (f"GET {target} HTTP/1.1\r\nHost: sluice.test\r\n".encode() + field_line + b"\r\n\r\n")
    with RawConn(port) as c:
        c.send(raw)
        return c.read_response()


def test_every_spelling_of_one_credential_spends_one_budget(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    origin = stack.origin()
    # 1/min with a burst of 2: nothing refills during the test, so exactly two requests per
    # budget get through whatever the timing.
    sl = stack.routes_proxy({"o": f"http://127.0.0.1:{origin.port}"},
                            [("/a/", "o", {"limit": "by_auth"}), ("/k/", "o", {"limit": "by_key"})],
                            rate_limits={"by_auth": {"key": "header authorization", "requests": "1/min burst 2"},
                                         "by_key": {"key": "header x-api-key", "requests": "1/min burst 2"}},
                            log={"file": str(log), "stdout": "off"})
    sent = 0
    # Each rotation puts every spelling once among the admitted and once among the refused, each
    # rotation with its own token (its own budget).
    for rotation in range(len(SPELLINGS)):
        token = f"sk-Tok{rotation}-MiXeD".encode()
        order = SPELLINGS[rotation:] + SPELLINGS[:rotation]
        got = [send(sl.port, f"/a/{rotation}/{i}", line.replace(b"{}", token)).status for i, line in enumerate(order)]
        sent += len(order)
        assert got == [200, 200, 429, 429], \
            f"token {token!r}, spellings {order}: statuses {got} (one credential must be one budget)"

    # The token's case is part of the credential: a case variant of a spent token has its own budget.
    for i, token in enumerate([b"sk-tok0-mixed", b"SK-TOK0-MIXED"]):
        r = send(sl.port, f"/a/case/{i}", b"Authorization: Bearer " + token)
        sent += 1
        assert r.status == 200, f"{token!r} shares a budget with sk-Tok0-MiXeD: {r.status_line}"

    # Other header keys: OWS around the value does not matter, case and inner spaces do.
    plan = [(b"x-api-key: xk-One", 200), (b"X-Api-Key:\txk-One \t", 200), (b"x-api-key:xk-One", 429),
            (b"x-api-key: XK-ONE", 200), (b"x-api-key: xk- One", 200)]
    for i, (line, want) in enumerate(plan):
        r = send(sl.port, f"/k/{i}", line)
        sent += 1
        assert r.status == want, f"{line!r}: {r.status_line}, expected {want}"

    recs = {r["path"]: r for r in wait_records(log, sent)}
    for rotation in range(len(SPELLINGS)):
        keys = {recs[f"/a/{rotation}/{i}"]["rate_limit_key"] for i in range(len(SPELLINGS))}
        assert len(keys) == 1 and HEX16.fullmatch(keys.pop()), f"rotation {rotation}: the log shows several keys"
    per_token = {recs[f"/a/{rotation}/0"]["rate_limit_key"] for rotation in range(len(SPELLINGS))}
    assert len(per_token) == len(SPELLINGS), "distinct tokens must have distinct keys"
