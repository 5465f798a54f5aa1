"""The documents cite only what is in the repository.

Every markdown file a user reads (README.md, docs/, deploy/, bench/ and this folder's README) is checked:
- a relative link `[text](path#anchor)` names a file or folder that exists, and an anchor names a heading
  of the target page (GitHub's slugs);
- a backticked path (`Sources/SluiceCore/TLS/`, `test_desync.py`, `Proxy/Session/ExchangeReuse.swift`)
  names a file or folder in the repository: from the repository root, from the document's folder, or as
  the tail of a tracked path; globs (`Sources/SluiceFuzz*`) must match something;
- no document cites a sibling checkout (`../shared/...`) or an issue tracker entry ("issue 12"), which a
  reader of the repository cannot open.
Folders that a script creates when it runs (its outputs, git-ignored) may be named, and the test checks
that the script really names them, so that list cannot rot. Fenced code blocks are commands and examples,
not citations, and are skipped.

No sluice binary is needed.
"""

import fnmatch
import os
import re
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Outputs, not citations: the folder, and the file that creates it (which must mention the folder).
GENERATED = {
    "bench/results/": "bench/run.sh",
    "fuzz/artifacts/": "fuzz/run.sh",
    ".build/": "Package.swift",  # swift build's output folder; `.build/release/sluice` is how it is run
}

# Names of files a user makes, not repository files: the docs say `proxy.conf` for "your config file".
USER_FILES = {"proxy.conf"}

# A backticked word counts as a file citation when it ends in one of these.
FILE_SUFFIXES = (
    ".md", ".py", ".swift", ".sh", ".c", ".h", ".yaml", ".yml", ".json", ".jsonl", ".conf", ".example",
    ".template", ".service", ".txt", ".pem", ".toml",
)

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
ISSUE = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
SIBLING = re.compile(r"\.\./shared\b")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def documents():
    docs = ["README.md", "deploy/README.md", "bench/README.md", "Tests/SluiceIntegrationTests/README.md"]
    docs_dir = os.path.join(REPO, "docs")
    if os.path.isdir(docs_dir):
        for root, _dirs, files in os.walk(docs_dir):
            for name in sorted(files):
                if name.endswith(".md"):
                    docs.append(os.path.relpath(os.path.join(root, name), REPO))
    return docs


def repo_files():
    """Every file in the working tree but build outputs and .git (new files count before they are committed)."""
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d != ".git" and not d.startswith(".build") and d != "__pycache__"]
        for name in files:
            out.append(os.path.relpath(os.path.join(root, name), REPO))
    return out


FILES = None


def all_files():
    global FILES
    if FILES is None:
        FILES = repo_files()
    return FILES


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = set()
    for _n, line in prose_lines(text):
        m = HEADING.match(line)
        if m:
            out.add(slug(m.group(2)))
    return out


def generated(path):
    return any(path == prefix.rstrip("/") or path.startswith(prefix) for prefix in GENERATED)


def exists_as_cited(word, doc_dir):
    """Whether a backticked path names something in the repository."""
    word = word.rstrip(".,;:")
    candidates = [word, os.path.normpath(os.path.join(doc_dir, word))]
    if any(generated(c) for c in candidates) or word in USER_FILES:
        return True
    if any(ch in word for ch in "*?["):
        pattern = word.rstrip("/")
        return any(
            fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(f, pattern + "/*") or fnmatch.fnmatch(f, "*/" + pattern)
            or fnmatch.fnmatch(f, os.path.join(doc_dir, pattern)) or fnmatch.fnmatch(f, os.path.join(doc_dir, pattern) + "/*")
            for f in all_files()
        )
    for c in candidates:
        if os.path.exists(os.path.join(REPO, c)):
            return True
    # The tail of a tracked path: `test_desync.py`, `Proxy/Session/ExchangeReuse.swift`, `Session/`.
    tail = word.rstrip("/")
    for f in all_files():
        if f == tail or f.endswith("/" + tail) or ("/" + tail + "/") in ("/" + f):
            return True
    return False


def cited_paths(span, top_level):
    """The words of a backticked span that cite a repository path, if any."""
    words = span.split()
    if not words:
        return []
    word = words[0]  # `bench/soak.sh [SECONDS]`: the command's path, not its arguments
    if len(words) > 1 and not re.fullmatch(r"[\w./*-]+", word):
        return []
    if word.startswith(("/", "http:", "https:", "$", "-", "~")) or ":" in word or "{" in word or "=" in word:
        return []  # absolute paths on a host, URLs, variables, flags, addresses, config values
    if word.lower().endswith(FILE_SUFFIXES):
        return [word]
    if "/" in word:
        first = word.split("/")[0]
        if first in top_level or first in (".", ".."):
            return [word]
    return []


@pytest.mark.parametrize("doc", documents())
def test_links_and_paths_exist(doc):
    path = os.path.join(REPO, doc)
    doc_dir = os.path.dirname(doc)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    top_level = set(os.listdir(REPO)) | (set(os.listdir(os.path.join(REPO, doc_dir))) if doc_dir else set())
    problems = []
    for number, line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            file_part, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(REPO, doc_dir, file_part)) if file_part else path
            if not os.path.exists(resolved):
                problems.append(f"{doc}:{number}: link to {target}: no such file")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                problems.append(f"{doc}:{number}: link to {target}: no heading with that anchor")
        for span in CODE.findall(line):
            for word in cited_paths(span, top_level):
                if not exists_as_cited(word, doc_dir):
                    problems.append(f"{doc}:{number}: `{word}` is not in the repository")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", documents())
def test_no_citations_outside_the_repository(doc):
    with open(os.path.join(REPO, doc), encoding="utf-8") as f:
        text = f.read()
    problems = []
    for number, line in enumerate(text.split("\n"), 1):
        if SIBLING.search(line):
            problems.append(f"{doc}:{number}: cites ../shared, outside the repository")
        m = ISSUE.search(line)
        if m:
            problems.append(f"{doc}:{number}: cites '{m.group(0)}', which a reader of the repository cannot open")
    assert not problems, "\n".join(problems)


def test_generated_folders_are_named_by_their_scripts():
    for folder, script in GENERATED.items():
        with open(os.path.join(REPO, script), encoding="utf-8") as f:
            text = f.read()
        name = folder.rstrip("/").split("/")[-1]
        if script != "Package.swift":
            assert name in text, f"{script} no longer writes {folder}: drop it from GENERATED"
        ignored = subprocess.run(["git", "-C", REPO, "check-ignore", "-q", folder], check=False,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if ignored.returncode == 128:
            continue  # not a git checkout (an exported tree): nothing can be committed from here anyway
        assert ignored.returncode == 0, f"{folder} is not git-ignored, so files under it could be committed and cited"


def test_checker_catches_what_it_should(tmp_path):
    """The checks themselves: a missing file, a bad anchor, a sibling path and an issue number are caught."""
    top = set(os.listdir(REPO))
    assert cited_paths("bench/results/latest.md", top) == ["bench/results/latest.md"]
    assert exists_as_cited("bench/results/latest.md", "")  # an output the bench writes
    assert not exists_as_cited("bench/nothing/latest.md", "")
    assert not exists_as_cited("Proxy/NoSuchFile.swift", "docs")
    assert exists_as_cited("Proxy/Session/ExchangeReuse.swift", "docs")
    assert exists_as_cited("test_desync.py", "docs")
    assert exists_as_cited("Sources/SluiceFuzz*", "")
    assert exists_as_cited("test_desync_review*.py", "docs")
    assert not exists_as_cited("test_no_such*.py", "docs")
    assert cited_paths("text/event-stream", top) == []
    assert cited_paths("/etc/hosts", top) == []
    assert ISSUE.search("the scenarios of issue 3")
    assert SIBLING.search("see ../shared/STYLE.md")
    assert slug("`inject_usage`") == "inject_usage"
    assert slug("HTTP handling (RFC 9112)") == "http-handling-rfc-9112"


def test_integration_readme_lists_every_file():
    """Tests/SluiceIntegrationTests/README.md's table has a row for every test file and helper module here."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
        rows = [line for line in f.read().split("\n") if line.startswith("| `")]
    listed = set()
    for row in rows:
        first_cell = row.split("|")[1]
        listed.update(CODE.findall(first_cell))
    files = sorted(name for name in os.listdir(here) if name.endswith((".py", ".c", ".sh")))
    missing = [name for name in files if name not in listed]
    assert not missing, f"add a row to Tests/SluiceIntegrationTests/README.md for: {', '.join(missing)}"
    gone = sorted(name for name in listed if not os.path.exists(os.path.join(here, name)))
    assert not gone, f"README.md lists files that are not here: {', '.join(gone)}"
