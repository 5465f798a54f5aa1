"""Issue 12, item 13: the completion log never loses or corrupts records silently.

(a) A file that ends inside a line (a run that ended on a full disk) is continued on a fresh
line, and a write that fails partway (a real full tmpfs) never leaves a partial record: the file
ends at a record boundary and the held records are written whole once there is room again.
(b) A log file deleted, or renamed away and replaced, under a running sluice is noticed (about
once a second, as `tail -F` does), reported on stderr, and its path reopened; later records land
in the new file."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from rawhttp import get


def start(stack, origin, log: Path):
    return stack.sluice(["--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{origin.port}",
                         "--workers", "1", "--log-file", str(log)])


def lines_of(path: Path) -> list[bytes]:
    """The file's lines; fails unless it ends with a newline (no partial record at its end)."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends inside a record: ...{data[-120:]!r}"
    return data.split(b"\n")[:-1]


def records_of(path: Path, skip: int = 0) -> list[dict]:
    """Every line after the first `skip` parsed as a JSON object; fails on any that is not."""
    out = []
    for i, raw in enumerate(lines_of(path)[skip:]):
        try:
            obj = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{path.name} line {i + skip + 1} is not JSON: {raw[:200]!r}")
        assert isinstance(obj, dict), raw[:200]
        out.append(obj)
    return out


def wait_paths(path: Path, want: set, timeout: float = 10.0, skip: int = 0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            recs = records_of(path, skip) if path.exists() else []
        except AssertionError:
            recs = []  # a write in progress; look again
        if want <= {r["path"] for r in recs}:
            return recs
        assert time.monotonic() < deadline, f"{path.name}: missing {sorted(want - {r['path'] for r in recs})[:5]}"
        time.sleep(0.05)


def ok(port: int, path: str) -> None:
    r = get(port, path)
    assert r.status == 200, f"{path}: {r.status_line}"


# --------------------------------------------------------------------------------------------
# (a) A fragment left by an earlier run
# --------------------------------------------------------------------------------------------

def test_fragment_from_an_earlier_run_stays_on_its_own_line(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    whole = b'{"request_id":"earlier-whole","path":"/earlier"}\n'
    fragment = b'{"ts":"2026-12-07T08:00:00.000Z","request_id":"earlier-cut","client":"127.0.0.1","rou'
    log.write_bytes(whole + fragment)
    origin = stack.origin()
    sl = start(stack, origin, log)
    warning = sl.wait_stderr(lambda o: "does not end with a newline" in o.get("msg", ""), 5,
                             "a warning about the partial record")
    assert warning["level"] == "warn" and warning["sink"] == str(log)
    paths = [f"/after-fragment/{i}" for i in range(5)]
    for p in paths:
        ok(sl.port, p)
    wait_paths(log, set(paths), skip=2)
    lines = lines_of(log)
    assert lines[0] + b"\n" == whole, "the earlier whole record was changed"
    assert lines[1] == fragment, "the fragment must stay intact on its own line"
    recs = records_of(log, skip=2)
    assert [r["path"] for r in recs] == paths, "every record sluice wrote is its own JSON line"


def test_file_ending_with_a_newline_gets_no_blank_line(stack, tmp_path):
    log = tmp_path / "c.jsonl"
    whole = b'{"request_id":"earlier-whole","path":"/earlier"}\n'
    log.write_bytes(whole)
    origin = stack.origin()
    sl = start(stack, origin, log)
    ok(sl.port, "/next")
    wait_paths(log, {"/next"})
    assert [json.loads(x)["path"] for x in lines_of(log)] == ["/earlier", "/next"]
    assert not [o for o in sl.log_objects() if "newline" in o.get("msg", "")], "a warning without cause"


# --------------------------------------------------------------------------------------------
# (b) The live file deleted or replaced
# --------------------------------------------------------------------------------------------

class Traffic:
    """Requests in a background thread, each with a unique path, until stopped."""

    def __init__(self, port: int, tag: str):
        self.port, self.tag = port, tag
        self.sent: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            path = f"/{self.tag}/{i}"
            try:
                r = get(self.port, path)
                if r.status != 200:
                    self.errors.append(f"{path}: {r.status_line}")
            except OSError as e:
                self.errors.append(f"{path}: {e}")
            self.sent.append((time.monotonic(), path))
            i += 1
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._t.join(10)
        assert not self.errors, self.errors[:5]


@pytest.mark.parametrize("how", ["delete", "rename_and_replace"])
def test_log_file_deleted_or_replaced_is_reopened(stack, tmp_path, how):
    log = tmp_path / "c.jsonl"
    rotated = tmp_path / "c.jsonl.shipped"
    origin = stack.origin()
    sl = start(stack, origin, log)
    tag = uuid.uuid4().hex[:8]
    traffic = Traffic(sl.port, tag)
    try:
        time.sleep(0.3)
        if how == "delete":
            log.unlink()
        else:
            os.rename(log, rotated)
            log.write_bytes(b"")  # the shipper's new, empty file
        fate = "deleted" if how == "delete" else "replaced"
        warning = sl.wait_stderr(lambda o: o.get("msg", "").startswith("completion log file " + fate), 5,
                                 f"a warning that the log file was {fate}")
        noticed = time.monotonic()
        assert warning["level"] == "warn" and warning["sink"] == str(log), warning
        assert log.exists(), "the path was not recreated"
        time.sleep(0.3)
    finally:
        traffic.stop()
    later = {p for t, p in traffic.sent if t > noticed + 0.05}
    assert len(later) >= 5, "too few requests after the reopen to tell"
    # Every record after the reopen is in the new file, whole, once.
    recs = wait_paths(log, later)
    got = [r["path"] for r in recs]
    assert len(got) == len(set(got)), "a record written twice"
    assert set(got) <= {p for _, p in traffic.sent}
    if how == "rename_and_replace":
        # Nothing lost: the records before the notice are in the renamed file.
        old = [r["path"] for r in records_of(rotated)]
        assert sorted(old + got) == sorted(p for _, p in traffic.sent), "records lost or duplicated across the rename"
    # The writer keeps following the path: a second deletion is noticed too.
    if how == "delete":
        log.unlink()
        deadline = time.monotonic() + 5
        while len([o for o in sl.log_objects() if o.get("msg", "").startswith("completion log file deleted")]) < 2:
            assert time.monotonic() < deadline, "no warning about the second deletion"
            time.sleep(0.05)
        ok(sl.port, "/after-second-delete")
        wait_paths(log, {"/after-second-delete"})


# --------------------------------------------------------------------------------------------
# (a) A real full disk: a 64 KiB tmpfs
# --------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, unmounted at teardown (lazily if something still holds it); skips when
    mounting is not permitted (not root, or no CAP_SYS_ADMIN in a container)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip() or r.returncode}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fills the file system to the last byte; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        for size in (4096, 512, 64, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError:
                    break
    return filler


def test_full_disk_leaves_no_partial_record(small_disk, stack):
    log = small_disk / "c.jsonl"
    origin = stack.origin()
    sl = start(stack, origin, log)
    ok(sl.port, "/before/0")
    wait_paths(log, {"/before/0"})

    filler = fill(small_disk)
    held = [f"/full/{i}" for i in range(30)]  # ~15 KiB of records: more than the space left in any page
    for p in held:
        ok(sl.port, p)  # the proxy is unaffected: records wait in the queue
    sl.wait_stderr(lambda o: "completion log" in o.get("msg", "") and "No space" in str(o.get("error", "")), 10,
                   "a warning about the full disk")
    time.sleep(0.5)  # a few retries against the full disk
    recs = records_of(log)  # ends at a record boundary; every line whole
    if log.stat().st_size % 4096:
        # The last page had room left, less than a record: the write that filled it was cut
        # back (unless a record happened to end exactly at the page's end).
        cuts = [o for o in sl.log_objects() if "mid-record" in o.get("msg", "")]
        assert cuts and cuts[0]["partial_bytes"] > 0 and "cut from the file" in cuts[0]["msg"], \
            "a write cut short by the full disk was not reported as cut back"
    assert {r["path"] for r in recs} < {"/before/0", *held}

    filler.unlink()  # room again: the held records are written, whole, once
    recs = wait_paths(log, {"/before/0", *held})
    got = [r["path"] for r in recs]
    assert sorted(got) == sorted(["/before/0", *held]), "records lost or duplicated"

    # Shutdown on a full disk: what cannot be written is reported, the file stays whole.
    fill(small_disk)
    for i in range(30):
        ok(sl.port, f"/at-exit/{i}")
    time.sleep(0.3)
    sl.stop()
    records_of(log)
    objs = sl.log_objects()
    unflushed = [o for o in objs if "not flushed at shutdown" in o.get("msg", "")]
    assert unflushed and unflushed[0]["unwritten_records"] > 0, "the records lost at exit were not counted"
    written = {r["path"] for r in records_of(log)} & {f"/at-exit/{i}" for i in range(30)}
    assert len(written) + unflushed[0]["unwritten_records"] == 30, "every record is either in the file or counted"
