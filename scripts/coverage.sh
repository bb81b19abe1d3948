#!/usr/bin/env bash
# Usage: scripts/coverage.sh            (run by `make coverage`)
#
# Line coverage of the three layers, printed at the end:
#   python   src/ (the Python package), measured with coverage.py while pytest runs
#   binding  src/hother/cancelable/_ext/*.c (the CPython binding), gcov
#   csrc     csrc/*.c and csrc/*.h (the pure C core), gcov: the union of the lines run by
#            the pytest suite (through the extension) and by the C unit tests
#
# The instrumented extension (HOTHER_CANCELABLE_COVERAGE=1: -O0 --coverage) is built OUT OF
# TREE in build/coverage/ and imported from there through a meta-path hook installed before
# pytest starts; the Python sources stay those of src/. The shared in-place module is never
# replaced, so a concurrent `make build` / pytest of a teammate is unaffected.
#
# Python: `coverage run -m pytest` (the engine of pytest-cov) rather than `pytest --cov`,
# because the package's pytest plugin is loaded through an entry point before pytest-cov
# would start measuring; every module-level line would then be reported as missed.
#
# Environment: VPY (venv python, default .venv/bin/python), CC (default gcc), GCOV (default
# gcov), PYTEST_ARGS (default -q), CTEST_CFLAGS (the Makefile's), COVERAGE_FAIL_UNDER (a
# percentage: exit non-zero when a layer is below it; default: report only),
# HOTHER_ENGINE_FULL_SWEEP (default 1: the allocation-failure sweeps of tests/engine try every
# index instead of a sample).
# Reports: build/coverage/html (Python, HTML), build/coverage/c-files.txt (C, per file).
set -uo pipefail
cd "$(dirname "$0")/.."

vpy=${VPY:-.venv/bin/python}
cc=${CC:-gcc}
gcov=${GCOV:-gcov}
root=build/coverage
ctest_cflags=${CTEST_CFLAGS:--std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
-Wmissing-prototypes -g -pthread -DCC_ALLOC_FAILPOINTS -Icsrc}
failed=0

command -v "$gcov" >/dev/null 2>&1 || scripts/need-tool.sh "$gcov" gcc || exit 1
"$vpy" -c "import coverage" 2>/dev/null || { echo "coverage: coverage.py is not installed in $vpy"; exit 1; }

rm -rf "$root"
mkdir -p "$root/lib" "$root/temp" "$root/ctest/obj" "$root/gcov"
root_abs=$(cd "$root" && pwd)

# -- 1. the instrumented extension (out of tree) ------------------------------------------
echo "== coverage: building the instrumented extension in $root/lib"
if ! HOTHER_CANCELABLE_COVERAGE=1 flock .build.lock "$vpy" setup.py -q build_ext \
    --build-lib "$root/lib" --build-temp "$root/temp" --force >"$root/build.log" 2>&1; then
    cat "$root/build.log"
    echo "coverage: the instrumented build failed (log: $root/build.log)"
    exit 1
fi
so=$(find "$root/lib" -name '_engine*.so' | head -1)
if [ -z "$so" ]; then
    echo "coverage: no extension module produced under $root/lib"
    exit 1
fi

# -- 2. the C unit tests, instrumented -----------------------------------------------------
echo "== coverage: C unit tests (--coverage)"
ctest_ok=1
objs=()
for src in csrc/*.c csrc/tests/*.c; do
    obj="$root/ctest/obj/$(echo "$src" | tr '/' '_').o"
    # shellcheck disable=SC2086  # CTEST_CFLAGS is a list of flags
    if ! "$cc" $ctest_cflags -O0 --coverage -c "$src" -o "$obj"; then
        ctest_ok=0
        break
    fi
    objs+=("$obj")
done
if [ $ctest_ok -eq 1 ] && "$cc" -pthread --coverage -o "$root/ctest/run_tests" "${objs[@]}" -lm; then
    if ! "$root/ctest/run_tests" >"$root/ctest/run.log" 2>&1; then
        echo "coverage: C unit tests FAILED (log: $root/ctest/run.log)"
        failed=1
    fi
    grep -E '^[0-9]+ passed, [0-9]+ failed$' "$root/ctest/run.log" | tail -1
else
    echo "coverage: building the C unit tests failed"
    failed=1
fi

# -- 3. pytest under coverage.py with the instrumented extension ----------------------------
echo "== coverage: pytest (coverage.py + instrumented extension $so)"
cat >"$root/coveragerc" <<EOF
[run]
source = src/hother
data_file = $root_abs/.coverage
[report]
precision = 1
skip_empty = true
[html]
directory = $root_abs/html
EOF
cat >"$root/bootstrap.py" <<'EOF'
"""Import hother.cancelable._engine from the instrumented build, then run pytest."""
import importlib.abc
import importlib.util
import os
import sys

SO = os.environ["HOTHER_COVERAGE_SO"]


class _Redirect(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        if fullname == "hother.cancelable._engine":
            return importlib.util.spec_from_file_location(fullname, SO)
        return None


sys.meta_path.insert(0, _Redirect())
sys.path.insert(0, os.getcwd())  # `coverage run` put the bootstrap's directory first
del sys.path[1]
import pytest  # noqa: E402

status = pytest.main(sys.argv[1:])
engine = sys.modules.get("hother.cancelable._engine")
where = getattr(engine, "__file__", None)
if where is None or os.path.realpath(where) != os.path.realpath(SO):
    print(f"coverage: the tests used {where}, not the instrumented {SO}")
    sys.exit(3)
print(f"coverage: the tests used the instrumented {where}")
sys.exit(status)
EOF
# The engine tests sweep every allocation-failure index here (sampled by default: make test).
export HOTHER_ENGINE_FULL_SWEEP=${HOTHER_ENGINE_FULL_SWEEP:-1}
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
HOTHER_COVERAGE_SO=$(realpath "$so") "$vpy" -m coverage run --rcfile="$root/coveragerc" \
    "$root/bootstrap.py" ${PYTEST_ARGS:--q} 2>&1 | tee "$root/pytest.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    echo "coverage: pytest exited with $rc (figures below are still meaningful)"
    failed=1
fi
"$vpy" -m coverage html --rcfile="$root/coveragerc" -q >/dev/null 2>&1 || true
py_total=$("$vpy" -m coverage report --rcfile="$root/coveragerc" --format=total 2>/dev/null)
"$vpy" -m coverage report --rcfile="$root/coveragerc" --skip-covered >"$root/python-files.txt" 2>&1

# -- 4. gcov: JSON per object, merged per source line ---------------------------------------
echo "== coverage: gcov"
gcov_dirs=("$root_abs/temp" "$root_abs/ctest/obj")
(
    cd "$root/gcov" || exit 1
    n=0
    while read -r gcda; do
        n=$((n + 1))
        mkdir -p "$n" # one directory per object: the same source is in two builds
        (cd "$n" && "$gcov" --json-format --object-directory "$(dirname "$gcda")" \
            "${gcda%.gcda}.o" >/dev/null 2>&1)
    done < <(find "${gcov_dirs[@]}" -name '*.gcda')
)
c_figures=$("$vpy" - "$root/gcov" "$(pwd)" "$root/c-files.txt" <<'EOF'
import gzip
import json
import os
import sys
from pathlib import Path

gcov_dir, repo, listing = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), sys.argv[3]
lines: dict[str, dict[int, bool]] = {}
for path in gcov_dir.rglob("*.gcov.json.gz"):
    data = json.loads(gzip.open(path).read())
    cwd = Path(data.get("current_working_directory", repo))
    for entry in data["files"]:
        source = Path(entry["file"])
        source = (source if source.is_absolute() else cwd / source).resolve()
        try:
            rel = source.relative_to(repo).as_posix()
        except ValueError:
            continue  # Python's headers, system headers
        if not (rel.startswith("csrc/") or rel.startswith("src/hother/cancelable/_ext/")):
            continue
        if rel.startswith("csrc/tests/"):
            continue  # the tests themselves are not measured
        seen = lines.setdefault(rel, {})
        for line in entry["lines"]:
            number = line["line_number"]
            seen[number] = seen.get(number, False) or line["count"] > 0


def total(prefix: str) -> tuple[int, int]:
    run = count = 0
    for rel, seen in lines.items():
        if rel.startswith(prefix):
            count += len(seen)
            run += sum(seen.values())
    return run, count


with open(listing, "w") as out:
    for rel in sorted(lines):
        seen = lines[rel]
        missed = sorted(n for n, hit in seen.items() if not hit)
        pct = 100.0 * (len(seen) - len(missed)) / len(seen) if seen else 100.0
        shown = ",".join(map(str, missed[:40])) + (" ..." if len(missed) > 40 else "")
        out.write(f"{rel:48} {len(seen):5} lines {pct:6.1f}%  missed: {shown}\n")
for name, prefix in (("binding", "src/hother/cancelable/_ext/"), ("csrc", "csrc/")):
    run, count = total(prefix)
    pct = 100.0 * run / count if count else 0.0
    print(f"{name} {pct:.1f} {run} {count}")
EOF
)

# -- 5. summary ----------------------------------------------------------------------------
echo
echo "== coverage summary (line coverage; target 95%)"
cat "$root/c-files.txt"
echo
report() { # layer percent detail
    local mark=ok
    if [ -n "${COVERAGE_FAIL_UNDER:-}" ] && awk "BEGIN{exit !($2 < $COVERAGE_FAIL_UNDER)}"; then
        mark=BELOW
        failed=1
    fi
    printf '  %-8s %6s%%  %s%s\n' "$1" "$2" "$3" "$([ $mark = BELOW ] && echo '  (below target)')"
}
report python "${py_total:-?}" "src/ (coverage.py; per file: $root/python-files.txt, html: $root/html)"
while read -r name pct run count; do
    report "$name" "$pct" "$run of $count lines (per file: $root/c-files.txt)"
done <<<"$c_figures"
if [ $failed -ne 0 ]; then
    echo "coverage: FAILED (see above)"
    exit 1
fi
echo "coverage: done"
