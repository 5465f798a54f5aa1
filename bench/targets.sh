# bench/targets.sh: the proxies bench/run.sh measures, sourced by it (not run alone).
# Each target starts from a template under the run's temp folder, pinned to CPU 1, and is
# stopped by PID. It reads run.sh's globals (BENCH, WORK, NOFILE, FD_MARGIN, ORIGIN_PORT,
# ORIGIN_PORTS, POOL_LINES, WS_ON, WS_ORIGIN_PORT, PORT_BASE, LOADGEN, STARTED, and the binaries
# NGINX, HAPROXY, CADDY, SLUICE) and its helpers (log, die, stop_pid).
# shellcheck shell=bash disable=SC2154

# start_target NAME sets PORT (where the load generator connects), TARGET_PID (the process
# we started and stop) and PROXY_PID (the process whose CPU and RSS are measured: nginx's
# single worker, otherwise the process itself; empty for direct).
PORT=""; PROXY_PID=""; TARGET_PID=""; TARGET=""
MESSAGES="$WORK/messages"  # per target: what it logged besides start and stop
mkdir -p "$MESSAGES"

free_port() {  # the first port from $1 up with nothing listening on it
    local p="$1"
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

# Waits up to 10 s for the started process to show a sign of life (FILE matching
# PATTERN, or just staying alive when PATTERN is empty).
await_start() {  # await_start NAME FILE PATTERN
    local name="$1" file="$2" pattern="$3"
    for _ in $(seq 1 100); do
        kill -0 "$TARGET_PID" 2>/dev/null || die "$name exited at start: $(tail -5 "$file" 2>/dev/null)"
        if [ -z "$pattern" ] || grep -q "$pattern" "$file" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$name did not get ready: $(tail -5 "$file" 2>/dev/null)"
}

POOL_LINES=""  # scenario p's lines for sluice's upstream block (see pool_lines); empty otherwise
# Scenario w's lines (a route or backend for /ws/ to bench/ws_origin.c) start with @WS@ in every
# template: kept, marker removed, while WS_ON is 1 (scenario w), deleted otherwise, so the other
# scenarios measure exactly the configs they always did.
WS_ON=0; WS_ORIGIN_PORT=""
fill_template() {  # fill_template TEMPLATE OUT: the placeholders every template may use
    local pool=(-e "s#^@POOL@\$#$POOL_LINES#") ws=(-e "/^@WS@/d")
    if [ -z "$POOL_LINES" ]; then pool=(-e "/^@POOL@$/d"); fi
    if [ "$WS_ON" = 1 ]; then ws=(-e "s#^@WS@##" -e "s#@WS_ORIGIN_PORT@#$WS_ORIGIN_PORT#g"); fi
    sed -e "s#@PORT@#$PORT#g" -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" -e "s#@NOFILE@#$NOFILE#g" \
        -e "s#@MAXCONN@#$(( (NOFILE - 64) / 2 ))#g" -e "s#@WORKER_CONNECTIONS@#$((NOFILE * 2))#g" \
        -e "s#@PREFIX@#$WORK/$TARGET#g" -e "s#@LOG_FILE@#${LOG_FILE:-off}#g" "${pool[@]}" "${ws[@]}" "$BENCH/$1" > "$2"
}

# Scenario p's upstream after the template's first server: `one` adds nothing to it but the
# balance policy every configuration names (the default, written out), `least` the other origins,
# `affinity` also the session-id key bench/session-ids.lua sends. GNU sed turns each \n into a
# line break.
pool_lines() {  # pool_lines one|least|affinity
    local lines="" port
    if [ "$1" != one ]; then
        for port in "${ORIGIN_PORTS[@]:1}"; do lines+="    server http://127.0.0.1:$port\\n"; done
    fi
    lines+="    balance least_streams"
    if [ "$1" = affinity ]; then lines+="\\n    affinity header x-session-id"; fi
    echo "$lines"
}

start_nginx() {
    local prefix="$WORK/nginx"
    # worker_connections is twice the fd limit: nginx starts closing idle client
    # connections once fewer than 1/16 of its connection slots are free, which would
    # cap held streams below what the fds allow. The fd limit is the same as sluice's.
    fill_template nginx.conf.template "$prefix/nginx.conf"
    taskset -c 1 "$NGINX" -c "$prefix/nginx.conf" -p "$prefix" -e "$prefix/error.log" \
        -g 'daemon off;' 2> "$prefix/stderr.log" &
    TARGET_PID=$!
    STARTED+=("$TARGET_PID")
    for _ in $(seq 1 50); do
        PROXY_PID=$( (ps -o pid= --ppid "$TARGET_PID" || true) | tr -d ' ' | head -1)
        [ -n "$PROXY_PID" ] && return 0
        kill -0 "$TARGET_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "nginx did not start: $(cat "$prefix/stderr.log" "$prefix/error.log" 2>/dev/null)"
}

# HAProxy in the foreground (-db) with nbthread 1 is one process doing all the work.
# It needs 2 × maxconn fds plus about 20 (listeners, servers, pollers) and refuses to
# start when that exceeds the hard fd limit, so maxconn is (fd limit − 64) / 2: the same
# fd budget as the others and room for e's streams ((fd limit − 640) / 2).
start_haproxy() {
    local dir="$WORK/haproxy"
    fill_template haproxy.cfg.template "$dir/haproxy.cfg"
    taskset -c 1 "$HAPROXY" -db -f "$dir/haproxy.cfg" > "$dir/stdout.log" 2> "$dir/stderr.log" &
    TARGET_PID=$!
    STARTED+=("$TARGET_PID")
    PROXY_PID=$TARGET_PID
    await_start haproxy "$dir/stderr.log" ""
}

# Caddy is one Go process; GOMAXPROCS=1 lets one thread run Go code at a time (the
# runtime's own threads still exist and are counted in its CPU). It inherits the fd
# limit. HOME and the XDG folders point into the temp folder: Caddy writes its data
# and autosave there, never into the user's home.
start_caddy() {
    local dir="$WORK/caddy"
    mkdir -p "$dir/home"
    fill_template Caddyfile.template "$dir/Caddyfile"
    HOME="$dir/home" XDG_CONFIG_HOME="$dir/home/config" XDG_DATA_HOME="$dir/home/data" GOMAXPROCS=1 \
        taskset -c 1 "$CADDY" run --config "$dir/Caddyfile" --adapter caddyfile \
        > "$dir/stdout.log" 2> "$dir/stderr.log" &
    TARGET_PID=$!
    STARTED+=("$TARGET_PID")
    PROXY_PID=$TARGET_PID
    await_start caddy "$dir/stderr.log" ""
}

# sluice, and sluice-log: the same binary with the completion log written to a file.
# stdout is where completion records would go by default; both configs turn it off,
# and a file keeps any that appear out of the report (the notes count them).
start_sluice() {
    local dir="$WORK/$TARGET"
    local LOG_FILE=off  # dynamic scope: fill_template sees it
    if [ "$TARGET" = sluice-log ]; then LOG_FILE="$dir/completions.jsonl"; fi
    fill_template sluice.conf.template "$dir/sluice.conf"
    taskset -c 1 "$SLUICE" --config "$dir/sluice.conf" --workers 1 \
        >> "$WORK/sluice.stdout" 2> "$dir/stderr.log" &
    TARGET_PID=$!
    STARTED+=("$TARGET_PID")
    PROXY_PID=$TARGET_PID
    await_start "$TARGET" "$dir/stderr.log" '"msg":"ready"'
}

start_target() {  # start_target NAME
    TARGET="$1"
    case "$TARGET" in
        direct) PORT=$ORIGIN_PORT; PROXY_PID=""; TARGET_PID=""; check_target; return ;;
        nginx) PORT=$(free_port "$PORT_BASE") ;;
        sluice|sluice-log) PORT=$(free_port $((PORT_BASE + 1))) ;;
        haproxy) PORT=$(free_port $((PORT_BASE + 2))) ;;
        caddy) PORT=$(free_port $((PORT_BASE + 3))) ;;
        *) die "unknown target $TARGET" ;;
    esac
    rm -rf "${WORK:?}/$TARGET"; mkdir -p "$WORK/$TARGET"
    "start_${TARGET%-log}"
    check_target
}

# Stops the current target and keeps what it logged besides start-up and shutdown for
# the report's notes; for sluice-log also how many completion records it wrote.
stop_target() {  # stop_target SCENARIO RUN
    local dir="$WORK/$TARGET"
    if [ -n "$TARGET_PID" ]; then stop_pid "$TARGET_PID"; fi
    case "$TARGET" in
        nginx) cat "$dir/error.log" "$dir/stderr.log" >> "$MESSAGES/nginx.log" 2>/dev/null || true ;;
        haproxy|caddy) cat "$dir/stderr.log" "$dir/stdout.log" >> "$MESSAGES/$TARGET.log" 2>/dev/null || true ;;
        sluice|sluice-log)
            grep -v '"msg":"\(ready\|stopping\|draining\|stopped\)"' "$dir/stderr.log" >> "$MESSAGES/$TARGET.log" || true ;;
    esac
    if [ "$TARGET" = sluice-log ]; then
        printf '%s\t%s\t%s\n' "$1" "$2" "$(wc -l < "$dir/completions.jsonl" 2>/dev/null || echo 0)" \
            >> "$MESSAGES/sluice-log-records.tsv"
    fi
    # The completion log of a saturation run is hundreds of MB; nothing reads it again.
    if [ "$TARGET" != direct ]; then rm -rf "${WORK:?}/$TARGET"; fi
    TARGET_PID=""; PROXY_PID=""; TARGET=""
}

# A target is measured only after it streamed a short SSE response and a bulk body
# correctly (retrying for up to 5 s while it binds).
check_target() {
    local out=""
    for _ in $(seq 1 25); do
        if [ -n "$TARGET_PID" ] && ! kill -0 "$TARGET_PID" 2>/dev/null; then
            die "$TARGET exited: $(tail -5 "$WORK/$TARGET"/*.log 2>/dev/null)"
        fi
        if out=$(timeout 10 "$LOADGEN" --target "127.0.0.1:$PORT" --mode sse -c 1 -r 2 --duration 5 \
                     --path "/sse?events=3&interval_ms=1&size=64" 2>/dev/null) \
           && grep -q '"requests_completed":2,.*"events":6,.*"errors":{"total":0' <<<"$out" \
           && out=$(timeout 10 "$LOADGEN" --target "127.0.0.1:$PORT" --mode bytes -c 1 -r 1 --duration 5 \
                     --path "/bytes?n=300000" 2>/dev/null) \
           && grep -q '"requests_completed":1,.*"body_bytes":300000,.*"errors":{"total":0' <<<"$out"; then
            return 0
        fi
        sleep 0.2
    done
    die "target $TARGET on port $PORT does not answer correctly: $out"
}
