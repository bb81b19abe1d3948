"""Bad input: every public callable gets wrong types, ``None`` where not allowed,
NaN/inf/negative/huge numbers, and reentrant or out-of-order use, and must answer with a
``TypeError``/``ValueError``/``RuntimeError`` whose message names the argument (never a
crash, a hang, or a silent acceptance). The table is in ``bad_input_cases.py`` and
documented in ``docs/errors.md``.
"""

from __future__ import annotations

import math

import pytest

from hother.cancelable import Cancellable

from .bad_input_cases import ASYNC, HUGE, SYNC, Bad, describe, run_async, run_sync


@pytest.mark.parametrize("case", SYNC, ids=[c.id for c in SYNC])
def test_sync_misuse(case: Bad) -> None:
    problem = describe(case, run_sync(case))
    assert not problem, problem


@pytest.mark.parametrize("case", ASYNC, ids=[c.id for c in ASYNC])
async def test_async_misuse(case: Bad, run_mode: str) -> None:
    if case.modes is not None and run_mode not in case.modes:
        # the misuse only exists on the native asyncio engine (e.g. adopt_task)
        return
    problem = describe(case, await run_async(case))
    assert not problem, problem


def test_huge_timeout_is_never_or_a_value_error() -> None:
    """A timeout too big for a float is either accepted as "never" or refused with a
    ValueError naming ``timeout`` -- never an OverflowError from deep inside."""
    for make in (Cancellable.with_timeout, lambda t: Cancellable().add_source(_timeout(t))):
        try:
            op = make(HUGE)
        except ValueError as exc:
            assert "timeout" in str(exc)
        except BaseException as exc:
            raise AssertionError(
                f"with_timeout(10**400) raised {type(exc).__name__}: {exc}"
            ) from exc
        else:
            assert op is not None


def _timeout(t: object) -> object:
    from hother.cancelable.sources.timeout import TimeoutSource

    return TimeoutSource(t)  # type: ignore[arg-type]


async def test_infinite_timeout_never_fires(backend: object) -> None:
    """``inf`` is a valid timeout: the operation completes, nothing is armed for it."""
    async with Cancellable.with_timeout(math.inf) as op:
        await backend.sleep(0)  # type: ignore[attr-defined]
    assert op.is_completed
