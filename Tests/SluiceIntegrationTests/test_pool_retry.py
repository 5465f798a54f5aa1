"""Upstream pools: retries on another server, only before the first response byte reached the client. A POST body is
kept while a retry is possible (up to `retry_body_limit`) and arrives byte for byte at the next server; a response
that started is never retried; the retry budget caps retries when the whole fleet fails."""

from __future__ import annotations

import hashlib
import os

import pytest

from pool_origins import Fleet, fetch, write_pool_config
from rawhttp import RawConn, request_bytes
from sluice_proc import log_config, wait_records

BODY = os.urandom(200 * 1024)
SHA = hashlib.sha256(BODY).hexdigest()


def retry_pool(stack, tmp_path, pool: dict, *, first_reads_body: bool = True):
    """Two origins behind round robin, so a fresh sluice's first request goes to origin 0 and its retry (turn 1) to
    origin 1; origin 0 answers 503. Returns (fleet, sluice, log path)."""
    log = tmp_path / "retry.jsonl"
    fleet = Fleet(stack, 2, unread_bodies=() if first_reads_body else (0,))
    fleet[0].status = 503
    cfg = write_pool_config(tmp_path / "retry.conf", fleet.server_lines(), {"balance": "round_robin", **pool},
                            log=log_config(log))
    return fleet, stack.sluice(["--config", str(cfg)]), log


@pytest.mark.parametrize("first_reads_body", [True, False], ids=["503-after-the-body", "503-at-the-head"])
def test_a_post_answered_503_is_retried_byte_for_byte(stack, tmp_path, first_reads_body):
    """A 200 KiB POST (under the default 1 MiB `retry_body_limit`): the first server answers 503, after reading the
    body or before reading any of it (then closing); the second gets the same bytes and its answer reaches the
    client; the record says two tries and names the second server."""
    fleet, sl, log = retry_pool(stack, tmp_path, {}, first_reads_body=first_reads_body)
    r = fetch(sl.port, "/v1/stream?events=2", "big-post", [("Content-Type", "application/octet-stream")], "POST", BODY)
    assert r.status == 200 and r.complete and r.header("x-origin") == "1", (r.status_line, r.body[:200])
    assert fleet.where("big-post") == [0, 1]
    second = fleet[1].seen()[-1]
    assert (second.body_length, second.body_sha256) == (len(BODY), SHA)
    if first_reads_body:
        assert fleet[0].seen()[-1].body_sha256 == SHA
    rec, = wait_records(log, 1)
    assert rec["tries"] == 2 and rec["server"] == fleet[1].label and rec["end"] == "complete", rec
    assert rec["request_bytes"] >= len(BODY), rec


def test_a_body_over_the_retry_limit_is_not_retried(stack, tmp_path):
    """With `retry_body_limit 64k` the 200 KiB body cannot be kept: the first server's 503 goes to the client."""
    fleet, sl, log = retry_pool(stack, tmp_path, {"retry_body_limit": "64k"})
    r = fetch(sl.port, "/v1/stream", "too-big", [("Content-Type", "application/octet-stream")], "POST", BODY)
    assert r.status == 503 and r.header("x-origin") == "0", r.status_line
    assert fleet.where("too-big") == [0] and fleet[0].seen()[-1].body_sha256 == SHA
    rec, = wait_records(log, 1)
    assert rec["tries"] == 1 and rec["status"] == 503, rec


def test_a_response_that_started_is_never_retried(stack, tmp_path):
    """The first server sends a 200 head and 100 bytes, then resets: the client keeps what it got (a truncated
    body), and no other server ever sees the request."""
    fleet, sl, log = retry_pool(stack, tmp_path, {})
    fleet[0].status = None
    fleet[0].cut_after_head = 100
    r = fetch(sl.port, "/v1/stream", "started", [("Content-Type", "application/octet-stream")], "POST", BODY)
    assert r.status == 200 and not r.complete and r.body == b"c" * 100, (r.status_line, len(r.body))
    assert fleet.where("started") == [0]
    rec, = wait_records(log, 1)
    assert rec["tries"] == 1 and rec["end"] == "upstream_abort", rec


def test_the_retry_budget_caps_retries_when_every_server_fails(stack, tmp_path):
    """Three servers all answering 503, `retries 2`, passive ejection off (so every server stays in the pool):
    without a budget 60 requests would make 120 retries; the budget allows 20 % of requests plus a reserve of 10.
    Each request's last 503 reaches the client, and the records' tries agree with what the origins counted."""
    requests = 60
    log = tmp_path / "budget.jsonl"
    fleet = Fleet(stack, 3)
    for o in fleet:
        o.status = 503
    cfg = write_pool_config(tmp_path / "budget.conf", fleet.server_lines(),
                            {"retries": 2, "max_fails": 0, "retry_ratio": "20%"}, log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    with RawConn(sl.port, timeout=10) as c:
        for n in range(requests):
            c.send(request_bytes("GET", "/v1/stream", [("X-Request-Id", f"b{n}")]))
            r = c.read_response()
            assert r.status == 503 and r.header("x-origin") is not None, (n, r.status_line, r.body[:200])
    retries = len(fleet.requests()) - requests
    records = wait_records(log, requests)
    print(f"{requests} requests: {retries} retries (bound {0.2 * requests + 10:.0f})")
    assert sum(r["tries"] for r in records) - requests == retries
    assert 10 <= retries <= 0.2 * requests + 10
