"""Writing your own cancellation sources.

Two custom sources, both runnable on asyncio, uvloop and trio:

* :class:`StopFileSource` polls for a file with a background *watcher* (the pattern for
  anything you have to check repeatedly);
* :class:`BudgetSource` is fired directly by application code (``spend()``), with no task
  at all (the pattern for callbacks and events that arrive by themselves).

Run it::

    python examples/custom_source.py            # asyncio
    python examples/custom_source.py --trio     # trio

See docs/custom_sources.md for the lifecycle rules these classes follow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from hother.cancelable import Cancellable, CancellationReason, get_backend
from hother.cancelable.sources.base import CancellationSource


class StopFileSource(CancellationSource):
    """Cancel the operation as soon as ``path`` exists (checked every ``check_interval`` s)."""

    def __init__(self, path: str | os.PathLike[str], check_interval: float = 0.1) -> None:
        super().__init__(CancellationReason.CONDITION, name="stop_file")
        if check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, got {check_interval!r}")
        self.path = Path(path)
        self.check_interval = check_interval

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)  # bookkeeping first: stores scope, resets state
        await self.start_watcher(self._watch)  # then the background task

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()  # stops the watcher and waits for it

    async def _watch(self) -> None:
        # Check, then wait one interval, until the source is stopped.
        while True:
            if self.path.exists():
                await self.trigger_cancellation(f"Stop file {self.path} appeared")
                return
            if await self.wait_stopped(self.check_interval):
                return


class BudgetSource(CancellationSource):
    """Cancel the operation once more than ``limit`` units were spent.

    No watcher: the application calls :meth:`spend` (from the event loop thread), which
    fires the source synchronously when the budget is exceeded.
    """

    def __init__(self, limit: float) -> None:
        super().__init__(CancellationReason.MANUAL, name="budget")
        self.limit = limit
        self.spent = 0.0

    async def start_monitoring(self, scope: Any) -> None:
        await super().start_monitoring(scope)
        self.spent = 0.0

    async def stop_monitoring(self) -> None:
        await super().stop_monitoring()

    def spend(self, amount: float) -> None:
        """Record ``amount``; fires the source when the total exceeds the limit."""
        self.spent += amount
        if self.spent > self.limit:
            self.trigger_cancellation_nowait(f"Budget of {self.limit} exceeded ({self.spent})")


async def demo_stop_file(directory: Path) -> Cancellable:
    """Run a loop until a stop file appears; returns the finished operation."""
    backend = get_backend()
    flag = directory / "stop"
    op = Cancellable(name="until_stop_file").add_source(StopFileSource(flag, 0.02))
    try:
        async with op:
            for step in range(1000):
                if step == 3:
                    flag.touch()  # someone asks us to stop
                await backend.sleep(0.01)
    except backend.get_cancelled_exc_class():
        pass
    return op


async def demo_budget() -> Cancellable:
    """Spend until the budget runs out; returns the finished operation."""
    backend = get_backend()
    budget = BudgetSource(limit=10)
    op = Cancellable(name="budgeted").add_source(budget)
    try:
        async with op:
            while True:
                budget.spend(3)
                await backend.sleep(0)
    except backend.get_cancelled_exc_class():
        pass
    return op


async def main() -> None:
    """Run both demos and print what happened."""
    with tempfile.TemporaryDirectory() as tmp:
        for op in (await demo_stop_file(Path(tmp)), await demo_budget()):
            ctx = op.context
            reason = ctx.cancel_reason.value if ctx.cancel_reason else None
            print(f"{ctx.name}: {ctx.status.value}, reason={reason}, {ctx.cancel_message!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trio", action="store_true", help="run under trio")
    if parser.parse_args().trio:
        import trio

        trio.run(main)
    else:
        asyncio.run(main())
