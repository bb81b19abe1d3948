"""A small worker service that shuts down cleanly on SIGTERM / SIGINT.

It processes numbered records one after the other and appends a journal to OUTPUT:

    ready pid=<pid>                 the signal handlers are installed
    taken <n> / processed <n>       one pair per record (the work runs shielded: a record
                                    that was taken is always finished, never lost)
    on_cancel reason=<r> ...        the operation's cancel callback ran
    cleanup processed=<n> ...       the final cleanup ran

On SIGTERM or SIGINT the record in flight completes, no new record is taken, cleanup runs
and the process exits with status 0.

Usage::

    python examples/signal_service.py OUTPUT [--mode asyncio|uvloop|anyio|trio]
                                             [--interval SECONDS] [--max-records N]

then ``kill -TERM <pid>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any, TextIO

from hother.cancelable import Cancellable, OperationContext, get_backend, use_backend


async def serve(out: TextIO, interval: float, max_records: int | None) -> bool:
    """Process records until a signal arrives (or ``max_records`` are done).

    Returns ``True`` for a clean stop (signal or all records done).
    """
    backend = get_backend()
    processed = 0

    def on_cancel(ctx: OperationContext) -> None:
        reason = ctx.cancel_reason.value if ctx.cancel_reason else None
        out.write(f"on_cancel reason={reason} message={ctx.cancel_message}\n")

    op = Cancellable.with_signal(signal.SIGTERM, signal.SIGINT, name="signal_service")
    op.on_cancel(on_cancel)
    try:
        async with op:
            out.write(f"ready pid={os.getpid()}\n")
            record = 0
            while max_records is None or record < max_records:
                # The work on one record is shielded: a signal arriving meanwhile is
                # delivered right after the block, once the record is safely written.
                async with op.shield():
                    out.write(f"taken {record}\n")
                    await backend.sleep(interval)  # "process" the record
                    out.write(f"processed {record}\n")
                    processed += 1
                record += 1
    except backend.get_cancelled_exc_class():
        pass  # stopped by a signal: fall through to the cleanup
    finally:
        ctx = op.context
        reason = ctx.cancel_reason.value if ctx.cancel_reason else None
        out.write(f"cleanup processed={processed} status={ctx.status.value} reason={reason}\n")
    return op.is_completed or (op.is_cancelled and reason == "signal")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the service, return the exit status."""
    parser = argparse.ArgumentParser(description="A worker that stops cleanly on SIGTERM.")
    parser.add_argument("output", help="journal file (appended)")
    parser.add_argument("--mode", choices=["asyncio", "uvloop", "anyio", "trio"], default="asyncio")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds per record")
    parser.add_argument("--max-records", type=int, default=None)
    args = parser.parse_args(argv)

    with open(args.output, "a", buffering=1, encoding="utf-8") as out:  # line-buffered
        runner: Any
        if args.mode == "trio":
            import trio

            ok = trio.run(serve, out, args.interval, args.max_records)
        else:
            runner = None
            if args.mode == "uvloop":
                import uvloop

                runner = uvloop.new_event_loop
            with asyncio.Runner(loop_factory=runner) as loop_runner:
                if args.mode == "anyio":
                    with use_backend("anyio"):
                        ok = loop_runner.run(serve(out, args.interval, args.max_records))
                else:
                    ok = loop_runner.run(serve(out, args.interval, args.max_records))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
