#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark of issue 3 in one command.
#
#   bench/run.sh            full run (3 runs per target, 5 for b; 8-10 minutes with the build)
#   bench/run.sh --quick    1 run, shorter durations, smaller stream counts (development)
#   bench/run.sh --runs 5   more runs
#   bench/run.sh --only a,c scenarios to run (a b c d e f; e and f's memory part share one run)
#   bench/run.sh --build-only  build origin and loadgen only (needs gcc; installs nothing), then exit
#
# It installs nginx, wrk and gcc with apt-get when missing, builds bench/origin*.c and
# bench/loadgen*.c with gcc -O2 and sluice in release mode (scratch path .build-bench, so
# it never touches the default .build), then measures the targets direct, nginx and
# sluice with origin and load generator on CPU 0 and the proxy on CPU 1. Results:
# bench/results/latest.md (table), bench/results/latest.jsonl (every measurement).
# See bench/README.md for what each scenario measures and how to read the table.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

QUICK=0
RUNS=""
ONLY="a,b,c,d,e,f"
BUILD_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
RESULTS="$BENCH/results"
BIN="$ROOT/.build-bench/bench"
T_START=$(date +%s%N)

# ---- parameters ------------------------------------------------------------------
# Full values follow the issue; --quick shrinks only what costs time.
if [ "$QUICK" = 1 ]; then
    : "${RUNS:=1}"
    B_RUNS=$RUNS; B_SECONDS=3; C_BYTES=$((256 * 1024 * 1024)); D_SECONDS=3
    E_STREAMS_MAX=2000; F_STEPS="250,1000,1500"; F_SHORT_R=50; F_LONG_EVENTS=20000
else
    : "${RUNS:=3}"
    # At interval 0 the system settles either in event-by-event forwarding or in batched
    # reads, run by run, and CPU per event differs ~3x between the two: b gets more runs
    # so its median is less of a coin toss.
    B_RUNS=$(( RUNS > 5 ? RUNS : 5 )); B_SECONDS=10; C_BYTES=$((1024 * 1024 * 1024)); D_SECONDS=10
    E_STREAMS_MAX=""; F_STEPS="1000,4000,9000"; F_SHORT_R=250; F_LONG_EVENTS=100000
fi
WARM_S=$([ "$QUICK" = 1 ] && echo 1 || echo 2)   # warm-up load before each measurement (s)
A_CONNS=200; A_EVENTS=50; A_INTERVAL_MS=20; A_SIZE=64
B_CONNS=50; B_SIZE=256
# f compares stream lengths at one fixed, paced rate (F_CONNS streams, one event every
# F_INTERVAL_US each: 20,000 events/s) well below what saturates the load side, so both
# lengths are forwarded the same way (about one event per read) and only length differs.
F_CONNS=2; F_INTERVAL_US=100; F_SIZE=256
# Held streams: the script's own fd limit decides how many (two fds per stream in a
# proxy, plus a margin for listeners, epoll, logs and the pool).
NOFILE="${BENCH_NOFILE:-20000}"
FD_MARGIN=256
SETTLE_S=1          # after a hold step, before reading RSS (let the proxy finish its work)
HOLD_PATH="/sse?events=0&interval_ms=30000&size=64"
TARGETS=(direct nginx sluice)

calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }  # calc EXPR [DECIMALS]
elapsed() { calc "($(date +%s%N) - $T_START) / 1e9"; }
log() { printf '[%6ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---- processes we start: killed by PID on any exit -------------------------------
WORK="$(mktemp -d /tmp/sluice-bench.XXXXXX)"
declare -a STARTED=()
cleanup() {
    local status=$?
    set +e
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    if [ "$status" -ne 0 ] && [ -d "$WORK" ]; then
        log "failed (exit $status); logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started (SIGTERM, then SIGKILL after 5 s) and forgets it.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=()
    for i in "${STARTED[@]}"; do [ "$i" = "$pid" ] || kept+=("$i"); done
    STARTED=("${kept[@]+"${kept[@]}"}")
}

# ---- dependencies and builds -----------------------------------------------------
# Each program is its main file plus its `_*.c` parts (shared declarations in the .h files).
build_bench_programs() {
    mkdir -p "$BIN"
    log "building origin and loadgen (gcc -O2)"
    timeout 120 gcc -O2 -std=gnu11 -Wall -Wextra -o "$BIN/origin" "$BENCH/origin.c" "$BENCH"/origin_*.c
    timeout 120 gcc -O2 -std=gnu11 -Wall -Wextra -o "$BIN/loadgen" "$BENCH/loadgen.c" "$BENCH"/loadgen_*.c
}
if [ "$BUILD_ONLY" = 1 ]; then
    command -v gcc >/dev/null 2>&1 || die "--build-only needs gcc"
    build_bench_programs
    log "built $BIN/origin and $BIN/loadgen"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v ps >/dev/null 2>&1 || missing+=(procps)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev pkg-config)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}" >&2
    timeout 600 $SUDO apt-get update -q
    timeout 600 $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

mkdir -p "$BIN" "$RESULTS"
build_bench_programs
log "building sluice (swift build -c release --scratch-path .build-bench)"
T_BUILD=$(date +%s%N)
# Which sources the numbers belong to: taken before the build, as the tree may move on.
SLUICE_COMMIT="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- Sources 2>/dev/null || echo +dirty)"
build_sluice() {
    (cd "$ROOT" && timeout 1500 swift build -c release --scratch-path "$ROOT/.build-bench" --product sluice) \
        > "$WORK/swift-build.log" 2>&1
}
# A source file saved while the build reads it fails the build ("modified during the
# build"); that is someone editing, not a broken tree, so it gets one more try.
if ! build_sluice; then
    if grep -q "modified during the build" "$WORK/swift-build.log"; then
        log "sources changed during the build; building again"
        sleep 5
        build_sluice || { tail -30 "$WORK/swift-build.log" >&2; die "sluice build failed"; }
    else
        tail -30 "$WORK/swift-build.log" >&2; die "sluice build failed"
    fi
fi
BUILD_S=$(calc "($(date +%s%N) - $T_BUILD) / 1e9")
SLUICE="$ROOT/.build-bench/release/sluice"
[ -x "$SLUICE" ] || die "no sluice binary at $SLUICE"
ORIGIN="$BIN/origin"
LOADGEN="$BIN/loadgen"
log "sluice built in ${BUILD_S}s"

# ---- limits ------------------------------------------------------------------------
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$NOFILE" ]; then
    ulimit -Hn "$NOFILE" || die "cannot raise the hard fd limit to $NOFILE (need root, or set BENCH_NOFILE)"
fi
ulimit -Sn "$NOFILE"
E_STREAMS=$(( (NOFILE - FD_MARGIN) / 2 ))
if [ -n "$E_STREAMS_MAX" ] && [ "$E_STREAMS" -gt "$E_STREAMS_MAX" ]; then E_STREAMS=$E_STREAMS_MAX; fi
if [ "$QUICK" = 0 ] && [ "$E_STREAMS" -lt 9000 ]; then die "fd limit $NOFILE allows only $E_STREAMS streams; need 9000"; fi
# Every stream uses one ephemeral port toward the proxy and one toward the origin.
read -r PORT_LO PORT_HI < /proc/sys/net/ipv4/ip_local_port_range
if [ $((PORT_HI - PORT_LO)) -lt $((E_STREAMS + 1000)) ]; then die "ephemeral port range too small for $E_STREAMS streams"; fi

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

# ---- origin -------------------------------------------------------------------------
free_port() {  # the first port from $1 up with nothing listening on it
    local p="$1"
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

taskset -c 0 "$ORIGIN" --listen 127.0.0.1:0 --port-file "$WORK/origin.port" 2> "$WORK/origin.log" &
ORIGIN_PID=$!
STARTED+=("$ORIGIN_PID")
for _ in $(seq 1 50); do [ -s "$WORK/origin.port" ] && break; sleep 0.1; done
[ -s "$WORK/origin.port" ] || die "origin did not start: $(cat "$WORK/origin.log")"
ORIGIN_PORT=$(cat "$WORK/origin.port")
PORT_BASE="${BENCH_PORT:-18480}"
log "origin pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT; fd limit $NOFILE; held streams $E_STREAMS"

# ---- targets ----------------------------------------------------------------------------
# start_target NAME sets PORT (where the load generator connects) and PROXY_PID (the
# process whose CPU and RSS are measured: sluice, or nginx's single worker; empty for direct).
PORT=""; PROXY_PID=""; TARGET_PID=""
start_target() {
    local name="$1"
    case "$name" in
        direct)
            PORT=$ORIGIN_PORT; PROXY_PID=""; TARGET_PID="" ;;
        nginx)
            PORT=$(free_port "$PORT_BASE")
            local prefix="$WORK/nginx"
            rm -rf "$prefix"; mkdir -p "$prefix"
            # worker_connections is twice the fd limit: nginx starts closing idle client
            # connections once fewer than 1/16 of its connection slots are free, which would
            # cap held streams below what the fds allow. The fd limit is the same as sluice's.
            sed -e "s#@PREFIX@#$prefix#g" -e "s#@NOFILE@#$NOFILE#g" \
                -e "s#@WORKER_CONNECTIONS@#$((NOFILE * 2))#g" \
                -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" -e "s#@PORT@#$PORT#g" \
                "$BENCH/nginx.conf.template" > "$prefix/nginx.conf"
            taskset -c 1 "$NGINX" -c "$prefix/nginx.conf" -p "$prefix" -e "$prefix/error.log" \
                -g 'daemon off;' 2> "$prefix/stderr.log" &
            TARGET_PID=$!
            STARTED+=("$TARGET_PID")
            PROXY_PID=""
            for _ in $(seq 1 50); do
                PROXY_PID=$( (ps -o pid= --ppid "$TARGET_PID" || true) | tr -d ' ' | head -1)
                [ -n "$PROXY_PID" ] && break
                kill -0 "$TARGET_PID" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$PROXY_PID" ] || die "nginx did not start: $(cat "$prefix/stderr.log" "$prefix/error.log" 2>/dev/null)"
            ;;
        sluice)
            PORT=$(free_port $((PORT_BASE + 1)))
            sed -e "s#@PORT@#$PORT#g" -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" \
                "$BENCH/sluice.conf.template" > "$WORK/sluice.conf"
            # stdout is where completion records would go; the config turns them off, and a
            # file keeps any that appear out of the report (the notes count them).
            taskset -c 1 "$SLUICE" --config "$WORK/sluice.conf" --workers 1 \
                >> "$WORK/sluice.stdout" 2> "$WORK/sluice.log" &
            TARGET_PID=$!
            STARTED+=("$TARGET_PID")
            PROXY_PID=$TARGET_PID
            for _ in $(seq 1 100); do
                grep -q '"msg":"ready"' "$WORK/sluice.log" 2>/dev/null && break
                kill -0 "$TARGET_PID" 2>/dev/null || break
                sleep 0.1
            done
            grep -q '"msg":"ready"' "$WORK/sluice.log" || die "sluice did not get ready: $(tail -5 "$WORK/sluice.log")"
            ;;
    esac
    check_target "$name"
}

stop_target() {
    if [ -n "$TARGET_PID" ]; then
        stop_pid "$TARGET_PID"
        # sluice logs its errors on stderr; keep them for the report's notes.
        if [ -f "$WORK/sluice.log" ]; then
            grep -v '"msg":"ready"\|"msg":"stopping"' "$WORK/sluice.log" >> "$WORK/sluice-messages.log" || true
            rm -f "$WORK/sluice.log"
        fi
        if [ -f "$WORK/nginx/error.log" ]; then cat "$WORK/nginx/error.log" >> "$WORK/nginx-messages.log"; fi
    fi
    TARGET_PID=""; PROXY_PID=""
}

# A target is measured only after it streamed a short SSE response and a bulk body
# correctly (retrying for up to 5 s while it binds).
check_target() {
    local out="" i
    for i in $(seq 1 25); do
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
    die "target $1 on port $PORT does not answer correctly: $out"
}

# ---- measurement ------------------------------------------------------------------------
RAW="$WORK/raw.jsonl"
: > "$RAW"
SNAP_T=0; SNAP_P=0; SNAP_O=0; SNAP_C0=""; SNAP_C1=""
snapshot() {
    SNAP_T=$(date +%s%N)
    SNAP_P=0
    if [ -n "$PROXY_PID" ]; then SNAP_P=$(proc_ticks "$PROXY_PID"); fi
    SNAP_O=$(proc_ticks "$ORIGIN_PID")
    SNAP_C0=$(cpu_ticks 0); SNAP_C1=$(cpu_ticks 1)
}
# Prints the common JSON fields for the interval since `snapshot`: wall time, proxy and
# origin CPU (from /proc/PID/stat), both cores' busy share (from /proc/stat), proxy RSS.
interval_json() {
    local now p o c0 c1 wall_ns proxy_us origin_us rss=0
    now=$(date +%s%N)
    p=0
    if [ -n "$PROXY_PID" ]; then p=$(proc_ticks "$PROXY_PID"); rss=$(proc_rss_kb "$PROXY_PID"); fi
    o=$(proc_ticks "$ORIGIN_PID")
    c0=$(cpu_ticks 0); c1=$(cpu_ticks 1)
    wall_ns=$((now - SNAP_T))
    proxy_us=$(( (p - SNAP_P) * 1000000 / CLK_TCK ))
    origin_us=$(( (o - SNAP_O) * 1000000 / CLK_TCK ))
    local b0 t0 q0 b0n t0n q0n b1 t1 q1 b1n t1n q1n
    read -r b0 t0 q0 <<<"$SNAP_C0"; read -r b0n t0n q0n <<<"$c0"
    read -r b1 t1 q1 <<<"$SNAP_C1"; read -r b1n t1n q1n <<<"$c1"
    printf '"wall_s":%s,"proxy_cpu_us":%d,"origin_cpu_us":%d,"core0_busy_pct":%s,"core1_busy_pct":%s,' \
        "$(calc "$wall_ns / 1e9" 6)" "$proxy_us" "$origin_us" \
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

measure_wrk() {  # measure_wrk TARGET RUN
    local target="$1" run="$2" wrk_cpu
    snapshot
    # `times` in the subshell reports the CPU of its waited-for children: wrk (via timeout).
    ( timeout -k 5 $((D_SECONDS + 30)) taskset -c 0 wrk -t1 -c64 -d"${D_SECONDS}s" --latency \
          "http://127.0.0.1:$PORT/small" > "$WORK/wrk.txt" 2>&1; times > "$WORK/wrk.times" ) \
        || die "wrk failed: $(cat "$WORK/wrk.txt")"
    local fields
    fields=$(interval_json)
    wrk_cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$WORK/wrk.times")
    record d "$target" "$run" "$fields" "\"wrk_cpu_s\":$wrk_cpu" "\"wrk\":$(wrk_json "$WORK/wrk.txt")"
}

# Held streams: ramps through STEPS, reading the proxy's RSS when each step is complete.
measure_hold() {  # measure_hold TARGET RUN STEPS
    local target="$1" run="$2" steps="$3" rss0 rss_list="" i n lg_pid rc=0
    local nsteps; nsteps=$(awk -F, '{print NF}' <<<"$steps")
    sleep "$SETTLE_S"
    rss0=$(proc_rss_kb "$PROXY_PID")
    snapshot
    taskset -c 0 "$LOADGEN" --target "127.0.0.1:$PORT" --mode hold --path "$HOLD_PATH" --steps "$steps" \
        --connect-batch 256 --step-timeout 60 --duration 300 > "$WORK/hold.json" 2> "$WORK/hold.err" &
    lg_pid=$!
    STARTED+=("$lg_pid")
    for i in $(seq 1 "$nsteps"); do
        for n in $(seq 1 700); do  # at most 70 s per step
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
    [ "$rc" -eq 0 ] && [ -s "$WORK/hold.json" ] || die "hold loadgen failed: $(cat "$WORK/hold.err")"
    record e "$target" "$run" "$fields" "\"rss_before_kb\":$rss0" "\"rss_steps_kb\":[$rss_list]" "\"loadgen\":$(cat "$WORK/hold.json")"
}

# Targets alternate between runs: run r starts the rotation at target r.
order_for_run() {
    local r="$1" i n=${#TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do echo "${TARGETS[$(( (i + r - 1) % n ))]}"; done
}

# ---- machine state ---------------------------------------------------------------------
# Other work on the machine skews every number; measure how busy it is before starting.
read -r b0 t0 _ <<<"$(cpu_ticks 0)"; read -r b1 t1 _ <<<"$(cpu_ticks 1)"
sleep 2
read -r b0n t0n _ <<<"$(cpu_ticks 0)"; read -r b1n t1n _ <<<"$(cpu_ticks 1)"
IDLE_BUSY0=$(pct_of $((b0n - b0)) $((t0n - t0))); IDLE_BUSY1=$(pct_of $((b1n - b1)) $((t1n - t1)))
log "cores busy before start: cpu0 ${IDLE_BUSY0}%, cpu1 ${IDLE_BUSY1}%"

# Other processes on the machine (builds, tests) skew whatever they overlap. Before each
# measurement, wait until both cores are nearly idle: at most 30 s per measurement and
# BENCH_IDLE_WAIT seconds (default 240; 0 with --quick) over the whole run, so it stays bounded.
IDLE_WAIT_LEFT="${BENCH_IDLE_WAIT:-$([ "$QUICK" = 1 ] && echo 0 || echo 240)}"
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

# ---- scenarios ----------------------------------------------------------------------------
T_MEASURE=$(date +%s%N)
for scenario in a b c d e f; do
    want "$scenario" || continue
    runs=$RUNS
    if [ "$scenario" = b ]; then runs=$B_RUNS; fi
    for run in $(seq 1 "$runs"); do
        for target in $(order_for_run "$run"); do
            # No proxy, nothing to weigh: e and f measure the proxy's memory and CPU.
            if [ "$target" = direct ] && { [ "$scenario" = e ] || [ "$scenario" = f ]; }; then continue; fi
            wait_idle
            log "scenario $scenario run $run/$runs: $target"
            start_target "$target"
            # Every target is measured warm, as a long-running proxy would be: a short run of
            # the same load first (a's is a full run, kept as cold-start data). e is measured
            # from a fresh process, so RSS before holds only what start-up allocated.
            case "$scenario" in
                a) a_args=(--mode sse -c "$A_CONNS" -r 1 --stagger-ms "$A_INTERVAL_MS" --duration 30
                           --path "/sse?events=$A_EVENTS&interval_ms=$A_INTERVAL_MS&size=$A_SIZE")
                   measure_loadgen a_cold "$target" "$run" 60 "${a_args[@]}"
                   measure_loadgen a "$target" "$run" 60 "${a_args[@]}" ;;
                b) loadgen_run 30 --mode sse -c "$B_CONNS" -r 1 --duration "$WARM_S" \
                       --path "/sse?events=4000000000&interval_ms=0&size=$B_SIZE" > /dev/null
                   measure_loadgen b "$target" "$run" $((B_SECONDS + 30)) --mode sse -c "$B_CONNS" -r 1 \
                       --duration "$B_SECONDS" --path "/sse?events=4000000000&interval_ms=0&size=$B_SIZE" ;;
                c) loadgen_run 60 --mode bytes -c 1 -r 1 --duration 30 --path "/bytes?n=$((C_BYTES / 8))" > /dev/null
                   measure_loadgen c "$target" "$run" 120 --mode bytes -c 1 -r 1 --duration 90 \
                       --path "/bytes?n=$C_BYTES" ;;
                d) timeout -k 5 $((WARM_S + 30)) taskset -c 0 wrk -t1 -c64 -d"${WARM_S}s" "http://127.0.0.1:$PORT/small" \
                       > /dev/null 2>&1 || die "wrk warm-up failed"
                   measure_wrk "$target" "$run" ;;
                e) measure_hold "$target" "$run" "$F_STEPS,$E_STREAMS" ;;
                f) loadgen_run 30 --mode sse -c "$F_CONNS" -r 20 --duration "$WARM_S" \
                       --path "/sse?events=100&interval_us=$F_INTERVAL_US&size=$F_SIZE" > /dev/null
                   measure_loadgen f100 "$target" "$run" 90 --mode sse -c "$F_CONNS" -r "$F_SHORT_R" --duration 60 \
                       --path "/sse?events=100&interval_us=$F_INTERVAL_US&size=$F_SIZE"
                   measure_loadgen f100k "$target" "$run" 90 --mode sse -c "$F_CONNS" -r 1 --duration 60 \
                       --path "/sse?events=$F_LONG_EVENTS&interval_us=$F_INTERVAL_US&size=$F_SIZE" ;;
            esac
            stop_target
        done
    done
done
MEASURE_S=$(calc "($(date +%s%N) - $T_MEASURE) / 1e9")
stop_pid "$ORIGIN_PID"

# ---- report ------------------------------------------------------------------------------
TOTAL_S=$(elapsed)
{
    printf '{"date":"%s","quick":%s,"runs":%d,' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$([ "$QUICK" = 1 ] && echo true || echo false)" "$RUNS"
    printf '"nproc":%d,"cpu_model":"%s","kernel":"%s",' "$(nproc)" \
        "$(lscpu | awk -F: '/^Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')" "$(uname -r)"
    printf '"nginx":"%s","swift":"%s","gcc":"%s",' "$("$NGINX" -v 2>&1 | sed 's/.*: //')" \
        "$(swift --version 2>&1 | head -1)" "$(gcc --version | head -1)"
    printf '"sluice_commit":"%s",' "$SLUICE_COMMIT"
    printf '"nofile":%d,"e_streams":%d,"f_steps":"%s","clk_tck":%d,' "$NOFILE" "$E_STREAMS" "$F_STEPS" "$CLK_TCK"
    printf '"a":{"conns":%d,"events":%d,"interval_ms":%d,"size":%d},' "$A_CONNS" "$A_EVENTS" "$A_INTERVAL_MS" "$A_SIZE"
    printf '"b":{"conns":%d,"size":%d,"seconds":%d},"c_bytes":%d,"d_seconds":%d,' "$B_CONNS" "$B_SIZE" "$B_SECONDS" "$C_BYTES" "$D_SECONDS"
    printf '"b_runs":%d,' "$B_RUNS"
    printf '"f":{"conns":%d,"interval_us":%d,"size":%d,"short_requests":%d,"long_events":%d},' \
        "$F_CONNS" "$F_INTERVAL_US" "$F_SIZE" "$F_SHORT_R" "$F_LONG_EVENTS"
    printf '"idle_busy_pct":[%s,%s],"build_s":%s,"measure_s":%s,"total_s":%s}\n' "$IDLE_BUSY0" "$IDLE_BUSY1" "$BUILD_S" "$MEASURE_S" "$TOTAL_S"
} > "$WORK/meta.json"
# Proxy log lines other than start/stop (errors, warnings) go into the notes.
touch "$WORK/sluice-messages.log" "$WORK/nginx-messages.log" "$WORK/sluice.stdout"
if [ -s "$WORK/sluice.stdout" ]; then
    echo "sluice wrote $(wc -l < "$WORK/sluice.stdout") line(s) to stdout (completion records?) although its config turns the log off" \
        >> "$WORK/sluice-messages.log"
fi
python3 "$BENCH/report.py" --meta "$WORK/meta.json" --raw "$RAW" \
    --sluice-log "$WORK/sluice-messages.log" --nginx-log "$WORK/nginx-messages.log" > "$RESULTS/latest.md"
cp "$RAW" "$RESULTS/latest.jsonl"
cp "$WORK/meta.json" "$RESULTS/latest-meta.json"
cat "$RESULTS/latest.md"
log "done: build ${BUILD_S}s, measurements ${MEASURE_S}s, total $(elapsed)s; wrote $RESULTS/latest.md"
