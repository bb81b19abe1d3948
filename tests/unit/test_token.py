"""CancellationToken / LinkedCancellationToken and the C TokenCore (API.md §5, §13.4, §14).

Async tests run in the four run modes (asyncio, uvloop, anyio, trio) through the plugin.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from hother.cancelable import _engine
from hother.cancelable.core.exceptions import CancellationError, ManualCancellation
from hother.cancelable.core.models import CancellationReason
from hother.cancelable.core.token import CancellationToken, LinkedCancellationToken


# --------------------------------------------------------------------------- fresh state
def test_fresh_token_state() -> None:
    token = CancellationToken()
    assert isinstance(token.id, str) and len(token.id) == 36
    assert token.id[14] == "4"  # uuid4
    assert token.id == token.id  # stable once created
    assert token.is_cancelled is False
    assert token.reason is None
    assert token.message is None
    assert token.cancelled_at is None
    assert token.is_cancellation_requested() is False
    assert token._hook_count == 0


def test_ids_are_unique_and_custom_id_kept() -> None:
    ids = {CancellationToken().id for _ in range(200)}
    assert len(ids) == 200
    assert CancellationToken(id="custom").id == "custom"


# --------------------------------------------------------------------------- cancel
async def test_cancel_records_first_reason_and_message() -> None:
    token = CancellationToken()
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert await token.cancel(CancellationReason.TIMEOUT, "first") is True
    assert token.is_cancelled is True
    assert token.is_cancellation_requested() is True
    assert token.reason is CancellationReason.TIMEOUT
    assert token.message == "first"
    assert isinstance(token.cancelled_at, datetime)
    assert token.cancelled_at.tzinfo is not None
    assert before <= token.cancelled_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert await token.cancel(CancellationReason.MANUAL, "second") is False
    assert token.cancel_sync(CancellationReason.SIGNAL, "third") is False
    assert token.reason is CancellationReason.TIMEOUT
    assert token.message == "first"


async def test_cancel_default_reason_is_manual() -> None:
    token = CancellationToken()
    assert await token.cancel() is True
    assert token.reason is CancellationReason.MANUAL
    assert token.message is None


async def test_wait_for_cancel_returns_when_another_task_cancels() -> None:
    token = CancellationToken()
    woke = anyio.Event()

    async def waiter() -> None:
        await token.wait_for_cancel()
        woke.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set()
            assert token._hook_count == 1
            assert await token.cancel(CancellationReason.MANUAL, "go") is True
            await woke.wait()
    assert token._hook_count == 0


async def test_wait_for_cancel_after_delay_in_generous_window() -> None:
    token = CancellationToken()

    async def canceller() -> None:
        await anyio.sleep(0.1)
        await token.cancel()

    start = anyio.current_time()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(canceller)
            await token.wait_for_cancel()
    assert anyio.current_time() - start >= 0.09


async def test_cancelled_waiter_removes_its_hook() -> None:
    token = CancellationToken()
    with anyio.move_on_after(0.01):
        await token.wait_for_cancel()
    assert token._hook_count == 0
    assert not token.is_cancelled


async def test_constructed_cancelled_token_is_cancelled_for_every_purpose() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = CancellationToken(
        id="x", is_cancelled=True, reason=CancellationReason.SIGNAL, message="m", cancelled_at=when
    )
    assert token.is_cancelled
    assert token.reason is CancellationReason.SIGNAL
    assert token.message == "m"
    assert token.cancelled_at == when
    with anyio.fail_after(5):
        await token.wait_for_cancel()  # 0.1 blocked forever here (§5.1 quirk fixed)
    assert await token.cancel() is False
    with pytest.raises(CancellationError) as info:
        token.check()
    assert info.value.reason is CancellationReason.SIGNAL

    bare = CancellationToken(is_cancelled=True)
    assert bare.is_cancelled and bare.reason is None and bare.message is None
    assert isinstance(bare.cancelled_at, datetime)
    with pytest.raises(ManualCancellation):
        bare.check()


# --------------------------------------------------------------------------- check
def test_check_before_and_after_manual_cancel() -> None:
    token = CancellationToken()
    token.check()
    token.cancel_sync()
    with pytest.raises(ManualCancellation) as info:
        token.check()
    assert "Operation cancelled via token" in str(info.value)


def test_check_keeps_the_real_reason() -> None:
    token = CancellationToken()
    token.cancel_sync(CancellationReason.TIMEOUT, "too slow")
    with pytest.raises(CancellationError) as info:
        token.check()
    assert not isinstance(info.value, ManualCancellation)
    assert info.value.reason is CancellationReason.TIMEOUT
    assert str(info.value) == "too slow"


async def test_check_async(run_mode: str) -> None:
    token = CancellationToken()
    await token.check_async()  # silent before
    token.cancel_sync(CancellationReason.MANUAL, "stop it")
    if run_mode == "trio":
        # trio.Cancelled cannot be constructed: outside a cancelled scope we get check()'s error
        with pytest.raises(ManualCancellation, match="stop it"):
            await token.check_async()
        import trio

        with trio.CancelScope() as scope:
            scope.cancel()
            await token.check_async()  # the checkpoint delivers a genuine trio.Cancelled
            pytest.fail("not reached")  # pragma: no cover
        assert scope.cancelled_caught
    else:
        with pytest.raises(asyncio.CancelledError, match="stop it"):
            await token.check_async()


# --------------------------------------------------------------------------- callbacks
async def test_callbacks_get_the_token_and_run_in_order_before_cancel_returns() -> None:
    token = CancellationToken()
    seen: list[Any] = []

    async def first(tok: CancellationToken) -> None:
        await anyio.sleep(0)
        seen.append(("first", tok, tok.is_cancelled))

    def second(tok: CancellationToken) -> None:
        seen.append(("second", tok, tok.is_cancelled))

    async def third(tok: CancellationToken) -> None:
        seen.append(("third", tok, tok.is_cancelled))

    await token.register_callback(first)
    await token.register_callback(second)
    token.register_callback_sync(third)
    assert await token.cancel() is True
    # sync callbacks run during the (synchronous) transition, async ones are awaited in order
    assert [s[0] for s in seen] == ["second", "first", "third"]
    assert all(s[1] is token and s[2] is True for s in seen)
    assert token._hook_count == 0  # the token keeps no hooks after cancellation


async def test_callback_registered_after_cancellation_runs_immediately() -> None:
    token = CancellationToken()
    await token.cancel()
    seen: list[CancellationToken] = []

    async def cb(tok: CancellationToken) -> None:
        seen.append(tok)

    await token.register_callback(cb)
    assert seen == [token]
    token.register_callback_sync(lambda tok: seen.append(tok))
    assert seen == [token, token]


async def test_raising_callback_neither_prevents_cancellation_nor_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancellationToken()
    seen: list[str] = []

    async def bad_async(tok: CancellationToken) -> None:
        raise RuntimeError("async boom")

    def bad_sync(tok: CancellationToken) -> None:
        raise RuntimeError("sync boom")

    async def good(tok: CancellationToken) -> None:
        seen.append("good")

    for cb in (bad_async, bad_sync, good):
        await token.register_callback(cb)
    with caplog.at_level(logging.ERROR, logger="hother.cancelable"):
        assert await token.cancel() is True
    assert token.is_cancelled
    assert seen == ["good"]
    messages = [
        r
        for r in caplog.records
        if r.name.startswith("hother.cancelable") and r.levelno == logging.ERROR
    ]
    assert len(messages) == 2
    texts = {str(r.exc_info[1]) for r in messages if r.exc_info}
    assert texts == {"async boom", "sync boom"}


async def test_cancel_sync_on_loop_thread_spawns_async_callbacks() -> None:
    token = CancellationToken()
    done = anyio.Event()
    calls: list[bool] = []

    async def cb(tok: CancellationToken) -> None:
        calls.append(tok.is_cancelled)
        done.set()

    await token.register_callback(cb)
    assert token.cancel_sync() is True
    with anyio.fail_after(5):
        await done.wait()
    assert calls == [True]


async def test_remove_hook() -> None:
    token = CancellationToken()
    seen: list[str] = []
    h1 = token._add_hook(lambda tok: seen.append("a"))
    h2 = token._add_hook(lambda tok: seen.append("b"))
    assert h1 > 0 and h2 > h1
    assert token._remove_hook(h1) is True
    assert token._remove_hook(h1) is False
    assert token._remove_hook(12345) is False
    assert token._hook_count == 1
    await token.cancel()
    assert seen == ["b"]
    assert token._remove_hook(h2) is False
    assert token._add_hook(lambda tok: seen.append("late")) == 0  # dispatched at once
    assert seen == ["b", "late"]


def test_many_hooks_add_remove_keep_order() -> None:
    token = CancellationToken()
    seen: list[int] = []

    def recorder(i: int) -> Callable[[CancellationToken], None]:
        return lambda tok: seen.append(i)

    handles = [token._add_hook(recorder(i)) for i in range(200)]
    for h in handles[::2]:
        assert token._remove_hook(h)
    handles2 = [token._add_hook(recorder(i)) for i in range(200, 300)]
    assert token._hook_count == 200
    assert token._remove_hook(handles2[0])
    token.cancel_sync()
    assert seen == list(range(1, 200, 2)) + list(range(201, 300))


async def test_cancel_awaits_remaining_callbacks_even_if_caller_is_cancelled() -> None:
    token = CancellationToken()
    first_started = anyio.Event()
    second_ran = anyio.Event()

    async def first(tok: CancellationToken) -> None:
        first_started.set()
        await anyio.sleep_forever()

    async def second(tok: CancellationToken) -> None:
        second_ran.set()

    await token.register_callback(first)
    await token.register_callback(second)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def canceller() -> None:
                await token.cancel()

            tg.start_soon(canceller)
            await first_started.wait()
            tg.cancel_scope.cancel()
        await second_ran.wait()  # spawned although the canceller was cancelled
    assert token.is_cancelled


async def test_a_failure_before_the_callbacks_are_awaited_still_runs_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever fails between the won cancel and awaiting the callbacks (here the debug log),
    the collected async callbacks still run (as tasks) and the error reaches the caller."""
    token = CancellationToken()
    ran = anyio.Event()

    async def callback(tok: CancellationToken) -> None:
        ran.set()

    await token.register_callback(callback)

    def log_fails(self: CancellationToken) -> None:
        raise MemoryError("logging")

    monkeypatch.setattr(CancellationToken, "_log_cancelled", log_fails)
    with caplog.at_level(logging.DEBUG, logger="hother.cancelable.core.token"):
        with pytest.raises(MemoryError, match="logging"):
            await token.cancel()
    assert token.is_cancelled
    with anyio.fail_after(5):
        await ran.wait()


# --------------------------------------------------------------------------- str / repr / eq
def test_str_and_repr() -> None:
    token = CancellationToken()
    text = str(token)
    assert "active" in text and token.id[:8] in text
    assert text == f"CancellationToken(id={token.id[:8]}, active)"
    assert repr(token) == (
        f"CancellationToken(id='{token.id}', is_cancelled=False, reason=None, message='None')"
    )
    token.cancel_sync(CancellationReason.TIMEOUT, "late")
    assert str(token) == f"CancellationToken(id={token.id[:8]}, cancelled=timeout)"
    rep = repr(token)
    assert token.id in rep
    assert "is_cancelled=True" in rep
    assert "reason=CancellationReason.TIMEOUT" in rep
    assert "message='late'" in rep
    assert "cancelled=unknown" in str(CancellationToken(is_cancelled=True))


def test_equality_and_hash_by_id() -> None:
    a = CancellationToken(id="same")
    b = LinkedCancellationToken(id="same")
    c = CancellationToken()
    assert a == b and b == a
    assert hash(a) == hash(b) == hash("same")
    assert a != c
    assert a != "same"
    assert (a == 1) is False
    assert len({a, b, c}) == 2
    assert {a: 1}[b] == 1


# --------------------------------------------------------------------------- model API
def test_model_dump_and_validate_round_trip() -> None:
    token = CancellationToken()
    dump = token.model_dump()
    assert dump == {
        "id": token.id,
        "is_cancelled": False,
        "reason": None,
        "message": None,
        "cancelled_at": None,
    }
    token.cancel_sync(CancellationReason.TIMEOUT, "t")
    dump = token.model_dump()
    assert dump["reason"] == "timeout" and dump["reason"] is CancellationReason.TIMEOUT
    assert isinstance(dump["cancelled_at"], datetime)
    js = token.model_dump(mode="json")
    assert js["reason"] == "timeout" and type(js["reason"]) is str
    assert datetime.fromisoformat(js["cancelled_at"]) == token.cancelled_at
    for data in (dump, js):
        again = CancellationToken.model_validate(data)
        assert again == token
        assert again.is_cancelled and again.reason is CancellationReason.TIMEOUT
        assert again.message == "t" and again.cancelled_at == token.cancelled_at
    copy = LinkedCancellationToken.model_validate(token)
    assert isinstance(copy, LinkedCancellationToken) and copy.id == token.id
    with pytest.raises(ValueError, match="mode"):
        token.model_dump(mode="yaml")
    with pytest.raises(ValueError, match="unknown"):
        CancellationToken.model_validate({"idx": 1})
    with pytest.raises(TypeError, match="obj"):
        CancellationToken.model_validate(3)


# --------------------------------------------------------------------------- linked tokens
async def test_linked_token_cancelled_by_source_with_parent_reason() -> None:
    source = CancellationToken()
    linked = LinkedCancellationToken()
    await linked.link(source)
    assert await source.cancel(CancellationReason.TIMEOUT, "src") is True
    assert linked.is_cancelled
    assert linked.reason is CancellationReason.PARENT
    assert linked.message == f"Linked token {source.id[:8]} was cancelled"
    assert "Linked token" in (linked.message or "")


async def test_linked_token_preserve_reason() -> None:
    source = CancellationToken()
    linked = LinkedCancellationToken()
    await linked.link(source, preserve_reason=True)
    source.cancel_sync(CancellationReason.TIMEOUT, "src message")
    assert linked.reason is CancellationReason.TIMEOUT
    assert linked.message == "src message"

    source2 = CancellationToken()
    linked2 = LinkedCancellationToken()
    linked2.link_sync(source2, preserve_reason=True)
    source2.cancel_sync(CancellationReason.SIGNAL)
    assert linked2.reason is CancellationReason.SIGNAL
    assert linked2.message == f"Linked token {source2.id[:8]} was cancelled"


async def test_token_linked_to_two_sources_cancelled_by_either() -> None:
    for which in (0, 1):
        sources = [CancellationToken(), CancellationToken()]
        linked = LinkedCancellationToken()
        for s in sources:
            await linked.link(s)
        await sources[which].cancel()
        assert linked.is_cancelled
        assert not sources[1 - which].is_cancelled  # one-directional


async def test_mutual_linking_cancels_both_without_looping() -> None:
    a = LinkedCancellationToken()
    b = LinkedCancellationToken()
    await a.link(b)
    await b.link(a)
    assert await a.cancel(CancellationReason.MANUAL, "a") is True
    assert a.is_cancelled and b.is_cancelled
    assert a.reason is CancellationReason.MANUAL
    assert b.reason is CancellationReason.PARENT


async def test_linking_is_one_directional_and_synchronous() -> None:
    source = CancellationToken()
    child = LinkedCancellationToken()
    grandchild = LinkedCancellationToken()
    child.link_sync(source)
    grandchild.link_sync(child)
    order: list[str] = []
    child.register_callback_sync(lambda tok: order.append("child"))
    grandchild.register_callback_sync(lambda tok: order.append("grandchild"))

    await child.cancel()  # never cancels its source
    assert not source.is_cancelled
    # hooks run in registration order, depth first: child's link to grandchild was
    # registered before child's own callback
    assert grandchild.is_cancelled and order == ["grandchild", "child"]

    s2 = CancellationToken()
    c2 = LinkedCancellationToken()
    c2.link_sync(s2)
    s2.cancel_sync()
    assert c2.is_cancelled  # synchronous: no await needed


async def test_link_to_already_cancelled_source_cancels_now() -> None:
    source = CancellationToken()
    await source.cancel(CancellationReason.CONDITION, "c")
    linked = LinkedCancellationToken()
    await linked.link(source)
    assert linked.is_cancelled and linked.reason is CancellationReason.PARENT
    linked2 = LinkedCancellationToken()
    linked2.link_sync(source, preserve_reason=True)
    assert linked2.reason is CancellationReason.CONDITION and linked2.message == "c"


def test_unlink() -> None:
    source = CancellationToken()
    linked = LinkedCancellationToken()
    linked.link_sync(source)
    assert source._hook_count == 1
    assert linked._linked_tokens == [source]
    assert linked.unlink_sync(source) is True
    assert linked.unlink_sync(source) is False
    assert source._hook_count == 0
    source.cancel_sync()
    assert not linked.is_cancelled
    assert LinkedCancellationToken().unlink_sync(source) is False


def test_long_link_chain_does_not_overflow() -> None:
    chain = [LinkedCancellationToken()]
    for _ in range(20000):
        nxt = LinkedCancellationToken()
        nxt.link_sync(chain[-1])
        chain.append(nxt)
    chain[0].cancel_sync()
    assert all(t.is_cancelled for t in chain)


def test_dead_linked_tokens_are_pruned_from_source() -> None:
    source = CancellationToken()
    for _ in range(100):
        LinkedCancellationToken().link_sync(source)  # dropped at once
    gc.collect()
    keep = LinkedCancellationToken()
    keep.link_sync(source)
    assert source._hook_count < 100
    source.cancel_sync()
    assert keep.is_cancelled


# --------------------------------------------------------------------------- executor
async def test_capture_executor(run_mode: str) -> None:
    executor = _engine.capture_executor()
    if run_mode == "trio":
        import trio

        assert executor == trio.lowlevel.current_trio_token()
    else:
        assert executor is asyncio.get_running_loop()


def test_capture_executor_outside_async_is_none() -> None:
    assert _engine.capture_executor() is None


def test_wait_for_cancel_outside_async_context() -> None:
    from hother.cancelable.backends.detection import NoAsyncContextError

    coro = CancellationToken().wait_for_cancel()
    with pytest.raises(NoAsyncContextError):
        coro.send(None)


# --------------------------------------------------------------------------- bad input
def test_bad_input() -> None:
    with pytest.raises(TypeError, match="id"):
        CancellationToken(id=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is_cancelled"):
        CancellationToken(is_cancelled=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        CancellationToken(is_cancelled=True, reason="timeout")
    with pytest.raises(TypeError, match="message"):
        CancellationToken(is_cancelled=True, message=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cancelled_at"):
        CancellationToken(is_cancelled=True, cancelled_at="now")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is_cancelled=True"):
        CancellationToken(reason=CancellationReason.MANUAL)
    with pytest.raises(TypeError, match="positional"):
        CancellationToken("id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        CancellationToken(bogus=1)  # type: ignore[call-arg]
    token = CancellationToken()
    with pytest.raises(TypeError, match="reason"):
        token.cancel_sync("manual")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        token.cancel_sync(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message"):
        token.cancel_sync(CancellationReason.MANUAL, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn"):
        token._add_hook(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="executor"):
        token._add_hook(print, executor=42)
    with pytest.raises(TypeError, match="handle"):
        token._remove_hook("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callback"):
        token.register_callback_sync(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source"):
        token._link_from(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="itself"):
        token._link_from(token)
    with pytest.raises(TypeError, match="source"):
        token._unlink_from(42)  # type: ignore[arg-type]
    linked = LinkedCancellationToken()
    with pytest.raises(TypeError, match="token"):
        linked.link_sync(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="itself"):
        linked.link_sync(linked)
    with pytest.raises(TypeError, match="preserve_reason"):
        linked.link_sync(token, preserve_reason="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="token"):
        linked.unlink_sync(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="enum_cls"):
        _engine._set_reason_type(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PARENT"):
        _engine._set_reason_type(int)
    assert not token.is_cancelled  # nothing above changed the state


async def test_register_callback_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="callback"):
        await CancellationToken().register_callback(42)  # type: ignore[arg-type]


def test_read_only_properties() -> None:
    token = CancellationToken()
    for name in ("id", "is_cancelled", "reason", "message", "cancelled_at"):
        with pytest.raises(AttributeError):
            setattr(token, name, None)


# --------------------------------------------------------------------------- leaks / cost
def test_tokens_are_freed() -> None:
    gc.collect()
    baseline = _engine.live_objects()["TokenCore"]
    parent = CancellationToken()
    for i in range(1000):
        child = LinkedCancellationToken()
        child.link_sync(parent)
        child.register_callback_sync(lambda tok: None)
        if i % 2:
            child.cancel_sync(CancellationReason.MANUAL, "m")
            _ = child.cancelled_at, child.id
        else:
            child.unlink_sync(parent)
    parent.cancel_sync()
    a, b = LinkedCancellationToken(), LinkedCancellationToken()
    a.link_sync(b)
    b.link_sync(a)  # a reference cycle through the source lists
    del child, parent, a, b
    gc.collect()
    assert _engine.live_objects()["TokenCore"] == baseline


async def test_tokens_with_waiters_are_freed() -> None:
    gc.collect()
    baseline = _engine.live_objects()["TokenCore"]

    async def cycles() -> None:
        for _ in range(200):
            token = CancellationToken()
            with anyio.move_on_after(0):
                await token.wait_for_cancel()
            token.cancel_sync()
            await token.wait_for_cancel()

    # in a task of its own: the event loop may keep the last cancellation's traceback (and
    # so a frame referencing a token) on the task that was cancelled
    async with anyio.create_task_group() as tg:
        tg.start_soon(cycles)
    gc.collect()
    assert _engine.live_objects()["TokenCore"] == baseline
