"""Shared helpers of the examples: run-mode selection and running a coroutine in a mode.

Every example runs the same ``async def`` program in one or more *run modes*:

* ``asyncio`` -- the stdlib event loop (the library's C engine);
* ``uvloop``  -- asyncio on uvloop's loop (the same engine);
* ``anyio``   -- asyncio with the anyio backend forced (``use_backend("anyio")``);
* ``trio``    -- trio (the anyio backend on trio).

An example is started as ``python examples/NAME.py [MODE ...]`` (no mode: every mode it
supports). A mode it cannot run in is refused with exit code 2 and the reason.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from hother.cancelable import Cancellable, use_backend

ALL_MODES: tuple[str, ...] = ("asyncio", "uvloop", "anyio", "trio")


def say(text: str) -> None:
    """Print one indented line of an example's output (flushed at once)."""
    print(f"    {text}", flush=True)


def outcome(op: Cancellable) -> str:
    """``status / reason`` of a finished operation, plus its message when it has one."""
    ctx = op.context
    text = ctx.status.value
    if ctx.cancel_reason is not None:
        text += f" / {ctx.cancel_reason.value}"
    if ctx.cancel_message:
        text += f" ({ctx.cancel_message!r})"
    return text


def section(title: str) -> None:
    """Print the title of one part of an example."""
    print(f"  -- {title}", flush=True)


def parse_modes(
    argv: Sequence[str],
    supported: Sequence[str] = ALL_MODES,
    unsupported: Mapping[str, str] | None = None,
) -> list[str]:
    """The run modes asked for on the command line (default: every supported mode).

    Exits with status 2 and a message on an unknown mode, or on a mode in ``unsupported``
    (mode -> the reason it cannot run).
    """
    modes = list(argv) or list(supported)
    for mode in modes:
        if mode not in ALL_MODES:
            print(f"unknown run mode {mode!r}; choose from {', '.join(ALL_MODES)}", file=sys.stderr)
            raise SystemExit(2)
        if mode not in supported:
            reason = (unsupported or {}).get(mode, "not supported by this example")
            print(f"run mode {mode!r} is not supported: {reason}", file=sys.stderr)
            raise SystemExit(2)
    return modes


def run(mode: str, main: Callable[[], Awaitable[Any]]) -> None:
    """Run ``main()`` to completion in run mode ``mode``."""
    print(f"== run mode: {mode}", flush=True)
    if mode == "trio":
        import trio

        trio.run(main)
        return
    factory = None
    if mode == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    async def wrapped() -> None:
        if mode == "anyio":
            with use_backend("anyio"):
                await main()
        else:
            await main()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(wrapped())
