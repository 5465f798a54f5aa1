"""Upstream pools: affinity. A key (a header, a JSON field of the body, the prompt's first bytes) keeps landing on one
server while that server is under the load bound; removing a server by reload moves only its keys; a hot key spills
to other servers instead of overloading its own."""

from __future__ import annotations

import json
import os
import random
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from pool_origins import Fleet, fetch, write_pool_config
from rawhttp import RawConn, request_bytes
from sluice_proc import log_config, wait_records

KEYS = 200
SESSION = "x-session-id"


def sequential(port: int, requests: list[tuple]) -> list[int]:
    """Send (request id, headers, JSON body or None) one after another on one keep-alive connection (so no two
    streams are ever in flight, and every server is under its load bound); returns the origin that answered each."""
    served = []
    with RawConn(port, timeout=10) as c:
        for request_id, headers, body in requests:
            fields = [("X-Request-Id", request_id), *headers]
            if body is None:
                c.send(request_bytes("GET", "/v1/stream?events=1", fields))
                r = c.read_response()
            else:
                raw = json.dumps(body).encode()
                c.send(request_bytes("POST", "/v1/chat/completions", [*fields, ("Content-Type", "application/json")], raw))
                r = c.read_response("POST")
            assert r.status == 200 and r.complete, (request_id, r.status_line, r.body[:200])
            served.append(int(r.header("x-origin")))
    return served


def reload(sl, cfg, text) -> None:
    cfg.write_text(text)
    os.kill(sl.pid, signal.SIGHUP)
    sl.wait_stderr(lambda o: o.get("msg", "").startswith("SIGHUP: configuration reloaded"), 5, "the reloaded line")


def test_header_keys_stick_and_removing_a_server_moves_only_its_keys(stack, tmp_path):
    log = tmp_path / "affinity.jsonl"
    fleet = Fleet(stack, 8)
    pool = {"affinity": f"header {SESSION}"}
    cfg = write_pool_config(tmp_path / "affinity.conf", fleet.server_lines(), pool, log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    keys = [f"session-{n:03d}" for n in range(KEYS)]

    def round_(tag: str) -> dict[str, int]:
        served = sequential(sl.port, [(f"{tag}-{key}", [(SESSION, key)], None) for key in keys])
        return dict(zip(keys, served))

    first, second = round_("a"), round_("b")
    assert first == second, {k: (first[k], second[k]) for k in keys if first[k] != second[k]}
    shares = Counter(first.values())
    print(f"keys per origin: {sorted(shares.items())}")
    assert len(shares) == 8, f"some origin got no key of {KEYS}: {shares}"
    records = wait_records(log, 2 * KEYS)
    assert Counter(r["affinity"] for r in records) == {"hit": 2 * KEYS}, Counter(r["affinity"] for r in records)

    # One origin's share of the keys is binomial (sd ≈ 4.7 keys of 200) with hashes that depend on the ports, so
    # the one removed is the one with the fewest keys (at most 1/8 of them): the test is that exactly its keys move.
    removed = min(range(8), key=lambda i: (shares[i], i))
    requests_before = len(fleet[removed].seen())
    reload(sl, cfg, cfg.read_text().replace(f"    server {fleet[removed].url}\n", ""))
    third = round_("c")
    moved = {k for k in keys if third[k] != first[k]}
    print(f"removed origin {removed} ({shares[removed]} keys); {len(moved)} keys moved")
    assert moved == {k for k in keys if first[k] == removed}, \
        {k: (first[k], third[k]) for k in moved ^ {k for k in keys if first[k] == removed}}
    assert len(moved) <= (1 / 8 + 0.02) * KEYS
    assert len(fleet[removed].seen()) == requests_before, "a request reached the removed server"


def test_a_hot_key_spills_to_other_servers_instead_of_exceeding_the_bound(stack, tmp_path):
    """The hot key holds 10 streams at once, ten other keys one each: 20 streams over 8 servers. The bound of a
    server at the last choice is ceil(1.25 × (19 + 1) / 8) = 4 streams, so the hot key's server never holds more
    than 4 (without the bound it would hold all 10 and its own cold keys)."""
    log = tmp_path / "hot.jsonl"
    fleet = Fleet(stack, 8)
    cfg = write_pool_config(tmp_path / "hot.conf", fleet.server_lines(), {"affinity": f"header {SESSION}"},
                            log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    # Hot and cold alternate, the hot key first (its first stream is chosen on an idle pool: a hit on its server).
    plan = [(f"hot-{n}", "hot") if i % 2 == 0 else (f"cold-{n}", f"cold-{n}") for n in range(10) for i in range(2)]

    def one(request_id, key):
        r = fetch(sl.port, "/v1/stream?events=4&gap=300", request_id, [(SESSION, key)])
        assert r.status == 200 and r.complete, (request_id, r.status_line)

    with ThreadPoolExecutor(len(plan)) as pool:
        futures = []
        for request_id, key in plan:
            # Each waits for its predecessor to reach an origin: sluice chooses in plan order.
            futures.append(pool.submit(one, request_id, key))
            fleet.wait_seen(request_id)
        for f in futures:
            f.result()
    records = {r["request_id"]: r for r in wait_records(log, len(plan))}
    hot = [records[f"hot-{n}"] for n in range(10)]
    home = fleet.index_of(hot[0]["server"])
    print("hot key:", [(r["affinity"], fleet.index_of(r["server"])) for r in hot], "peaks:", [o.peak for o in fleet])
    assert hot[0]["affinity"] == "hit"
    assert all(r["affinity"] == "hit" and fleet.index_of(r["server"]) == home for r in hot if r["affinity"] != "spill")
    spilled = [r for r in hot if r["affinity"] == "spill"]
    assert spilled and all(fleet.index_of(r["server"]) != home for r in spilled), hot
    assert fleet[home].peak <= 4, f"the hot key's server held {fleet[home].peak} streams"
    assert max(o.peak for o in fleet) <= 4, [o.peak for o in fleet]


def conversation(seed: int, turns: int) -> list[dict]:
    """The `messages` of a conversation's turns: a 2.5 KiB system prompt of its own, then a growing exchange."""
    rng = random.Random(seed)
    system = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) for _ in range(500))[:2560]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": f"question 1 of {seed}"}]
    bodies = []
    for turn in range(turns):
        bodies.append({"model": "m", "messages": list(messages)})
        messages += [{"role": "assistant", "content": f"answer {turn + 1}"},
                     {"role": "user", "content": f"question {turn + 2} of {seed}"}]
    return bodies


def test_prompt_key_keeps_a_conversation_on_one_server(stack, tmp_path):
    """`affinity prompt 2k`: the three turns of a conversation share their first 2 KiB of `messages` (its system
    prompt) and land on one server; six conversations with different system prompts hash apart (over 8 servers
    the chance that six land on one is 8^-5)."""
    log = tmp_path / "prompt.jsonl"
    fleet = Fleet(stack, 8)
    cfg = write_pool_config(tmp_path / "prompt.conf", fleet.server_lines(), {"affinity": "prompt 2k"},
                            log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    convs = {seed: conversation(seed, 3) for seed in range(6)}
    for bodies in convs.values():
        assert all(json.dumps(b["messages"])[:2048] == json.dumps(bodies[0]["messages"])[:2048] for b in bodies)
    served = sequential(sl.port, [(f"conv{seed}-turn{t}", [], body) for seed, bodies in convs.items()
                                  for t, body in enumerate(bodies)])
    where = {seed: served[3 * i: 3 * i + 3] for i, seed in enumerate(convs)}
    print("conversation -> origins of its turns:", where)
    assert all(len(set(turns)) == 1 for turns in where.values()), where
    assert len({turns[0] for turns in where.values()}) >= 2, where
    records = wait_records(log, len(served))
    assert all(r["affinity"] == "hit" for r in records), [(r["request_id"], r["affinity"]) for r in records]


def test_json_user_key_keeps_a_user_on_one_server(stack, tmp_path):
    """`affinity json user`: three requests of each of eight users (other fields changing) land on the user's
    server; a request without `user` is balanced (`affinity` none)."""
    log = tmp_path / "user.jsonl"
    fleet = Fleet(stack, 8)
    cfg = write_pool_config(tmp_path / "user.conf", fleet.server_lines(), {"affinity": "json user"},
                            log=log_config(log))
    sl = stack.sluice(["--config", str(cfg)])
    users = [f"user-{n}" for n in range(8)]
    plan = [(f"{u}-{t}", [], {"model": "m", "messages": [{"role": "user", "content": f"turn {t}"}], "user": u})
            for t in range(3) for u in users]
    plan.append(("anonymous", [], {"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    served = dict(zip([p[0] for p in plan], sequential(sl.port, plan)))
    per_user = {u: {served[f"{u}-{t}"] for t in range(3)} for u in users}
    print("user -> origins:", per_user)
    assert all(len(origins) == 1 for origins in per_user.values()), per_user
    assert len(set().union(*per_user.values())) >= 2, per_user
    records = {r["request_id"]: r for r in wait_records(log, len(plan))}
    assert all(records[p[0]]["affinity"] == "hit" for p in plan[:-1]), records
    assert records["anonymous"]["affinity"] == "none", records["anonymous"]
