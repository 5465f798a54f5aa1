-- bench/session-ids.lua: wrk's requests for bench/run.sh's scenario p (server choice in an
-- upstream pool). Each is scenario d's GET plus an x-session-id header, cycling through a fixed
-- set of ids, so an upstream with `affinity header x-session-id` chooses by key on every request
-- while the same bytes go to the other configurations. The requests are formatted once in init:
-- request() runs on the load core for every request, and the load core is already the busier one.
--
--   wrk -t1 -c64 -d5s -s bench/session-ids.lua http://127.0.0.1:PORT/small -- SESSIONS
local requests = {}
local count = 0
local last = 0

function init(args)
    count = tonumber(args[1]) or 1000
    for i = 1, count do
        local headers = {}
        for name, value in pairs(wrk.headers) do headers[name] = value end
        headers["x-session-id"] = string.format("session-%d", i)
        requests[i] = wrk.format("GET", wrk.path, headers)
    end
end

function request()
    last = last % count + 1
    return requests[last]
end
