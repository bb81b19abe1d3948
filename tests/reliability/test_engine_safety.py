"""The C engine never crashes the interpreter, whatever Python feeds it.

* ``test_engine_fuzz``: the hypothesis fuzzer of ``engine_fuzz.py`` (every C entry point:
  ``CancelScope`` constructor/attributes/methods, ``TokenCore`` methods, ``RegistryTable``,
  ``CancellableCore`` and its awaitables, the module functions, the loop engines) runs in a
  subprocess, so that a segfault or an abort is reported as a failure of this test instead
  of killing the test run. ``make soak`` runs it with many more examples.
* The other tests pin down, one by one, the memory-safety defects the fuzzer found, each in
  its own subprocess (a crash or a hang fails the test, bounded by a timeout).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent


def _python(code: str, *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (faulthandler on); never hangs the test run."""
    try:
        return subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=TESTS_DIR,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"the interpreter hung for {timeout}s (infinite loop?)\n{out or ''}")


def _assert_clean(proc: subprocess.CompletedProcess[str], expect: str) -> None:
    detail = (
        f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )
    assert proc.returncode >= 0, f"the interpreter crashed (signal {-proc.returncode})\n" + detail
    assert expect in proc.stdout, detail


def test_engine_fuzz() -> None:
    examples = int(os.environ.get("HOTHER_FUZZ_EXAMPLES", "60"))
    seed = int(os.environ.get("HOTHER_FUZZ_SEED", "20261124"))
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "reliability.engine_fuzz",
            "--examples",
            str(examples),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=TESTS_DIR,
    )
    hint = (
        f"reproduce (step by step) with: cd tests && python -m reliability.engine_fuzz "
        f"--examples {examples} --seed {seed} --trace"
    )
    if proc.returncode < 0:
        pytest.fail(
            f"the engine crashed the interpreter (signal {-proc.returncode})\n{hint}\n"
            f"{proc.stderr[-6000:]}"
        )
    assert proc.returncode == 0, f"{hint}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    assert "no crash, no SystemError" in proc.stdout


def test_task_scopes_with_a_foreign_value_does_not_crash() -> None:
    """``_engine._task_scopes`` is the engine's own task -> scope dict, exposed as a module
    attribute. Anything Python stores in it is later cast to a scope without a type check:
    entering a scope then reads a random object as a ``Scope`` (segfault)."""
    proc = _python(
        """
        import asyncio
        from hother.cancelable import _engine

        async def main():
            try:
                _engine._task_scopes[asyncio.current_task()] = 5
                with _engine.CancelScope():
                    await asyncio.sleep(0)
            except (TypeError, RuntimeError) as exc:
                print("refused:", exc)

        asyncio.run(main())
        print("survived")
        """
    )
    _assert_clean(proc, "survived")


def test_entering_a_scope_over_an_abandoned_one_does_not_use_freed_memory() -> None:
    """``scope_enter_impl`` takes the task's innermost scope as a *borrowed* reference from
    the task -> scope dict, replaces the dict entry with the new scope (dropping the dict's
    reference) and only then increfs the parent. When the dict held the last reference (a
    scope entered with ``__enter__()`` whose object was dropped), the parent is freed first:
    use after free (ASan: scope.c, ``Py_INCREF(parent)`` in scope_enter_impl), which here
    corrupts the scope tree into a cycle and hangs the next enter."""
    proc = _python(
        """
        import asyncio
        from hother.cancelable import _engine

        async def main():
            for _ in range(200):
                _engine.CancelScope().__enter__()  # entered; only the engine keeps it
                junk = [object() for _ in range(50)]
                scope = _engine.CancelScope()
                scope.__enter__()
                scope.__exit__(None, None, None)

        asyncio.run(main())
        print("survived")
        """,
        timeout=15,
    )
    _assert_clean(proc, "survived")


@pytest.mark.parametrize("member", ["_token_obj", "_scope"])
def test_typed_core_members_refuse_foreign_objects(member: str) -> None:
    """``CancellableCore._token_obj`` and ``_scope`` are writable ``T_OBJECT`` members that
    the C fast path casts to ``TokenCore`` / ``CancelScope`` without checking: assigning
    another object makes ``__aenter__``/``__aexit__`` read and write memory outside that
    object (valgrind: invalid read/write in token_add_hook_impl/hooks_reserve/
    hooks_compact, token.c). The assignment (or the enter/exit) must raise TypeError."""
    proc = _python(
        f"""
        import asyncio
        from hother.cancelable import Cancellable

        async def main():
            op = Cancellable()
            try:
                if "{member}" == "_token_obj":
                    op._token_obj = object()
                    async with op:
                        pass
                else:
                    async with op:
                        op._scope = object()
            except (TypeError, RuntimeError) as exc:
                print("refused:", exc)
            else:
                print("accepted")

        asyncio.run(main())
        """
    )
    assert proc.returncode >= 0, f"crashed (signal {-proc.returncode})\n{proc.stderr[-3000:]}"
    assert "refused:" in proc.stdout, (
        f"assigning an object() to Cancellable.{member} was accepted and used as a "
        f"C struct: {proc.stdout.strip()} {proc.stderr.strip()[-500:]}"
    )


def test_immediate_awaitable_throw_with_a_non_exception() -> None:
    """The awaitable returned by ``Cancellable.__aenter__``/``__aexit__`` (``_Immediate``)
    answers ``throw(None)`` with SystemError ("exception None is not a BaseException
    subclass"): it must raise TypeError, like a coroutine's ``throw``."""
    proc = _python(
        """
        import asyncio
        from hother.cancelable import Cancellable

        async def main():
            op = Cancellable()
            aw = op.__aenter__()
            for bad in (None, 5, "x"):
                try:
                    aw.throw(bad)
                except TypeError:
                    print("TypeError", repr(bad))
                except SystemError as exc:
                    print("SystemError", repr(bad), exc)
            await op.__aexit__(None, None, None)

        asyncio.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SystemError" not in proc.stdout, proc.stdout
    assert proc.stdout.count("TypeError") == 3, proc.stdout
