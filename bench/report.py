#!/usr/bin/env python3
"""Turns bench/run.sh's measurements into bench/results/latest.md.

Input: one JSON object per measurement (--raw, written by run.sh: the /proc deltas
around one load-generator or wrk run, plus that tool's own JSON), the run's metadata
(--meta) and the folder of what each target logged (--messages). Output: markdown on
stdout. Every cell is the median over runs with the spread (min-max) in brackets; ratios
are sluice's median over the best peer's (nginx, HAProxy or Caddy, whichever is best in
that row) and over nginx's. Standard library only, so it runs wherever run.sh does.
The table machinery is in report_table.py.
"""
import argparse
import json
import os
import statistics

from report_table import (LABELS, PEERS, PROXIES, Rule, RowTable, Table, add_error_row, add_load_rows,
                          at_least_times, at_least_times_best, at_most, cell, errors_of, fmt, le_all, lg,
                          linear_fit, log_within, per_event, per_run_text, saturation_text)


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Report:
    def __init__(self, meta, rows):
        self.meta, self.rows = meta, rows
        self.targets = meta["targets"]
        self.tables, self.summary, self.notes = [], [], []

    def runs(self, scenario):
        """target -> its measurements of the scenario, by run (empty list: none)."""
        out = {t: [] for t in self.targets}
        for r in self.rows:
            if r["scenario"] == scenario and r["target"] in out:
                out[r["target"]].append(r)
        for t in out:
            out[t].sort(key=lambda r: r["run"])
        return out


def by(runs, value, targets=None):
    """target -> [value(r) for each run], for the targets that have runs."""
    return {t: [value(r) for r in rs] for t, rs in runs.items() if rs and (targets is None or t in targets)}


def proxies(runs):
    return [t for t in PROXIES if runs.get(t)]


# ---- a: latency -------------------------------------------------------------------------
def latency_table(rep):
    runs = rep.runs("a")
    if not any(runs.values()):
        return
    a = rep.meta["a"]
    t = Table(rep, "a", f"a. Latency: {a['conns']} streams × {a['events']} events, {a['interval_ms']} ms apart, "
              f"{a['size']}-byte events",
              "Per-event latency = receive time − send time stamped by the origin (µs). First byte (TTFB) = time "
              "the response's first byte was read − time the request was written. Stream starts are spread over "
              f"one interval ({a['interval_ms']} ms) so events do not arrive in bursts. Added latency = target − "
              "direct, computed per run (direct measured in the same run), then the median. Measured on a warm "
              "process; the cold-start rows are the same load as the first a freshly started target serves.")
    for p, name in [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]:
        t.add(f"latency {name} (µs)", by(runs, lambda r: lg(r, "latency_us", p)), better="lower",
              rule=at_most(2000, "≤ 2 ms") if p == "p999" else None, summary="per-event latency p99.9 (µs)")
    direct = {r["run"]: r for r in runs.get("direct", [])}
    for p in ["p50", "p90", "p99"]:
        added = {tg: [lg(r, "latency_us", p) - lg(direct[r["run"]], "latency_us", p)
                      for r in runs[tg] if r["run"] in direct] for tg in proxies(runs)}
        t.add(f"added {p} vs direct (µs)", added, better="lower", rule=le_all(["nginx", "haproxy"]),
              summary=f"added per-event latency {p} (µs)")
    for p, name in [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]:
        rule = le_all(["nginx"]) if p in ("p50", "p99") else None
        t.add(f"first byte (TTFB) {name} (µs)", by(runs, lambda r: lg(r, "ttfb_us", p)), better="lower",
              rule=rule, summary=f"first byte (TTFB) {name} (µs)")
    t.add("proxy CPU per event (µs)", by(runs, per_event, PROXIES), 1, better="lower")
    t.add("events per client read", by(runs, lambda r: lg(r, "events_per_read")), 2)
    cold = rep.runs("a_cold")
    if any(cold.values()):
        for p, name in [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]:
            t.add(f"cold start: latency {name} (µs)", by(cold, lambda r: lg(r, "latency_us", p)), better="lower")
        t.add("cold start: first byte p50 (µs)", by(cold, lambda r: lg(r, "ttfb_us", "p50")), better="lower")
    expected = a["conns"] * a["events"]
    t.add_text("events received per run (expected)",
               {tg: ", ".join(str(lg(r, "events")) for r in rs) + f" ({expected})" for tg, rs in runs.items() if rs})
    add_error_row(t, runs)
    add_load_rows(t, runs, core1=False)
    rep.tables.append(t)


# ---- b and b16: saturation ---------------------------------------------------------------
def saturation_table(rep, scenario):
    runs = rep.runs(scenario)
    if not any(runs.values()):
        return
    b = rep.meta["b"]
    if scenario == "b":
        title = f"b. Saturation: {b['conns']} streams, interval 0, {b['size']}-byte events, {b['seconds']} s"
        note = ("The origin writes events as fast as the sockets take them, one event per write. When the load "
                "side's core is saturated events/s says more about the load side than about the proxy: compare "
                "CPU per event.")
    else:
        title = (f"b16. Saturation, {b['b16_batch']} events per origin write: {b['conns']} streams, interval 0, "
                 f"{b['size']}-byte events, {b['seconds']} s")
        note = (f"b's load with {b['b16_batch']} events (each its own chunk) in every origin write, so every hop "
                "forwards batches whatever regime the run settles in (issue 15's \"16 events per upstream write\").")
    t = Table(rep, scenario, title, note)
    t.add("events/s", by(runs, lambda r: lg(r, "events_per_s")), 0, better="higher")
    t.add("MB/s of event payload", by(runs, lambda r: lg(r, "mb_per_s")), better="higher")
    meds = t.add("proxy CPU per event (µs)", by(runs, per_event, PROXIES), 3, better="lower", rule=log_within(1.1),
                 summary="proxy CPU per event (µs), completion log on vs off")
    if meds.get("sluice") and meds.get("sluice-log") is not None:
        t.add_text("sluice-log / sluice, CPU per event", {"sluice-log": f"{meds['sluice-log'] / meds['sluice']:.2f}"})
    per_run_text(t, "proxy CPU per event, each run in order (µs)", runs, per_event)
    t.add("core 1 CPU per event incl. softirq (µs)",
          by(runs, lambda r: r["core1_busy_us"] / max(lg(r, "events"), 1), PROXIES), 3, better="lower")
    t.add("events per client read", by(runs, lambda r: lg(r, "events_per_read")), 2)
    per_run_text(t, "events per client read, each run in order", runs, lambda r: lg(r, "events_per_read"))
    add_fit_rows(t, runs)
    for tg in proxies(runs):
        vals = [per_event(r) for r in runs[tg]]
        if len(vals) > 1 and min(vals) > 0 and max(vals) / min(vals) > 1.5:
            rep.notes.append(f"{scenario}/{tg}: CPU per event ranges {fmt(min(vals))}–{fmt(max(vals))} µs over the "
                             "runs. At interval 0 each run settles either in event-by-event forwarding (about one "
                             "event per read, every event pays for its own wake-up, read and write) or in batched "
                             "reads (queues build up, tens of events per read); the events-per-read row tells which. "
                             "b16 batches by design; a's CPU per event is the cost at a fixed, paced rate.")
    t.add("latency p50 (µs, queueing-dominated)", by(runs, lambda r: lg(r, "latency_us", "p50")), better="lower")
    add_error_row(t, runs)
    add_load_rows(t, runs)
    rep.tables.append(t)


def add_fit_rows(t, runs):
    """CPU per event falls with the events each read carries, run by run; fitting
    cpu/event = per_event + per_read / events_per_read over the runs separates the proxy's
    cost from the regime the run happened to settle in. Needs 3 or more runs per proxy that
    span both regimes (spread in events per read) and a fit that explains them."""
    fits = {}
    for tg in proxies(runs):
        pts = [(1.0 / lg(r, "events_per_read"), per_event(r)) for r in runs[tg] if lg(r, "events_per_read") > 0]
        if len(pts) < 3:
            continue
        eprs = [1.0 / x for x, _ in pts]
        slope, icept, r2 = linear_fit([x for x, _ in pts], [y for _, y in pts])
        if slope is not None and max(eprs) / min(eprs) >= 1.5 and r2 >= 0.8:
            fits[tg] = (slope, icept, r2)
    if "sluice" not in fits or not any(p in fits for p in PEERS):
        return
    e_ref = round(statistics.median([lg(r, "events_per_read") for tg in fits for r in runs[tg]]))
    t.add("fit: proxy CPU per client read (µs)", {tg: [f[0]] for tg, f in fits.items()}, 1, better="lower")
    t.add("fit: proxy CPU per event beyond that (µs)", {tg: [f[1]] for tg, f in fits.items()}, 2)
    t.add("fit: R²", {tg: [f[2]] for tg, f in fits.items()}, 3)
    t.add(f"fit: proxy CPU per event at {e_ref} events per read (µs)",
          {tg: [f[1] + f[0] / e_ref] for tg, f in fits.items()}, 3, better="lower")


# ---- c: bulk, d: small requests ----------------------------------------------------------
def bulk_table(rep):
    runs = rep.runs("c")
    if not any(runs.values()):
        return
    t = Table(rep, "c", f"c. Bulk: {rep.meta['c_bytes'] / 2**30:g} GiB through /bytes on one connection",
              "Content-Length body, written by the origin in 1 MiB writes and read in 1 MiB reads.")
    t.add("throughput (MB/s)", by(runs, lambda r: lg(r, "mb_per_s")), 0, better="higher",
          rule=at_least_times_best(1.1), summary="bulk throughput (MB/s)")
    t.add("proxy CPU per MB (µs)", by(runs, lambda r: r["proxy_cpu_us"] / (lg(r, "body_bytes") / 1e6), PROXIES),
          better="lower")
    add_error_row(t, runs)
    add_load_rows(t, runs)
    rep.tables.append(t)


def small_table(rep):
    runs = rep.runs("d")
    if not any(runs.values()):
        return
    secs = rep.meta["d_seconds"]
    t = Table(rep, "d", f"d. Small requests: wrk -t1 -c64 -d{secs}s --latency on /small")
    t.add("requests/s", by(runs, lambda r: r["wrk"]["rps"]), 0, better="higher", rule=at_least_times(1.1, "nginx"),
          summary="small requests/s")
    t.add("latency p50 (µs)", by(runs, lambda r: r["wrk"]["p50_us"]), better="lower")
    t.add("latency p99 (µs)", by(runs, lambda r: r["wrk"]["p99_us"]), better="lower")
    t.add("proxy CPU per request (µs)", by(runs, lambda r: r["proxy_cpu_us"] / max(r["wrk"]["requests"], 1), PROXIES),
          better="lower")
    add_error_row(t, runs)
    add_load_rows(t, runs)
    rep.tables.append(t)


# ---- e and f: held streams, growth ------------------------------------------------------
def idle_table(rep):
    runs = rep.runs("e")
    if not any(runs.values()):
        return {}, {}
    m = rep.meta
    t = Table(rep, "e", f"e. Idle: {m['e_streams']:,} held SSE streams (fd limit {m['nofile']:,}: two fds per stream "
              "in the proxy)",
              "RSS per stream = (RSS with the streams held − RSS before) / streams, from VmRSS in /proc/PID/status "
              "(nginx: its worker; HAProxy, Caddy, sluice: the process), read 1 s after the last stream got its "
              "response head.")
    t.add("streams held", by(runs, lambda r: lg(r, "steps")[-1]["streams"]), 0)
    t.add("RSS before (MiB)", by(runs, lambda r: r["rss_before_kb"] / 1024), 1, better="lower")
    t.add("RSS with streams (MiB)", by(runs, lambda r: r["rss_steps_kb"][-1] / 1024), 1, better="lower")
    per = by(runs, lambda r: (r["rss_steps_kb"][-1] - r["rss_before_kb"]) * 1024 / max(lg(r, "steps")[-1]["streams"], 1))
    meds = t.add("RSS per stream (bytes)", per, 0, better="lower", rule=at_most(3072, "≤ 3 KiB (3,072 bytes)"),
                 summary="RSS per idle stream (bytes)")
    add_error_row(t, runs)
    rep.tables.append(t)
    return meds, {tg: rs for tg, rs in runs.items() if rs}


def growth_table(rep, e_per_stream, f_mem):
    short_runs, long_runs = rep.runs("f100"), rep.runs("f100k")
    if not any(short_runs.values()) and not f_mem:
        return
    f = rep.meta["f"]
    t = Table(rep, "f", "f. Growth: cost per event against stream length; RSS against idle streams",
              f"CPU per event from {f['conns']} concurrent streams, one {f['size']}-byte event every "
              f"{f['interval_us']} µs each ({f['conns'] * 1e6 / f['interval_us']:,.0f} events/s, paced so both "
              f"lengths are forwarded the same way): {f['short_requests']} requests of 100 events per connection "
              f"vs one request of {f['long_events']:,} events per connection; measured for "
              f"{', '.join(LABELS[x] for x in rep.meta['f_targets'])} only (issue 3's question). RSS at each step of "
              "scenario e's ramp; the slope is a least-squares fit over the steps, compared with e's per-stream value. "
              "The targets in this table are the first round's (issue 3).")
    if any(short_runs.values()):
        t.add("CPU per event, 100-event streams (µs)", by(short_runs, per_event, PROXIES), 3, better="lower")
        t.add(f"CPU per event, {f['long_events']:,}-event streams (µs)", by(long_runs, per_event, PROXIES), 3,
              better="lower")
        flat, per_req = {}, {}
        for tg in proxies(short_runs):
            shorts = {r["run"]: r for r in short_runs[tg]}
            longs = {r["run"]: r for r in long_runs[tg]}
            flat[tg] = [per_event(r) / per_event(shorts[r["run"]]) for r in long_runs[tg]
                        if r["run"] in shorts and shorts[r["run"]]["proxy_cpu_us"] > 0]
            per_req[tg] = [100 * (per_event(r) - per_event(longs[r["run"]])) for r in short_runs[tg] if r["run"] in longs]
        t.add("implied cost per request: 100 × (short − long) (µs)", per_req, 0, better="lower")
        t.add("events per client read, 100-event / long streams",
              {tg: [lg(r, "events_per_read") for r in short_runs[tg] + long_runs[tg]] for tg in proxies(short_runs)}, 2)
        t.add("long / short cost per event", flat, 2,
              rule=Rule("flat (0.90–1.10; issue 3)", ["sluice"], lambda m: 0.9 <= m["sluice"] <= 1.1),
              summary="long/short CPU per event (issue 3)")
        add_error_row(t, {tg: short_runs[tg] + long_runs[tg] for tg in rep.targets})
    if f_mem:
        steps = [int(s) for s in rep.meta["f_steps"].split(",")]
        for i, n in enumerate(steps):
            t.add(f"RSS at {n:,} idle streams (MiB)", {tg: [r["rss_steps_kb"][i] / 1024 for r in rs]
                                                        for tg, rs in f_mem.items()}, 1, better="lower")
        slopes, r2s = {}, {}
        for tg, rs in f_mem.items():
            slopes[tg], r2s[tg] = [], []
            for r in rs:
                xs = [s["streams"] for s in lg(r, "steps")[:len(steps)]]
                ys = [kb * 1024 for kb in r["rss_steps_kb"][:len(steps)]]
                s, _, r2 = linear_fit(xs, ys)
                slopes[tg].append(s)
                r2s[tg].append(r2)
        meds = t.add("slope (bytes per stream)", slopes, 0, better="lower")
        r2_meds = t.add("linearity R²", r2s, 4)
        rel = {tg: [meds[tg] / e_per_stream[tg]] for tg in f_mem if meds.get(tg) is not None and e_per_stream.get(tg)}
        s_r2 = r2_meds.get("sluice")
        t.add("slope / e's RSS per stream", rel, 2,
              rule=Rule("linear (R² ≥ 0.99, slope within 20 % of e; issue 3)", ["sluice"],
                        lambda m: s_r2 is not None and s_r2 >= 0.99 and 0.8 <= m["sluice"] <= 1.2),
              summary="RSS slope / e's per stream (issue 3)")
    rep.tables.append(t)


# ---- p: server choice in an upstream pool --------------------------------------------------
def per_request(r):
    return r["proxy_cpu_us"] / max(r["wrk"]["requests"], 1)


def origins_used_text(rs):
    """How many origins did work in each run, and the busiest one's share of their CPU: shows that
    the pool's requests really spread over its servers."""
    counts = [sum(1 for us in r["origin_cpu_us_each"] if us > 0) for r in rs]
    shares = [100.0 * max(r["origin_cpu_us_each"]) / max(sum(r["origin_cpu_us_each"]), 1) for r in rs]
    count = str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
    return f"{count} (busiest {fmt(statistics.median(shares), 0)} %)"


def pool_table(rep):
    p = rep.meta.get("p")
    runs = {c: rep.runs(f"p_{c}").get("sluice", []) for c in p["configs"]} if p else {}
    if not any(runs.values()):
        return
    n = p["servers"]
    names = {"one": "1 server", "least": f"{n} servers, least_streams",
             "affinity": f"{n} servers, least_streams, affinity header x-session-id"}
    t = RowTable(f"p. Server choice: small requests through an upstream of 1 and of {n} servers (sluice)",
                 "Scenario d's load (`wrk -t1 -c64`, `/small`), each request with an `x-session-id` header from a "
                 f"fixed set of {p['sessions']:,}, through sluice with an upstream of the first origin alone, of "
                 f"{n} origins (one process each, so {n} addresses) balanced by least_streams, and the same with "
                 "affinity on the session id; one fresh process per configuration, configurations rotating with "
                 "the run. Added CPU = this configuration's proxy CPU per request − the 1-server configuration's, "
                 "taken per run (same run), then the median: what choosing among the servers costs, and what "
                 "spreading requests over more upstream connections and origins does to the proxy.",
                 ["upstream", "requests/s", "latency p50 (µs)", "latency p99 (µs)", "proxy CPU per request (µs)",
                  "added CPU per request vs 1 server (µs)", "origins used", "load core 0 saturated?", "errors",
                  "issue 16 target"])
    base = {r["run"]: per_request(r) for r in runs.get("one", [])}
    rule = at_most(2.0, "≤ 2 µs")
    for config in p["configs"]:
        rs = runs.get(config, [])
        if not rs:
            continue
        added, goal = "—", ""
        if config != "one":
            text, med = cell([per_request(r) - base[r["run"]] for r in rs if r["run"] in base], 2)
            added = text
            goal = rule.render({"sluice": med})
            rep.summary.append(("p", f"added proxy CPU per request, {names[config]} (µs)", {"sluice": med}, rule, 2))
        errors = sum(errors_of(r) for r in rs)
        t.add([names[config], cell([r["wrk"]["rps"] for r in rs], 0)[0],
               cell([r["wrk"]["p50_us"] for r in rs])[0], cell([r["wrk"]["p99_us"] for r in rs])[0],
               cell([per_request(r) for r in rs], 2)[0], added, origins_used_text(rs), saturation_text(rs),
               str(errors) if errors == 0 else f"**{errors}**", goal])
    rep.tables.append(t)


# ---- w: WebSocket tunnels ------------------------------------------------------------------
def ws_added(runs, p):
    """target -> [latency pX − direct's pX of the same run], for the proxies."""
    direct = {r["run"]: r for r in runs.get("direct", [])}
    return {tg: [lg(r, "latency_us", p) - lg(direct[r["run"]], "latency_us", p) for r in runs[tg] if r["run"] in direct]
            for tg in proxies(runs)}


def ws_tables(rep):
    w = rep.meta.get("w")
    echo, push, flood, idle = (rep.runs(s) for s in ("w_echo", "w_push", "w_flood", "w_idle"))
    if not w or not any(any(x.values()) for x in (echo, push, flood, idle)):
        return
    pace = (f"{w['conns']} tunnels, {w['size']}-byte messages, {w['rate']} a second per tunnel "
            f"({w['conns'] * w['rate']:,} a second in all, evenly spread), {w['seconds']} s")
    for runs, scenario, title, note, per in [
        (echo, "w_echo", f"w. WebSocket echo round trip: {pace}",
         "bench/ws_loadgen.c sends a masked text message stamped with its send time on each tunnel in turn; "
         "bench/ws_origin.c echoes it. Round trip = read time of the echo − send time (µs). The tunnels are "
         "opened first and the messages start once all are open. Proxy CPU per round trip covers both "
         "messages (client → origin and back).", "echoed"),
        (push, "w_push", f"w. WebSocket server push: {pace}",
         "bench/ws_origin.c sends each tunnel a text message stamped with CLOCK_MONOTONIC just before its write, "
         "one timer serving the tunnels in turn; latency = read time − send stamp (µs), the tunnel's "
         "equivalent of a's per-event latency.", "messages"),
    ]:
        if not any(runs.values()):
            continue
        t = Table(rep, "w", title, note)
        for p, name in [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]:
            t.add(f"latency {name} (µs)", by(runs, lambda r, p=p: lg(r, "latency_us", p)), better="lower")
        for p in ["p50", "p90", "p99"]:
            t.add(f"added {p} vs direct (µs)", ws_added(runs, p), better="lower")
        label = "proxy CPU per round trip (µs)" if per == "echoed" else "proxy CPU per message (µs)"
        t.add(label, by(runs, lambda r, per=per: r["proxy_cpu_us"] / max(lg(r, per), 1), PROXIES), 1, better="lower")
        t.add("messages per client read", by(runs, lambda r: lg(r, "messages_per_read")), 2)
        t.add_text("messages measured per run", {tg: ", ".join(f"{lg(r, 'latency_us', 'count'):,}" for r in rs)
                                                  for tg, rs in runs.items() if rs})
        add_error_row(t, runs)
        add_load_rows(t, runs, core1=False)
        rep.tables.append(t)
    if any(flood.values()):
        t = Table(rep, "w", f"w. WebSocket saturation: {w['flood_conns']} tunnels, the origin writing "
                  f"{w['flood_batch']} messages of {w['flood_size']} bytes per write, {w['flood_seconds']} s",
                  "bench/ws_origin.c floods each tunnel as fast as the sockets take the writes (b16's load "
                  "through a tunnel). Proxy CPU per message = the proxy's CPU over the whole load run ÷ every "
                  "message the client read.")
        t.add("messages/s", by(flood, lambda r: lg(r, "messages_per_s")), 0, better="higher")
        t.add("MB/s on the wire", by(flood, lambda r: lg(r, "mb_per_s")), better="higher")
        t.add("proxy CPU per message (µs)", by(flood, lambda r: r["proxy_cpu_us"] / max(lg(r, "messages"), 1),
                                                PROXIES), 3, better="lower")
        per_run_text(t, "proxy CPU per message, each run in order (µs)", flood,
                     lambda r: r["proxy_cpu_us"] / max(lg(r, "messages"), 1))
        t.add("proxy CPU per MB (µs)", by(flood, lambda r: r["proxy_cpu_us"] / max(lg(r, "wire_bytes") / 1e6, 1e-9),
                                          PROXIES), 0, better="lower")
        t.add("core 1 CPU per message incl. softirq (µs)",
              by(flood, lambda r: r["core1_busy_us"] / max(lg(r, "messages"), 1), PROXIES), 3, better="lower")
        t.add("messages per client read", by(flood, lambda r: lg(r, "messages_per_read")), 1)
        add_error_row(t, flood)
        add_load_rows(t, flood)
        rep.tables.append(t)
    if any(idle.values()):
        t = Table(rep, "w", f"w. Idle tunnels: {w['idle']:,} open WebSocket tunnels, nothing moving",
                  "RSS per tunnel = (RSS with the tunnels open − RSS before) / tunnels, from VmRSS (nginx: its "
                  "worker), read 1 s after the last 101 reached the client, on a fresh process (as e).")
        t.add("tunnels open", by(idle, lambda r: lg(r, "established")), 0)
        t.add("RSS before (MiB)", by(idle, lambda r: r["rss_before_kb"] / 1024), 1, better="lower")
        t.add("RSS with tunnels (MiB)", by(idle, lambda r: r["rss_kb"] / 1024), 1, better="lower")
        t.add("RSS per idle tunnel (bytes)",
              by(idle, lambda r: (r["rss_kb"] - r["rss_before_kb"]) * 1024 / max(lg(r, "established"), 1)), 0,
              better="lower")
        t.add("time to open them all (ms)", by(idle, lambda r: lg(r, "open_s") * 1000), 0, better="lower")
        add_error_row(t, idle)
        rep.tables.append(t)


# ---- notes --------------------------------------------------------------------------------
# What a target logs at every start, or by design of the setup, is not news.
EXPECTED_LOG = {
    # nginx warns that worker_connections (twice the fd limit on purpose, see targets.sh)
    # exceed the fd limit.
    "nginx": ["exceed open file resource limit"],
    # Caddy logs the first at start, before its config's `level ERROR` applies; the second
    # when the load generator closes a stream that has not ended (b's and b16's endless
    # streams at the end of a run, e's held streams); the third when a stop outlasts its
    # 1 s grace period.
    "caddy": ['"msg":"using provided configuration"', '"msg":"aborting with incomplete response"',
              '"msg":"server shutdown"'],
}


def add_notes(rep, messages):
    meta, rows, notes = rep.meta, rep.rows, rep.notes
    idle0, idle1 = meta["idle_busy_pct"]
    if max(idle0, idle1) > 10:
        notes.append(f"**The machine was not idle before the run**: core 0 {idle0} %, core 1 {idle1} % busy "
                     "over 2 s with nothing of ours running. Other work competes with the targets; treat the numbers "
                     "with care and rerun on a quiet machine.")
    busy_start = [f"{r['scenario']}/{r['target']}/run {r['run']} ({r['pre_busy_pct']} %)"
                  for r in rows if r.get("pre_busy_pct", 0) >= 15]
    if busy_start:
        notes.append("Measurements that started while other work kept a core ≥ 15 % busy (run.sh waited as long "
                     "as its budget allowed): " + "; ".join(busy_start) + ".")
    noisy = []
    for r in rows:
        if r["scenario"] in ("e", "w_idle"):  # these weigh memory; CPU noise does not move RSS
            continue
        other = r["core1_busy_pct"] - r.get("core1_irq_pct", 0) - 100.0 * r["proxy_cpu_us"] / 1e6 / r["wall_s"]
        if other > 25:
            noisy.append(f"{r['scenario']}/{r['target']}/run {r['run']}: {other:.0f} %")
    if noisy:
        notes.append("/proc/stat shows core 1 busier than the proxy's own CPU and interrupt work by more than 25 % "
                     "of the run (another process ran there, or tick sampling erred on a bursty load) in: "
                     + "; ".join(noisy) + ".")
    for tg in rep.targets:
        path = os.path.join(messages, f"{tg}.log") if messages else None
        try:
            with open(path) as f:
                lines = [ln.rstrip() for ln in f if ln.strip()
                         and not any(x in ln for x in EXPECTED_LOG.get(tg, []))]
        except (OSError, TypeError):
            lines = []
        if lines:
            shown = "\n".join(f"    {ln[:300]}" for ln in lines[:8])
            notes.append(f"{LABELS[tg]} logged {len(lines)} line(s) besides start/stop during the measurements; "
                         f"the first:\n\n{shown}\n")
    try:
        with open(os.path.join(messages, "w-skipped.log")) as f:
            notes.extend(ln.strip() for ln in f if ln.strip())
    except (OSError, TypeError):
        pass
    # Audit mode is only measured if sluice-log really wrote records: say how many.
    try:
        with open(os.path.join(messages, "sluice-log-records.tsv")) as f:
            counts = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    except (OSError, TypeError):
        counts = []
    if counts:
        text = "; ".join(f"{s} run {r}: {n if int(n) > 0 else f'**{n}**'}" for s, r, n in counts)
        notes.append(f"Completion records sluice-log wrote to its file, per measurement (incl. warm-up and checks): {text}.")
    for r in rows:
        if "loadgen" in r and r["loadgen"]["errors"]["total"]:
            errs = {k: v for k, v in r["loadgen"]["errors"].items() if v and k != "total"}
            notes.append(f"Errors in {r['scenario']}/{r['target']}/run {r['run']}: {errs}.")
        if "wrk" in r and (r["wrk"]["socket_errors"] or r["wrk"]["non2xx"]):
            notes.append(f"wrk errors in {r['scenario']}/{r['target']}/run {r['run']}: socket {r['wrk']['socket_errors']}, "
                         f"non-2xx {r['wrk']['non2xx']}.")


# ---- output -------------------------------------------------------------------------------
def render(rep):
    m = rep.meta
    names = ", ".join(LABELS[t] for t in rep.targets)
    out = [f"# sluice benchmark: {names}", ""]
    if m["quick"]:
        out += ["**Quick run** (`--quick`: 1 run, shorter durations, fewer streams): for development, not for the README.", ""]
    versions = "; ".join(f"{m[k]}" for k in ["nginx", "haproxy", "caddy"] if m.get(k) and m[k] != "—")
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in m.get("scenario_s", {}).items())
    pool_runs = f", {m['p']['runs']} for p" if any(r["scenario"].startswith("p_") for r in rep.rows) else ""
    out += [
        f"- date: {m['date']}; sluice {m['sluice_commit']}",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}",
        f"- versions: {versions + '; ' if versions else ''}{m['swift']}; {m['gcc']}",
        f"- runs: {m['runs']} per target ({m.get('noisy_runs', m['runs'])} for a, b and b16{pool_runs}), targets alternating; cells are median (min–max); origin and load generator "
        "on CPU 0, proxy on CPU 1 (`taskset`), one worker or thread each; `sluice / best peer` is sluice's median "
        "over the best of nginx, HAProxy and Caddy in that row (named in brackets)",
        f"- elapsed: build {m['build_s']} s, measurements {m['measure_s']} s ({secs}), total {m['total_s']} s",
        "- reproduce: `bench/run.sh` (see bench/README.md)",
        "",
        "## Summary against the issue's targets",
        "",
        "| scenario | metric | " + " | ".join(LABELS[t] for t in rep.targets if t != "direct") + " | target | |",
        "|---|---|" + "---|" * len([t for t in rep.targets if t != "direct"]) + "---|---|",
    ]
    for scenario, metric, meds, rule, digits in rep.summary:
        cells = [fmt(meds.get(t), digits) for t in rep.targets if t != "direct"]
        out.append("| " + " | ".join([scenario, metric] + cells + [rule.text + (rule.detail(meds) if rule.detail and
                   rule.verdict(meds) != "—" else ""), rule.verdict(meds)]) + " |")
    out += ["", "## Scenarios", ""]
    out += [t.render() for t in rep.tables]
    if rep.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--messages", help="folder with TARGET.log (what each target logged) and sluice-log-records.tsv")
    args = ap.parse_args()
    with open(args.meta) as f:
        meta = json.load(f)
    rep = Report(meta, load(args.raw))
    latency_table(rep)
    saturation_table(rep, "b")
    saturation_table(rep, "b16")
    bulk_table(rep)
    small_table(rep)
    e_per_stream, f_mem = idle_table(rep)
    growth_table(rep, e_per_stream, f_mem)
    pool_table(rep)
    ws_tables(rep)
    add_notes(rep, args.messages)
    print(render(rep))


if __name__ == "__main__":
    main()
