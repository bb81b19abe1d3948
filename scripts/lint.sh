#!/usr/bin/env bash
# Usage: scripts/lint.sh       (run by `make lint`)
#
# Runs every check even when one fails, then prints a summary and exits non-zero on any failure:
#   ruff check, ruff format --check   on src/ tests/ bench/ examples/ scripts/ (those that exist)
#   mypy --strict                     on the packages configured in pyproject.toml (src/)
#   clang-format --dry-run -Werror    on csrc/ (+ tests) and the binding (src/.../_ext)
#   cppcheck                          on csrc/ (+ tests) and the binding (with Python's headers)
# Environment: VPY (venv python).
set -uo pipefail
cd "$(dirname "$0")/.."

vpy=${VPY:-.venv/bin/python}
vbin=$(dirname "$vpy")
ext=src/hother/cancelable/_ext
declare -a summary=()
failed=0

step() { # name command...
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        summary+=("$(printf '  %-22s PASS' "$name")")
    else
        summary+=("$(printf '  %-22s FAIL' "$name")")
        failed=1
    fi
}

py_dirs=()
for d in src tests bench examples scripts; do
    [ -d "$d" ] && py_dirs+=("$d")
done
shopt -s nullglob
c_files=(csrc/*.c csrc/*.h csrc/tests/*.c csrc/tests/*.h "$ext"/*.c "$ext"/*.h)
core_c=(csrc/*.c csrc/tests/*.c)
ext_c=("$ext"/*.c)
shopt -u nullglob

scripts/need-tool.sh clang-format clang-format || failed=1
scripts/need-tool.sh cppcheck cppcheck || failed=1
pyinc=$("$vpy" -c "import sysconfig; print(sysconfig.get_paths()['include'])")

step "ruff check" "$vbin/ruff" check "${py_dirs[@]}"
step "ruff format --check" "$vbin/ruff" format --check "${py_dirs[@]}"
step "mypy --strict" "$vpy" -m mypy --strict
step "clang-format" clang-format --dry-run -Werror "${c_files[@]}"
cppcheck_args=(--enable=warning,performance,portability --error-exitcode=1 --inline-suppr
    --std=c11 -q --suppress=missingIncludeSystem --suppress=toomanyconfigs)
step "cppcheck (core)" cppcheck "${cppcheck_args[@]}" -Icsrc "${core_c[@]}"
if [ ${#ext_c[@]} -gt 0 ]; then
    step "cppcheck (binding)" cppcheck "${cppcheck_args[@]}" -Icsrc -I"$ext" -I"$pyinc" "${ext_c[@]}"
fi

echo
step "duplicated code < 5%" "$vpy" scripts/dupcheck.py src csrc --max-percent 5

echo "== lint summary"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
    echo "lint: FAILED"
    exit 1
fi
echo "lint: all passed"
