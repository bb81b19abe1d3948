#!/usr/bin/env bash
# Usage: scripts/fuzz.sh [N]            (run by `make fuzz`)
#
# Differential parity fuzzing (tests/parity): N generated programs (default 5000, or
# PARITY_EXAMPLES) run on trio (twice, two schedules), on our engine and on anyio, on virtual
# time; every trace must match trio's. Prints how many programs ran and that no divergence
# was found, or the minimal diverging program (hypothesis shrinks it) and exits non-zero.
#
# Environment: VPY (venv python, default .venv/bin/python), PARITY_EXAMPLES (N),
# FUZZ_SEED (hypothesis seed; default: a random one, printed so the run can be repeated).
set -euo pipefail
cd "$(dirname "$0")/.."

vpy=${VPY:-.venv/bin/python}
count=${1:-${PARITY_EXAMPLES:-5000}}
case $count in
'' | *[!0-9]*)
    echo "fuzz: N must be a positive integer, got '$count'" >&2
    exit 2
    ;;
esac
if [ "$count" -lt 1 ]; then
    echo "fuzz: N must be >= 1, got $count" >&2
    exit 2
fi
seed=${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}

echo "== fuzz: $count programs, seed $seed (repeat with FUZZ_SEED=$seed)"
start=$(date +%s)
set +e
PARITY_EXAMPLES=$count "$vpy" -m pytest -q -s --timeout=0 \
    --hypothesis-seed="$seed" \
    "tests/parity/test_parity_fuzz.py::test_generated_programs_match_trio"
rc=$?
set -e
echo "== fuzz: $(($(date +%s) - start)) s"
if [ $rc -ne 0 ]; then
    echo "fuzz: DIVERGENCE found (seed $seed): see the program and traces above"
    exit $rc
fi
echo "fuzz: passed"
