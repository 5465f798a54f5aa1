#!/bin/bash
# Soak: mixed traffic through sluice for SECONDS (default 600), then the leak and accounting checks
# of bench/soak.py. Exits non-zero on any failure. CI runs it for 120 s.
#   bench/soak.sh            10 minutes
#   bench/soak.sh 120        2 minutes
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ -z "${SLUICE_BIN:-}" ]; then
    swift build --product sluice
    export SLUICE_BIN="$ROOT/.build/debug/sluice"
fi
export SOAK_DIR="${SOAK_DIR:-$(mktemp -d)}"
# Bounded even if something hangs: the soak's own time plus two minutes for warm-up and checks.
exec timeout -k 10 $(( ${1:-600} + 120 )) python3 bench/soak.py "${1:-600}"
