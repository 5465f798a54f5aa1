"""deploy/kubernetes/monitoring/: the Prometheus Operator objects (ServiceMonitor, PrometheusRule) and the
metrics Services they need.

kubernetes-validate has no schemas for the operator's CRDs offline, so the CRD objects are checked here:
the fields the operator reads (an unknown field fails here: the CRD's structural schema would prune it, and
the setting would silently vanish), the ServiceMonitor's selector against the Services and pods of the layouts,
and every PromQL expression against what a running sluice really serves at /metrics (metric names, label
names, label values). With promtool (Debian's `prometheus` package; .ci/run installs it), the rules are
also checked by `promtool check rules` and unit-tested by `promtool test rules` on synthetic series:
each alert fires on a failing deployment and stays quiet on a healthy one."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sluice_proc import REPO

KUBE = REPO / "deploy" / "kubernetes"
MONITORING = KUBE / "monitoring"
#: Kubernetes Service discovery adds these to every scraped series (the ServiceMonitor's jobLabel makes
#: `job` the pods' app.kubernetes.io/name); alerts may group by them although sluice does not export them.
TARGET_LABELS = {"namespace", "job", "pod", "service", "endpoint", "instance", "container"}
SEVERITIES = {"critical", "warning", "info"}

# The fields of monitoring.coreos.com/v1 the operator reads, as far as these files use them; anything
# else is a typo here (the CRD's structural schema would prune it, and the setting would silently vanish).
SERVICE_MONITOR_SPEC = {"jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "namespaceSelector",
                        "sampleLimit", "targetLimit", "attachMetadata", "scrapeClass"}
SERVICE_MONITOR_ENDPOINT = {"port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
                            "tlsConfig", "authorization", "basicAuth", "honorLabels", "honorTimestamps",
                            "metricRelabelings", "relabelings", "followRedirects", "enableHttp2", "filterRunning"}
RULE_GROUP = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset"}
ALERT_RULE = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomization_resources(directory: Path) -> list[dict]:
    """The objects a kustomization lists (files only; directories and components recursively)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = []
    for entry in kust.get("resources", []) + kust.get("components", []):
        target = directory / entry
        docs += _kustomization_resources(target) if target.is_dir() else _load(target)
    return docs


def _with_monitoring() -> list[dict]:
    """Every object of deploy/kubernetes with the monitoring component enabled."""
    return _kustomization_resources(KUBE) + _kustomization_resources(MONITORING)


def _one(kind: str) -> dict:
    [doc] = [d for d in _load(MONITORING / {"ServiceMonitor": "servicemonitor.yaml",
                                            "PrometheusRule": "prometheusrule.yaml"}[kind]) if d["kind"] == kind]
    return doc


def _matches(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a label set."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# --- ServiceMonitor ---------------------------------------------------------------------------------


def test_service_monitor_has_the_fields_the_operator_requires():
    sm = _one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert sm["metadata"]["name"] and isinstance(sm["metadata"].get("labels", {}), dict)
    spec = sm["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC, f"unknown ServiceMonitor fields: {set(spec) - SERVICE_MONITOR_SPEC}"
    assert spec["selector"].get("matchLabels") or spec["selector"].get("matchExpressions"), \
        "an empty selector scrapes every Service in the namespace"
    assert spec["endpoints"], "no endpoints: nothing is scraped"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT, \
            f"unknown endpoint fields: {set(endpoint) - SERVICE_MONITOR_ENDPOINT}"
        assert endpoint["path"] == "/metrics"
        assert endpoint.get("scheme", "http") == "http", "the admin listener is plain HTTP"
        assert isinstance(endpoint["port"], str), "a port name, as on the Service"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"\d+(ms|s|m)", endpoint[key]), f"{key}: {endpoint[key]!r} is not a duration"
        seconds = {k: int(re.match(r"\d+", endpoint[k]).group()) * {"ms": 0.001, "s": 1, "m": 60}[
            re.search(r"[a-z]+$", endpoint[k]).group()] for k in ("interval", "scrapeTimeout")}
        assert seconds["scrapeTimeout"] <= seconds["interval"], "Prometheus refuses a timeout above the interval"


def test_service_monitor_selects_the_admin_port_of_every_layout():
    """The selector matches Services (and only ones with the endpoint's port); each such Service selects
    a Deployment's pods, its port targets the sluice container's named admin port, and that is the port
    the layout's embedded config gives the admin listener and its prometheus.io annotations name."""
    sm = _one("ServiceMonitor")
    docs = _with_monitoring()
    services = [d for d in docs if d["kind"] == "Service"]
    selected = [s for s in services if _matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert selected, "the ServiceMonitor's selector matches no Service"
    port_names = {e["port"] for e in sm["spec"]["endpoints"]}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    covered = set()
    for service in selected:
        name = service["metadata"]["name"]
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert port_names <= set(ports), f"Service {name} has no port {port_names - set(ports)}"
        [deployment] = [d for d in deployments
                        if _matches({"matchLabels": service["spec"]["selector"]},
                                    d["spec"]["template"]["metadata"]["labels"])]
        template = deployment["spec"]["template"]
        sluice = next(c for c in template["spec"]["containers"] if c["name"] == "sluice")
        container_ports = {p["name"]: p["containerPort"] for p in sluice["ports"]}
        for port_name in port_names:
            target = ports[port_name]["targetPort"]
            number = container_ports[target] if isinstance(target, str) else target
            assert number in container_ports.values(), f"Service {name}: targetPort {target} is no sluice port"
            [config] = [d["data"]["proxy.conf"] for d in docs if d["kind"] == "ConfigMap"
                        and d["metadata"]["name"] in {v["configMap"]["name"] for v in template["spec"]["volumes"]
                                                      if "configMap" in v}]
            admin = re.search(r"^\s*admin \{\s*\n\s*listen (\S+)", config, re.M).group(1)
            assert admin.rsplit(":", 1)[1] == str(number), f"{name}: the admin listener is on {admin}, not {number}"
            assert template["metadata"]["annotations"]["prometheus.io/port"] == str(number)
        covered.add(deployment["metadata"]["name"])
    # Every layout of deploy/kubernetes is scraped.
    assert covered == {d["metadata"]["name"] for d in deployments}


def test_metrics_services_validate_strictly():
    result = subprocess.run(["kubernetes-validate", "--strict", "--kubernetes-version", "1.37.0",
                             str(MONITORING / "metrics-services.yaml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- PrometheusRule: structure ----------------------------------------------------------------------


def _rules() -> list[dict]:
    return [rule for group in _one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def test_prometheus_rule_has_the_fields_the_operator_requires():
    pr = _one("PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pr) == {"apiVersion", "kind", "metadata", "spec"} and set(pr["spec"]) == {"groups"}
    assert pr["metadata"]["name"]
    names = set()
    for group in pr["spec"]["groups"]:
        assert set(group) <= RULE_GROUP, f"unknown group fields: {set(group) - RULE_GROUP}"
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= ALERT_RULE, f"{rule.get('alert')}: unknown fields {set(rule) - ALERT_RULE}"
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
            assert rule["alert"] not in names, f"{rule['alert']} twice"
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"\d+[smh]", str(rule["for"])), f"{rule['alert']}: for {rule['for']!r}"
            assert rule["labels"]["severity"] in SEVERITIES
            assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip()
    # The four the operations docs promise.
    assert names == {"SluiceTTFTHigh", "SluiceHigh5xxRatio", "SluiceCompletionLogDropping", "SluiceAllUpstreamsFailing"}


def test_all_upstreams_alert_says_what_it_measures():
    """No per-server health metric exists yet: the annotation must say it measures exchange outcomes,
    and the file must say where the alert is going (a health gauge once pools land)."""
    [rule] = [r for r in _rules() if r["alert"] == "SluiceAllUpstreamsFailing"]
    description = " ".join(rule["annotations"]["description"].split())
    assert "sluice_exchanges_total" in description and "not a health check" in description
    text = (MONITORING / "prometheusrule.yaml").read_text()
    comments = " ".join(line.strip().lstrip("#").strip() for line in text.splitlines() if line.strip().startswith("#"))
    assert "per-server health gauge when upstream pools" in comments, "the comment about moving to a health gauge"


# --- PromQL against what sluice exports ---------------------------------------------------------------

#: PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "atan2", "inf", "nan"}
#: Aggregation operators, which may take their `by (...)` clause before the parenthesis.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                "topk", "quantile", "limitk", "limit_ratio"}
TOKEN = re.compile(r'''
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<matchers>\{[^{}]*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d[\d.]*(?:e[+-]?\d+)?(?:(?:ms|[smhdwy])\d*)*)  # 0.95, 1e3, and offset's 5m
  | (?P<word>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<other>\S)
''', re.X)
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _selectors(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], list[str]]:
    """The vector selectors of a PromQL expression: (metric name, [(label, op, value)]), and the label
    names its `by`/`without`/`on`/`ignoring`/`group_*` clauses use."""
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr)]
    selectors, grouping = [], []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "word" and text in KEYWORDS and text not in {"and", "or", "unless", "bool", "offset"}:
            if following[1] == "(":  # a label list: up to the closing parenthesis
                j = i + 2
                while tokens[j][1] != ")":
                    if tokens[j][0] == "word":
                        grouping.append(tokens[j][1])
                    j += 1
                i = j + 1
                continue
        elif kind == "word" and text not in KEYWORDS and following[1] != "(" \
                and not (text in AGGREGATIONS and following[1] in ("by", "without")):
            matchers = []
            if following[0] == "matchers":
                body = following[1][1:-1]
                matchers = [(m.group(1), m.group(2), m.group(3)) for m in MATCHER.finditer(body)]
                assert "".join(m.group() for m in MATCHER.finditer(body)).strip() == body.strip(), \
                    f"matchers not understood: {body!r}"
                i += 1
            selectors.append((text, matchers))
        elif kind == "matchers":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        i += 1
    return selectors, grouping


def test_selector_parser_finds_what_it_should():
    """The parser the next test relies on, on the shapes the rules use (so that it cannot pass by
    finding nothing)."""
    sel, grouping = _selectors('histogram_quantile(0.95, sum by (namespace, le) (rate(a_bucket{x="1", y=~"p|q"}[5m]))) '
                               '> 2 and on (job) b unless ignoring(pod) c offset 5m')
    assert sel == [("a_bucket", [("x", "=", "1"), ("y", "=~", "p|q")]), ("b", []), ("c", [])]
    assert grouping == ["namespace", "le", "job", "pod"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, list[dict]]:
    """What a real sluice serves at /metrics after one streamed exchange: sample name → label sets.
    `sluice demo` (its mock backend behind sluice) with an admin listener."""
    from sluice_proc import Sluice
    demo = Sluice(["demo", "--listen", "127.0.0.1:0", "--workers", "1", "--admin", "127.0.0.1:0"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"model": "sluice-demo", "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]}))
        response = conn.getresponse()
        assert response.status == 200 and b"data: [DONE]" in response.read()
        conn.close()
        status, _, body = demo.scrape()
        assert status == 200
    finally:
        assert demo.stop() == 0
    samples: dict[str, list[dict]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    assert "sluice_requests_total" in samples, "the scrape parsed to nothing recognisable"
    return samples


@pytest.mark.parametrize("alert", [r["alert"] for r in _rules()])
def test_rule_uses_only_what_sluice_exports(alert, exported):
    """Each metric in the expression is served by sluice (histogram series by their _bucket/_sum/_count
    names), each label it matches or groups by exists on it (or is a Kubernetes target label), and each
    label value it matches is one sluice emits: a renamed metric or a misspelt value never matches
    anything, and an alert that cannot fire looks exactly like a healthy service."""
    [rule] = [r for r in _rules() if r["alert"] == alert]
    selectors, grouping = _selectors(rule["expr"])
    assert selectors, f"{alert}: no metric found in {rule['expr']!r}"
    metric_labels = set()
    for name, matchers in selectors:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in exported, f"{alert}: sluice exports no {name} (family {family}); it has {sorted(exported)}"
        label_sets = exported[name]
        names_here = {k for labels in label_sets for k in labels}
        metric_labels |= names_here
        for label, op, value in matchers:
            assert label in names_here, f"{alert}: {name} has no label {label} (it has {sorted(names_here)})"
            values = {labels[label] for labels in label_sets if label in labels}
            if op == "=":
                assert value in values, f"{alert}: {name}{{{label}}} is never {value!r}; values: {sorted(values)}"
            elif op in ("=~", "!~"):
                pattern = re.compile(value)
                assert any(pattern.fullmatch(v) for v in values), f"{alert}: {label}=~{value!r} matches no value"
                if "(" not in value:
                    for alternative in value.split("|"):
                        assert any(re.fullmatch(alternative, v) for v in values), \
                            f"{alert}: {label}: the alternative {alternative!r} matches no value of {sorted(values)}"
    for label in grouping:
        assert label in TARGET_LABELS or label in metric_labels, f"{alert}: groups by {label}, which nothing has"
    # Annotations may only use labels the alert's series keep: a label an aggregation dropped renders empty.
    kept = set(grouping) - {"le"} if grouping else TARGET_LABELS | metric_labels
    for text in rule["annotations"].values():
        for label in re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text):
            assert label in kept, f"{alert}: an annotation uses $labels.{label}, which the expression drops"


# --- promtool ---------------------------------------------------------------------------------------------


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run extracts it from Debian's prometheus package)")
    return promtool


def _rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "sluice-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _one("PrometheusRule")["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_checks_the_rules(tmp_path):
    promtool = _promtool()
    result = subprocess.run([promtool, "check", "rules", str(_rule_file(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def _series(pod: str, name: str, labels: dict, values: str) -> dict:
    text = ",".join(f'{k}="{v}"' for k, v in {"namespace": "prod", "job": "sluice", "pod": pod, **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def _ttft_buckets(pod: str, per_minute: dict[str, int]) -> list[dict]:
    """Cumulative sluice_ttft_seconds buckets growing by `per_minute[le]` observations a minute, split over two
    models of one route as sluice labels them (the alert sums the series of a pod by `le`)."""
    bounds = ["0.5", "1", "2.5", "5", "10", "30", "+Inf"]
    return [_series(pod, "sluice_ttft_seconds_bucket", {"route": "/", "model": model, "le": le},
                    f"0+{share(per_minute[le])}x40")
            for model, share in (("gpt-4o", lambda n: n // 2), ("other", lambda n: n - n // 2)) for le in bounds]


def _firing(pod_label: bool, alert: str, severity: str) -> dict:
    pod = ',pod="sluice-0"' if pod_label else ""
    return {"labels": f'ALERTS{{alertname="{alert}",alertstate="firing",namespace="prod",job="sluice"{pod},'
                      f'severity="{severity}"}}', "value": 1}


def test_promtool_alerts_fire_on_failure_and_stay_quiet_when_healthy(tmp_path):
    """Unit tests of the rules on synthetic series (two pods, one-minute samples over 40 minutes):
    a healthy deployment (1 % 5xx, upstream errors among successes, p95 TTFT under a second, no
    drops) raises nothing; a failing one (every forwarded exchange an upstream error or connect
    timeout or unresolved name, while rate-limit rejections still succeed; 37 % 5xx; TTFT ~10 s; drops) raises all four."""
    promtool = _promtool()
    healthy, failing = [], []
    for pod in ("sluice-0", "sluice-1"):
        healthy += [
            _series(pod, "sluice_requests_total", {"route": "/", "code_class": "2xx"}, "0+594x40"),
            _series(pod, "sluice_requests_total", {"route": "/", "code_class": "5xx"}, "0+6x40"),
            _series(pod, "sluice_exchanges_total", {"end": "complete"}, "0+594x40"),
            _series(pod, "sluice_exchanges_total", {"end": "upstream_error"}, "0+6x40"),
            _series(pod, "sluice_exchanges_total", {"end": "rejected_rate_limit"}, "0+100x40"),
            _series(pod, "sluice_log_records_dropped_total", {}, "0x40"),
        ] + _ttft_buckets(pod, {"0.5": 500, "1": 590, "2.5": 600, "5": 600, "10": 600, "30": 600, "+Inf": 600})
        failing += [
            _series(pod, "sluice_requests_total", {"route": "/", "code_class": "2xx"}, "0x40"),
            _series(pod, "sluice_requests_total", {"route": "/", "code_class": "4xx"}, "0+100x40"),
            _series(pod, "sluice_requests_total", {"route": "/", "code_class": "5xx"}, "0+60x40"),
            _series(pod, "sluice_exchanges_total", {"end": "complete"}, "0x40"),
            _series(pod, "sluice_exchanges_total", {"end": "upstream_error"}, "0+50x40"),
            _series(pod, "sluice_exchanges_total", {"end": "timeout_connect"}, "0+10x40"),
            # A name that never resolved fails exchanges too (502 upstream_unresolved).
            _series(pod, "sluice_exchanges_total", {"end": "upstream_unresolved"}, "0+5x40"),
            _series(pod, "sluice_exchanges_total", {"end": "rejected_rate_limit"}, "0+100x40"),
            # Only sluice-0's queue overflows: the alert names that pod.
            _series(pod, "sluice_log_records_dropped_total", {}, "0+5x40" if pod == "sluice-0" else "0x40"),
        ] + _ttft_buckets(pod, {"0.5": 0, "1": 0, "2.5": 0, "5": 0, "10": 100, "30": 100, "+Inf": 100})
    tests = {
        "rule_files": [str(_rule_file(tmp_path))],
        "evaluation_interval": "1m",
        "tests": [
            {"name": "healthy", "interval": "1m", "input_series": healthy,
             "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": "35m", "exp_samples": []}]},
            {"name": "failing", "interval": "1m", "input_series": failing,
             "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": "35m", "exp_samples": [
                 _firing(False, "SluiceTTFTHigh", "warning"),
                 _firing(False, "SluiceHigh5xxRatio", "critical"),
                 _firing(True, "SluiceCompletionLogDropping", "warning"),
                 _firing(False, "SluiceAllUpstreamsFailing", "critical"),
             ]}]},
            # `for` holds an alert back: 2 minutes into the failure only the one without a `for` fires.
            {"name": "pending", "interval": "1m", "input_series": failing,
             "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": "2m", "exp_samples": [
                 _firing(True, "SluiceCompletionLogDropping", "warning"),
             ]}]},
        ],
    }
    path = tmp_path / "sluice-rules-test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
