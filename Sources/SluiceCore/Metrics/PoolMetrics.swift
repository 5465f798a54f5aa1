/// The upstream pools' series: per server (streams, up, responses, failures, ejections, time to the response head)
/// and per upstream (affinity, panic, retries by reason, retries the budget refused). They are read from the pools
/// of the settings in force at each scrape, not from loop cells: the pools already count across loops, and their
/// servers come and go with the resolver and reloads.
extension MetricsRegistry {
    /// The metrics follow `settings`' upstream pools from now on (start-up, then every applied reload). Any thread.
    public func watch(_ settings: ProxySettings) {
        upstreamPools.withLock { $0 = settings.upstreams.map(\.pool) }
    }

    /// The `sluice_upstream_retries_total` samples of each pool: every `retry_on` condition, counted or not, then
    /// any other reason counted before a reload took it out of `retry_on` (a counter does not vanish while its
    /// pool lives).
    static func renderPoolRetries(_ pools: [UpstreamPool], to out: inout PrometheusText) {
        for pool in pools {
            let counted = pool.counters.retries
            let configured = pool.config.retry.retryOn.sorted(by: retryReasonOrder).map(\.description)
            let dropped = counted.keys.filter { !configured.contains($0) }.sorted()
            for reason in configured + dropped {
                out.sample("sluice_upstream_retries_total", labels: ["upstream": pool.name, "reason": reason],
                           value: counted[reason] ?? 0)
            }
        }
    }

    /// `connect_error`, `reset`, then statuses ascending: the order `retry_on` is documented in.
    private static func retryReasonOrder(_ a: RetryCondition, _ b: RetryCondition) -> Bool {
        func rank(_ condition: RetryCondition) -> Int {
            switch condition {
            case .connectError: 0
            case .reset: 1
            case .status(let status): 2 + status
            }
        }
        return rank(a) < rank(b)
    }

    /// Every pool family, HELP and TYPE written even with no pool, so dashboards and rules find them from the start.
    /// A server's series exist while it is in its pool: one that leaves (its address gone, its line removed or
    /// changed) takes them along, and one that comes back starts from 0, which `rate()` reads as a counter reset.
    static func renderPools(_ pools: [UpstreamPool], now: Int64, to out: inout PrometheusText) {
        let servers = pools.map { pool in (pool, pool.servers.map { ($0, PoolServerSnapshot($0, now: now)) }) }

        out.family("sluice_upstream_server_streams", type: "gauge", help: "Streams in flight to each server of an upstream pool, from every worker.")
        for (pool, members) in servers {
            for (server, snapshot) in members {
                out.sample("sluice_upstream_server_streams", labels: ["upstream": pool.name, "server": server.label], value: snapshot.streams)
            }
        }
        out.family("sluice_upstream_server_up", type: "gauge",
                   help: "1 while a server takes new streams; 0 while it is ejected after failures or failing its health check.")
        for (pool, members) in servers {
            for (server, snapshot) in members {
                out.sample("sluice_upstream_server_up", labels: ["upstream": pool.name, "server": server.label], value: snapshot.up ? 1 : 0)
            }
        }
        out.family("sluice_upstream_server_responses_total", type: "counter",
                   help: "Final response heads from each server, by status class; one that was then retried on another server (a 503) counts too.")
        for (pool, members) in servers {
            for (server, snapshot) in members {
                for (classIndex, count) in snapshot.counters.responses.enumerated() {
                    out.sample("sluice_upstream_server_responses_total",
                               labels: ["upstream": pool.name, "server": server.label, "code_class": MetricsLayout.statusClasses[classIndex]],
                               value: count)
                }
            }
        }
        let healthCounters: [(String, String, KeyPath<PoolServerCounters, Int>)] = [
            ("sluice_upstream_server_failures_total",
             "Failures traffic saw on each server: a connect that failed or timed out, a close or reset before the response head, a first-byte timeout, a 5xx or a 429.",
             \.failures),
            ("sluice_upstream_server_ejections_total",
             "Times each server was taken out of use: ejected after max_fails failures within fail_window, or by the first of a run of failed health checks.",
             \.ejections),
        ]
        for (name, help, field) in healthCounters {
            out.family(name, type: "counter", help: help)
            for (pool, members) in servers {
                for (server, snapshot) in members {
                    out.sample(name, labels: ["upstream": pool.name, "server": server.label], value: snapshot.counters[keyPath: field])
                }
            }
        }

        let ttft = "sluice_upstream_server_ttft_seconds"
        out.family(ttft, type: "histogram",
                   help: "Time from the start of a try on a server (its connect, or taking a pooled connection) to its final response head.")
        for (pool, members) in servers {
            for (server, snapshot) in members {
                // `_count` is the `+Inf` bucket, as for the loops' histograms: the two always agree.
                var cumulative = 0
                for (index, bound) in PoolServerCounters.ttftBounds.enumerated() {
                    cumulative += snapshot.counters.ttftBuckets[index]
                    out.sample(ttft + "_bucket", labels: ["upstream": pool.name, "server": server.label,
                                                          "le": PrometheusText.seconds(microseconds: bound)], value: cumulative)
                }
                cumulative += snapshot.counters.ttftBuckets[PoolServerCounters.ttftBounds.count]
                out.sample(ttft + "_bucket", labels: ["upstream": pool.name, "server": server.label, "le": "+Inf"], value: cumulative)
                out.sample(ttft + "_sum", labels: ["upstream": pool.name, "server": server.label],
                           value: PrometheusText.seconds(microseconds: snapshot.counters.ttftSumMicroseconds))
                out.sample(ttft + "_count", labels: ["upstream": pool.name, "server": server.label], value: cumulative)
            }
        }

        out.family("sluice_affinity_total", type: "counter",
                   help: "Requests to upstreams with affinity: sent to the first available server in the key's order (hit), to a later one because that one was over the load bound (spill), or balanced for want of a key (nokey).")
        for pool in pools {
            let affinity = pool.counters.affinity
            // An upstream without affinity counts nothing here; one that had it before a reload keeps its counts.
            guard pool.config.affinity != nil || affinity.hit + affinity.spill + affinity.nokey > 0 else { continue }
            out.sample("sluice_affinity_total", labels: ["upstream": pool.name, "result": "hit"], value: affinity.hit)
            out.sample("sluice_affinity_total", labels: ["upstream": pool.name, "result": "spill"], value: affinity.spill)
            out.sample("sluice_affinity_total", labels: ["upstream": pool.name, "result": "nokey"], value: affinity.nokey)
        }
        out.family("sluice_upstream_panic_total", type: "counter",
                   help: "Requests sent to a server while none of the upstream was available (panic mode: every server taken as healthy).")
        for pool in pools {
            out.sample("sluice_upstream_panic_total", labels: ["upstream": pool.name], value: pool.counters.panicCount)
        }
        out.family("sluice_upstream_retries_refused_total", type: "counter",
                   help: "Retries retry_on allowed but the upstream's retry budget (retry_ratio) did not: the client got the failure.")
        for pool in pools {
            out.sample("sluice_upstream_retries_refused_total", labels: ["upstream": pool.name], value: pool.counters.refusedRetries)
        }
    }
}

/// One server's values for one scrape.
private struct PoolServerSnapshot {
    var streams: Int
    var up: Bool
    var counters: PoolServerCounters

    init(_ server: PoolServer, now: Int64) {
        streams = server.streams
        up = server.unavailableUntil <= now && !server.isRetired
        // Copied element by element under the lock: a scrape holding the arrays' shared storage would make the
        // data path's next count copy them (an allocation per exchange after every scrape).
        counters = server.counters.withLock { counters in
            var copy = PoolServerCounters()
            copy.responses = counters.responses.map { $0 }
            copy.failures = counters.failures
            copy.ejections = counters.ejections
            copy.ttftBuckets = counters.ttftBuckets.map { $0 }
            copy.ttftSumMicroseconds = counters.ttftSumMicroseconds
            return copy
        }
    }
}
