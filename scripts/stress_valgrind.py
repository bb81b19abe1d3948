#!/usr/bin/env python3
"""Stress every path of the C engine, small enough to run under valgrind.

Two ways to run it:

* plain (``python scripts/stress_valgrind.py``): runs the stress once in each event-loop
  flavour (asyncio, uvloop, anyio-on-asyncio, trio) and prints what it did;
* under valgrind (``python scripts/stress_valgrind.py --valgrind``): re-runs itself as::

      PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=0 \\
          --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
          --num-callers=40 --log-file=build/valgrind-stress.log \\
          .venv/bin/python scripts/stress_valgrind.py

  then reads the log and fails (exit 1) when an error -- invalid read/write, use of an
  uninitialised value, invalid free, or a *definitely lost* block -- has a frame in the
  engine (``_engine*.so``, ``src/hother/cancelable/_ext/``, ``csrc/``). Errors whose stacks
  never enter our code (CPython, uvloop/libuv, OpenSSL) are counted and listed separately,
  not failed on. ``PYTHONMALLOC=malloc`` lets valgrind see every Python allocation.

What is stressed (each flavour): fast-path operations (enter/exit, timeouts firing and
not), nested and shielded scopes, tokens cancelled from plain threads with hooks on the
loop, linked token chains and cycles, parent/child operations, sources (timeout,
condition, composite), task groups adopting tasks, the registry table from threads, and
engine objects freed in every state (gc cycles included).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

#: A valgrind frame in our code: the extension's file (no debug info) or one of our C files.
_OUR_FILES = sorted(
    {p.name for d in (REPO / "csrc", REPO / "src/hother/cancelable/_ext") for p in d.glob("*.c")}
)
OUR_FRAMES = re.compile(
    r"(_engine[^ ]*\.so"
    + "".join(rf"|\((?:.*/)?{re.escape(name)}:\d+\)" for name in _OUR_FILES)
    + ")"
)


def _ours(block: str) -> bool:
    # CPython's Parser/token.c has PyToken_* functions: not ours
    return any(OUR_FRAMES.search(line) and "PyToken_" not in line for line in block.splitlines())


async def _stress(n: int) -> dict[str, int]:
    from hother.cancelable import (
        Cancellable,
        CancellationReason,
        CancellationToken,
        OperationRegistry,
        _engine,
        get_backend,
    )
    from hother.cancelable.core.token import LinkedCancellationToken
    from hother.cancelable.sources.composite import CompositeSource
    from hother.cancelable.sources.condition import ConditionSource
    from hother.cancelable.sources.timeout import TimeoutSource

    backend = get_backend()
    cancel_exc = backend.get_cancelled_exc_class()
    counts = {"operations": 0, "cancelled": 0, "hooks": 0, "threads": 0}

    def hook(_tok: Any) -> None:
        counts["hooks"] += 1

    for i in range(n):
        # fast path, with and without a firing timeout
        async with Cancellable():
            await backend.sleep(0)
        try:
            async with Cancellable.with_timeout(1e-6 if i % 2 else 30):
                await backend.sleep(0.001 if i % 2 else 0)
        except cancel_exc:
            counts["cancelled"] += 1
        # nested scopes, a shield, a cancel from inside
        outer = Cancellable(name="outer")
        try:
            async with outer:
                async with Cancellable(parent=outer) as inner:
                    async with inner.shield():
                        await outer.cancel()
                        await backend.sleep(0)
                    await backend.sleep(1)
        except cancel_exc:
            counts["cancelled"] += 1
        # tokens: linked chain + cycle, hooks, cancelled from a plain thread
        tokens = [LinkedCancellationToken() for _ in range(4)]
        for a, b in itertools.pairwise(tokens):
            b.link_sync(a)
        tokens[0].link_sync(tokens[-1])  # a cycle
        for t in tokens:
            t.register_callback_sync(hook)
            await t.register_callback(hook)
        waiter = Cancellable.with_token(tokens[-1])
        thread = threading.Thread(target=tokens[0].cancel_sync, args=(CancellationReason.SIGNAL,))
        try:
            async with waiter:
                thread.start()
                counts["threads"] += 1
                await tokens[-1].wait_for_cancel()
                await backend.sleep(1)
        except cancel_exc:
            counts["cancelled"] += 1
        thread.join()
        # sources and task groups
        condition = (lambda: True) if i % 3 == 0 else (lambda: False)
        src = CompositeSource([TimeoutSource(30), ConditionSource(condition, 0.001)])
        try:
            async with Cancellable().add_source(src):
                async with backend.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(backend.sleep, 0.01 if i % 3 else 5)
        except cancel_exc:
            counts["cancelled"] += 1
        # registry table from threads
        table = _engine.RegistryTable()

        def fill(k: int, table: Any = table) -> None:
            for j in range(20):
                table.set(f"{k}-{j}", object())
                table.pop(f"{k}-{j - 1}")

        workers = [threading.Thread(target=fill, args=(k,)) for k in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        table.clear()
        # registered operation cancelled through the registry
        op = Cancellable(register_globally=True)
        try:
            async with op:
                OperationRegistry.get_instance().cancel_operation_sync(op.operation_id)
                await backend.sleep(1)
        except cancel_exc:
            counts["cancelled"] += 1
        # engine objects dropped in odd states, then collected
        scope = _engine.CancelScope(deadline=0)
        scope.cancel("dropped")
        token = CancellationToken()

        def in_cycle(_t: Any, _keep: Any = token) -> None:  # token -> hook -> token
            return None

        token.register_callback_sync(in_cycle)
        del scope, token
        counts["operations"] += 7
        if i % 5 == 0:
            gc.collect()
    return counts


def run_plain(n: int) -> int:
    from hother.cancelable import _engine
    from hother.cancelable.pytest_plugin import RUN_MODES, run_in_mode

    for mode in RUN_MODES:
        counts = run_in_mode(mode, _stress, n=n)
        gc.collect()
        print(f"{mode:8} {counts}  live C instances: {_engine.live_objects()}", flush=True)
    return 0


def _blocks(log: str) -> list[str]:
    """The error blocks of a valgrind log (one string per error)."""
    blocks: list[str] = []
    current: list[str] = []
    for line in log.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not body.strip():
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(body)
    if current:
        blocks.append("\n".join(current))
    kinds = (
        "Invalid read",
        "Invalid write",
        "Invalid free",
        "Mismatched free",
        "uninitialised",
        "definitely lost",
        "Source and destination overlap",
        "Syscall param",
    )
    return [b for b in blocks if any(k in b.splitlines()[0] for k in kinds)]


def run_valgrind(n: int) -> int:
    log_path = REPO / "build" / "valgrind-stress.log"
    log_path.parent.mkdir(exist_ok=True)
    cmd = [
        "valgrind",
        "--tool=memcheck",
        "--error-exitcode=0",
        "--leak-check=full",
        "--show-leak-kinds=definite",
        "--errors-for-leak-kinds=definite",
        "--num-callers=40",
        f"--log-file={log_path}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--n",
        str(n),
    ]
    env = dict(os.environ, PYTHONMALLOC="malloc")
    print("$ PYTHONMALLOC=malloc " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=REPO)
    log = log_path.read_text()
    blocks = _blocks(log)
    ours = [b for b in blocks if _ours(b)]
    others = [b for b in blocks if not _ours(b)]
    print(
        f"valgrind: exit status {proc.returncode}; {len(blocks)} error blocks, "
        f"{len(ours)} in the engine, {len(others)} elsewhere (log: {log_path})"
    )
    for b in others:
        print("  (not ours) " + b.splitlines()[0])
    for b in ours:
        print("\n=== error in the engine ===\n" + b)
    if proc.returncode != 0:
        print("the stress run itself failed under valgrind")
        return 1
    return 1 if ours else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--valgrind", action="store_true", help="run under valgrind, check")
    parser.add_argument("--n", type=int, default=12, help="rounds per event-loop flavour")
    args = parser.parse_args()
    if args.valgrind:
        return run_valgrind(args.n)
    return run_plain(args.n)


if __name__ == "__main__":
    sys.exit(main())
