#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark of issues 3 and 15, and issue 16's pool row, in one command.
#
#   bench/run.sh                 full run: all six targets, 2 runs each (4 for a, b, b16; 3 for p; ~17.5 min with the build)
#   bench/run.sh --quick         1 run, shorter durations, fewer held streams (development, ~5.5 min)
#   bench/run.sh --runs 3        more runs
#   bench/run.sh --only a,b16    scenarios to run (a b b16 c d e f p w; e and f's memory part share one run;
#                                w: WebSocket tunnels, ~3 min)
#   bench/run.sh --targets nginx,sluice   targets to measure (direct nginx haproxy caddy sluice sluice-log)
#   bench/run.sh --sluice PATH   measure this sluice binary instead of building one (A/B runs)
#   bench/run.sh --results DIR   write the report there instead of bench/results (partial runs)
#   bench/run.sh --build-only    build the C origins and load generators only (needs gcc; installs nothing), then exit
#
# It installs nginx, HAProxy, Caddy, wrk and gcc with apt-get when missing, builds
# bench/origin*.c, bench/loadgen*.c and bench/ws_*.c with gcc -O2 and sluice in release mode (scratch path
# .build-bench, so it never touches the default .build), then measures each target with
# origin and load generator on CPU 0 and the proxy on CPU 1. Results: bench/results/latest.md
# (tables), bench/results/latest.jsonl (every measurement), or the same names under --results.
# See bench/README.md for what each scenario measures and how to read the tables. Parts:
# targets.sh (starting and stopping the proxies), measure.sh (/proc readers, load runs),
# report.py (the tables).
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

ALL_SCENARIOS="a,b,b16,c,d,e,f,p,w"
ALL_TARGETS="direct,nginx,haproxy,caddy,sluice,sluice-log"
QUICK=0
RUNS=""
ONLY="$ALL_SCENARIOS"
TARGET_LIST="$ALL_TARGETS"
BUILD_ONLY=0
SLUICE_GIVEN=""
RESULTS_GIVEN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --targets) TARGET_LIST="${2:?--targets needs a list}"; shift ;;
        --sluice) SLUICE_GIVEN="${2:?--sluice needs a path}"; shift ;;
        --results) RESULTS_GIVEN="${2:?--results needs a folder}"; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
in_list() { case ",$2," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }  # in_list WORD LIST
for s in ${ONLY//,/ }; do
    in_list "$s" "$ALL_SCENARIOS" || { echo "run.sh: unknown scenario $s (known: $ALL_SCENARIOS)" >&2; exit 2; }
done
for t in ${TARGET_LIST//,/ }; do
    in_list "$t" "$ALL_TARGETS" || { echo "run.sh: unknown target $t (known: $ALL_TARGETS)" >&2; exit 2; }
done
# Targets keep the canonical order whatever order the list gave (runs rotate it).
TARGETS=()
for t in ${ALL_TARGETS//,/ }; do
    if in_list "$t" "$TARGET_LIST"; then TARGETS+=("$t"); fi
done
[ "${#TARGETS[@]}" -gt 0 ] || { echo "run.sh: no targets" >&2; exit 2; }
[[ "${RUNS:-1}" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --runs needs a positive number" >&2; exit 2; }
TARGETS_CSV=$(IFS=,; echo "${TARGETS[*]}")
wants_target() { in_list "$1" "$TARGETS_CSV"; }

BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
RESULTS="$BENCH/results"
if [ -n "$RESULTS_GIVEN" ]; then mkdir -p "$RESULTS_GIVEN" && RESULTS="$(cd "$RESULTS_GIVEN" && pwd)"; fi
BIN="$ROOT/.build-bench/bench"
T_START=$(date +%s%N)

# ---- parameters ------------------------------------------------------------------
# Full values follow the issues; --quick shrinks only what costs time. Six targets must fit
# in 15 minutes, so a full run takes 2 runs per target (issue 15's harness used medians of
# 2) and 5 s for b, b16 and d (issue 3 had 10 s; CPU per event and requests/s settle
# within a second or two).
# a, b and b16 get at least NOISY_RUNS runs: a's tail percentiles and b's CPU per event move by
# tens of percent from run to run on a 2-core VM (b settles in one of two batching regimes per
# run), and 2 runs left their targets to chance; the other scenarios repeat within a few percent.
if [ "$QUICK" = 1 ]; then
    : "${RUNS:=1}"
    NOISY_RUNS=1; P_RUNS=1
    B_SECONDS=3; C_BYTES=$((256 * 1024 * 1024)); D_SECONDS=3
    E_STREAMS_MAX=2000; F_STEPS="250,1000,1500"; F_SHORT_R=50; F_LONG_EVENTS=20000
else
    : "${RUNS:=2}"
    NOISY_RUNS=4; P_RUNS=3
    B_SECONDS=5; C_BYTES=$((1024 * 1024 * 1024)); D_SECONDS=5
    E_STREAMS_MAX=""; F_STEPS="1000,4000,9000"; F_SHORT_R=250; F_LONG_EVENTS=100000
fi
WARM_S=$([ "$QUICK" = 1 ] && echo 1 || echo 2)   # warm-up load before each measurement (s)
A_CONNS=200; A_EVENTS=50; A_INTERVAL_MS=20; A_SIZE=64
B_CONNS=50; B_SIZE=256
# b16: b's load with 16 events in every origin write (issue 15's "16 events per upstream
# write"), so every proxy forwards batches whatever regime b settles in.
B16_BATCH=16
# f compares stream lengths at one fixed, paced rate (F_CONNS streams, one event every
# F_INTERVAL_US each: 20,000 events/s) well below what saturates the load side, so both
# lengths are forwarded the same way (about one event per read) and only length differs.
# Its question (does sluice's cost per event stay flat with stream length) is issue 3's,
# answered against nginx: the other targets skip it, which saves 2 minutes.
F_CONNS=2; F_INTERVAL_US=100; F_SIZE=256; F_TARGETS="nginx,sluice"
# p asks what choosing a server costs: d's load (plus a session id per request, from a fixed set
# of P_SESSIONS) through sluice with an upstream of the first origin alone, then of P_SERVERS
# origins (distinct processes, so distinct addresses) balanced by least_streams, then the same
# with affinity on the session id; a fresh process each. The difference it is judged on (a few
# percent of a request's CPU) is taken within one run, configurations rotating with the run, and
# it gets at least P_RUNS runs. Only sluice has these configurations: other targets skip p.
P_SERVERS=8; P_SESSIONS=1000; P_CONFIGS="one,least,affinity"; P_TARGETS="sluice"
# Held streams: the script's own fd limit decides how many (two fds per stream in a
# proxy, plus a margin for listeners, epoll, logs and the pool: sluice reserves 32 + 3 + its
# max_idle (256) of its fds for those, so its default max_connections is (20,000 - 291) / 2).
NOFILE="${BENCH_NOFILE:-20000}"
FD_MARGIN=640
SETTLE_S=1          # after a hold step, before reading RSS (let the proxy finish its work)
HOLD_PATH="/sse?events=0&interval_ms=30000&size=64"
# w: WebSocket tunnels to bench/ws_origin.c, one fresh target per run: W_IDLE idle tunnels held
# first (RSS per tunnel, as e), then W_CONNS tunnels echoing W_SIZE-byte messages (each sends
# W_RATE a second, the tunnels taking turns), the same number receiving the origin's pushes at the
# same pace, and W_FLOOD_CONNS tunnels the origin floods with W_FLOOD_BATCH messages of
# W_FLOOD_SIZE bytes per write (CPU per message at saturation, like b16; 2 s is 200 clock ticks
# of CPU time, enough at a full core). About 14.5 s per target and run, so the six targets' 2
# runs take about 3 minutes.
W_CONNS=100; W_RATE=20; W_SIZE=64; W_IDLE=2000
W_FLOOD_CONNS=50; W_FLOOD_SIZE=256; W_FLOOD_BATCH=16; W_FLOOD_SECONDS=2
if [ "$QUICK" = 1 ]; then W_SECONDS=2; else W_SECONDS=3; fi

calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }  # calc EXPR [DECIMALS]
elapsed() { calc "($(date +%s%N) - $T_START) / 1e9"; }
log() { printf '[%6ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { in_list "$1" "$ONLY"; }
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
    timeout 120 gcc -O2 -std=gnu11 -Wall -Wextra -o "$BIN/ws_origin" "$BENCH/ws_origin.c"
    timeout 120 gcc -O2 -std=gnu11 -Wall -Wextra -o "$BIN/ws_loadgen" "$BENCH/ws_loadgen.c"
}
if [ "$BUILD_ONLY" = 1 ]; then
    command -v gcc >/dev/null 2>&1 || die "--build-only needs gcc"
    build_bench_programs
    log "built $BIN/origin, $BIN/loadgen, $BIN/ws_origin and $BIN/ws_loadgen"
    exit 0
fi
NEEDS_SLUICE=0
if wants_target sluice || wants_target sluice-log; then NEEDS_SLUICE=1; fi
export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
if wants_target nginx; then has nginx || missing+=(nginx); fi
# Debian 12: HAProxy 2.6 and Caddy 2.6. Their packages register services but start none
# where no init system runs them; the run starts its own instances from templates.
if wants_target haproxy; then has haproxy || missing+=(haproxy); fi
if wants_target caddy; then has caddy || missing+=(caddy); fi
has wrk || missing+=(wrk)
has gcc || missing+=(gcc libc6-dev)
has taskset || missing+=(util-linux)
has ps || missing+=(procps)
has python3 || missing+=(python3)
if [ "$NEEDS_SLUICE" = 1 ] && [ -z "$SLUICE_GIVEN" ]; then pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev pkg-config); fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}" >&2
    timeout 600 "${SUDO[@]}" apt-get update -q
    timeout 600 "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
binary() { command -v "$1" || echo "/usr/sbin/$1"; }
NGINX="$(binary nginx)"; HAPROXY="$(binary haproxy)"; CADDY="$(binary caddy)"

mkdir -p "$BIN" "$RESULTS"
build_bench_programs
BUILD_S=0
SLUICE_COMMIT="not built"
SLUICE=""
if [ "$NEEDS_SLUICE" = 1 ] && [ -n "$SLUICE_GIVEN" ]; then
    SLUICE="$(cd "$(dirname "$SLUICE_GIVEN")" && pwd)/$(basename "$SLUICE_GIVEN")"
    [ -x "$SLUICE" ] || die "--sluice $SLUICE_GIVEN is not an executable"
    SLUICE_COMMIT="$("$SLUICE" --version 2>&1 | head -1 | sed 's/^sluice //') at $SLUICE_GIVEN"
    log "measuring $SLUICE_COMMIT (not built)"
elif [ "$NEEDS_SLUICE" = 1 ]; then
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
    log "sluice built in ${BUILD_S}s"
fi
ORIGIN="$BIN/origin"
LOADGEN="$BIN/loadgen"
WS_ORIGIN="$BIN/ws_origin"
WS_LOADGEN="$BIN/ws_loadgen"

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

# shellcheck source=bench/measure.sh
. "$BENCH/measure.sh"
# shellcheck source=bench/targets.sh
. "$BENCH/targets.sh"

# ---- origins ------------------------------------------------------------------------
# Every scenario uses the first origin; p's pool adds P_SERVERS - 1 more, started only when p
# runs (idle otherwise); w adds the WebSocket origin when it starts (after p, so p never counts
# it). All run on CPU 0 and all count as the origin's CPU.
ORIGIN_PIDS=(); ORIGIN_PORTS=()
start_origin() {  # start_origin NAME [PROGRAM]: appends its PID and port to ORIGIN_PIDS and ORIGIN_PORTS
    local name="$1"
    taskset -c 0 "${2:-$ORIGIN}" --listen 127.0.0.1:0 --port-file "$WORK/$name.port" 2> "$WORK/$name.log" &
    ORIGIN_PIDS+=("$!")
    STARTED+=("$!")
    for _ in $(seq 1 50); do [ -s "$WORK/$name.port" ] && break; sleep 0.1; done
    [ -s "$WORK/$name.port" ] || die "$name did not start: $(cat "$WORK/$name.log")"
    ORIGIN_PORTS+=("$(cat "$WORK/$name.port")")
}
start_origin origin
ORIGIN_PID=${ORIGIN_PIDS[0]}; ORIGIN_PORT=${ORIGIN_PORTS[0]}
if want p; then
    for i in $(seq 2 "$P_SERVERS"); do start_origin "origin-$i"; done
fi
PORT_BASE="${BENCH_PORT:-18480}"
log "origin pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT ($((${#ORIGIN_PIDS[@]} - 1)) more for p); fd limit $NOFILE; held streams $E_STREAMS; targets ${TARGETS[*]}"

# ---- machine state ---------------------------------------------------------------------
# Other work on the machine skews every number; measure how busy it is before starting.
read -r b0 t0 _ <<<"$(cpu_ticks 0)"; read -r b1 t1 _ <<<"$(cpu_ticks 1)"
sleep 2
read -r b0n t0n _ <<<"$(cpu_ticks 0)"; read -r b1n t1n _ <<<"$(cpu_ticks 1)"
IDLE_BUSY0=$(pct_of $((b0n - b0)) $((t0n - t0))); IDLE_BUSY1=$(pct_of $((b1n - b1)) $((t1n - t1)))
log "cores busy before start: cpu0 ${IDLE_BUSY0}%, cpu1 ${IDLE_BUSY1}%"
# wait_idle's budget for the whole run (seconds): default 240; 0 with --quick.
IDLE_WAIT_LEFT="${BENCH_IDLE_WAIT:-$([ "$QUICK" = 1 ] && echo 0 || echo 240)}"

# ---- scenarios ----------------------------------------------------------------------------
RAW="$WORK/raw.jsonl"
: > "$RAW"
# Targets (and p's configurations) alternate between runs: run r starts the rotation at item r.
rotate() {  # rotate RUN ITEM...
    local r="$1"; shift
    local items=("$@") i n=$#
    for i in $(seq 0 $((n - 1))); do echo "${items[$(( (i + r - 1) % n ))]}"; done
}
order_for_run() { rotate "$1" "${TARGETS[@]}"; }

# Every target is measured warm, as a long-running proxy would be: a short run of the same
# load first (a's is a full run, kept as cold-start data). e is measured from a fresh
# process, so RSS before holds only what start-up allocated.
measure_scenario() {  # measure_scenario SCENARIO TARGET RUN
    local scenario="$1" target="$2" run="$3" sse
    case "$scenario" in
        a) local a_args=(--mode sse -c "$A_CONNS" -r 1 --stagger-ms "$A_INTERVAL_MS" --duration 30
                         --path "/sse?events=$A_EVENTS&interval_ms=$A_INTERVAL_MS&size=$A_SIZE")
           measure_loadgen a_cold "$target" "$run" 60 "${a_args[@]}"
           measure_loadgen a "$target" "$run" 60 "${a_args[@]}" ;;
        b|b16)
           sse="/sse?events=4000000000&interval_ms=0&size=$B_SIZE"
           if [ "$scenario" = b16 ]; then sse="$sse&batch=$B16_BATCH"; fi
           loadgen_run 30 --mode sse -c "$B_CONNS" -r 1 --duration "$WARM_S" --path "$sse" > /dev/null
           measure_loadgen "$scenario" "$target" "$run" $((B_SECONDS + 30)) --mode sse -c "$B_CONNS" -r 1 \
               --duration "$B_SECONDS" --path "$sse" ;;
        c) loadgen_run 60 --mode bytes -c 1 -r 1 --duration 30 --path "/bytes?n=$((C_BYTES / 8))" > /dev/null
           measure_loadgen c "$target" "$run" 120 --mode bytes -c 1 -r 1 --duration 90 --path "/bytes?n=$C_BYTES" ;;
        d) timeout -k 5 $((WARM_S + 30)) taskset -c 0 wrk -t1 -c64 -d"${WARM_S}s" "http://127.0.0.1:$PORT/small" \
               > /dev/null 2>&1 || die "wrk warm-up failed"
           measure_wrk d "$target" "$run" ;;
        e) measure_hold "$target" "$run" "$F_STEPS,$E_STREAMS" ;;
        w) measure_ws "$target" "$run" ;;
        f) loadgen_run 30 --mode sse -c "$F_CONNS" -r 20 --duration "$WARM_S" \
               --path "/sse?events=100&interval_us=$F_INTERVAL_US&size=$F_SIZE" > /dev/null
           measure_loadgen f100 "$target" "$run" 90 --mode sse -c "$F_CONNS" -r "$F_SHORT_R" --duration 60 \
               --path "/sse?events=100&interval_us=$F_INTERVAL_US&size=$F_SIZE"
           measure_loadgen f100k "$target" "$run" 90 --mode sse -c "$F_CONNS" -r 1 --duration 60 \
               --path "/sse?events=$F_LONG_EVENTS&interval_us=$F_INTERVAL_US&size=$F_SIZE" ;;
    esac
}

# p measures one fresh process per upstream configuration (the pool is fixed at start), each
# warmed and measured with the same wrk load; records are p_one, p_least and p_affinity.
measure_pool() {  # measure_pool TARGET RUN RUNS
    local target="$1" run="$2" runs="$3" config session_ids=(-s "$BENCH/session-ids.lua")
    for config in $(rotate "$run" ${P_CONFIGS//,/ }); do
        wait_idle
        log "scenario p run $run/$runs: $target, upstream $config"
        POOL_LINES=$(pool_lines "$config")
        start_target "$target"
        timeout -k 5 $((WARM_S + 30)) taskset -c 0 wrk -t1 -c64 -d"${WARM_S}s" "${session_ids[@]}" \
            "http://127.0.0.1:$PORT/small" -- "$P_SESSIONS" > /dev/null 2>&1 || die "wrk warm-up failed"
        measure_wrk "p_$config" "$target" "$run" "${session_ids[@]}" -- "$P_SESSIONS"
        stop_target p "$run"
    done
    POOL_LINES=""
}

T_MEASURE=$(date +%s%N)
for scenario in ${ALL_SCENARIOS//,/ }; do
    want "$scenario" || continue
    T_SCENARIO=$(date +%s%N)
    if [ "$scenario" = w ]; then
        start_origin ws-origin "$WS_ORIGIN"
        WS_ORIGIN_PORT=${ORIGIN_PORTS[-1]}; WS_ON=1
        log "ws origin pid ${ORIGIN_PIDS[-1]} on 127.0.0.1:$WS_ORIGIN_PORT"
    fi
    runs=$RUNS
    case "$scenario" in
        a|b|b16) runs=$(( RUNS > NOISY_RUNS ? RUNS : NOISY_RUNS )) ;;
        p) runs=$(( RUNS > P_RUNS ? RUNS : P_RUNS )) ;;
    esac
    for run in $(seq 1 "$runs"); do
        for target in $(order_for_run "$run"); do
            # No proxy, nothing to weigh: e and f measure the proxy's memory and CPU.
            if [ "$target" = direct ] && { [ "$scenario" = e ] || [ "$scenario" = f ]; }; then continue; fi
            if [ "$scenario" = f ] && ! in_list "$target" "$F_TARGETS"; then continue; fi
            if [ "$scenario" = p ]; then
                if in_list "$target" "$P_TARGETS"; then measure_pool "$target" "$run" "$runs"; fi
                continue
            fi
            wait_idle
            log "scenario $scenario run $run/$runs: $target"
            start_target "$target"
            measure_scenario "$scenario" "$target" "$run"
            stop_target "$scenario" "$run"
        done
    done
    printf '%s\t%s\n' "$scenario" "$(calc "($(date +%s%N) - $T_SCENARIO) / 1e9")" >> "$WORK/scenario-seconds.tsv"
done
MEASURE_S=$(calc "($(date +%s%N) - $T_MEASURE) / 1e9")
for pid in "${ORIGIN_PIDS[@]}"; do stop_pid "$pid"; done

# ---- report ------------------------------------------------------------------------------
version_of() {  # version_of TARGET: its first version line, or "—" when not measured
    wants_target "$1" || { echo "—"; return; }
    case "$1" in
        nginx) "$NGINX" -v 2>&1 | sed 's/.*: //' ;;
        haproxy) "$HAPROXY" -v 2>&1 | head -1 | awk '{print $1, $3}' ;;
        caddy) echo "Caddy $("$CADDY" version 2>&1 | head -1)" ;;
    esac
}
TOTAL_S=$(elapsed)
{
    printf '{"date":"%s","quick":%s,"runs":%d,"noisy_runs":%d,' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$([ "$QUICK" = 1 ] && echo true || echo false)" "$RUNS" "$(( RUNS > NOISY_RUNS ? RUNS : NOISY_RUNS ))"
    printf '"targets":["%s"],"f_targets":["%s"],' "${TARGETS_CSV//,/\",\"}" "${F_TARGETS//,/\",\"}"
    printf '"nproc":%d,"cpu_model":"%s","kernel":"%s",' "$(nproc)" \
        "$(lscpu | awk -F: '/^Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')" "$(uname -r)"
    printf '"nginx":"%s","haproxy":"%s","caddy":"%s",' "$(version_of nginx)" "$(version_of haproxy)" "$(version_of caddy)"
    printf '"swift":"%s","gcc":"%s",' "$(swift --version 2>&1 | head -1)" "$(gcc --version | head -1)"
    printf '"sluice_commit":"%s",' "$SLUICE_COMMIT"
    printf '"nofile":%d,"e_streams":%d,"f_steps":"%s","clk_tck":%d,' "$NOFILE" "$E_STREAMS" "$F_STEPS" "$CLK_TCK"
    printf '"a":{"conns":%d,"events":%d,"interval_ms":%d,"size":%d},' "$A_CONNS" "$A_EVENTS" "$A_INTERVAL_MS" "$A_SIZE"
    printf '"b":{"conns":%d,"size":%d,"seconds":%d,"b16_batch":%d},"c_bytes":%d,"d_seconds":%d,' \
        "$B_CONNS" "$B_SIZE" "$B_SECONDS" "$B16_BATCH" "$C_BYTES" "$D_SECONDS"
    printf '"f":{"conns":%d,"interval_us":%d,"size":%d,"short_requests":%d,"long_events":%d},' \
        "$F_CONNS" "$F_INTERVAL_US" "$F_SIZE" "$F_SHORT_R" "$F_LONG_EVENTS"
    printf '"p":{"servers":%d,"sessions":%d,"runs":%d,"configs":["%s"]},' \
        "$P_SERVERS" "$P_SESSIONS" "$(( RUNS > P_RUNS ? RUNS : P_RUNS ))" "${P_CONFIGS//,/\",\"}"
    printf '"w":{"conns":%d,"rate":%d,"size":%d,"seconds":%d,"flood_conns":%d,"flood_size":%d,"flood_batch":%d,"flood_seconds":%d,"idle":%d},' \
        "$W_CONNS" "$W_RATE" "$W_SIZE" "$W_SECONDS" "$W_FLOOD_CONNS" "$W_FLOOD_SIZE" "$W_FLOOD_BATCH" "$W_FLOOD_SECONDS" "$W_IDLE"
    printf '"scenario_s":{%s},' "$(awk -F'\t' '{printf "%s\"%s\":%s", (NR > 1 ? "," : ""), $1, $2}' "$WORK/scenario-seconds.tsv" 2>/dev/null)"
    printf '"idle_busy_pct":[%s,%s],"build_s":%s,"measure_s":%s,"total_s":%s}\n' "$IDLE_BUSY0" "$IDLE_BUSY1" "$BUILD_S" "$MEASURE_S" "$TOTAL_S"
} > "$WORK/meta.json"
touch "$WORK/sluice.stdout"
if [ -s "$WORK/sluice.stdout" ]; then
    echo "sluice wrote $(wc -l < "$WORK/sluice.stdout") line(s) to stdout (completion records?) although its config turns stdout off" \
        >> "$MESSAGES/sluice.log"
fi
python3 "$BENCH/report.py" --meta "$WORK/meta.json" --raw "$RAW" --messages "$MESSAGES" > "$WORK/latest.md"
mv "$WORK/latest.md" "$RESULTS/latest.md"
cp "$RAW" "$RESULTS/latest.jsonl"
cp "$WORK/meta.json" "$RESULTS/latest-meta.json"
rm -rf "$RESULTS/latest-messages"
cp -r "$MESSAGES" "$RESULTS/latest-messages"
cat "$RESULTS/latest.md"
log "done: build ${BUILD_S}s, measurements ${MEASURE_S}s, total $(elapsed)s; wrote $RESULTS/latest.md"
