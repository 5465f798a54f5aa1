"""What the completion-log tests share (test_completion_log.py, test_completion_log_usage.py,
test_completion_log_sinks.py): the record's documented keys, its `end` values and the shape check."""

from __future__ import annotations

import re

TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
#: The record's keys, in the order `CompletionRecord.writeJSON` writes them.
#: `upstream` is the upstream's configured name, `server` the address (`ip:port`) that served the last try, `tries`
#: the servers the request went to (0: none), `affinity` hit/spill/none (null when the upstream has no `affinity`).
KEYS = ["ts", "request_id", "traceparent", "client", "route", "method", "path", "upstream", "server", "tries",
        "affinity", "status",
        "request_bytes", "response_bytes", "sse_events", "ttfb_ms", "ttfe_ms", "ttft_ms", "tpot_ms",
        "tokens_per_second", "duration_ms", "max_gap_ms", "paused_ms", "peak_queued_bytes", "rate_limit_key", "rate_limit_decision", "model", "usage", "end",
        "error", "worker"]
#: Keys written only when set, right after `usage` (token budgets, issue 12).
USAGE_KEYS = ["usage_source", "estimated_usage"]
ENDS = {"complete", "client_abort", "upstream_abort", "upstream_error", "timeout_connect", "timeout_first_byte",
        "timeout_idle", "timeout_total", "client_write_timeout", "rejected_rate_limit", "rejected_bad_request",
        "drain", "rejected_overload", "upstream_unresolved"}


def check_shape(rec: dict) -> None:
    """Keys in the documented order, a UTC RFC 3339 timestamp close to now, known `end`."""
    keys = [k for k in rec if k not in USAGE_KEYS]
    assert keys[: len(KEYS)] == KEYS, f"record keys {list(rec)}"
    extra = [k for k in rec if k in USAGE_KEYS]
    after_usage = list(rec).index("usage") + 1
    assert extra == list(rec)[after_usage: after_usage + len(extra)], list(rec)
    assert TS_RE.fullmatch(rec["ts"]), rec["ts"]
    assert rec["end"] in ENDS, rec
    assert isinstance(rec["request_id"], str) and rec["request_id"], rec
    assert rec["client"].startswith("127.0.0.1"), rec
    assert isinstance(rec["tries"], int) and rec["tries"] >= 0, rec
    assert (rec["tries"] == 0) == (rec["server"] is None), rec
    assert rec["affinity"] in (None, "hit", "spill", "none"), rec
    assert rec["duration_ms"] >= 0 and rec["max_gap_ms"] >= 0 and rec["paused_ms"] >= 0, rec
    if rec["ttfb_ms"] is not None:
        assert 0 <= rec["ttfb_ms"] <= rec["duration_ms"], rec
    for key in ("ttfe_ms", "ttft_ms"):
        if rec[key] is not None:
            assert rec["ttfb_ms"] is not None and rec["ttfb_ms"] <= rec[key] <= rec["duration_ms"], rec
    if rec["ttfe_ms"] is not None and rec["ttft_ms"] is not None:
        assert rec["ttfe_ms"] <= rec["ttft_ms"], rec
    for key in ("tpot_ms", "tokens_per_second"):
        if rec[key] is not None:
            assert rec["ttft_ms"] is not None and rec["usage"] is not None and rec[key] >= 0, rec
