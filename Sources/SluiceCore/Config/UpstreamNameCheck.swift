/// One thing `sluice check` reports beyond a parse error: a warning (start-up would go on) or an error (it would
/// refuse), at the line to blame.
public struct ConfigFinding: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: Sendable, Equatable {
        /// Start-up goes on, but something will not work as written (yet).
        case warning
        /// Start-up would refuse: `check` exits 1.
        case error
    }

    public var severity: Severity
    public var file: String
    /// 1-based; 0 when no line is to blame (an upstream from `--upstream`).
    public var line: Int
    public var message: String

    public init(_ severity: Severity, file: String, line: Int, _ message: String) {
        self.severity = severity
        self.file = file
        self.line = line
        self.message = message
    }

    /// The compiler's form, which editors jump to: `proxy.conf:12: warning: …`, or `proxy.conf:12: …` for an error
    /// (as ``ConfigError`` prints).
    public var description: String {
        let place = line > 0 ? "\(file):\(line):" : "\(file):"
        return severity == .warning ? "\(place) warning: \(message)" : "\(place) \(message)"
    }
}

/// What `sluice check` says about upstream names, so that a file that passes starts the way `check` said: every
/// name is looked up here as start-up would (blocking getaddrinfo), and each one that does not resolve is reported
/// at its `server` line, ending with the resolver's message. Under `resolve_at_start required` a routed name that
/// does not resolve is an error (start-up refuses); otherwise a warning (start-up retries it in the background and
/// its routes answer 502 `upstream_unresolved` meanwhile). An upstream no route uses is a warning too: start-up
/// never looks it up.
public enum UpstreamNameCheck {
    /// The findings for `config`'s upstreams, in file order.
    /// - Parameters:
    ///   - file: the path to print (as given to `check`).
    ///   - lookup: the resolver (injected by tests).
    public static func findings(_ config: Config, file: String,
                                lookup: (String, UInt16) throws(SystemError) -> [SocketAddress] = SocketAddress.resolveAll) -> [ConfigFinding] {
        let routed = Set(config.routes.map(\.upstream))
        var findings: [ConfigFinding] = []
        for upstream in config.upstreams {
            let isRouted = routed.contains(upstream.name)
            if !isRouted {
                findings.append(ConfigFinding(.warning, file: file, line: config.keyLines["upstream.\(upstream.name)"] ?? 0,
                                              "upstream '\(upstream.name)' is not used by any route; start-up does not look up its name"))
            }
            for server in upstream.servers {
                let failure: SystemError
                do throws(SystemError) {
                    _ = try lookup(server.host, server.port)
                    continue
                } catch {
                    failure = error
                }
                let line = server.line > 0 ? server.line : config.serverLine(of: upstream)
                let name = "upstream '\(upstream.name)' (\(server.host))"
                if !isRouted {
                    findings.append(ConfigFinding(.warning, file: file, line: line, "\(name) does not resolve: \(failure.description)"))
                } else if upstream.resolveAtStart == .required {
                    findings.append(ConfigFinding(.error, file: file, line: line,
                                                  "\(name) does not resolve, and resolve_at_start is required: start-up would refuse: "
                                                      + failure.description))
                } else {
                    findings.append(ConfigFinding(.warning, file: file, line: line,
                                                  "\(name) does not resolve here; start-up would retry it in the background, its routes "
                                                      + "answering 502 upstream_unresolved and /readyz 503 until it resolves "
                                                      + "(resolve_at_start required refuses to start instead): \(failure.description)"))
                }
            }
        }
        return findings
    }
}

extension Config {
    /// The line of `upstream`'s `server` (where its name is written), else of its block; 0 for one from
    /// `--upstream` alone.
    public func serverLine(of upstream: UpstreamConfig) -> Int {
        keyLines["upstream.\(upstream.name).server"] ?? keyLines["upstream.\(upstream.name)"] ?? 0
    }
}
