#!/usr/bin/env bash
# Builds every libFuzzer target and runs each for SECONDS (default 60) from its seed corpus in Tests/Corpus/<target>/.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (targets default to all five)
#
# The build uses its own scratch path (.build-fuzz), so it never disturbs .build. Each run starts from a copy of the
# committed seeds in a temporary work directory (the fuzzer adds the inputs it finds there, never to the repository)
# and runs with SWIFT_BACKTRACE=enable=no, so that a trap reaches libFuzzer's handler, which writes the input to
# fuzz/artifacts/ (git-ignored). Exits non-zero if any target crashed or violated a property, printing each
# reproducer's path; rerun one with `.build-fuzz/release/<target> fuzz/artifacts/<target>-crash-...`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(SluiceFuzzRequest SluiceFuzzResponse SluiceFuzzChunked SluiceFuzzTap SluiceFuzzConfig)
fi
case "$seconds" in ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

scratch=".build-fuzz"
artifacts="$PWD/fuzz/artifacts"
mkdir -p "$artifacts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
touch "$work/started"  # reproducers newer than this are this run's

# `--sanitize fuzzer` links libFuzzer and instruments for coverage; `-Xswiftc -sanitize=fuzzer,address` adds
# AddressSanitizer. (`-Xswiftc -sanitize=fuzzer` alone yields a binary that exits at once, and
# `--sanitize fuzzer --sanitize address` loses the coverage: see STYLE.md, Testing.)
for target in "${targets[@]}"; do
    echo "fuzz: building $target"
    swift build -c release --product "$target" --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address \
        --scratch-path "$scratch"
done
bin="$(swift build -c release --sanitize fuzzer --scratch-path "$scratch" --show-bin-path)"

failed=()
for target in "${targets[@]}"; do
    corpus="$work/$target"
    mkdir -p "$corpus"
    cp Tests/Corpus/"$target"/* "$corpus"/
    dict=()
    case "$target" in
        SluiceFuzzRequest|SluiceFuzzResponse|SluiceFuzzChunked) dict=(-dict=fuzz/http.dict) ;;
        SluiceFuzzTap) dict=(-dict=fuzz/tap.dict) ;;
        SluiceFuzzConfig) dict=(-dict=fuzz/config.dict) ;;
    esac
    echo "fuzz: running $target for ${seconds}s"
    status=0
    # -timeout: an input taking 10 s is a hang, reported like a crash; -rss_limit_mb bounds a leak or a blow-up.
    # -print_final_stats gives the execution count and speed for the log.
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
        "$bin/$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/$target-" -print_final_stats=1 "${dict[@]}" \
        > "$work/$target.log" 2>&1 || status=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
        "$work/$target.log" || true
    if [ "$status" -ne 0 ]; then
        echo "fuzz: $target FAILED (exit $status); the fuzzer's last words:"
        grep -E 'fuzz property failed|Fatal error|ERROR: |SUMMARY|Test unit written|^input |^whole |^split ' \
            "$work/$target.log" | head -40 || tail -40 "$work/$target.log"
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}; reproducers:"
    find "$artifacts" -type f -newer "$work/started" | sed 's|^|  |'
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
