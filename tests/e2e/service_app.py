"""A small record-processing service, stopped by SIGTERM (run by ``test_service.py``).

Usage: ``python service_app.py MODE JOURNAL`` with MODE in asyncio, uvloop, anyio, trio.

The service runs as one operation watching SIGTERM (``Cancellable.with_signal``). It takes
records one after the other; each record is processed inside ``shield()``: ``begin N`` is
journaled, the work runs (a few awaits), then ``commit N`` -- a SIGTERM arriving meanwhile
waits for the record to be committed and is delivered right after the shield. On the way
out, the ``finally`` block journals ``cleanup``. The exit status is 0 when the service was
stopped by the signal (reason SIGNAL), 2 otherwise.

It prints ``ready`` once the signal is watched and ``busy`` while record 3 is in flight
(that record goes on until the stop request arrives), so the SIGTERM of the test always
lands inside a shielded record;
the journal then shows ``stop requested during N`` before ``commit N``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, TextIO

from hother.cancelable import Cancellable, CancellationReason, get_backend
from hother.cancelable.pytest_plugin import run_in_mode


def _journal(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()
    os.fsync(out.fileno())


async def serve(journal_path: str) -> int:
    backend = get_backend()
    cancel_exc = backend.get_cancelled_exc_class()
    op = Cancellable.with_signal(signal.SIGTERM, name="service")
    with open(journal_path, "w") as journal:
        try:
            async with op:
                print("ready", flush=True)
                n = 0
                while True:
                    await backend.sleep(0.002)  # waiting for the next record: cancellable
                    async with op.shield():
                        _journal(journal, f"begin {n}")
                        if n == 3:
                            print("busy", flush=True)  # the test sends SIGTERM now
                        for _ in range(5):  # the work of one record
                            await backend.sleep(0.002)
                        if n == 3:  # this record is still in flight when SIGTERM comes
                            for _ in range(15000):  # at most 30 s
                                if op.scope.cancel_called:
                                    break
                                await backend.sleep(0.002)
                        if op.scope.cancel_called:
                            _journal(journal, f"stop requested during {n}")
                        _journal(journal, f"commit {n}")
                    n += 1
        except cancel_exc:
            pass
        finally:
            _journal(journal, "cleanup")
    reason: Any = op.context.cancel_reason
    return 0 if reason == CancellationReason.SIGNAL else 2


def main() -> int:
    mode, journal_path = sys.argv[1], sys.argv[2]
    result: int = run_in_mode(mode, serve, journal_path=journal_path)
    return result


if __name__ == "__main__":
    sys.exit(main())
