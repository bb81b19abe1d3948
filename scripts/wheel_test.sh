#!/usr/bin/env bash
# Usage: scripts/wheel_test.sh          (run by tests/release/test_wheel.py; `make wheel-test`)
#
# Tests the release artifacts the way a user gets them:
#   1. `python -m build`: the sdist, then the wheel built *from the sdist* (so the C extension
#      must compile from what the sdist ships);
#   2. checks the sdist (C core sources and headers, binding sources and headers, setup.py,
#      pyproject.toml, the stub) and the wheel (compiled engine, stub, py.typed, no
#      hother/__init__.py, the pytest11 entry point);
#   3. creates a fresh virtualenv (python -m venv) and installs the wheel with the extras the
#      examples need (pip may use its cache and the configured indexes);
#   4. from a directory outside the repository: checks that hother.cancelable and its engine
#      are imported from the virtualenv (not from the source tree) at the built version, that
#      the pytest plugin runs an async test in its four run modes, and runs the examples.
# Prints "wheel test: OK" at the end; exits non-zero on the first failure.
#
# Environment:
#   VPY                 python used to build (default .venv/bin/python; needs `build`)
#   WHEEL_TEST_DIR      work directory (default: a new temporary directory, removed at exit)
#   WHEEL_TEST_DIST     directory holding an already built sdist + wheel: skip step 1
#   WHEEL_TEST_EXTRAS   extras installed with the wheel (default: trio,uvloop,httpx,sqlalchemy,psutil)
#   WHEEL_TEST_EXAMPLES space-separated example names to run (default: every examples/*.py
#                       not starting with "_"); showcase always runs
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

vpy=${VPY:-.venv/bin/python}
case $vpy in /*) ;; *) vpy="$repo/$vpy" ;; esac
extras=${WHEEL_TEST_EXTRAS:-trio,uvloop,httpx,sqlalchemy,psutil}

if [ -n "${WHEEL_TEST_DIR:-}" ]; then
    work=$WHEEL_TEST_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/hother-wheel-test.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi

step() { echo "== $*"; }
fail() {
    echo "wheel test: FAILED: $*" >&2
    exit 1
}

# ------------------------------------------------------------------ 1. build
if [ -n "${WHEEL_TEST_DIST:-}" ]; then
    dist=$WHEEL_TEST_DIST
    step "reusing the artifacts of $dist"
else
    dist=$work/dist
    step "python -m build (sdist, then the wheel from the sdist) -> $dist"
    # Serialised with `make build` (same lock): building the sdist writes src/*.egg-info.
    lock=()
    if command -v flock >/dev/null 2>&1; then lock=(flock "$repo/.build.lock"); fi
    "${lock[@]}" "$vpy" -m build --outdir "$dist" "$repo" >"$work/build.log" 2>&1 ||
        {
            tail -40 "$work/build.log" >&2
            fail "python -m build"
        }
fi
shopt -s nullglob
sdists=("$dist"/hother_cancelable-*.tar.gz)
wheels=("$dist"/hother_cancelable-*.whl)
shopt -u nullglob
[ ${#sdists[@]} -eq 1 ] || fail "expected one sdist in $dist, found ${#sdists[@]}"
[ ${#wheels[@]} -eq 1 ] || fail "expected one wheel in $dist, found ${#wheels[@]}"
sdist=${sdists[0]}
wheel=${wheels[0]}
echo "   $(basename "$sdist")"
echo "   $(basename "$wheel")"

# ------------------------------------------------------------------ 2. contents
step "sdist and wheel contents"
"$vpy" - "$sdist" "$wheel" "$repo" <<'PY'
import glob
import os
import sys
import tarfile
import zipfile

sdist, wheel, repo = sys.argv[1:]
with tarfile.open(sdist) as tar:
    names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
needed = ["setup.py", "pyproject.toml", "README.md", "src/hother/cancelable/_engine.pyi",
          "src/hother/cancelable/py.typed"]
for pattern in ("csrc/*.c", "csrc/*.h", "src/hother/cancelable/_ext/*.c",
                "src/hother/cancelable/_ext/*.h"):
    found = [os.path.relpath(p, repo) for p in glob.glob(os.path.join(repo, pattern))]
    if not found:
        sys.exit(f"the source tree has no {pattern}")
    needed += found
missing = sorted(n for n in needed if n not in names)
if missing:
    sys.exit("the sdist lacks: " + ", ".join(missing))
if any(n.endswith((".so", ".o", ".pyc")) for n in names):
    sys.exit("the sdist contains build products")
print(f"   sdist: {len(names)} files, every C source and header included")

with zipfile.ZipFile(wheel) as whl:
    wnames = set(whl.namelist())
    entry_points = next(
        (whl.read(n).decode() for n in wnames if n.endswith(".dist-info/entry_points.txt")), ""
    )
engines = [n for n in wnames if n.startswith("hother/cancelable/_engine.") and n.endswith(".so")]
if len(engines) != 1:
    sys.exit(f"the wheel must contain one compiled engine, found {engines}")
for name in ("hother/cancelable/_engine.pyi", "hother/cancelable/py.typed",
             "hother/cancelable/__init__.py", "hother/cancelable/pytest_plugin.py"):
    if name not in wnames:
        sys.exit(f"the wheel lacks {name}")
if "hother/__init__.py" in wnames:
    sys.exit("the wheel ships hother/__init__.py: hother must stay a namespace package")
if "hother.cancelable.pytest_plugin" not in entry_points:
    sys.exit("the wheel does not declare the pytest11 entry point")
print(f"   wheel: {len(wnames)} files, engine {engines[0].rsplit('/', 1)[1]}")
sources = sorted(n for n in wnames if n.startswith("hother/cancelable/_ext/"))
if sources:
    print(f"   note: the wheel also ships {len(sources)} C source files of _ext/ (not needed)")
PY

# ------------------------------------------------------------------ 3. fresh virtualenv
venv=$work/venv
step "fresh virtualenv $venv; pip install $(basename "$wheel")[$extras] pytest"
"$vpy" -m venv --clear "$venv"
vbin=$venv/bin
"$vbin/python" -m pip install -q --disable-pip-version-check "$wheel[$extras]" pytest \
    >"$work/pip.log" 2>&1 ||
    {
        tail -40 "$work/pip.log" >&2
        fail "pip install"
    }

# ------------------------------------------------------------------ 4. run from outside
run=$work/run
rm -rf "$run"
mkdir -p "$run"
cp -r "$repo/examples" "$run/examples"
find "$run/examples" -name __pycache__ -prune -exec rm -rf {} +
cd "$run"
export PYTHONNOUSERSITE=1
unset PYTHONPATH HOTHER_CANCELABLE_BACKEND || true

step "import location and version"
version=$(basename "$wheel" | cut -d- -f2)
"$vbin/python" - "$venv" "$version" "$repo" <<'PY'
import importlib.metadata
import os
import sys

venv, version, repo = sys.argv[1:]
import hother.cancelable as hc
from hother.cancelable import _engine

venv = os.path.realpath(venv)
for what, path in (("hother.cancelable", hc.__file__), ("the engine", _engine.__file__)):
    real = os.path.realpath(path)
    if not real.startswith(venv + os.sep):
        sys.exit(f"{what} was imported from {real}, not from the virtualenv {venv}")
    if real.startswith(os.path.realpath(repo) + os.sep):
        sys.exit(f"{what} was imported from the source tree: {real}")
if hc.__version__ != version or importlib.metadata.version("hother-cancelable") != version:
    sys.exit(f"version {hc.__version__!r}, expected {version!r}")
print(f"   hother.cancelable {hc.__version__} from {os.path.dirname(hc.__file__)}")
print(f"   engine {os.path.basename(_engine.__file__)}")
PY

step "pytest plugin (pytest11 entry point): one async test in the four run modes"
mkdir -p "$run/plugin"
cat >"$run/plugin/test_installed.py" <<'PY'
from hother.cancelable import Cancellable, get_backend


async def test_timeout_in_every_mode() -> None:
    backend = get_backend()
    cancelled = backend.get_cancelled_exc_class()
    try:
        async with Cancellable.with_timeout(0.01) as op:
            await backend.sleep(10)
    except cancelled:
        pass
    assert op.context.cancel_reason is not None
    assert op.context.cancel_reason.value == "timeout"
PY
(cd "$run/plugin" && "$vbin/python" -m pytest -q -p no:cacheprovider test_installed.py) \
    >"$work/plugin.log" 2>&1 || {
    cat "$work/plugin.log" >&2
    fail "the installed pytest plugin"
}
grep -q "4 passed" "$work/plugin.log" || {
    cat "$work/plugin.log" >&2
    fail "expected 4 passed (asyncio, uvloop, anyio, trio)"
}
echo "   $(grep "passed" "$work/plugin.log" | tail -1)"

step "examples (from $run/examples)"
if [ -n "${WHEEL_TEST_EXAMPLES:-}" ]; then
    read -r -a names <<<"showcase $WHEEL_TEST_EXAMPLES"
else
    names=()
    for path in "$run"/examples/*.py; do
        name=$(basename "$path" .py)
        case $name in _*) continue ;; esac
        names+=("$name")
    done
fi
declare -A seen=()
for name in "${names[@]}"; do
    [ -z "${seen[$name]:-}" ] || continue
    seen[$name]=1
    [ -f "examples/$name.py" ] || fail "no example examples/$name.py"
    case $name in
        signal_service) args=("$run/signal_service.out" --max-records 3 --interval 0.01) ;;
        *) args=() ;;
    esac
    start=$(date +%s%N)
    if ! timeout 300 "$vbin/python" "examples/$name.py" "${args[@]}" >"$work/example-$name.log" 2>&1; then
        tail -30 "$work/example-$name.log" >&2
        fail "example $name"
    fi
    printf '   %-24s ok (%d ms)\n' "$name" $((($(date +%s%N) - start) / 1000000))
done
grep -q "showcase finished on: asyncio, uvloop, anyio, trio" "$work/example-showcase.log" ||
    fail "the showcase did not finish in the four run modes"

echo "wheel test: OK"
