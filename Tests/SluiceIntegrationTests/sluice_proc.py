"""Start, watch and stop the sluice binary under test."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
SLUICE_BIN = os.environ.get("SLUICE_BIN", str(REPO / ".build" / "debug" / "sluice"))

READY_TIMEOUT = 15.0
STOP_GRACE = 5.0


def write_config(path: Path, upstream_port: int, *, workers: int = 1,
                 timeouts: Optional[dict] = None, limits: Optional[dict] = None,
                 listen: str = "127.0.0.1:0") -> Path:
    """Write a config file in sluice's syntax with one upstream and route `/`."""
    lines = [f"listen {listen}", f"workers {workers}"]
    if timeouts:
        lines.append("timeouts {")
        lines += [f"    {k} {v}" for k, v in timeouts.items()]
        lines.append("}")
    if limits:
        lines.append("limits {")
        lines += [f"    {k} {v}" for k, v in limits.items()]
        lines.append("}")
    lines += ["upstream origin {", f"    server http://127.0.0.1:{upstream_port}", "}",
              "route / {", "    upstream origin", "}", ""]
    path.write_text("\n".join(lines))
    return path


def write_routes_config(path: Path, *, upstreams: dict, routes: list, workers: int = 1,
                        timeouts: Optional[dict] = None, limits: Optional[dict] = None,
                        log: Optional[dict] = None, admin: Optional[str] = None,
                        listen: str = "127.0.0.1:0", trusted_proxies: Optional[str] = None,
                        rate_limits: Optional[dict] = None) -> Path:
    """Write a config file with several upstreams and routes, and optional log/admin blocks.

    `upstreams` maps a name to a server URL; `routes` is a list of (prefix, upstream name,
    {route key: value}) in file order, where a list value repeats the key (`{"limit": ["a", "b"]}`
    writes two `limit` lines); `log` holds the keys of the `log { }` block; `admin` is
    the admin listener's address (no admin block when None); `trusted_proxies` is the value of
    the top-level `trusted_proxies` line (none when None); `rate_limits` maps a rule name to the
    keys of its `limit NAME { }` block (`{"per_user": {"key": "header authorization",
    "requests": "5/s burst 5"}}`).
    """
    lines = [f"listen {listen}", f"workers {workers}"]
    if trusted_proxies is not None:
        lines.append(f"trusted_proxies {trusted_proxies}")
    for name, keys in (rate_limits or {}).items():
        lines.append(f"limit {name} {{")
        lines += [f"    {k} {v}" for k, v in keys.items()]
        lines.append("}")
    for block, keys in (("timeouts", timeouts), ("limits", limits), ("log", log)):
        if keys:
            lines.append(block + " {")
            lines += [f"    {k} {v}" for k, v in keys.items()]
            lines.append("}")
    if admin is not None:
        lines += ["admin {", f"    listen {admin}", "}"]
    for name, url in upstreams.items():
        lines += [f"upstream {name} {{", f"    server {url}", "}"]
    for prefix, upstream, keys in routes:
        lines += [f"route {prefix} {{", f"    upstream {upstream}"]
        for k, v in (keys or {}).items():
            lines += [f"    {k} {x}" for x in (v if isinstance(v, (list, tuple)) else [v])]
        lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    return path


def log_config(path, **extra) -> dict:
    """A `log` block for `write_routes_config` (or the `routes_proxy` fixture): records to `path`,
    stdout off, `extra` keys added."""
    return {"file": str(path), "stdout": "off", **extra}


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line of a completion log parsed as JSON ([] if the file does not exist).

    A trailing line without its newline (a write in progress) is left out; any complete line
    that is not a JSON object fails the test.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for raw in data.split(b"\n")[:-1]:
        try:
            obj = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{path}: completion log line is not JSON: {raw[:300]!r}")
        if not isinstance(obj, dict):
            raise AssertionError(f"{path}: completion log line is not a JSON object: {raw[:300]!r}")
        out.append(obj)
    return out


def wait_records(paths, count: int, timeout: float = 5.0, settle: float = 0.15) -> list[dict]:
    """Poll the log file(s) until they hold at least `count` records, then wait `settle` s more
    (the writer drains every ~20 ms) so that extra records would show up too; returns all records.
    Fails after `timeout` s with what was there."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for p in paths for r in read_jsonl(p)]
        if len(recs) >= count:
            time.sleep(settle)
            return [r for p in paths for r in read_jsonl(p)]
        if time.monotonic() > deadline:
            raise AssertionError(f"completion log holds {len(recs)} records after {timeout}s, expected {count}: "
                                 + "; ".join(f"{r.get('method')} {r.get('path')} {r.get('end')}" for r in recs))
        time.sleep(0.02)


class Sluice:
    """A running sluice process; stderr is drained by a thread and kept as lines."""

    def __init__(self, args: list[str], *, wait_ready: bool = True, env: Optional[dict] = None,
                 drain_stdout: bool = True, launcher: tuple[str, ...] = ()):
        """`launcher` runs before the binary and must exec it (e.g. `ip netns exec NS`), so that `pid` is sluice's."""
        if not os.access(SLUICE_BIN, os.X_OK):
            raise AssertionError(f"sluice binary not found at {SLUICE_BIN} (set SLUICE_BIN or run swift build)")
        self.exit_expected = False
        self.args = list(launcher) + [SLUICE_BIN] + args
        self.cond = threading.Condition()
        self.stderr_lines: list[str] = []
        self.stdout = bytearray()
        self.ready: Optional[dict] = None
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.pid = self.proc.pid
        self._t_err = threading.Thread(target=self._drain_stderr, daemon=True)
        self._t_out = threading.Thread(target=self._drain_stdout, daemon=True)
        self._t_err.start()
        #: drain_stdout=False leaves stdout a pipe nobody reads (a blocked log sink).
        if drain_stdout:
            self._t_out.start()
        if wait_ready:
            self.wait_ready()

    def _drain_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.stderr_lines.append(line)
                if self.ready is None:
                    try:
                        obj = json.loads(line)
                        if isinstance(obj, dict) and obj.get("msg") == "ready":
                            self.ready = obj
                    except ValueError:
                        pass
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _drain_stdout(self) -> None:
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            self.stdout += chunk

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.ready is None:
                if self.proc.poll() is not None and not self._t_err.is_alive():
                    raise AssertionError(f"sluice exited with {self.proc.returncode} before ready; "
                                         f"stderr:\n" + "\n".join(self.stderr_lines[-30:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sluice printed no ready line within "
                                         f"{timeout}s; stderr:\n" + "\n".join(self.stderr_lines[-30:]))
                self.cond.wait(min(left, 0.1))
        return self.ready

    @property
    def port(self) -> int:
        listener = self.ready["listeners"][0]
        return int(str(listener).rsplit(":", 1)[1])

    @property
    def admin_port(self) -> int:
        """The admin listener's port, from the ready line's `"admin"`."""
        admin = self.ready.get("admin")
        assert admin, f"ready line has no admin address: {self.ready}"
        return int(str(admin).rsplit(":", 1)[1])

    def scrape(self, path: str = "/metrics", timeout: float = 5.0) -> tuple[int, dict, str]:
        """GET `path` from the admin listener: (status, lower-cased header fields, body text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode("utf-8")
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            conn.close()

    def wait_stderr(self, predicate, timeout: float, what: str = "a stderr line") -> dict:
        """Wait for a stderr JSON object satisfying predicate(obj); returns it or fails."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for ln in self.stderr_lines[seen:]:
                    try:
                        obj = json.loads(ln)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and predicate(obj):
                        return obj
                seen = len(self.stderr_lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} on sluice's stderr within {timeout}s; tail:\n"
                                         + "\n".join(self.stderr_lines[-10:]))
                self.cond.wait(min(left, 0.1))

    def log_objects(self) -> list[dict]:
        """Every stderr line parsed as JSON; raises AssertionError naming the first non-object."""
        out = []
        with self.cond:
            lines = list(self.stderr_lines)
        for ln in lines:
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except ValueError:
                raise AssertionError(f"sluice stderr line is not JSON: {ln!r}")
            if not isinstance(obj, dict):
                raise AssertionError(f"sluice stderr line is not a JSON object: {ln!r}")
            out.append(obj)
        return out

    def rss_kib(self) -> int:
        """VmRSS of the process in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
        raise AssertionError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> Optional[int]:
        """Wait for the process to end (a test that waits for it expects it: the fixture then does not count
        the exit as a crash); returns the exit code, or None if it is still running."""
        self.exit_expected = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> Optional[int]:
        """SIGTERM by PID, SIGKILL after 5 s; returns the exit code (negative: signal)."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait_exit(STOP_GRACE) is None:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._t_err.join(2)
        if self._t_out.ident is not None:
            self._t_out.join(2)
        return self.proc.returncode


def run_cli(args: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run sluice to completion (for --help, check, …) with no stdin."""
    if not os.access(SLUICE_BIN, os.X_OK):
        raise AssertionError(f"sluice binary not found at {SLUICE_BIN}")
    return subprocess.run([SLUICE_BIN] + args, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)
