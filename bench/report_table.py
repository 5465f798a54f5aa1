"""The table machinery of bench/report.py: cells (median and spread over runs), ratios
against the best peer and nginx, issue targets as rules, and the rows every scenario
shares (load side, errors). Standard library only.
"""
import statistics

LABELS = {"direct": "direct", "nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy",
          "sluice": "sluice", "sluice-log": "sluice-log"}
PEERS = ["nginx", "haproxy", "caddy"]
PROXIES = ["nginx", "haproxy", "caddy", "sluice", "sluice-log"]
SATURATED_PCT = 90.0  # a core busy this share of the run's wall time counts as saturated


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


def best_peer(meds, better):
    """(name, median) of the best of nginx, HAProxy and Caddy in this row, or (None, None).
    The best may be zero or negative (an added latency below direct's); ratio() then gives None."""
    have = [(meds[p], p) for p in PEERS if meds.get(p) is not None]
    if not have:
        return None, None
    v, p = min(have) if better == "lower" else max(have)
    return p, v


class Rule:
    """One of the issue's targets: `ok(meds)` decides it from the row's medians once every
    target in `needs` has one; `detail(meds)` may add the number it turned on."""

    def __init__(self, text, needs, ok, detail=None):
        self.text, self.needs, self.ok, self.detail = text, needs, ok, detail

    def verdict(self, meds):
        if any(meds.get(t) is None for t in self.needs):
            return "—"
        return "met" if self.ok(meds) else "**not met**"

    def render(self, meds):
        extra = self.detail(meds) if self.detail and all(meds.get(t) is not None for t in self.needs) else ""
        return f"{self.text}{extra}: {self.verdict(meds)}"


def le_all(peers):
    names = " and ≤ ".join(f"{LABELS[p]}'s" for p in peers)
    return Rule(f"≤ {names}", ["sluice"] + peers, lambda m: all(m["sluice"] <= m[p] for p in peers))


def at_most(limit, text):
    return Rule(text, ["sluice"], lambda m: m["sluice"] <= limit)


def at_least_times(factor, peer):
    return Rule(f"≥ {factor:.1f} × {LABELS[peer]}", ["sluice", peer], lambda m: m["sluice"] >= factor * m[peer])


def at_least_times_best(factor):
    def ok(m):
        _, best = best_peer(m, "higher")
        return best is not None and m["sluice"] >= factor * best
    return Rule(f"≥ {factor:.1f} × best peer", ["sluice"], ok)


def log_within(factor):
    return Rule(f"sluice-log ≤ {factor:.1f} × sluice", ["sluice", "sluice-log"],
                lambda m: m["sluice-log"] <= factor * m["sluice"],
                lambda m: f" ({m['sluice-log'] / m['sluice']:.2f})" if m["sluice"] > 0 else "")


class Table:
    """One scenario's table. Columns: the run's targets, sluice's ratio to the best peer
    and to nginx (rows with a direction only), and the issue's target for the row."""

    def __init__(self, report, scenario, title, note=None):
        self.report, self.scenario, self.title, self.note = report, scenario, title, note
        self.targets = report.targets
        self.rows = []

    def add(self, label, values_by_target, digits=None, better=None, rule=None, summary=None):
        """values_by_target: target -> list of per-run values (None or absent: not measured).
        better: "lower" or "higher" for rows worth a ratio. rule: a Rule from the issue;
        summary: the metric's name in the summary table (defaults to the label)."""
        cells, meds = [], {}
        for t in self.targets:
            vals = values_by_target.get(t)
            if vals is None:
                cells.append("—")
                meds[t] = None
            else:
                c, m = cell(vals, digits)
                cells.append(c)
                meds[t] = m
        ratios = ["", ""]
        if better:
            peer, best = best_peer(meds, better)
            r = ratio(meds.get("sluice"), best)
            ratios = [f"{fmt_ratio(r)} ({LABELS[peer]})" if r is not None
                      else f"— ({LABELS[peer]} at {fmt(best)})" if peer and meds.get("sluice") is not None else "—",
                      fmt_ratio(ratio(meds.get("sluice"), meds.get("nginx")))]
        goal = rule.render(meds) if rule else ""
        self.rows.append([label] + cells + ratios + [goal])
        if rule:
            self.report.summary.append((self.scenario, summary or label, meds, rule, digits))
        return meds

    def add_text(self, label, texts, goal=""):
        self.rows.append([label] + [texts.get(t, "—") for t in self.targets] + ["", "", goal])

    def render(self):
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out.append("| | " + " | ".join(LABELS[t] for t in self.targets)
                   + " | sluice / best peer | sluice / nginx | issue 15 target |")
        out.append("|---" * (len(self.targets) + 4) + "|")
        for row in self.rows:
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        return "\n".join(out)


class RowTable:
    """A table of one target's configurations (scenario p): a row per configuration, a column per
    metric, cells already formatted (median and spread, as `cell` gives them)."""

    def __init__(self, title, note, header):
        self.title, self.note, self.header = title, note, header
        self.rows = []

    def add(self, cells):
        self.rows.append(cells)

    def render(self):
        out = [f"### {self.title}", "", self.note, "", "| " + " | ".join(self.header) + " |",
               "|---" * len(self.header) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in self.rows]
        out.append("")
        return "\n".join(out)


def lg(r, *keys):
    v = r["loadgen"]
    for k in keys:
        v = v[k]
    return v


def per_event(r):
    return r["proxy_cpu_us"] / max(lg(r, "events"), 1)


def load_cpu_pct(r):
    """CPU of the load side (load generator or wrk, plus origin) as % of the run's wall time."""
    own = lg(r, "cpu_user_s") + lg(r, "cpu_sys_s") if "loadgen" in r else r.get("wrk_cpu_s", 0.0)
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


def add_load_rows(table, runs, core1=True):
    ts = table.targets
    table.add("load side CPU: loadgen/wrk + origin (% of wall)",
              {t: [load_cpu_pct(r) for r in runs[t]] for t in ts if runs.get(t)}, 0)
    table.add_text(f"load core 0 saturated (≥ {SATURATED_PCT:.0f} % busy)?",
                   {t: saturation_text(runs[t]) for t in ts if runs.get(t)})
    table.add("proxy CPU (% of core 1)",
              {t: [100.0 * r["proxy_cpu_us"] / 1e6 / r["wall_s"] for r in runs[t]]
               for t in ts if t != "direct" and runs.get(t)}, 0)
    # /proc/stat samples at timer ticks: right for a saturated core, misleading for a
    # core that wakes briefly thousands of times a second (scenario a), so optional.
    if core1:
        table.add("core 1 busy incl. softirq (%)",
                  {t: [r["core1_busy_pct"] for r in runs[t]] for t in ts if t != "direct" and runs.get(t)}, 0)


def errors_of(r):
    if "loadgen" in r:
        return r["loadgen"]["errors"]["total"]
    w = r["wrk"]
    return w["socket_errors"] + w["non2xx"]


def add_error_row(table, runs):
    texts = {}
    for t in table.targets:
        if runs.get(t):
            n = sum(errors_of(r) for r in runs[t])
            texts[t] = str(n) if n == 0 else f"**{n}**"
    table.add_text("errors (all runs)", texts)


def per_run_text(table, label, runs, value):
    table.add_text(label, {t: ", ".join(fmt(value(r)) for r in runs[t])
                           for t in table.targets if runs.get(t) and t != "direct"})


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
