extension ConfigDraft.Upstream {
    /// Checks what spans the lines of the block and builds the ``UpstreamConfig``: at least one server, no server
    /// twice, one scheme for all, not every server a backup, `tls_*` keys only with https, and `eject_time` not
    /// above `max_eject_time`.
    /// - Parameter resolveAtStart: the top-level value, for a block that sets none.
    /// - Throws: ``ConfigError`` in `file` at the line to blame (the block's when no single line is).
    func resolve(file: String, resolveAtStart topLevel: ResolveAtStart) throws(ConfigError) -> UpstreamConfig {
        func fail(_ line: Int, _ message: String) -> ConfigError {
            ConfigError(file: file, line: line, message: message)
        }
        guard let first = servers.first else {
            throw fail(line, "upstream '\(name)' has no 'server': add e.g. 'server http://127.0.0.1:8000' inside the block")
        }
        // Host names compare case-insensitively, as DNS does; `http://h` and `http://h:80` are one server.
        var lineOfServer: [String: Int] = [:]
        for server in servers {
            let key = server.description.lowercased()
            if let earlier = lineOfServer[key] {
                throw fail(server.line, "duplicate server '\(server)' in upstream '\(name)' (first on line \(earlier))")
            }
            lineOfServer[key] = server.line
            if server.scheme != first.scheme {
                // One TLS client setting and one Host rewrite serve the whole upstream.
                throw fail(
                    server.line,
                    "upstream '\(name)' mixes schemes: this server is \(server.scheme.rawValue):// but line \(first.line)'s is "
                        + "\(first.scheme.rawValue)://; declare another upstream for the \(server.scheme.rawValue) servers")
            }
        }
        if servers.allSatisfy(\.backup) {
            throw fail(
                line,
                "every server of upstream '\(name)' is a backup: remove 'backup' from at least one (backups take streams only when no other server can)")
        }
        if first.scheme == .http && tlsLine > 0 {
            throw fail(tlsLine, "tls_* settings apply to https upstreams; upstream '\(name)' is http://")
        }
        let health = pool.passiveHealth
        if health.ejectTime > health.maxEjectTime {
            func source(_ milliseconds: Int, _ line: Int) -> String {
                "\(ConfigValues.durationText(milliseconds)), " + (line > 0 ? "line \(line)" : "the default")
            }
            throw fail(
                max(ejectTimeLine, maxEjectTimeLine),
                "eject_time (\(source(health.ejectTime, ejectTimeLine))) must not exceed max_eject_time "
                    + "(\(source(health.maxEjectTime, maxEjectTimeLine))) in upstream '\(name)'")
        }
        return UpstreamConfig(
            name: name, servers: servers, maxIdleConnections: maxIdle, resolveInterval: resolveInterval,
            resolveAtStart: resolveAtStart ?? topLevel, tls: first.scheme == .https ? tls : nil, pool: pool)
    }
}
