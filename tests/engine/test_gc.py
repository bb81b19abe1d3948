"""Reference cycles through every engine type are found and freed by the garbage collector
(tp_traverse / tp_clear of CancelScope, LoopEngine, TokenCore, CancellableCore,
RegistryTable)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from hother.cancelable import Cancellable, CancellationReason, _engine

from .fakes import FakeTask, fake_pair, running


def collected(make: Any) -> bool:
    """Build a cycle with ``make()`` (returns a weakly referenceable member), drop it, collect."""
    ref = weakref.ref(make())
    gc.collect()
    return ref() is None


class Token(_engine.TokenCore):
    """A token with an instance dict (to close cycles through attributes)."""


def test_token_in_a_cycle_through_its_hooks_and_links(no_leak: None) -> None:
    def make() -> Any:
        token = Token()
        token._add_hook(lambda t, token=token: None, executor=None)
        other = Token()
        other._link_from(token)
        token.partner = other  # type: ignore[attr-defined]
        return token

    assert collected(make)


def test_cancelled_token_in_a_cycle(no_leak: None) -> None:
    def make() -> Any:
        token = Token()
        token._cancel(CancellationReason.MANUAL, "m")
        token.cancelled_at  # noqa: B018
        token.me = token  # type: ignore[attr-defined]
        return token

    assert collected(make)


def test_operation_in_a_cycle(no_leak: None) -> None:
    def make() -> Any:
        op = Cancellable(metadata={})
        op._metadata["self"] = op
        op._token  # noqa: B018
        op._children.add(Cancellable(parent=op))
        return op

    assert collected(make)


def test_registry_table_holding_itself(no_leak: None) -> None:
    class Holder:
        pass

    def make() -> Any:
        table = _engine.RegistryTable()
        holder = Holder()
        holder.table = table  # type: ignore[attr-defined]
        table["holder"] = holder
        return holder

    assert collected(make)


def test_abandoned_task_inside_scopes_is_freed_with_its_loop(no_leak: None) -> None:
    """A loop closed while a task sits in nested scopes (one with a deadline): all freed."""

    def make() -> Any:
        loop = asyncio.new_event_loop()
        entered = asyncio.Event()

        async def body() -> None:
            with _engine.CancelScope(), _engine.CancelScope(deadline=loop.time() + 100):
                entered.set()
                await asyncio.sleep(100)

        abandoned: list[Any] = []

        async def main() -> None:
            abandoned.append(asyncio.ensure_future(body()))
            await entered.wait()

        loop.run_until_complete(main())
        loop.close()
        return loop

    assert collected(make)


def test_fake_loop_engine_and_active_scope_cycle(no_leak: None) -> None:
    def make() -> Any:
        loop, task = fake_pair()
        with running(loop, task):
            scope = _engine.CancelScope(deadline=loop.now + 10)
            scope.__enter__()
            scope.cancel()  # pending re-delivery: the engine holds the task
        holder = FakeTask(loop)
        holder.scope = scope  # type: ignore[attr-defined]
        return loop

    assert collected(make)
