"""Fixtures: a scripted origin and a sluice in front of it, both torn down by the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from origin import Origin, echo_handler  # noqa: E402
from sluice_proc import Sluice, write_config, write_routes_config  # noqa: E402


class Stack:
    """Factory for origins and sluice processes; stops everything it started."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.origins: list[Origin] = []
        self.sluices: list[Sluice] = []
        self._n = 0

    def origin(self, handler=echo_handler, **kw) -> Origin:
        o = Origin(handler, **kw)
        self.origins.append(o)
        return o

    def sluice(self, args: list[str], **kw) -> Sluice:
        s = Sluice(args, **kw)
        self.sluices.append(s)
        return s

    def proxy(self, origin_or_port, *, workers: int = 1, timeouts=None, limits=None) -> Sluice:
        """sluice in front of an origin: flags when no timeouts/limits are given, else a config file."""
        port = origin_or_port if isinstance(origin_or_port, int) else origin_or_port.port
        if timeouts is None and limits is None:
            return self.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{port}",
                                "--workers", str(workers)])
        self._n += 1
        cfg = write_config(self.tmp_path / f"sluice{self._n}.conf", port, workers=workers,
                           timeouts=timeouts, limits=limits)
        return self.sluice(["--config", str(cfg)])

    def routes_proxy(self, upstreams: dict, routes: list, **kw) -> Sluice:
        """sluice from a config file with several upstreams/routes and optional log/admin blocks
        (the keywords of `write_routes_config`); `sluice_kw` goes to `Sluice`."""
        self._n += 1
        sluice_kw = kw.pop("sluice_kw", {})
        cfg = write_routes_config(self.tmp_path / f"sluice{self._n}.conf", upstreams=upstreams, routes=routes, **kw)
        return self.sluice(["--config", str(cfg)], **sluice_kw)

    def close(self) -> list[str]:
        """Stop everything; returns the sluices that had died before the end of the test."""
        dead = [f"pid {s.pid} exited with {s.proc.returncode}" for s in self.sluices
                if not s.alive() and not s.exit_expected]
        for s in self.sluices:
            s.stop()
        for o in self.origins:
            o.close()
        return dead


@pytest.fixture
def stack(tmp_path):
    st = Stack(tmp_path)
    try:
        yield st
    finally:
        dead = st.close()
    # A sluice that crashed during the test is a failure even if every assertion passed.
    # The tail is long enough to hold the crashed thread of a Swift backtrace, which is what says where.
    if dead:
        tail = "\n".join(line for s in st.sluices for line in s.stderr_lines[-60:])
        raise AssertionError(f"sluice died during the test: {dead}; stderr tail:\n{tail}")
    # The spec: every stderr line is a JSON object. Checked after every test.
    for s in st.sluices:
        s.log_objects()
    for o in st.origins:
        assert not o.errors, f"origin saw errors: {o.errors}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI of make-test-certificates.sh (the openssl command), made once per session."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("pki")
    script = Path(__file__).resolve().parent / "make-test-certificates.sh"
    subprocess.run(["bash", str(script), str(directory)], check=True, timeout=60)
    return directory
