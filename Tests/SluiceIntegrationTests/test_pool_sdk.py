"""Upstream pools with the official `openai` SDK: streaming through a three-server pool with affinity on a session
header gives exactly the text the SDK gets from an origin directly, and each session stays on one server."""

from __future__ import annotations

import pytest

from pool_origins import Fleet, write_pool_config
from sluice_proc import log_config, wait_records

SESSION = "x-session-id"


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def client(port: int):
    from openai import OpenAI
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-sluice-test", max_retries=0, timeout=30)


def streamed_text(client, prompt: str) -> str:
    stream = client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": prompt}])
    pieces = []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return "".join(pieces)


def test_openai_sdk_streams_the_same_text_through_an_affinity_pool(stack, tmp_path):
    log = tmp_path / "sdk.jsonl"
    fleet = Fleet(stack, 3)
    cfg = write_pool_config(tmp_path / "sdk.conf", fleet.server_lines(), {"affinity": f"header {SESSION}"},
                            log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    prompts = ["hello", "naïve café ☕", "a longer question about streams"]
    sessions = [f"sdk-session-{n}" for n in range(6)]
    direct = {p: streamed_text(client(fleet[0].port), p) for p in prompts}
    assert all(direct.values())
    pool = client(sl.port)
    for session in sessions:
        # A copy of the client with the session as a default header, as an application would make per session.
        per_session = pool.with_options(default_headers={SESSION: session})
        for p in prompts:
            assert streamed_text(per_session, p) == direct[p], (session, p)
    pooled = [s for s in fleet.requests() if s.header(SESSION)]
    assert len(pooled) == len(sessions) * len(prompts)
    where = {session: {s.origin for s in pooled if s.header(SESSION) == session} for session in sessions}
    print("session -> origins:", where)
    assert all(len(origins) == 1 for origins in where.values()), where
    records = wait_records(log, len(pooled))
    assert all(r["affinity"] == "hit" and r["end"] == "complete" and r["tries"] == 1 for r in records), records
