/// The two decisions that keep every byte in exactly one exchange (STYLE habit 10), each made in one place from
/// facts the session gathers, so no path can pool a connection or parse a body the way the request-desync defects
/// did (an upstream pooled while it still owed body bytes; those bytes then parsed as the client's next request).
enum ExchangeReuse {
    /// What an exchange did to its upstream connection.
    struct UpstreamFacts: Equatable {
        /// The head and every body byte of the request were written, with nothing left in the transport.
        var requestWrittenWhole: Bool
        /// The response ended at its framed end: no error, no truncation, no byte after it.
        var responseEndedCleanly: Bool
        /// The server allowed another request (no `Connection: close`, not close-delimited, HTTP/1.1 or keep-alive).
        var serverKeepsAlive: Bool
        /// The server closed its side or the socket failed.
        var hungUp: Bool
    }

    /// Whether the upstream connection may go back to the pool: only when both of its messages ended cleanly and
    /// completely (nginx's keepalive module drops it when `!u->keepalive || !u->request_body_sent`). A server that
    /// answered early while still owed body bytes would read the next pooled request as the rest of that body.
    static func mayPoolUpstream(_ facts: UpstreamFacts) -> Bool {
        facts.requestWrittenWhole && facts.responseEndedCleanly && facts.serverKeepsAlive && !facts.hungUp
    }

    /// What happens to the client connection once a response is out.
    enum ClientNext: Equatable {
        /// Drop the request's `unsentBodyBytes` at the front of the input (framed for an upstream that no longer
        /// takes them), then parse whatever follows as the next request: it was sent after the body's end.
        case nextRequest(discardingBodyBytes: Int)
        /// Close (lingering, so the response is not reset away): part of the request's body is still to come, and
        /// nothing after it can be told apart from body without reading it all.
        case close
    }

    /// Decides the client connection's next step after a response. `requestReceivedWhole`: the request's body
    /// reached its framed end (or it had none). `unsentBodyBytes`: framed body bytes still in the input buffer.
    static func clientNext(requestReceivedWhole: Bool, closeRequested: Bool, unsentBodyBytes: Int) -> ClientNext {
        guard requestReceivedWhole, !closeRequested else { return .close }
        return .nextRequest(discardingBodyBytes: unsentBodyBytes)
    }

    /// Whether a request may be sent again on a new connection after a reused one closed before answering: only
    /// an idempotent method (RFC 9110 §9.2.2, as nginx's proxy_next_upstream does for non-idempotent ones), with no
    /// body byte consumed and nothing of the response read.
    static func mayReplay(method: HTTPMethod, alreadyReplayed: Bool, bodyBytesSent: Int64, responseBytesRead: Bool,
                          headKept: Bool) -> Bool {
        method.isIdempotent && !alreadyReplayed && bodyBytesSent == 0 && !responseBytesRead && headKept
    }
}

extension HTTPMethod {
    /// RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and DELETE. An unknown method is assumed not idempotent.
    var isIdempotent: Bool {
        switch self {
        case .get, .head, .options, .trace, .put, .delete: true
        case .post, .patch, .connect, .other: false
        }
    }
}
