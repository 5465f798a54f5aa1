#!/usr/bin/env python3
"""Turns bench/run.sh's measurements into bench/results/latest.md.

Input: one JSON object per measurement (--raw, written by run.sh: the /proc deltas
around one load-generator or wrk run, plus that tool's own JSON) and the run's
metadata (--meta). Output: markdown on stdout. Every cell is the median over runs
with the spread (min-max) in brackets; ratios are sluice/nginx of the medians.
Standard library only, so it runs wherever run.sh does.
"""
import argparse
import json
import statistics

TARGETS = ["direct", "nginx", "sluice"]
SATURATED_PCT = 90.0  # a core busy this share of the run's wall time counts as saturated


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def by_target(rows, scenario):
    out = {t: [] for t in TARGETS}
    for r in rows:
        if r["scenario"] == scenario:
            out[r["target"]].append(r)
    for t in out:
        out[t].sort(key=lambda r: r["run"])
    return out


def fmt(v, digits=None):
    if v is None:
        return "—"
    if digits is None:
        a = abs(v)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2
    return f"{v:,.{digits}f}"


def cell(values, digits=None):
    """Median and (min-max) spread of one metric over the runs."""
    values = [v for v in values if v is not None]
    if not values:
        return "—", None
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits), med
    return f"{fmt(med, digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})", med


def ratio(s, n):
    # A ratio to a zero or negative baseline (an added latency below direct's) says nothing.
    if s is None or n is None or n <= 0:
        return None
    return s / n


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}"


class Table:
    def __init__(self, title, note=None):
        self.title, self.note = title, note
        self.rows = []

    def add(self, label, values_by_target, digits=None, target_rule=None, with_ratio=True):
        """values_by_target: target -> list of per-run values (or None: not applicable).
        target_rule: (text, predicate(sluice median, nginx median)) from the issue."""
        cells, meds = [], {}
        for t in TARGETS:
            vals = values_by_target.get(t)
            if vals is None:
                cells.append("—")
                meds[t] = None
            else:
                c, m = cell(vals, digits)
                cells.append(c)
                meds[t] = m
        r = ratio(meds["sluice"], meds["nginx"]) if with_ratio else None
        goal = ""
        if target_rule:
            text, pred = target_rule
            if meds["sluice"] is None or meds["nginx"] is None:
                goal = text
            else:
                goal = f"{text}: {'met' if pred(meds['sluice'], meds['nginx']) else '**missed**'}"
        self.rows.append([label] + cells + [fmt_ratio(r) if with_ratio else "", goal])
        return meds, r

    def add_text(self, label, texts):
        self.rows.append([label] + [texts.get(t, "—") for t in TARGETS] + ["", ""])

    def render(self):
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out.append("| | direct | nginx | sluice | sluice/nginx | issue target |")
        out.append("|---|---|---|---|---|---|")
        for row in self.rows:
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        return "\n".join(out)


def load_cpu_pct(r):
    """CPU of the load side (load generator or wrk, plus origin) as % of the run's wall time."""
    if "loadgen" in r:
        lg = r["loadgen"]
        own = lg["cpu_user_s"] + lg["cpu_sys_s"]
    else:
        own = r.get("wrk_cpu_s", 0.0)
    return 100.0 * (own + r["origin_cpu_us"] / 1e6) / r["wall_s"]


def core0_pct(r):
    """How busy the load side's core was: the larger of /proc/stat's view of CPU 0 (which
    samples at timer ticks and so misses short bursts on a mostly idle core) and the exact
    CPU time of the processes pinned there (which misses interrupt work not charged to them)."""
    return max(r["core0_busy_pct"], load_cpu_pct(r))


def saturation_text(runs):
    if not runs:
        return "—"
    busy = [core0_pct(r) for r in runs]
    n_sat = sum(1 for b in busy if b >= SATURATED_PCT)
    word = "no" if n_sat == 0 else f"**yes** ({n_sat}/{len(runs)} runs)"
    return f"{word} ({fmt(statistics.median(busy), 0)} %)"


def add_load_rows(table, runs, proxy=True, core1=True):
    table.add("load side CPU: loadgen/wrk + origin (% of wall)",
              {t: [load_cpu_pct(r) for r in runs[t]] if runs[t] else None for t in TARGETS}, 0, with_ratio=False)
    table.add_text(f"load core 0 saturated (≥ {SATURATED_PCT:.0f} % busy)?", {t: saturation_text(runs[t]) for t in TARGETS})
    if proxy:
        table.add("proxy CPU (% of core 1)",
                  {t: [100.0 * r["proxy_cpu_us"] / 1e6 / r["wall_s"] for r in runs[t]] if t != "direct" and runs[t] else None
                   for t in TARGETS}, 0)
        # /proc/stat samples at timer ticks: right for a saturated core, misleading for a
        # core that wakes briefly thousands of times a second (scenario a), so optional.
        if core1:
            table.add("core 1 busy incl. softirq (%)",
                      {t: [r["core1_busy_pct"] for r in runs[t]] if t != "direct" and runs[t] else None
                       for t in TARGETS}, 0)


def add_per_read_row(table, runs):
    table.add("events per client read", {t: [lg(r, "events_per_read") for r in runs[t]] if runs[t] else None
                                         for t in TARGETS}, 2, with_ratio=False)


def per_run_text(table, label, runs, value):
    table.add_text(label, {t: ", ".join(fmt(value(r)) for r in runs[t]) for t in TARGETS if runs[t] and t != "direct"})


def errors_of(r):
    if "loadgen" in r:
        return r["loadgen"]["errors"]["total"]
    w = r["wrk"]
    return w["socket_errors"] + w["non2xx"]


def add_error_row(table, runs):
    texts = {}
    for t in TARGETS:
        if runs[t]:
            errs = [errors_of(r) for r in runs[t]]
            texts[t] = str(sum(errs)) if sum(errs) == 0 else f"**{sum(errs)}**"
    table.add_text("errors (all runs)", texts)


def lg(r, *keys):
    v = r["loadgen"]
    for k in keys:
        v = v[k]
    return v


def linear_fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None, None, None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    icept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (icept + slope * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return slope, icept, r2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--sluice-log")
    ap.add_argument("--nginx-log")
    args = ap.parse_args()
    meta = json.load(open(args.meta))
    rows = load(args.raw)
    tables, summary, notes = [], [], []

    def summarize(scenario, metric, meds, r, rule_text, ok):
        s_med, n_med = meds.get("sluice"), meds.get("nginx")
        verdict = "—" if s_med is None or n_med is None else "met" if ok(s_med, n_med) else "**missed**"
        summary.append([scenario, metric, fmt(n_med), fmt(s_med), fmt_ratio(r), rule_text, verdict])

    # ---- a: latency -------------------------------------------------------------------
    runs = by_target(rows, "a")
    if any(runs.values()):
        a = meta["a"]
        t = Table(f"a. Latency: {a['conns']} streams × {a['events']} events, {a['interval_ms']} ms apart, "
                  f"{a['size']}-byte events",
                  "Per-event latency = receive time − send time stamped by the origin (µs). Stream starts are "
                  f"spread over one interval ({a['interval_ms']} ms) so events do not arrive in bursts. "
                  "Added latency = target − direct, computed per run (direct measured in the same run), then the median. "
                  "Measured on a warm process; the cold-start rows are the same load as the first a freshly started "
                  "target serves.")
        for p in ["p50", "p90", "p99", "max"]:
            t.add(f"latency {p} (µs)", {tg: [lg(r, "latency_us", p) for r in runs[tg]] for tg in TARGETS})
        direct = {r["run"]: r for r in runs["direct"]}
        rule = ("≤ nginx's", lambda s_, n_: s_ <= n_)
        for p in ["p50", "p90", "p99"]:
            added = {"direct": None}
            for tg in ["nginx", "sluice"]:
                added[tg] = [lg(r, "latency_us", p) - lg(direct[r["run"]], "latency_us", p)
                             for r in runs[tg] if r["run"] in direct]
            meds, rr = t.add(f"added {p} vs direct (µs)", added, target_rule=rule if p != "p99" else None)
            if p != "p99":
                summarize("a", f"added {p} latency (µs)", meds, rr, rule[0], rule[1])
        t.add("proxy CPU per event (µs)",
              {tg: [r["proxy_cpu_us"] / max(lg(r, "events"), 1) for r in runs[tg]] if tg != "direct" else None
               for tg in TARGETS}, 1)
        add_per_read_row(t, runs)
        cold = by_target(rows, "a_cold")
        if any(cold.values()):
            for p in ["p50", "p90", "p99", "max"]:
                t.add(f"cold start: latency {p} (µs)", {tg: [lg(r, "latency_us", p) for r in cold[tg]] for tg in TARGETS})
        expected = a["conns"] * a["events"]
        t.add_text("events received per run (expected)",
                   {tg: ", ".join(str(lg(r, "events")) for r in runs[tg]) + f" ({expected})" for tg in TARGETS if runs[tg]})
        add_error_row(t, runs)
        add_load_rows(t, runs, core1=False)
        tables.append(t)

    # ---- b: saturation ----------------------------------------------------------------
    runs = by_target(rows, "b")
    if any(runs.values()):
        b = meta["b"]
        t = Table(f"b. Saturation: {b['conns']} streams, interval 0, {b['size']}-byte events, {b['seconds']} s, "
                  f"{meta.get('b_runs', meta['runs'])} runs",
                  "The origin writes events as fast as the sockets take them. When the load side's core is saturated "
                  "events/s says more about the load side than about the proxy: compare CPU per event.")
        t.add("events/s", {tg: [lg(r, "events_per_s") for r in runs[tg]] for tg in TARGETS}, 0)
        t.add("MB/s of event payload", {tg: [lg(r, "mb_per_s") for r in runs[tg]] for tg in TARGETS})
        rule = ("≤ 0.80 × nginx", lambda s_, n_: s_ <= 0.8 * n_)
        per_event = {tg: [r["proxy_cpu_us"] / max(lg(r, "events"), 1) for r in runs[tg]] if tg != "direct" else None
                     for tg in TARGETS}
        meds, rr = t.add("proxy CPU per event (µs)", per_event, 3, target_rule=rule)
        summarize("b", "proxy CPU per event (µs)", meds, rr, rule[0], rule[1])
        per_run_text(t, "proxy CPU per event, each run in order (µs)", runs,
                     lambda r: r["proxy_cpu_us"] / max(lg(r, "events"), 1))
        t.add("core 1 CPU per event incl. softirq (µs)",
              {tg: [r["core1_busy_us"] / max(lg(r, "events"), 1) for r in runs[tg]] if tg != "direct" else None
               for tg in TARGETS}, 3)
        add_per_read_row(t, runs)
        per_run_text(t, "events per client read, each run in order", runs, lambda r: lg(r, "events_per_read"))
        # CPU per event falls with the events each read carries, run by run; fitting
        # cpu/event = per_event + per_read / events_per_read over the runs separates the
        # proxy's cost from the regime the run happened to settle in.
        fits = {"direct": None}
        for tg in ["nginx", "sluice"]:
            pts = [(1.0 / lg(r, "events_per_read"), r["proxy_cpu_us"] / max(lg(r, "events"), 1))
                   for r in runs[tg] if lg(r, "events_per_read") > 0]
            fits[tg] = linear_fit([x for x, _ in pts], [y for _, y in pts]) if len(pts) >= 3 else (None, None, None)
        epr_all = [lg(r, "events_per_read") for tg in ["nginx", "sluice"] for r in runs[tg]]

        def fit_usable(tg):
            # A fit needs runs in both regimes (spread in events per read) and must explain them.
            eprs = [lg(r, "events_per_read") for r in runs[tg]]
            slope, _, r2 = fits[tg]
            return slope is not None and min(eprs) > 0 and max(eprs) / min(eprs) >= 1.5 and r2 >= 0.8

        if epr_all and all(fit_usable(tg) for tg in ["nginx", "sluice"]):
            e_ref = round(statistics.median(epr_all))
            t.add("fit: proxy CPU per client read (µs)", {tg: [fits[tg][0]] if fits[tg] else None for tg in TARGETS}, 1)
            t.add("fit: proxy CPU per event beyond that (µs)", {tg: [fits[tg][1]] if fits[tg] else None for tg in TARGETS}, 2,
                  with_ratio=False)
            t.add("fit: R²", {tg: [fits[tg][2]] if fits[tg] else None for tg in TARGETS}, 3, with_ratio=False)
            t.add(f"fit: proxy CPU per event at {e_ref} events per read (µs)",
                  {tg: [fits[tg][1] + fits[tg][0] / e_ref] if fits[tg] else None for tg in TARGETS}, 3)
        elif len(epr_all) >= 6:
            t.add_text("fit: CPU per event vs events per read", {
                "nginx": "runs did not span both regimes; compare runs with similar events per read",
                "sluice": "(see nginx)"})
        for tg in ["nginx", "sluice"]:
            vals = [r["proxy_cpu_us"] / max(lg(r, "events"), 1) for r in runs[tg]]
            if len(vals) > 1 and min(vals) > 0 and max(vals) / min(vals) > 1.5:
                notes.append(f"b/{tg}: CPU per event ranges {fmt(min(vals))}–{fmt(max(vals))} µs over the runs. At "
                             "interval 0 each run settles either in event-by-event forwarding (about one event per "
                             "read, every event pays for its own wake-up, read and write) or in batched reads (queues "
                             "build up, tens of events per read); the events-per-read row tells which. The fit rows "
                             "compare the proxies at equal batching; a's CPU per event is the cost at a fixed, paced rate.")
        t.add("latency p50 (µs, queueing-dominated)", {tg: [lg(r, "latency_us", "p50") for r in runs[tg]] for tg in TARGETS})
        add_error_row(t, runs)
        add_load_rows(t, runs)
        tables.append(t)

    # ---- c: bulk ----------------------------------------------------------------------
    runs = by_target(rows, "c")
    if any(runs.values()):
        t = Table(f"c. Bulk: {meta['c_bytes'] / 2**30:g} GiB through /bytes on one connection",
                  "Content-Length body, written by the origin in 1 MiB writes and read in 1 MiB reads.")
        rule = ("≥ 2.00 × nginx", lambda s_, n_: s_ >= 2.0 * n_)
        meds, rr = t.add("throughput (MB/s)", {tg: [lg(r, "mb_per_s") for r in runs[tg]] for tg in TARGETS}, 0,
                         target_rule=rule)
        summarize("c", "bulk throughput (MB/s)", meds, rr, rule[0], rule[1])
        t.add("proxy CPU per MB (µs)", {tg: [r["proxy_cpu_us"] / (lg(r, "body_bytes") / 1e6) for r in runs[tg]]
                                         if tg != "direct" else None for tg in TARGETS})
        add_error_row(t, runs)
        add_load_rows(t, runs)
        tables.append(t)

    # ---- d: small requests ------------------------------------------------------------
    runs = by_target(rows, "d")
    if any(runs.values()):
        secs = meta["d_seconds"]
        t = Table(f"d. Small requests: wrk -t1 -c64 -d{secs}s --latency on /small",
                  None if secs >= 10 else f"**Shortened to {secs} s** (the issue says 10 s).")
        rule = ("≥ 1.00 × nginx", lambda s_, n_: s_ >= n_)
        meds, rr = t.add("requests/s", {tg: [r["wrk"]["rps"] for r in runs[tg]] for tg in TARGETS}, 0, target_rule=rule)
        summarize("d", "requests/s", meds, rr, rule[0], rule[1])
        t.add("latency p50 (µs)", {tg: [r["wrk"]["p50_us"] for r in runs[tg]] for tg in TARGETS})
        t.add("latency p99 (µs)", {tg: [r["wrk"]["p99_us"] for r in runs[tg]] for tg in TARGETS})
        t.add("proxy CPU per request (µs)",
              {tg: [r["proxy_cpu_us"] / max(r["wrk"]["requests"], 1) for r in runs[tg]] if tg != "direct" else None
               for tg in TARGETS})
        add_error_row(t, runs)
        add_load_rows(t, runs)
        tables.append(t)

    # ---- e and f (memory): held streams -----------------------------------------------
    runs = by_target(rows, "e")
    e_per_stream = {}
    f_mem = {}
    if any(runs.values()):
        t = Table(f"e. Idle: {meta['e_streams']:,} held SSE streams (fd limit {meta['nofile']:,}: two fds per stream in the proxy)",
                  "RSS per stream = (RSS with the streams held − RSS before) / streams, from VmRSS in /proc/PID/status "
                  "(nginx: its worker), read 1 s after the last stream got its response head.")
        t.add("streams held", {tg: [lg(r, "steps")[-1]["streams"] for r in runs[tg]] if runs[tg] else None
                               for tg in TARGETS}, 0, with_ratio=False)
        t.add("RSS before (MiB)", {tg: [r["rss_before_kb"] / 1024 for r in runs[tg]] if runs[tg] else None
                                   for tg in TARGETS}, 1)
        t.add("RSS with streams (MiB)", {tg: [r["rss_steps_kb"][-1] / 1024 for r in runs[tg]] if runs[tg] else None
                                         for tg in TARGETS}, 1)
        per = {}
        for tg in TARGETS:
            if runs[tg]:
                per[tg] = [(r["rss_steps_kb"][-1] - r["rss_before_kb"]) * 1024 / max(lg(r, "steps")[-1]["streams"], 1)
                           for r in runs[tg]]
            else:
                per[tg] = None
        rule = ("≤ 0.33 × nginx", lambda s_, n_: s_ <= n_ / 3)
        meds, rr = t.add("RSS per stream (bytes)", per, 0, target_rule=rule)
        e_per_stream = meds
        summarize("e", "RSS per idle stream (bytes)", meds, rr, rule[0], rule[1])
        add_error_row(t, runs)
        tables.append(t)
        # f's memory half comes from the same ramp: the RSS at each step before the last.
        for tg in TARGETS:
            if runs[tg]:
                f_mem[tg] = runs[tg]

    # ---- f: growth ----------------------------------------------------------------------
    short_runs, long_runs = by_target(rows, "f100"), by_target(rows, "f100k")
    if any(short_runs.values()) or f_mem:
        f = meta["f"]
        t = Table("f. Growth: cost per event against stream length; RSS against idle streams",
                  f"CPU per event from {f['conns']} concurrent streams, one {f['size']}-byte event every "
                  f"{f['interval_us']} µs each ({f['conns'] * 1e6 / f['interval_us']:,.0f} events/s, paced so both "
                  f"lengths are forwarded the same way): {f['short_requests']} requests of 100 events per connection "
                  f"vs one request of {f['long_events']:,} events per connection. RSS at each step of scenario e's "
                  "ramp; the slope is a least-squares fit over the steps, compared with e's per-stream value.")
        if any(short_runs.values()):
            c100 = t.add("CPU per event, 100-event streams (µs)",
                         {tg: [r["proxy_cpu_us"] / max(lg(r, "events"), 1) for r in short_runs[tg]] if tg != "direct" else None
                          for tg in TARGETS}, 3)[0]
            ck = t.add(f"CPU per event, {f['long_events']:,}-event streams (µs)",
                       {tg: [r["proxy_cpu_us"] / max(lg(r, "events"), 1) for r in long_runs[tg]] if tg != "direct" else None
                        for tg in TARGETS}, 3)[0]
            flat = {}
            for tg in ["nginx", "sluice"]:
                shorts = {r["run"]: r for r in short_runs[tg]}
                flat[tg] = [(r["proxy_cpu_us"] / max(lg(r, "events"), 1)) /
                            (shorts[r["run"]]["proxy_cpu_us"] / max(lg(shorts[r["run"]], "events"), 1))
                            for r in long_runs[tg] if r["run"] in shorts and shorts[r["run"]]["proxy_cpu_us"] > 0]
            flat["direct"] = None
            per_req = {"direct": None}
            for tg in ["nginx", "sluice"]:
                longs = {r["run"]: r for r in long_runs[tg]}
                per_req[tg] = [100 * (r["proxy_cpu_us"] / max(lg(r, "events"), 1)
                                      - longs[r["run"]]["proxy_cpu_us"] / max(lg(longs[r["run"]], "events"), 1))
                               for r in short_runs[tg] if r["run"] in longs]
            t.add("implied cost per request: 100 × (short − long) (µs)", per_req, 0)
            t.add("events per client read, 100-event / long streams",
                  {tg: [lg(r, "events_per_read") for r in short_runs[tg] + long_runs[tg]] if tg != "direct" else None
                   for tg in TARGETS}, 2, with_ratio=False)
            meds, _ = t.add("long / short cost per event", flat, 2, with_ratio=False)
            ok = meds.get("sluice") is not None and 0.9 <= meds["sluice"] <= 1.1
            t.rows[-1][-1] = "flat (0.90–1.10): " + ("—" if meds.get("sluice") is None else "met" if ok else "**missed**")
            summary.append(["f", "long/short CPU per event", fmt(meds.get("nginx")), fmt(meds.get("sluice")), "",
                            "0.90–1.10", "—" if meds.get("sluice") is None else "met" if ok else "**missed**"])
            add_error_row(t, {tg: short_runs[tg] + long_runs[tg] for tg in TARGETS})
        if f_mem:
            steps = [int(s) for s in meta["f_steps"].split(",")]
            for i, n in enumerate(steps):
                t.add(f"RSS at {n:,} idle streams (MiB)",
                      {tg: [r["rss_steps_kb"][i] / 1024 for r in f_mem[tg]] if tg in f_mem else None for tg in TARGETS}, 1)
            slopes, r2s = {}, {}
            for tg in TARGETS:
                if tg not in f_mem:
                    slopes[tg] = r2s[tg] = None
                    continue
                slopes[tg], r2s[tg] = [], []
                for r in f_mem[tg]:
                    xs = [s["streams"] for s in lg(r, "steps")[:len(steps)]]
                    ys = [kb * 1024 for kb in r["rss_steps_kb"][:len(steps)]]
                    s, _, r2 = linear_fit(xs, ys)
                    slopes[tg].append(s)
                    r2s[tg].append(r2)
            meds, _ = t.add("slope (bytes per stream)", slopes, 0)
            t.add("linearity R²", r2s, 4, with_ratio=False)
            rel = {tg: None for tg in TARGETS}
            for tg in ["nginx", "sluice"]:
                if meds.get(tg) is not None and e_per_stream.get(tg):
                    rel[tg] = [meds[tg] / e_per_stream[tg]]
            m2, _ = t.add("slope / e's RSS per stream", rel, 2, with_ratio=False)
            s_r2 = statistics.median(r2s["sluice"]) if r2s.get("sluice") else None
            ok = s_r2 is not None and s_r2 >= 0.99 and m2.get("sluice") is not None and 0.8 <= m2["sluice"] <= 1.2
            t.rows[-1][-1] = "linear (R² ≥ 0.99, slope within 20 % of e): " + (
                "—" if s_r2 is None else "met" if ok else "**missed**")
            summary.append(["f", "RSS slope (bytes/stream), R²", fmt(meds.get("nginx")), fmt(meds.get("sluice")),
                            fmt_ratio(ratio(meds.get("sluice"), meds.get("nginx"))),
                            "linear, slope ≈ e", "—" if s_r2 is None else "met" if ok else "**missed**"])
        tables.append(t)

    # ---- notes ------------------------------------------------------------------------------
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
        if r["scenario"] == "e":  # e weighs memory; CPU noise does not move RSS
            continue
        other = r["core1_busy_pct"] - r.get("core1_irq_pct", 0) - 100.0 * r["proxy_cpu_us"] / 1e6 / r["wall_s"]
        if other > 25:
            noisy.append(f"{r['scenario']}/{r['target']}/run {r['run']}: {other:.0f} %")
    if noisy:
        notes.append("/proc/stat shows core 1 busier than the proxy's own CPU and interrupt work by more than 25 % "
                     "of the run (another process ran there, or tick sampling erred on a bursty load) in: "
                     + "; ".join(noisy) + ".")
    for name, path in [("sluice", args.sluice_log), ("nginx", args.nginx_log)]:
        if not path:
            continue
        try:
            # nginx warns at every start that worker_connections (set to twice the fd
            # limit on purpose, see run.sh) exceed the fd limit: expected, not news.
            lines = [l.rstrip() for l in open(path)
                     if l.strip() and "exceed open file resource limit" not in l]
        except OSError:
            lines = []
        if lines:
            shown = "\n".join(f"    {l[:300]}" for l in lines[:8])
            notes.append(f"{name} logged {len(lines)} line(s) besides start/stop during the measurements; the first:\n\n{shown}\n")
    for r in rows:
        if "loadgen" in r and r["loadgen"]["errors"]["total"]:
            errs = {k: v for k, v in r["loadgen"]["errors"].items() if v and k != "total"}
            notes.append(f"Errors in {r['scenario']}/{r['target']}/run {r['run']}: {errs}.")
        if "wrk" in r and (r["wrk"]["socket_errors"] or r["wrk"]["non2xx"]):
            notes.append(f"wrk errors in d/{r['target']}/run {r['run']}: socket {r['wrk']['socket_errors']}, "
                         f"non-2xx {r['wrk']['non2xx']}.")

    # ---- output -------------------------------------------------------------------------------
    out = ["# sluice benchmark: direct vs nginx vs sluice", ""]
    if meta["quick"]:
        out += ["**Quick run** (`--quick`: 1 run, shorter durations, fewer streams): for development, not for the README.", ""]
    out += [
        f"- date: {meta['date']}; sluice {meta['sluice_commit']}",
        f"- machine: {meta['nproc']} CPUs, {meta['cpu_model']}, Linux {meta['kernel']}",
        f"- versions: nginx {meta['nginx']}; {meta['swift']}; {meta['gcc']}",
        f"- runs: {meta['runs']} per target (b: {meta.get('b_runs', meta['runs'])}), targets alternating; cells are median (min–max); "
        f"origin and load generator on CPU 0, proxy on CPU 1 (`taskset`); sluice `--workers 1`, nginx one worker",
        f"- elapsed: build {meta['build_s']} s, measurements {meta['measure_s']} s, total {meta['total_s']} s",
        "- reproduce: `bench/run.sh` (see bench/README.md)",
        "",
        "## Summary against the issue's targets",
        "",
        "| scenario | metric | nginx | sluice | sluice/nginx | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in summary]
    out += ["", "## Scenarios", ""]
    out += [t.render() for t in tables]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
