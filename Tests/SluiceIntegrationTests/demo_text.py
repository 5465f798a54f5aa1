"""The reply `sluice demo` gives, derived from DemoBackend.replyText(forUserMessage:) in the Swift source.

The function is expected to return one string literal (possibly several joined by
`+`) that interpolates its parameter once. When the source is missing or has a
shape this reader does not understand, the text the spec gives is used instead.
"""

from __future__ import annotations

import re

from sluice_proc import REPO

SPEC_TEMPLATE = ('Hello from sluice\'s demo backend. You said: "{msg}". Each of these words left the '
                 'backend as its own SSE event, and the proxy passed it on the moment it arrived.')

_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def _unescape(s: str, values: dict, msg: str) -> str:
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "(":
                j = s.index(")", i)
                expr = s[i + 2:j].strip()
                if expr not in values:
                    raise ValueError(f"unsupported interpolation {expr!r}")
                out.append(values[expr])
                i = j + 1
                continue
            out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _from_body(body: str, param: str, msg: str) -> str:
    """Evaluate a body of `let` bindings of the parameter (optionally `.prefix(N)` of its
    Unicode scalars, which is Python's msg[:N]) and a `return` of string literals."""
    code = re.sub(r"//[^\n]*", "", body)
    if '"""' in code or "#\"" in code:
        raise ValueError("raw or multi-line literal")
    values = {param: msg}
    rest = []
    for line in code.splitlines():
        m = re.match(r"\s*let\s+(\w+)\s*=\s*(.*)$", line)
        if not m:
            rest.append(line)
            continue
        name, expr = m.groups()
        if not re.search(r"\b" + re.escape(param) + r"\b", expr):
            raise ValueError(f"unsupported binding {line.strip()!r}")
        pm = re.search(r"prefix\((\d+)\)", expr)
        values[name] = msg[: int(pm.group(1))] if pm else msg
    rest_code = "\n".join(rest)
    if re.sub(r"\breturn\b|\+|\s", "", _LITERAL.sub("", rest_code)):
        raise ValueError("logic beyond literal concatenation")
    return "".join(_unescape(lit, values, msg) for lit in _LITERAL.findall(rest_code))


def reply_text(msg: str) -> tuple[str, str]:
    """(expected text, where it came from: a Swift file, or "spec")."""
    src_dir = REPO / "Sources" / "SluiceOrigin"
    for path in sorted(src_dir.rglob("*.swift")) if src_dir.is_dir() else []:
        src = path.read_text(encoding="utf-8")
        for m in re.finditer(r"func\s+replyText\s*\(\s*forUserMessage\s+(\w+)\s*:[^)]*\)\s*->\s*String\s*\{", src):
            depth, i = 1, m.end()
            while depth and i < len(src):
                depth += {"{": 1, "}": -1}.get(src[i], 0)
                i += 1
            body = src[m.end():i - 1]
            if '"' not in body:
                continue  # delegates to another replyText
            try:
                return _from_body(body, m.group(1), msg), str(path)
            except ValueError:
                return SPEC_TEMPLATE.format(msg=msg), "spec"
    return SPEC_TEMPLATE.format(msg=msg), "spec"
