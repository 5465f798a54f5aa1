# bench/measure.sh: what bench/run.sh measures with, sourced by it (not run alone): the
# /proc readers, the JSON record of one measurement, the load generator, wrk and
# held-stream runs, and the wait for idle cores. It reads run.sh's globals (WORK, RAW,
# LOADGEN, PORT, PROXY_PID, ORIGIN_PIDS, D_SECONDS, SETTLE_S, HOLD_PATH, STARTED,
# IDLE_WAIT_LEFT, and for scenario w WS_LOADGEN, WS_ORIGIN_PORT, MESSAGES, WARM_S and the W_*
# parameters) and its helpers (calc, log, die, stop_pid).
# shellcheck shell=bash disable=SC2154

# ---- /proc readers ---------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
# utime+stime of a whole process (all threads), in clock ticks. Field 2 (comm) may hold
# spaces, so fields are counted after its closing parenthesis: utime and stime are 14, 15.
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
proc_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# "busy total irq" ticks of one CPU from /proc/stat: busy = all but idle and iowait; irq =
# hard and soft interrupt time, which on loopback is mostly the receive path of packets
# this CPU sent, charged to no process. Fields 2-9 only: guest time is already in user.
cpu_ticks() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t, $7 + $8}' /proc/stat; }
pct_of() { calc "100 * $1 / ($2 > 0 ? $2 : 1)"; }  # pct_of PART WHOLE (same unit)
# utime+stime of each origin (p's pool has several), in clock ticks, space-separated.
origin_ticks() { local pid; for pid in "${ORIGIN_PIDS[@]}"; do proc_ticks "$pid"; done | paste -sd ' '; }

# ---- one measurement ---------------------------------------------------------------------
SNAP_T=0; SNAP_P=0; SNAP_O=0; SNAP_C0=""; SNAP_C1=""
snapshot() {
    SNAP_T=$(date +%s%N)
    SNAP_P=0
    if [ -n "$PROXY_PID" ]; then SNAP_P=$(proc_ticks "$PROXY_PID"); fi
    SNAP_O=$(origin_ticks)
    SNAP_C0=$(cpu_ticks 0); SNAP_C1=$(cpu_ticks 1)
}
# Prints the common JSON fields for the interval since `snapshot`: wall time, proxy and
# origin CPU (from /proc/PID/stat; origin: all origins, and each in origin_cpu_us_each), both
# cores' busy share (from /proc/stat), proxy RSS.
interval_json() {
    local now p o c0 c1 wall_ns proxy_us origin_us origin_each before after i us rss=0
    now=$(date +%s%N)
    p=0
    if [ -n "$PROXY_PID" ]; then p=$(proc_ticks "$PROXY_PID"); rss=$(proc_rss_kb "$PROXY_PID"); fi
    o=$(origin_ticks)
    c0=$(cpu_ticks 0); c1=$(cpu_ticks 1)
    wall_ns=$((now - SNAP_T))
    proxy_us=$(( (p - SNAP_P) * 1000000 / CLK_TCK ))
    read -ra before <<<"$SNAP_O"; read -ra after <<<"$o"
    origin_us=0; origin_each=""
    for i in "${!after[@]}"; do
        us=$(( (after[i] - before[i]) * 1000000 / CLK_TCK ))
        origin_us=$((origin_us + us)); origin_each+="${origin_each:+,}$us"
    done
    local b0 t0 q0 b0n t0n q0n b1 t1 q1 b1n t1n q1n
    read -r b0 t0 q0 <<<"$SNAP_C0"; read -r b0n t0n q0n <<<"$c0"
    read -r b1 t1 q1 <<<"$SNAP_C1"; read -r b1n t1n q1n <<<"$c1"
    printf '"wall_s":%s,"proxy_cpu_us":%d,"origin_cpu_us":%d,"origin_cpu_us_each":[%s],' \
        "$(calc "$wall_ns / 1e9" 6)" "$proxy_us" "$origin_us" "$origin_each"
    printf '"core0_busy_pct":%s,"core1_busy_pct":%s,' \
        "$(pct_of $((b0n - b0)) $((t0n - t0)))" "$(pct_of $((b1n - b1)) $((t1n - t1)))"
    printf '"core0_irq_pct":%s,"core1_irq_pct":%s,"core1_busy_us":%d,"proxy_rss_kb":%d' \
        "$(pct_of $((q0n - q0)) $((t0n - t0)))" "$(pct_of $((q1n - q1)) $((t1n - t1)))" \
        $(( (b1n - b1) * 1000000 / CLK_TCK )) "$rss"
}

record() {  # record SCENARIO TARGET RUN JSON-FIELDS...
    local scenario="$1" target="$2" run="$3"; shift 3
    printf '{"scenario":"%s","target":"%s","run":%d,"pre_busy_pct":%d,%s}\n' \
        "$scenario" "$target" "$run" "$PRE_BUSY" "$(IFS=,; echo "$*")" >> "$RAW"
}

# One load-generator run on CPU 0 against the current target; fails the script when
# the load generator itself fails (a target's errors are recorded, not fatal).
loadgen_run() {  # loadgen_run LIMIT_S ARGS...
    local limit="$1"; shift
    timeout -k 5 "$limit" taskset -c 0 "$LOADGEN" --target "127.0.0.1:$PORT" "$@" > "$WORK/lg.json" 2> "$WORK/lg.err" \
        || die "loadgen failed ($*): $(cat "$WORK/lg.err")"
    cat "$WORK/lg.json"
}

measure_loadgen() {  # measure_loadgen SCENARIO TARGET RUN LIMIT_S LOADGEN-ARGS...
    local scenario="$1" target="$2" run="$3" limit="$4"; shift 4
    local lg
    snapshot
    lg=$(loadgen_run "$limit" "$@")
    record "$scenario" "$target" "$run" "$(interval_json)" "\"loadgen\":$lg"
}

# wrk's --latency output → JSON (latencies in µs).
wrk_json() {
    awk '
        function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }
        $1 == "50%" { p50 = us($2) } $1 == "90%" { p90 = us($2) } $1 == "99%" { p99 = us($2) }
        / requests in / { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Socket errors:/ { gsub(/,/, ""); serr = $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { non2xx = $5 }
        END { printf "{\"requests\":%d,\"rps\":%s,\"p50_us\":%s,\"p90_us\":%s,\"p99_us\":%s,\"socket_errors\":%d,\"non2xx\":%d}",
                     req, rps + 0, p50 + 0, p90 + 0, p99 + 0, serr, non2xx }' "$1"
}

# d's load, or p's: ARGS go after the URL (p's `-s SCRIPT` also works there; `-- SCRIPT-ARGS` must).
measure_wrk() {  # measure_wrk SCENARIO TARGET RUN [ARGS...]
    local scenario="$1" target="$2" run="$3" wrk_cpu; shift 3
    snapshot
    # `times` in the subshell reports the CPU of its waited-for children: wrk (via timeout).
    ( timeout -k 5 $((D_SECONDS + 30)) taskset -c 0 wrk -t1 -c64 -d"${D_SECONDS}s" --latency \
          "http://127.0.0.1:$PORT/small" "$@" > "$WORK/wrk.txt" 2>&1; times > "$WORK/wrk.times" ) \
        || die "wrk failed: $(cat "$WORK/wrk.txt")"
    local fields
    fields=$(interval_json)
    wrk_cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$WORK/wrk.times")
    record "$scenario" "$target" "$run" "$fields" "\"wrk_cpu_s\":$wrk_cpu" "\"wrk\":$(wrk_json "$WORK/wrk.txt")"
}

# Held streams: ramps through STEPS, reading the proxy's RSS when each step is complete.
measure_hold() {  # measure_hold TARGET RUN STEPS
    local target="$1" run="$2" steps="$3" rss0 rss_list="" i lg_pid rc=0
    local nsteps; nsteps=$(awk -F, '{print NF}' <<<"$steps")
    sleep "$SETTLE_S"
    rss0=$(proc_rss_kb "$PROXY_PID")
    snapshot
    taskset -c 0 "$LOADGEN" --target "127.0.0.1:$PORT" --mode hold --path "$HOLD_PATH" --steps "$steps" \
        --connect-batch 256 --step-timeout 60 --duration 300 > "$WORK/hold.json" 2> "$WORK/hold.err" &
    lg_pid=$!
    STARTED+=("$lg_pid")
    for i in $(seq 1 "$nsteps"); do
        for _ in $(seq 1 700); do  # at most 70 s per step
            [ "$(grep -c '"step"' "$WORK/hold.err" || true)" -ge "$i" ] && break
            kill -0 "$lg_pid" 2>/dev/null || break
            sleep 0.1
        done
        [ "$(grep -c '"step"' "$WORK/hold.err" || true)" -ge "$i" ] || { stop_pid "$lg_pid"; die "hold step $i did not complete: $(cat "$WORK/hold.err")"; }
        sleep "$SETTLE_S"
        rss_list="$rss_list${rss_list:+,}$(proc_rss_kb "$PROXY_PID")"
        if [ "$i" -lt "$nsteps" ]; then kill -USR1 "$lg_pid"; fi
    done
    local fields
    fields=$(interval_json)
    kill -TERM "$lg_pid"
    wait "$lg_pid" || rc=$?
    local kept=(); for i in "${STARTED[@]}"; do [ "$i" = "$lg_pid" ] || kept+=("$i"); done; STARTED=("${kept[@]}")
    if [ "$rc" -ne 0 ] || [ ! -s "$WORK/hold.json" ]; then die "hold loadgen failed: $(cat "$WORK/hold.err")"; fi
    record e "$target" "$run" "$fields" "\"rss_before_kb\":$rss0" "\"rss_steps_kb\":[$rss_list]" "\"loadgen\":$(cat "$WORK/hold.json")"
}

# ---- w: WebSocket tunnels ------------------------------------------------------------------
# ws_loadgen runs against WS_PORT: the proxy's port (it routes /ws/ to bench/ws_origin.c), or for
# direct the ws origin's own port.
WS_PORT=""
ws_run() {  # ws_run LIMIT_S ARGS...
    local limit="$1"; shift
    timeout -k 5 "$limit" taskset -c 0 "$WS_LOADGEN" --target "127.0.0.1:$WS_PORT" "$@" > "$WORK/wslg.json" \
        2> "$WORK/wslg.err" || die "ws_loadgen failed ($*): $(cat "$WORK/wslg.err")"
    cat "$WORK/wslg.json"
}

measure_ws_load() {  # measure_ws_load SCENARIO TARGET RUN LIMIT_S WS_LOADGEN-ARGS...
    local scenario="$1" target="$2" run="$3" limit="$4" lg; shift 4
    snapshot
    lg=$(ws_run "$limit" "$@")
    record "$scenario" "$target" "$run" "$(interval_json)" "\"loadgen\":$lg"
}

# W_IDLE idle tunnels held by a fresh process: RSS before, and W_IDLE tunnels open (every 101
# read, nothing moving) plus SETTLE_S; as e's held streams. A load generator that ends before
# its tunnels are open is tried once more; a second failure is noted and the idle part skipped.
measure_ws_idle() {  # measure_ws_idle TARGET RUN
    local target="$1" run="$2" rss0 rss1 lg_pid="" fields attempt rc
    for attempt in 1 2; do
        sleep "$SETTLE_S"
        rss0=$(proc_rss_kb "$PROXY_PID")
        # A stale file would let the wait below see the last run's "ready" before this one truncates it.
        rm -f "$WORK/wsidle.json" "$WORK/wsidle.err"
        snapshot
        taskset -c 0 "$WS_LOADGEN" --target "127.0.0.1:$WS_PORT" --mode idle -c "$W_IDLE" --duration 120 \
            > "$WORK/wsidle.json" 2> "$WORK/wsidle.err" &
        lg_pid=$!
        STARTED+=("$lg_pid")
        for _ in $(seq 1 600); do  # at most 60 s to open them
            grep -q '"ready"' "$WORK/wsidle.err" && break
            kill -0 "$lg_pid" 2>/dev/null || break
            sleep 0.1
        done
        grep -q '"ready"' "$WORK/wsidle.err" && break
        rc=0; kill -0 "$lg_pid" 2>/dev/null || { wait "$lg_pid" || rc=$?; }
        stop_pid "$lg_pid"
        log "scenario w: idle ws_loadgen ended before its tunnels were open (attempt $attempt, exit $rc): $(head -c 300 "$WORK/wsidle.err")"
        if [ "$attempt" = 2 ]; then
            echo "scenario w run $run: $target's idle tunnels not measured: the idle load generator ended before they were open, twice (exit $rc)" \
                >> "$MESSAGES/w-skipped.log"
            return 0
        fi
    done
    sleep "$SETTLE_S"
    rss1=$(proc_rss_kb "$PROXY_PID")
    fields=$(interval_json)
    stop_pid "$lg_pid"  # SIGTERM: it closes every tunnel with a close frame, then prints its JSON
    [ -s "$WORK/wsidle.json" ] || die "idle ws_loadgen printed nothing: $(cat "$WORK/wsidle.err")"
    record w_idle "$target" "$run" "$fields" "\"rss_before_kb\":$rss0" "\"rss_kb\":$rss1" \
        "\"loadgen\":$(cat "$WORK/wsidle.json")"
}

# Scenario w for one target: a check that it passes WebSocket at all (a target that does not is
# logged, noted in the report and skipped), the idle tunnels on the fresh process (not for direct),
# a warm-up, then echo round trips, server push and flood.
measure_ws() {  # measure_ws TARGET RUN
    local target="$1" run="$2" out=""
    WS_PORT=$PORT
    if [ "$target" = direct ]; then WS_PORT=$WS_ORIGIN_PORT; fi
    if ! out=$(timeout 20 "$WS_LOADGEN" --target "127.0.0.1:$WS_PORT" --mode echo -c 2 --rate 50 --duration 0.5 2>&1) \
       || ! grep -q '"echoed":[1-9].*"errors":{"total":0' <<<"$out"; then
        log "scenario w: $target does not pass a WebSocket echo; skipped: ${out:0:300}"
        echo "scenario w run $run: no WebSocket echo through $target, skipped: ${out:0:300}" >> "$MESSAGES/w-skipped.log"
        return 0
    fi
    if [ "$target" != direct ]; then measure_ws_idle "$target" "$run"; fi
    ws_run 30 --mode echo -c "$W_CONNS" --rate "$W_RATE" --size "$W_SIZE" --duration 1 > /dev/null
    measure_ws_load w_echo "$target" "$run" $((W_SECONDS + 30)) --mode echo -c "$W_CONNS" --rate "$W_RATE" \
        --size "$W_SIZE" --duration "$W_SECONDS"
    measure_ws_load w_push "$target" "$run" $((W_SECONDS + 30)) --mode push -c "$W_CONNS" \
        --interval-us $((1000000 / W_RATE)) --size "$W_SIZE" --duration "$W_SECONDS"
    measure_ws_load w_flood "$target" "$run" $((W_FLOOD_SECONDS + 30)) --mode flood -c "$W_FLOOD_CONNS" \
        --size "$W_FLOOD_SIZE" --batch "$W_FLOOD_BATCH" --duration "$W_FLOOD_SECONDS"
}

# ---- idle cores ------------------------------------------------------------------------
# Other processes on the machine (builds, tests) skew whatever they overlap. Before each
# measurement, wait until both cores are nearly idle: at most 30 s per measurement and
# IDLE_WAIT_LEFT seconds over the whole run, so it stays bounded. PRE_BUSY keeps how busy
# the busier core was when the measurement started (recorded with it).
IDLE_PCT=15
PRE_BUSY=0
wait_idle() {
    local waited=0 b0 t0 b1 t1 b0n t0n b1n t1n busy0 busy1
    while :; do
        read -r b0 t0 _ <<<"$(cpu_ticks 0)"; read -r b1 t1 _ <<<"$(cpu_ticks 1)"
        sleep 0.5
        read -r b0n t0n _ <<<"$(cpu_ticks 0)"; read -r b1n t1n _ <<<"$(cpu_ticks 1)"
        busy0=$(( 100 * (b0n - b0) / (t0n - t0 > 0 ? t0n - t0 : 1) ))
        busy1=$(( 100 * (b1n - b1) / (t1n - t1 > 0 ? t1n - t1 : 1) ))
        PRE_BUSY=$(( busy0 > busy1 ? busy0 : busy1 ))
        if [ "$PRE_BUSY" -lt "$IDLE_PCT" ] || [ "$waited" -ge 30 ] || [ "$IDLE_WAIT_LEFT" -le 0 ]; then break; fi
        sleep 1
        waited=$((waited + 2)); IDLE_WAIT_LEFT=$((IDLE_WAIT_LEFT - 2))
    done
    if [ "$waited" -gt 0 ]; then log "waited ${waited}s for other work to finish (cores now ${busy0}%/${busy1}% busy)"; fi
}

