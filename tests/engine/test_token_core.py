"""TokenCore (token.c): argument checks, re-entrancy while cancelling, collected async
callbacks, failing dispatch, the reason-type hand-over."""

from __future__ import annotations

import asyncio
import enum
import gc
import weakref
from datetime import UTC, datetime
from typing import Any

import pytest

from hother.cancelable import CancellationReason, _engine

from .conftest import ReportedErrors
from .fakes import FakeLoop
from .isolated import run_python

TokenCore = _engine.TokenCore


class Boom(Exception):
    """The error the test objects raise."""


def test_method_argument_checks() -> None:
    token = TokenCore()
    with pytest.raises(TypeError):
        token._cancel()
    with pytest.raises(TypeError):
        token._add_hook()
    with pytest.raises(TypeError):
        token._link_from()
    with pytest.raises(TypeError, match="handle must be an int"):
        token._remove_hook(True)
    assert token._remove_hook(2**100) is False  # no such handle (beyond a C integer)
    assert token._remove_hook(-(2**100)) is False

    class ClassRaises:
        @property  # type: ignore[misc]
        def __class__(self) -> Any:
            raise Boom("__class__")

    with pytest.raises(Boom):
        token._cancel(ClassRaises())
    assert not token.is_cancelled


def test_init_on_an_already_cancelled_token_is_refused() -> None:
    token = TokenCore(is_cancelled=True, reason=CancellationReason.MANUAL)
    with pytest.raises(ValueError, match="already cancelled"):
        token.__init__(is_cancelled=True)  # type: ignore[misc]
    assert token.reason == CancellationReason.MANUAL


def test_cancelled_at_whose_timestamp_misbehaves() -> None:
    class Raising(datetime):
        def timestamp(self) -> float:
            raise Boom("timestamp")

    class NotAFloat(datetime):
        def timestamp(self) -> Any:
            return "noon"

    when = (2024, 5, 6, 7, 8, 9)
    with pytest.raises(Boom):
        TokenCore(is_cancelled=True, cancelled_at=Raising(*when, tzinfo=UTC))
    with pytest.raises(TypeError):
        TokenCore(is_cancelled=True, cancelled_at=NotAFloat(*when, tzinfo=UTC))
    token = TokenCore.__new__(TokenCore)

    class CancelsMeanwhile(datetime):
        def timestamp(self) -> float:
            token._cancel(CancellationReason.SIGNAL, "meanwhile")
            return 0.0

    with pytest.raises(ValueError, match="already cancelled"):
        token.__init__(is_cancelled=True, cancelled_at=CancelsMeanwhile(*when, tzinfo=UTC))  # type: ignore[misc]
    assert token.reason == CancellationReason.SIGNAL and token.message == "meanwhile"


def test_collected_callbacks_include_any_awaitable() -> None:
    async def main() -> None:
        token = TokenCore()
        future = asyncio.get_running_loop().create_future()
        token._add_hook(lambda t: future)
        token._add_hook(lambda t: None)
        won, collected = token._cancel(CancellationReason.MANUAL, collect=True)
        assert won is True and collected == [future]
        future.cancel()

    asyncio.run(main())


def test_dispatch_failures_are_reported(engine_errors: ReportedErrors) -> None:
    loop = FakeLoop()
    token = TokenCore()
    calls: list[Any] = []
    loop.fail["call_soon_threadsafe"] = MemoryError()
    token._add_hook(calls.append, executor=loop)
    loop2 = FakeLoop()
    loop2.fail["call_soon_threadsafe"] = Boom("scheduling")
    token._add_hook(calls.append, executor=loop2)
    assert token._cancel(CancellationReason.MANUAL) is True
    assert calls == []
    assert engine_errors.wheres() == [
        "hother.cancelable: cannot dispatch token callback",
        "hother.cancelable: cannot schedule token callback",
    ]
    assert isinstance(engine_errors[0][1], MemoryError)
    assert isinstance(engine_errors[1][1], Boom)


def test_long_link_chains_are_followed_without_recursion() -> None:
    root = TokenCore()
    chain = [root]
    for _ in range(40):
        nxt = TokenCore()
        nxt._link_from(chain[-1], preserve_reason=True)
        chain.append(nxt)
    order: list[int] = []
    for i, tok in enumerate(chain):
        tok._add_hook(lambda t, i=i: order.append(i))
    root._cancel(CancellationReason.SIGNAL, "deep")
    assert order == list(range(40, -1, -1))  # each link was registered before the hook
    assert all(t.reason == CancellationReason.SIGNAL and t.message == "deep" for t in chain)


def test_a_chain_of_links_of_any_depth_is_followed() -> None:
    """The cascade's stack is a list through the tokens: no depth limit, no allocation."""
    chain = [TokenCore()]
    for _ in range(20_000):
        nxt = TokenCore()
        nxt._link_from(chain[-1])
        chain.append(nxt)
    seen: list[Any] = []
    chain[-1]._add_hook(seen.append)
    chain[0]._cancel(CancellationReason.MANUAL)
    assert all(t.is_cancelled for t in chain) and seen == [chain[-1]]
    assert chain[1].reason == CancellationReason.PARENT


def test_hooks_and_links_are_frozen_while_the_cascade_runs() -> None:
    """Once cancelled, a token has no hooks to remove or unlink (they run regardless), and
    hooks added meanwhile are dispatched at once."""
    source = TokenCore()
    target = TokenCore()
    order: list[str] = []
    outcomes: list[Any] = []

    def first(t: Any) -> None:
        order.append("first")
        outcomes.append(source._remove_hook(second_handle))
        outcomes.append(target._unlink_from(source))
        outcomes.append(source._hook_count)
        outcomes.append(source._add_hook(lambda t: order.append("added"), executor=None))

    source._add_hook(first, executor=None)
    second_handle = source._add_hook(lambda t: order.append("second"), executor=None)
    target._link_from(source)
    target._add_hook(lambda t: order.append("target"), executor=None)
    assert source._hook_count == 3
    assert source._cancel(CancellationReason.MANUAL) is True
    assert outcomes == [False, False, 0, 0]
    assert order == ["first", "added", "second", "target"]
    assert target.is_cancelled and source._hook_count == 0 and target._hook_count == 0


def test_a_source_cancelled_while_the_link_is_made() -> None:
    """A collection triggered by _link_from's own allocation (the weak reference) runs a
    callback that cancels the source: the new link must not be lost in the cancelled source.
    Collections are forced at each of the call's first allocations in turn."""
    fired = 0
    for threshold in range(1, 5):
        source = TokenCore()
        target = TokenCore()
        armed = [True]

        def on_gc(phase: str, info: Any, source: Any = source, armed: Any = armed) -> None:
            if armed[0] and phase == "start":
                armed[0] = False
                source._cancel(CancellationReason.SIGNAL, "by the collector")

        saved = gc.get_threshold()
        gc.collect()  # the allocation count starts from zero
        gc.callbacks.append(on_gc)
        try:
            gc.set_threshold(threshold)
            target._link_from(source, preserve_reason=True)
        finally:
            gc.set_threshold(*saved)
            gc.callbacks.remove(on_gc)
        if armed[0]:
            continue  # no collection during the call
        fired += 1
        assert source.is_cancelled and target.is_cancelled, threshold
        assert target.reason == CancellationReason.SIGNAL
        assert target.message == "by the collector"
    assert fired > 0


def test_collect_returns_a_pair_also_when_the_cancel_is_lost() -> None:
    token = TokenCore()
    assert token._cancel(CancellationReason.MANUAL, collect=True) == (True, [])
    assert token._cancel(CancellationReason.MANUAL, collect=True) == (False, [])


def test_links_to_collected_tokens_are_dropped_when_the_array_grows() -> None:
    source = TokenCore()
    targets = [TokenCore() for _ in range(4)]
    for t in targets:
        t._link_from(source)
    assert source._hook_count == 4
    refs = [weakref.ref(t) for t in targets]
    del targets, t
    gc.collect()
    assert all(r() is None for r in refs)
    live = TokenCore()
    live._link_from(source)  # the array is full: dead links are compacted away
    assert source._hook_count == 1
    source._cancel(CancellationReason.MANUAL)
    assert live.is_cancelled and live.reason == CancellationReason.PARENT


def test_set_reason_type_validation() -> None:
    class Meta(type):
        def __iter__(cls) -> Any:
            return iter(())

    class NotMembers(metaclass=Meta):
        PARENT = 1
        MANUAL = 2

    with pytest.raises(ValueError, match="PARENT and MANUAL members"):
        _engine._set_reason_type(NotMembers)
    with pytest.raises(TypeError, match="Enum class"):
        _engine._set_reason_type(3)
    with pytest.raises(ValueError, match="PARENT and MANUAL members"):
        _engine._set_reason_type(int)
    # still the package's enum
    assert TokenCore()._cancel(CancellationReason.MANUAL) is True


def test_set_reason_type_rejects_an_enum_without_parent() -> None:
    class Partial(enum.Enum):
        MANUAL = 1
        OTHER = 2

    try:
        with pytest.raises(ValueError, match="PARENT and MANUAL members"):
            _engine._set_reason_type(Partial)
    finally:
        _engine._set_reason_type(CancellationReason)


def test_reason_outside_the_enumerated_members() -> None:
    """A Flag combination is an instance of the type without being one of its members."""
    out = run_python(
        """
        import enum
        engine = load_engine()
        class Reason(enum.Flag):
            PARENT = 1
            MANUAL = 2
        engine._set_reason_type(Reason)
        token = engine.TokenCore()
        both = Reason.PARENT | Reason.MANUAL
        token._cancel(both, "combined")
        print(token.reason is both, token.message, token.cancelled_at is not None)
        """
    )
    assert out.strip() == "True combined True"
