#!/usr/bin/env bash
# Usage: scripts/sanitize.sh            (run by `make sanitize`, which builds the C test binaries)
#
# Runs, and summarises:
#   asan      C unit tests built with -fsanitize=address,undefined -fno-sanitize-recover=all
#   tsan      C unit tests built with -fsanitize=thread (the threaded tests race for real)
#   valgrind  C unit tests (plain -O1 -g build) under valgrind --leak-check=full
#   python    the extension rebuilt with HOTHER_CANCELABLE_SANITIZE=1 (ASan+UBSan) and the
#             pytest suite run against it with libasan/libubsan preloaded.
#
# The sanitized extension is built OUT OF TREE (build/sanitize/src: a copy of src/ plus the
# sanitized .so) and pytest imports it from there through PYTHONPATH: the in-place module other
# engineers use is never replaced by a build that only loads under LD_PRELOAD, so nothing has
# to be rebuilt afterwards and a concurrent `make build`/pytest is unaffected.
#
# Environment: SANITIZE_PARTS (default "asan tsan valgrind python"), VPY (venv python),
# CTEST_DIR (default build), PYTEST_ARGS (default -q).
set -uo pipefail
cd "$(dirname "$0")/.."

parts=${SANITIZE_PARTS:-asan tsan valgrind pyvalgrind python}
vpy=${VPY:-.venv/bin/python}
cdir=${CTEST_DIR:-build}
cc=${CC:-gcc}
declare -a summary=()
failed=0

record() { # part status detail
    summary+=("$(printf '  %-9s %-4s %s' "$1" "$2" "$3")")
    [ "$2" = PASS ] || failed=1
}

closing_line() { # file: the harness's closing line, or a note
    grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1 || echo "no closing line"
}

run_c() { # part log-name command...
    local part=$1 log=$cdir/sanitize-$2.log
    shift 2
    echo "== $part: $*"
    "$@" >"$log" 2>&1
    local rc=$?
    cat "$log"
    if [ $rc -eq 0 ]; then record "$part" PASS "$(closing_line "$log")"; else
        record "$part" FAIL "exit $rc, $(closing_line "$log") (log: $log)"; fi
}

for part in $parts; do
    case $part in
    asan)
        run_c asan asan env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            UBSAN_OPTIONS=print_stacktrace=1 "$cdir/ctest-asan/run_tests"
        ;;
    tsan)
        run_c tsan tsan env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
            "$cdir/ctest-tsan/run_tests"
        ;;
    valgrind)
        run_c valgrind valgrind valgrind -q --error-exitcode=1 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect,possible "$cdir/ctest/run_tests"
        ;;
    pyvalgrind)
        run_c pyvalgrind pyvalgrind "$vpy" scripts/stress_valgrind.py --valgrind
        ;;
    python)
        echo "== python: sanitized extension + pytest"
        root=$cdir/sanitize
        libasan=$("$cc" -print-file-name=libasan.so)
        libubsan=$("$cc" -print-file-name=libubsan.so)
        if [ ! -e "$libasan" ] || [ ! -e "$libubsan" ]; then
            record python FAIL "libasan/libubsan not found by $cc"
            continue
        fi
        rm -rf "$root/src"
        mkdir -p "$root"
        cp -r src "$root/src"
        find "$root/src" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
        if ! HOTHER_CANCELABLE_SANITIZE=1 flock .build.lock "$vpy" setup.py -q build_ext \
            --build-lib "$root/src" --build-temp "$root/temp" --force >"$root/build.log" 2>&1; then
            cat "$root/build.log"
            record python FAIL "sanitized build failed (log: $root/build.log)"
            continue
        fi
        # Import the sanitized module first (failing clearly if it is not the one picked up),
        # then hand over to pytest in the same process.
        HOTHER_CANCELABLE_SANITIZED=1 LD_PRELOAD="$libasan $libubsan" ASAN_OPTIONS=detect_leaks=0 \
            UBSAN_OPTIONS=print_stacktrace=1 PYTHONPATH="$root/src" \
            "$vpy" - ${PYTEST_ARGS:--q -m "not release"} <<'PY' 2>&1 | tee "$root/pytest.log"
import os, sys
try:
    import hother.cancelable._engine as engine
except Exception as exc:  # noqa: BLE001
    print(f"sanitize: the sanitized extension does not import: {exc!r}")
    sys.exit(3)
where = os.path.realpath(engine.__file__)
want = os.path.realpath(os.path.join(os.environ["PYTHONPATH"], "hother"))
if not where.startswith(want + os.sep):
    print(f"sanitize: imported {where}, not the sanitized build under {want}")
    sys.exit(3)
print(f"sanitize: using {where}")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
PY
        rc=${PIPESTATUS[0]}
        last=$(grep -E '(passed|failed|error|no tests ran)' "$root/pytest.log" | tail -1)
        if [ "$rc" -eq 0 ]; then record python PASS "${last:-pytest ok}"; else
            record python FAIL "exit $rc: ${last:-see $root/pytest.log}"; fi
        ;;
    *)
        record "$part" FAIL "unknown part (known: asan tsan valgrind python)"
        ;;
    esac
done

echo
echo "== sanitize summary"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
    echo "sanitize: FAILED"
    exit 1
fi
echo "sanitize: all passed"
