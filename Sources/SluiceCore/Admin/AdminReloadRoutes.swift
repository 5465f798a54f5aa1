/// What the admin listener does for `/reload` and `/reload-status`.
enum AdminReloadRoute: Equatable {
    /// Answer now.
    case respond(AdminResponse)
    /// Ask the `ReloadCoordinator` for a reload and answer when it has finished.
    case startReload
}

/// The reload endpoints, pure like `AdminRoutes`: `POST /reload` triggers a reload and is answered when it has
/// finished; `GET /reload-status` shows the last outcome. They are operator endpoints: the admin listener is
/// loopback unless configured otherwise, and a GET never triggers anything (a crawler or a prefetching browser
/// must not reload a proxy).
enum AdminReloadRoutes {
    /// The route for `request`, or nil when its path is not a reload endpoint (`AdminRoutes` answers it).
    /// - Parameter status: renders `GET /reload-status`'s body; called only for it.
    static func route(_ request: AdminRequest, status: () -> String) -> AdminReloadRoute? {
        switch request.path {
        case "/reload":
            guard request.method == .post else {
                return .respond(AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain",
                                              body: "use POST to reload; GET /reload-status shows the last reload\n", allow: "POST"))
            }
            // The body is never read; a client sending one expects it to mean something. It does not.
            guard !request.hasBody else {
                return .respond(failed(400, "Bad Request", "POST /reload takes no body; the configuration is re-read from its file"))
            }
            return .startReload
        case "/reload-status":
            guard request.method == .get || request.method == .head else {
                return .respond(AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain", body: "use GET\n",
                                              allow: "GET, HEAD"))
            }
            return .respond(AdminResponse(status: 200, reason: "OK", contentType: "application/json", body: status() + "\n",
                                          headOnly: request.method == .head))
        default:
            return nil
        }
    }

    /// The answer to `POST /reload` once the reload that served it ended: 200 applied, 422 when the configuration
    /// is at fault, 500 when the host refused what it asks (an address in use), 503 when sluice began draining
    /// before the request was served (nil outcome).
    static func response(to outcome: ReloadOutcome?) -> AdminResponse {
        guard let outcome else { return failed(503, "Service Unavailable", "sluice is draining; no reload runs any more") }
        switch outcome.attempt {
        case .applied:
            return AdminResponse(status: 200, reason: "OK", contentType: "application/json", body: outcome.json + "\n")
        case .failed(let failure):
            let (status, reason) = failure.isConfiguration ? (422, "Unprocessable Content") : (500, "Internal Server Error")
            return AdminResponse(status: status, reason: reason, contentType: "application/json", body: outcome.json + "\n")
        }
    }

    /// The answer when the coordinator did not take the request.
    static func response(refused admission: ReloadCoordinator.Admission) -> AdminResponse {
        switch admission {
        case .accepted, .draining:
            return response(to: nil)
        case .unavailable:
            return failed(409, "Conflict", "sluice runs without a configuration file (--config): there is nothing to re-read")
        }
    }

    /// The answer when the reload has not finished within `AdminLimits.answerTimeoutMilliseconds`: it goes on,
    /// and its outcome shows in `GET /reload-status`.
    static func overdue(afterMilliseconds wait: Int64) -> AdminResponse {
        var body = "{\"result\":\"pending\",\"error\":"
        OpLog.appendQuoted("the reload has not finished after \(wait / 1000) s; it goes on, GET /reload-status shows its outcome",
                           to: &body)
        return AdminResponse(status: 503, reason: "Service Unavailable", contentType: "application/json", body: body + "}\n")
    }

    /// `{"result":"failed","error":MESSAGE}` with `status`.
    private static func failed(_ status: Int, _ reason: String, _ message: String) -> AdminResponse {
        var body = "{\"result\":\"failed\",\"error\":"
        OpLog.appendQuoted(message, to: &body)
        return AdminResponse(status: status, reason: reason, contentType: "application/json", body: body + "}\n")
    }
}
