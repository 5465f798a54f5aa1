import Testing

@testable import SluiceCore

/// Every config-file error: the line it points at and what the message says.
@Suite struct ConfigFileErrorTests {
    /// A valid 7-line tail: appended after a faulty line it keeps the file otherwise complete.
    static let base = """
        listen :8080
        upstream a {
            server http://127.0.0.1:8000
        }
        route / {
            upstream a
        }

        """

    /// One bad file: its text, the expected line (0 = not line-specific) and fragments the
    /// message must contain.
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var text: String
        var line: Int
        var fragments: [String]
        var testDescription: String { name }

        init(_ name: String, _ text: String, line: Int, _ fragments: String...) {
            self.name = name
            self.text = text
            self.line = line
            self.fragments = fragments
        }
    }

    static let cases: [Case] = [
        // Unknown keys and blocks, with and without suggestions.
        Case("unknown top-level key", "wokers 2\n" + base, line: 1,
             "unknown key 'wokers' at the top level (did you mean 'workers'?)"),
        Case("unknown key in upstream", "upstream llm {\n    max_idel 3\n}\n", line: 2,
             "unknown key 'max_idel' in upstream 'llm' (did you mean 'max_idle'?)"),
        Case("unknown key in timeouts", "timeouts {\n  client_heder 5s\n}\n", line: 2,
             "unknown key 'client_heder' in the 'timeouts' block (did you mean 'client_header'?)"),
        Case("unknown key in route", "route / {\n  upsteam a\n}\n", line: 2,
             "unknown key 'upsteam' in route '/' (did you mean 'upstream'?)"),
        Case("unknown key in limits", "limits {\n  max_body 1m\n}\n", line: 2,
             "unknown key 'max_body' in the 'limits' block"),
        Case("unknown block", "timeout {\n}\n", line: 1, "unknown block 'timeout' (did you mean 'timeouts'?)"),
        Case("unknown block, no suggestion", "backend {\n}\n", line: 1, "unknown block 'backend'"),
        Case("key used as a block", "server {\n}\n", line: 1, "'server' is a key, not a block; it belongs inside an 'upstream' block"),
        Case("typo of a key from another block", "client_heder 5s\n", line: 1,
             "unknown key 'client_heder' at the top level (did you mean 'client_header' in the 'timeouts' block?)"),
        Case("typo of a top-level key inside a block", "timeouts {\n  lsten :80\n}\n", line: 2,
             "unknown key 'lsten' in the 'timeouts' block (did you mean 'listen' at the top level?)"),
        // ("limit" itself is now the rate-limit block; RateLimitConfigTests covers it.)
        Case("top-level typo of a block name", "limts\n", line: 1, "unknown key 'limts' at the top level (did you mean 'limits'?)"),

        // Keys in the wrong block.
        Case("timeout key in upstream", "upstream a {\n  upstream_first_byte 10s\n}\n", line: 2,
             "key 'upstream_first_byte' is not allowed in upstream 'a'; it belongs in the 'timeouts' block or in a 'route' block"),
        Case("non-overridable timeout in route", "route / {\n  client_header 5s\n}\n", line: 2,
             "key 'client_header' is not allowed in route '/'; it belongs in the 'timeouts' block",
             "routes may override only upstream_first_byte, upstream_idle, total, tunnel_idle and max_request_body"),
        Case("top-level key in a block", "timeouts {\n  listen :80\n}\n", line: 2,
             "key 'listen' is not allowed in the 'timeouts' block; it belongs at the top level, outside any block"),
        Case("timeout key at top level", "client_header 5s\n", line: 1,
             "key 'client_header' is not allowed at the top level; it belongs in the 'timeouts' block"),
        Case("upstream key in limits", "limits {\n  max_request_body 1m\n  max_idle 4\n}\n", line: 3,
             "key 'max_idle' is not allowed in the 'limits' block; it belongs in an 'upstream' block"),
        Case("server in route", "route / {\n  server http://h\n}\n", line: 2, "it belongs in an 'upstream' block"),

        // Value counts.
        Case("listen without value", "listen\n", line: 1, "missing value: 'listen' needs ADDRESS, e.g. 'listen 127.0.0.1:8080'"),
        Case("listen with two values", "listen :80 :81\n", line: 1,
             "too many values for 'listen': expected one ADDRESS, got 2; repeat 'listen' on separate lines"),
        Case("timeout without value", "timeouts {\n  client_header\n}\n", line: 2, "missing value: 'client_header' needs DURATION"),
        Case("timeout with two values", "timeouts {\n  total 5 m\n}\n", line: 2, "too many values for 'total': expected one DURATION, got 2"),
        Case("route without prefix", "route {\n}\n", line: 1, "missing value: 'route' needs PREFIX, e.g. 'route PREFIX {'"),
        Case("upstream with two names", "upstream a b {\n}\n", line: 1, "too many values for 'upstream': expected one NAME, got 2"),
        Case("timeouts with an argument", "timeouts x {\n}\n", line: 1, "'timeouts' takes no value: write 'timeouts {'"),
        Case("workers without value", "workers\n", line: 1, "missing value: 'workers' needs N or auto"),
        Case("route upstream without value", "route / {\n  upstream\n}\n", line: 2, "missing value: 'upstream' needs NAME"),

        // Bad values.
        Case("duration without unit", "timeouts {\n  client_header 10\n}\n", line: 2, "duration needs a unit: '10'"),
        Case("duration with unknown unit", "timeouts {\n  total 5min\n}\n", line: 2, "bad duration '5min': unknown unit 'min'"),
        Case("route override without unit", "route / {\n  upstream_idle 5\n}\n", line: 2, "duration needs a unit: '5'"),
        Case("bad size", "limits {\n  max_request_body 10mb\n}\n", line: 2, "bad size '10mb': expected bytes (512)"),
        Case("bad route size", "route / {\n  max_request_body lots\n}\n", line: 2, "bad size 'lots'"),
        Case("listen without port", "listen 127.0.0.1\n", line: 1, "bad listen address '127.0.0.1': missing port (expected HOST:PORT"),
        Case("listen unbracketed IPv6", "listen ::1:80\n", line: 1, "IPv6 addresses need brackets"),
        Case("server without scheme", "upstream a {\n  server 127.0.0.1:8000\n}\n", line: 2,
             "bad upstream URL '127.0.0.1:8000': missing scheme (expected http://HOST[:PORT] or https://HOST[:PORT]"),
        Case("server with path", "upstream a {\n  server http://h:1/v1\n}\n", line: 2, "must not have a path, query or fragment, found '/v1'"),
        Case("bad upstream name", "upstream a/b {\n}\n", line: 1, "bad upstream name 'a/b'"),
        Case("max_idle negative", "upstream a {\n  max_idle -1\n}\n", line: 2, "max_idle must be a whole number from 0 to 65536, got '-1'"),
        Case("resolve_interval without unit", "upstream a {\n  server http://h:1\n  resolve_interval 30\n}\n", line: 3, "duration needs a unit: '30'"),
        Case("resolve_interval twice a value", "upstream a {\n  resolve_interval 1s 2s\n}\n", line: 2, "resolve_interval"),
        Case("high watermark too big", "limits {\n  high_watermark 100m\n}\n", line: 2, "high_watermark must be from 1k to 64m"),
        Case("low watermark too small", "limits {\n  low_watermark 512\n}\n", line: 2, "low_watermark must be from 1k to 64m", "got '512'"),
        Case("workers zero", "workers 0\n", line: 1, "workers must be a whole number from 1 to 256, got '0'"),
        Case("workers too many", "workers 257\n", line: 1, "workers must be a whole number from 1 to 256, got '257'"),
        Case("workers not a number", "workers two\n", line: 1, "got 'two'"),
        Case("listen with an unknown option", "listen :8443 ssl\n", line: 1, "unexpected 'ssl' after the address: the only option is 'tls'"),
        Case("tls listener without a tls block", base + "listen :8443 tls\n", line: 8, "'listen 0.0.0.0:8443 tls' needs a 'tls { certificate PATH  key PATH }' block"),
        Case("tls block without certificate", base + "tls {\n  key k.pem\n}\n", line: 8, "the 'tls' block has no 'certificate'"),
        Case("tls block without key", base + "tls {\n  certificate c.pem\n}\n", line: 8, "the 'tls' block has no 'key'"),
        Case("tls min_version", "tls {\n  min_version 1.1\n}\n", line: 2, "min_version must be 1.2 or 1.3, got '1.1'"),
        Case("tls unknown key", "tls {\n  certfile c.pem\n}\n", line: 2, "unknown key 'certfile'"),
        Case("tls_verify on an http upstream", "listen :80\nupstream a {\n  server http://h\n  tls_verify off\n}\nroute / {\n upstream a\n}\n",
             line: 4, "tls_* settings apply to https upstreams; upstream 'a' is http://"),
        Case("tls_verify not a boolean", "upstream a {\n  tls_verify maybe\n}\n", line: 2, "tls_verify"),
        Case("drain_timeout without unit", "drain_timeout 300\n", line: 1, "duration needs a unit: '300'"),
        Case("drain_timeout without value", "drain_timeout\n", line: 1, "missing value: 'drain_timeout' needs a duration"),
        Case("drain_timeout in a block", "timeouts {\n  drain_timeout 5s\n}\n", line: 2, "drain_timeout"),
        Case("route prefix without slash", "route v1/ {\n}\n", line: 1, "bad route prefix 'v1/': must start with '/'"),
        Case("route prefix with query", "route /a?b {\n}\n", line: 1, "must not contain '?'"),
        Case("route prefix not ASCII", "route /ü {\n}\n", line: 1, "must be ASCII"),

        // Block structure.
        Case("unclosed block", base + "route /v1/ {\n    upstream a\n", line: 8,
             "unclosed block: route '/v1/' opened here has no closing '}'"),
        Case("unclosed timeouts", "timeouts {\n", line: 1, "unclosed block: the 'timeouts' block opened here"),
        Case("missing } before next block", "upstream a {\n  server http://h\nroute / {\n  upstream a\n}\n", line: 3,
             "blocks do not nest: 'route' inside upstream 'a' (missing '}' for the block opened on line 1?)"),
        Case("block word without { inside block", "timeouts {\n  limits\n}\n", line: 2,
             "'limits' cannot appear inside the 'timeouts' block: blocks do not nest"),
        Case("unknown nested block", "route / {\n  foo {\n}\n", line: 2, "blocks do not nest: 'foo {' inside route '/'"),
        Case("stray }", base + "}\n", line: 8, "stray '}' with no open block"),
        Case("} after a value", "upstream a {\n  server http://h }\n", line: 2, "'}' must be alone on its line"),
        Case("one-line block", "timeouts { }\n", line: 1, "'}' must be alone on its line"),
        Case("{ on the next line", "route /\n{\n}\n", line: 1,
             "'route' starts a block: write 'route PREFIX {' with the '{' on the same line"),
        Case("lone {", "{\n", line: 1, "'{' must follow a block name on the same line"),
        Case("{ before the end", "route / { upstream a\n", line: 1, "'{' must be the last thing on its line"),
        Case("directive used as block", "listen :80 {\n}\n", line: 1, "'listen' is a directive, not a block: remove the '{'"),
        Case("upstream without {", "upstream a\n", line: 1, "'upstream' starts a block: write 'upstream NAME {'"),

        // Duplicates.
        Case("duplicate upstream", "upstream a {\n  server http://h\n}\nupstream a {\n}\n", line: 4,
             "duplicate upstream 'a' (first declared on line 1)"),
        Case("duplicate route", base + "route / {\n}\n", line: 8, "duplicate route '/' (first declared on line 5)"),
        Case("duplicate top-level key", "workers 2\nworkers 3\n", line: 2, "duplicate 'workers' (first set on line 1)"),
        Case("duplicate key in block", "timeouts {\n  total 1s\n  total 2s\n}\n", line: 3,
             "duplicate 'total' in the 'timeouts' block (first set on line 2)"),
        Case("one server twice", "listen :80\nupstream a {\n  server http://a\n  server http://a:80\n}\nroute / {\n upstream a\n}\n", line: 4,
             "duplicate server 'http://a:80' in upstream 'a' (first on line 3)"),
        Case("duplicate timeouts block", "timeouts {\n}\ntimeouts {\n}\n", line: 3, "duplicate 'timeouts' block (first opened on line 1)"),
        Case("duplicate listen", "listen :80\nlisten 0.0.0.0:80\n", line: 2, "duplicate listen address '0.0.0.0:80' (first on line 1)"),

        // Cross-references, checked after the whole file is read.
        Case("route without upstream", "listen :8080\nupstream a {\n  server http://h\n}\nroute /v1/ {\n  total 5s\n}\n", line: 5,
             "route '/v1/' has no 'upstream'"),
        Case("route naming unknown upstream", "listen :8080\nupstream llm {\n  server http://h\n}\nroute / {\n  upstream lm\n}\n", line: 6,
             "route '/' names unknown upstream 'lm' (did you mean 'llm'?)"),
        Case("route naming upstream when none exist", "listen :8080\nroute / {\n  upstream a\n}\n", line: 3,
             "route '/' names unknown upstream 'a' (no upstream blocks are declared)"),
        Case("upstream without server", "listen :8080\nupstream a {\n  max_idle 3\n}\nroute / {\n  upstream a\n}\n", line: 2,
             "upstream 'a' has no 'server'"),
        Case("low watermark equal to high", "limits {\n  high_watermark 16k\n  low_watermark 16k\n}\n" + base, line: 3,
             "low_watermark (16384 bytes) must be below high_watermark (16384 bytes)"),
        Case("high watermark below default low", "limits {\n  high_watermark 16k\n}\n" + base, line: 2,
             "low_watermark (32768 bytes) must be below high_watermark (16384 bytes)"),
        Case("no listener", "upstream a {\n  server http://h\n}\nroute / {\n  upstream a\n}\n", line: 0,
             "no listener: add 'listen ADDRESS'"),
        Case("no upstream", "listen :8080\n", line: 0, "no upstream: add a block 'upstream NAME { server URL }'"),
        Case("no route", "listen :8080\nupstream a {\n  server http://h\n}\n", line: 0, "no route: add a block 'route / { upstream NAME }'"),
        Case("empty file", "", line: 0, "no listener"),
        Case("only comments", "# nothing here\n   # still nothing\n", line: 0, "no listener"),

        // The log block: keys, booleans, ranges, structure.
        Case("unknown key in log", "log {\n  fsycn 1s\n}\n", line: 2, "unknown key 'fsycn' in the 'log' block (did you mean 'fsync'?)"),
        Case("log key at top level", "queue 10\n", line: 1, "key 'queue' is not allowed at the top level; it belongs in the 'log' block"),
        Case("typo of a log key at top level", "stdot on\n", line: 1,
             "unknown key 'stdot' at the top level (did you mean 'stdout' in the 'log' block?)"),
        Case("log key in a route", "route / {\n  include_query on\n}\n", line: 2,
             "key 'include_query' is not allowed in route '/'; it belongs in the 'log' block"),
        Case("capture key in log", "log {\n  capture_request 1k\n}\n", line: 2,
             "key 'capture_request' is not allowed in the 'log' block; it belongs in a 'route' block"),
        Case("capture key at top level", "capture_response 1k\n", line: 1, "it belongs in a 'route' block"),
        Case("listen in log", "log {\n  listen :80\n}\n", line: 2,
             "key 'listen' is not allowed in the 'log' block; it belongs at the top level, outside any block or in the 'admin' block"),
        Case("stdout not a boolean", "log {\n  stdout maybe\n}\n", line: 2,
             "stdout must be auto, on, off, true, false, yes or no, got 'maybe'"),
        Case("stdout typo", "log {\n  stdout ture\n}\n", line: 2, "got 'ture' (did you mean 'true'?)"),
        Case("include_query upper case", "log {\n  include_query On\n}\n", line: 2,
             "include_query must be on, off, true, false, yes or no, got 'On' (did you mean 'on'?)"),
        Case("include_query as a number", "log {\n  include_query 1\n}\n", line: 2,
             "include_query must be on, off, true, false, yes or no, got '1'"),
        Case("include_query auto", "log {\n  include_query auto\n}\n", line: 2, "include_query must be on, off"),
        Case("queue zero", "log {\n  queue 0\n}\n", line: 2, "queue must be a whole number from 1 to 16777216, got '0'"),
        Case("queue too large", "log {\n  queue 16777217\n}\n", line: 2, "got '16777217'"),
        Case("queue with a unit", "log {\n  queue 64k\n}\n", line: 2, "queue must be a whole number from 1 to 16777216, got '64k'"),
        Case("queue negative", "log {\n  queue -1\n}\n", line: 2, "got '-1'"),
        Case("fsync without unit", "log {\n  fsync 1\n}\n", line: 2, "duration needs a unit: '1'"),
        Case("fsync fraction", "log {\n  fsync 0.5s\n}\n", line: 2, "use a whole number"),
        Case("request_body_scan too large", "log {\n  request_body_scan 65m\n}\n", line: 2,
             "request_body_scan must be from 0 to 64m (0 to 67108864 bytes), got '65m'"),
        Case("request_body_scan bad size", "log {\n  request_body_scan 1mb\n}\n", line: 2,
             "bad size '1mb'", "request_body_scan must be from 0 to 64m"),
        Case("file without value", "log {\n  file\n}\n", line: 2, "missing value: 'file' needs PATH or off"),
        Case("file with a space", "log {\n  file my logs/c.jsonl\n}\n", line: 2,
             "too many values for 'file': expected one PATH or off, got 2 (paths cannot contain spaces)"),
        Case("stdout without value", "log {\n  stdout\n}\n", line: 2, "missing value: 'stdout' needs on, off or auto"),
        Case("queue without value", "log {\n  queue\n}\n", line: 2, "missing value: 'queue' needs N (records)"),
        Case("log with an argument", "log /var/log {\n}\n", line: 1, "'log' takes no value: write 'log {'"),
        Case("log without {", "log\n", line: 1, "'log' starts a block: write 'log {' with the '{' on the same line"),
        Case("duplicate log block", "log {\n}\nlog {\n}\n", line: 3, "duplicate 'log' block (first opened on line 1)"),
        Case("duplicate key in log", "log {\n  fsync 1s\n  fsync off\n}\n", line: 3, "duplicate 'fsync' in the 'log' block (first set on line 2)"),
        Case("unclosed log", "log {\n  fsync 1s\n", line: 1, "unclosed block: the 'log' block opened here has no closing '}'"),
        Case("log inside a route", "route / {\n  log {\n}\n", line: 2, "blocks do not nest: 'log' inside route '/'"),
        Case("unknown block like log", "logs {\n}\n", line: 1, "unknown block 'logs' (did you mean 'log'?)"),

        // Log file paths, checked against the file system after parsing.
        Case("log directory missing", base + "log {\n  file /nonexistent-sluice-dir/c.jsonl\n}\n", line: 9,
             "directory '/nonexistent-sluice-dir' does not exist; create it or fix the log file path"),
        Case("relative log directory missing", base + "log {\n  file nonexistent-sluice-dir/c.jsonl\n}\n", line: 9,
             "directory 'nonexistent-sluice-dir' does not exist (relative to the working directory '"),
        Case("log directory is a file", base + "log {\n  file /dev/null/c.jsonl\n}\n", line: 9, "'/dev/null' is not a directory"),
        Case("log path below a file", base + "log {\n  file /dev/null/a/c.jsonl\n}\n", line: 9,
             "directory '/dev/null/a' does not exist: part of its path is a file; fix the log file path"),
        Case("log file is a directory", base + "log {\n  file /tmp\n}\n", line: 9, "log file '/tmp' is a directory; give a file path inside it"),
        Case("log file ends in /", base + "log {\n  file /tmp/\n}\n", line: 9,
             "log file '/tmp/' names a directory; give a file path, e.g. '/tmp/completions.jsonl'"),

        // Route captures.
        Case("capture_request too large", "route / {\n  capture_request 17m\n}\n", line: 2,
             "capture_request must be from 0 to 16m (0 to 16777216 bytes), got '17m'"),
        Case("capture_response too large", "route / {\n  capture_response 16777217\n}\n", line: 2,
             "capture_response must be from 0 to 16m", "got '16777217'"),
        Case("capture_response negative", "route / {\n  capture_response -1\n}\n", line: 2, "bad size '-1'"),
        Case("capture_request off", "route / {\n  capture_request off\n}\n", line: 2, "bad size 'off'"),
        Case("capture_request without value", "route / {\n  capture_request\n}\n", line: 2, "missing value: 'capture_request' needs SIZE"),
        Case("duplicate capture", "route / {\n  capture_response 1k\n  capture_response 2k\n}\n", line: 3,
             "duplicate 'capture_response' in route '/'"),
        Case("capture typo", "route / {\n  capture_requests 1k\n}\n", line: 2, "(did you mean 'capture_request'?)"),

        // inject_usage: a boolean, in a route.
        Case("inject_usage bad value", "route / {\n  inject_usage sometimes\n}\n", line: 2,
             "inject_usage must be on, off, true, false, yes or no, got 'sometimes'"),
        Case("inject_usage without value", "route / {\n  inject_usage\n}\n", line: 2, "missing value: 'inject_usage' needs on or off"),
        Case("inject_usage at the top level", "inject_usage off\n", line: 1,
             "key 'inject_usage' is not allowed at the top level; it belongs in a 'route' block"),

        // websocket: a boolean, in a route; tunnel_idle: a duration.
        Case("websocket bad value", "route / {\n  websocket maybe\n}\n", line: 2,
             "websocket must be on, off, true, false, yes or no, got 'maybe'"),
        Case("websocket at the top level", "websocket on\n", line: 1,
             "key 'websocket' is not allowed at the top level; it belongs in a 'route' block"),
        Case("tunnel_idle without unit", "timeouts {\n  tunnel_idle 60\n}\n", line: 2, "duration needs a unit: '60'"),
        Case("tunnel_idle typo", "route / {\n  tunnel_idel 5m\n}\n", line: 2, "(did you mean 'tunnel_idle'?)"),

        // The admin block.
        Case("unknown key in admin", "admin {\n  port 9901\n}\n", line: 2, "unknown key 'port' in the 'admin' block"),
        Case("listen typo in admin", "admin {\n  lsten :9901\n}\n", line: 2, "unknown key 'lsten' in the 'admin' block (did you mean 'listen'?)"),
        Case("top-level key in admin", "admin {\n  workers 2\n}\n", line: 2,
             "key 'workers' is not allowed in the 'admin' block; it belongs at the top level"),
        Case("admin address on one line", "admin 127.0.0.1:9901\n", line: 1,
             "'admin' starts a block: write 'admin {' with the '{' on the same line"),
        Case("admin with an argument", "admin 127.0.0.1:9901 {\n}\n", line: 1, "'admin' takes no value: write 'admin {'"),
        Case("admin without listen", base + "admin {\n}\n", line: 8,
             "the 'admin' block has no 'listen': add e.g. 'listen 127.0.0.1:9901' inside it, or remove the block"),
        Case("two admin listens", "admin {\n  listen :9901\n  listen :9902\n}\n", line: 3,
             "duplicate 'listen' in the 'admin' block (first set on line 2)"),
        Case("admin listen without value", "admin {\n  listen\n}\n", line: 2, "missing value: 'listen' needs ADDRESS, e.g. 'listen 127.0.0.1:9901'"),
        Case("admin listen without port", "admin {\n  listen 127.0.0.1\n}\n", line: 2, "bad listen address '127.0.0.1': missing port"),
        Case("duplicate admin block", "admin {\n}\nadmin {\n}\n", line: 3, "duplicate 'admin' block (first opened on line 1)"),
        Case("admin inside log", "log {\n  admin {\n}\n", line: 2, "blocks do not nest: 'admin' inside the 'log' block"),
        Case("admin equal to a public listener", "listen 127.0.0.1:8080\nlisten 127.0.0.1:9901\n" + base.replacing("listen :8080\n", with: "")
             + "admin {\n  listen 127.0.0.1:9901\n}\n", line: 10,
             "admin listen address '127.0.0.1:9901' is also a public listener (line 2); give the admin listener its own port"),
        Case("admin equal, host names in other case", "listen LocalHost:9901\n" + base.replacing("listen :8080\n", with: "")
             + "admin {\n  listen localhost:9901\n}\n", line: 9, "is also a public listener (line 1)"),
        Case("admin overlaps a wildcard listener", base + "admin {\n  listen 127.0.0.1:8080\n}\n", line: 9,
             "admin listen address '127.0.0.1:8080' overlaps public listener '0.0.0.0:8080' (line 1): same port, and a wildcard address covers every interface"),
        Case("admin wildcard covers a listener", "admin {\n  listen [::]:8080\n}\n" + base, line: 2,
             "admin listen address '[::]:8080' overlaps public listener '0.0.0.0:8080' (line 4)"),
        Case("admin :PORT equals listen :PORT", base + "admin {\n  listen :8080\n}\n", line: 9,
             "admin listen address '0.0.0.0:8080' is also a public listener (line 1)"),

        // Not text.
        Case("NUL byte", "listen :80\n\u{0}\u{1}\n", line: 2, "unexpected control character 0x00 (is this a text file?)"),
        Case("escape byte mid-line", "workers 2\u{1B}[0m\n", line: 1, "unexpected control character 0x1B"),
    ]

    @Test(arguments: cases)
    func reportsLineAndMessage(_ c: Case) {
        Self.expectError(parsing: c.text, c)
    }

    /// Parsing `text` fails at `c.line` with every fragment of `c` in a one-line message (so `check` prints one line
    /// per error).
    static func expectError(parsing text: String, _ c: Case) {
        do {
            let config = try Config.parse(text: text, file: "proxy.conf")
            Issue.record("expected an error, parsed \(config)")
        } catch {
            #expect(error.file == "proxy.conf")
            #expect(error.line == c.line, "\(error)")
            for fragment in c.fragments {
                #expect(error.message.contains(fragment), "\(error.message)")
            }
            #expect(!error.message.contains("\n"))
        }
    }

    @Test(arguments: [
        ("wokers 2\n", "proxy.conf:1: unknown key 'wokers' at the top level (did you mean 'workers'?)"),
        ("upstream llm {\n    max_idel 3\n}\n", "proxy.conf:2: unknown key 'max_idel' in upstream 'llm' (did you mean 'max_idle'?)"),
        ("listen :8080\n", "proxy.conf: no upstream: add a block 'upstream NAME { server URL }'"),
        (base + "log {\n  file /nonexistent-sluice-dir/c.jsonl\n}\n",
         "proxy.conf:9: directory '/nonexistent-sluice-dir' does not exist; create it or fix the log file path"),
        (base + "admin {\n  listen :8080\n}\n",
         "proxy.conf:9: admin listen address '0.0.0.0:8080' is also a public listener (line 1); give the admin listener its own port so /metrics is never served to clients"),
    ])
    func descriptionIsCompilerStyle(text: String, description: String) {
        #expect {
            try Config.parse(text: text, file: "proxy.conf")
        } throws: { error in
            (error as? ConfigError)?.description == description
        }
    }

    @Test func unknownKeyWithoutCloseMatchHasNoSuggestion() {
        do {
            _ = try Config.parse(text: "timeouts {\n  banana 1s\n}\n", file: "p")
            Issue.record("expected an error")
        } catch {
            #expect(error.message == "unknown key 'banana' in the 'timeouts' block")
        }
    }
}
