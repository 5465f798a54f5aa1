extension ProxyLoop {
    /// Makes, on the loop's own thread before its first wait, what the first burst of streams would otherwise make
    /// while clients wait: the thread's malloc arena (created by its first allocation), the pooled head parsers and
    /// response observers, and the buffers' first pages (made in `init` on the starting thread). A fresh process's
    /// first load then pays less of its start-up on the first bytes.
    func prewarm() {
        let parsers = (0..<ProxyLoop.prewarmedParsers).map { _ in takeParsers() }
        parsers.forEach(giveParsers)
        let observers = (0..<ProxyLoop.prewarmedObservers).map { _ in
            takeResponseObserver(kind: .eventStream, readsUsage: true, capture: 0)
        }
        observers.forEach(giveResponseObserver)
    }

    /// As many as a burst of a few dozen streams takes at once: parsers are about 7.5 KiB a pair, observers 1 KiB.
    static let prewarmedParsers = 32
    static let prewarmedObservers = 64
}
