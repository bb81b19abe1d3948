"""anyio's own scopes inside our operations, in every run mode (API.md §13.5).

On asyncio the operation runs in the C engine's scope while the user may use anyio's
scopes directly (httpx and many libraries do): an ``anyio.CancelScope(shield=True)``
inside a cancelled operation must still protect its body.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from hother.cancelable import Cancellable, CancellationReason


async def test_anyio_shield_inside_a_timed_out_operation_completes(backend: Any) -> None:
    done: list[str] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.01) as op:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.1)
                done.append("shielded work")
            await anyio.sleep(10)
    assert done == ["shielded work"]
    assert op.context.cancel_reason is CancellationReason.TIMEOUT


async def test_anyio_shield_inside_a_manually_cancelled_operation(backend: Any) -> None:
    steps: list[str] = []
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable() as op:
            with anyio.CancelScope(shield=True):
                op.cancel_sync(message="stop")
                await anyio.sleep(0.02)
                steps.append("inside shield")
            steps.append("after shield, before a checkpoint")
            await anyio.sleep(10)
            steps.append("not reached")
    assert steps == ["inside shield", "after shield, before a checkpoint"]
    assert op.context.cancel_message == "stop"


async def test_unshielded_anyio_scope_inside_is_cancelled_with_the_operation(backend: Any) -> None:
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(0.01):
            with anyio.CancelScope() as inner:
                await anyio.sleep(10)
    assert not inner.cancelled_caught


async def test_anyio_shield_outside_does_not_protect_an_inner_operation(backend: Any) -> None:
    with anyio.CancelScope(shield=True):
        with pytest.raises(backend.get_cancelled_exc_class()):
            async with Cancellable.with_timeout(0.01) as op:
                await anyio.sleep(10)
    assert op.context.cancel_reason is CancellationReason.TIMEOUT
