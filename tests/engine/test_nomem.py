"""The engine under allocation failures (``_testcapi.set_nomemory``): every engine call must
end in a clean ``MemoryError`` (or swallow and report it where the engine never raises), never
crash, leak or corrupt, and the engine must stay usable.

The sweeps run in subprocesses (nomem_sweep.py, nomem_init.py), one forked child per failing
allocation index, so a crash is reported with its index instead of killing pytest. By default
they sample the index range; ``HOTHER_ENGINE_FULL_SWEEP=1`` (``make coverage``) makes them
exhaustive.

Known engine defects are reported by the sweeps in their own categories and checked by the
tests that name them (``half-entered``: test_scope_misbehaving.py; ``masked``,
``hook-task-kept``: below). ``cpython``: CPython 3.11 itself loses a MemoryError raised while
it creates the frame object of a Python function the engine called (a SystemError naming
that function). Every other problem fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hother.cancelable import _engine

from .isolated import FULL_SWEEP, HERE, run_script

pytest.importorskip("_testcapi")

from . import nomem_sweep

MODE = "full" if FULL_SWEEP else "sample"
KNOWN = ("[half-entered]", "[masked]", "[hook-task-kept]", "[cpython]")


@pytest.fixture(scope="module")
def sweeps() -> Iterator[dict[str, dict[str, Any]]]:
    proc = run_script(HERE / "nomem_sweep.py", MODE, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        data = json.loads(line)
        results[data["scenario"]] = data
    yield results


@pytest.mark.parametrize("scenario", sorted(nomem_sweep.SCENARIOS))
def test_engine_calls_under_allocation_failures(
    sweeps: dict[str, dict[str, Any]], scenario: str
) -> None:
    result = sweeps[scenario]
    verdicts = result["verdicts"]
    hard = [p for p in result["problems"] if not any(k in p for k in KNOWN)]
    assert not hard, f"{scenario}: {verdicts}\n" + "\n".join(hard)
    assert verdicts["crash"] == 0 and verdicts["hang"] == 0, verdicts
    assert result["last_index"] < nomem_sweep.MAX_INDEX, "the sweep never got past the calls"
    assert verdicts["ok"] >= nomem_sweep.STOP_AFTER_OK
    if MODE == "full":  # every scenario's calls allocate: some attempt must have failed
        assert verdicts["memory"] + verdicts["problem"] > 0, verdicts


def test_module_initialisation_under_allocation_failures() -> None:
    proc = run_script(HERE / "nomem_init.py", MODE, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    counts = result["counts"]
    assert counts.get("crash", 0) == 0, result["details"]
    assert counts.get("ok", 0) >= 12 and counts.get("memory", 0) > 0, counts
    assert not result["details"].get("other"), result["details"]


def test_module_initialisation_fails_only_with_memory_errors() -> None:
    """Every allocation of the import, one at a time: a clean MemoryError or success (no
    SystemError from a call made with an exception set, no Python source compiled at init).
    ``capsule``: CPython's PyCapsule_Import (the datetime C API) turns it into ImportError."""
    proc = run_script(HERE / "nomem_init.py", "full", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    bad = {k: v for k, v in result["details"].items() if k != "capsule"}
    assert not bad, bad
    assert result["counts"].get("memory", 0) > 0, result["counts"]


# -- the known defects, made deterministic ---------------------------------------------------


class MemoryErrorOnLookup:
    """Reading the attribute ``name`` raises MemoryError (as an allocation failure would)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        raise MemoryError(f"reading {self.name}")


@pytest.mark.parametrize("where", ["adopt_task", "current_scope", "deadline", "executor"])
def test_attribute_lookup_errors_are_not_masked(where: str) -> None:
    import asyncio

    class Task(asyncio.Future):  # type: ignore[type-arg]
        get_coro = MemoryErrorOnLookup("get_coro")

    class Deadline:
        __float__ = MemoryErrorOnLookup("__float__")

    class Executor:
        call_soon_threadsafe = MemoryErrorOnLookup("call_soon_threadsafe")

    async def main() -> None:
        with pytest.raises(MemoryError):
            if where == "adopt_task":
                with _engine.CancelScope() as scope:
                    _engine.adopt_task(Task(), scope)
            elif where == "current_scope":
                _engine.current_scope(Task())
            elif where == "deadline":
                _engine.CancelScope(deadline=Deadline())
            else:
                _engine.TokenCore()._add_hook(print, executor=Executor())

    asyncio.run(main())


def test_spawned_hook_task_is_not_kept_after_an_allocation_failure() -> None:
    proc = run_script(HERE / "nomem_sweep.py", "full", "hook_spawn", timeout=600)
    result = json.loads(proc.stdout)
    kept = [p for p in result["problems"] if "[hook-task-kept]" in p]
    assert not kept, kept


def test_links_survive_an_allocation_failure_in_the_cascade() -> None:
    """The cascade allocates nothing once the cancellation is won: whichever allocation
    fails, every linked token of the chain is cancelled (or the whole call failed)."""
    proc = run_script(HERE / "nomem_sweep.py", "full", "token_hooks_and_links", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert not result["problems"], result["problems"]
    assert result["verdicts"]["memory"] > 0, result["verdicts"]


def test_a_won_cancel_never_drops_collected_callbacks() -> None:
    """``_cancel(collect=True)`` allocates its result before the transition: whichever
    allocation fails, either the call fails and nothing is cancelled, or every async callback
    is handed back, spawned or reported (scenario token_collect_won, every index)."""
    proc = run_script(HERE / "nomem_sweep.py", "full", "token_collect_won", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert not result["problems"], result["problems"]
    assert result["verdicts"]["memory"] > 0, result["verdicts"]
