"""CancellableCore (cancellable.c): the immediate awaitable, argument handling, the fast-path
selection and its fall-backs, the exit outcomes and the lazily created state."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import sniffio
import trio

from hother.cancelable import (
    Cancellable,
    CancellationReason,
    CancellationToken,
    OperationStatus,
    _engine,
    current_operation,
)
from hother.cancelable.backends import detection, use_backend
from hother.cancelable.backends.detection import BackendDetectionError, UnsupportedBackendError
from hother.cancelable.sources.timeout import TimeoutSource

from .fakes import fake_pair, running


class Boom(Exception):
    """The error the test objects raise."""


# -- the immediate awaitable returned by __aenter__/__aexit__ ----------------------------------


def test_immediate_awaitable_protocol() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        op = Cancellable()
        enter = op.__aenter__()
        assert enter.__await__() is enter and iter(enter) is enter
        with pytest.raises(StopIteration) as info:
            enter.send(None)
        assert info.value.value is op
        with pytest.raises(StopIteration) as info:
            next(enter)  # consumed: completes with None
        assert info.value.value is None
        leave = op.__aexit__(None, None, None)
        with pytest.raises(ValueError, match="v"):
            leave.throw(ValueError("v"))
        with pytest.raises(KeyError):
            leave.throw(KeyError, None)
        with pytest.raises(KeyError, match="k"):
            leave.throw(KeyError, "k")
        with pytest.raises(TypeError, match="at least 1 argument"):
            leave.throw()
        with pytest.raises(TypeError, match="deriving from BaseException"):
            leave.throw(3)
        assert leave.close() is None
        with pytest.raises(StopIteration) as info:
            next(leave)
        assert info.value.value is None  # closed: its value was dropped
    assert op.status == OperationStatus.COMPLETED


def test_immediate_is_driven_as_a_coroutine_by_a_task() -> None:
    """A Task drives it through the send slot (no StopIteration object)."""

    async def main() -> None:
        op = Cancellable()
        enter = op.__aenter__()
        assert await asyncio.get_running_loop().create_task(enter) is op
        leave = op.__aexit__(None, None, None)
        leave.close()
        assert await asyncio.ensure_future(leave) is None

    asyncio.run(main())


def test_many_immediates_alive_at_once_are_all_released() -> None:
    async def main() -> None:
        ops = [Cancellable() for _ in range(40)]
        entered = [op.__aenter__() for op in ops]
        left = [op.__aexit__(None, None, None) for op in reversed(ops)]
        assert all(op.is_completed for op in ops)
        assert len(entered) + len(left) == 80
        del entered, left

    asyncio.run(main())


# -- construction and with_timeout arguments ---------------------------------------------------


def test_constructor_argument_errors() -> None:
    with pytest.raises(TypeError):
        Cancellable("a", "b", None, None, False, "extra")  # type: ignore[call-arg]

    class BadId(Cancellable):
        @property
        def operation_id(self) -> str:
            raise Boom("operation_id")

    with pytest.raises(Boom):
        Cancellable(parent=BadId())

    class RefusingSet:
        def add(self, item: Any) -> None:
            raise Boom("add")

    parent = Cancellable()
    parent._children = RefusingSet()
    with pytest.raises(Boom, match="add"):
        Cancellable(parent=parent)


def test_with_timeout_argument_forms() -> None:
    op = Cancellable.with_timeout(2, "id-1", "named")
    assert (op.operation_id, op._name, op._fast_timeout) == ("id-1", "named", 2.0)
    op = Cancellable.with_timeout(timeout=3.0)
    assert op._fast_timeout == 3.0 and op._name == "timeout_3.0s"
    op._name = "renamed"
    assert op._name == "renamed"
    with pytest.raises(TypeError, match="missing required argument 'timeout'"):
        Cancellable.with_timeout(name="x")
    with pytest.raises(TypeError, match="with_timeout"):
        Cancellable.with_timeout()
    op = Cancellable.with_timeout(1.5, metadata={"k": 1})  # other keywords: the constructor
    assert op._metadata == {"k": 1} and op._fast_timeout == 1.5
    assert Cancellable()._fast_timeout is None

    class NotACancellable(Cancellable):
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return "something else"

    with pytest.raises(TypeError, match="cls must build a Cancellable"):
        NotACancellable.with_timeout(1, metadata={})


# -- lazy state and its setters ------------------------------------------------------------------


def test_lazy_state_setters_and_getters() -> None:
    op = Cancellable()
    op._children = None
    assert len(op._children) == 0  # recreated on read
    op._metadata = None
    assert op._metadata == {}
    op._start_time = None
    assert op._start_time is None
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    op._end_time = when
    assert op._end_time == when
    with pytest.raises(AttributeError):
        op._start_time = "noon"  # no timestamp()

    class OddTime:
        def timestamp(self) -> str:
            return "noon"

    with pytest.raises(TypeError):
        op._start_time = OddTime()
    assert op._end_time == when


def test_pending_fast_timeout_is_kept_when_sources_are_replaced() -> None:
    op = Cancellable.with_timeout(4)
    op._sources = []  # the fast timeout becomes a real source first, then is replaced
    assert op._sources == [] and op._fast_timeout is None
    op = Cancellable.with_timeout(4)
    assert isinstance(op._sources[0], TimeoutSource)


def test_token_and_scope_slots_are_guarded() -> None:
    op = Cancellable()
    with pytest.raises(TypeError, match="_token_obj must be a CancellationToken"):
        op._token_obj = "token"
    op._token_obj = None
    assert op._token_obj is None

    async def main() -> None:
        async with Cancellable() as running_op:
            running_op._token  # noqa: B018  (its hook is registered now)
            with pytest.raises(RuntimeError, match="token of a running operation"):
                running_op._token_obj = None
            with pytest.raises(RuntimeError, match="scope of a running operation"):
                running_op._scope = None

    asyncio.run(main())


# -- backend selection for the fast path ---------------------------------------------------------


def run_enter_exit(op: Any) -> Any:
    async def main() -> Any:
        async with op:
            return op._fast

    return asyncio.run(main())


def test_forced_asyncio_backend_keeps_the_fast_path() -> None:
    async def main() -> Any:
        with use_backend("asyncio"):
            async with Cancellable() as op:
                return op._fast

    assert asyncio.run(main()) is True


def test_invalid_forced_backend_goes_to_the_python_path() -> None:
    async def main() -> None:
        token = detection._override.set("nope")  # type: ignore[arg-type]
        try:
            with pytest.raises(ValueError, match="backend_type"):
                async with Cancellable():
                    pass
        finally:
            detection._override.reset(token)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("value", "fast", "error"),
    [
        ("asyncio", True, None),
        ("anyio", False, None),
        ("", True, None),  # set but empty: not forced
        ("bogus", None, BackendDetectionError),
    ],
)
def test_backend_environment_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, fast: bool | None, error: Any
) -> None:
    monkeypatch.setenv("HOTHER_CANCELABLE_BACKEND", value)
    if error is not None:
        with pytest.raises(error):
            run_enter_exit(Cancellable())
    else:
        assert run_enter_exit(Cancellable()) is fast


def test_other_async_library_goes_to_the_python_path() -> None:
    async def main() -> None:
        token = sniffio.current_async_library_cvar.set("curio")
        try:
            with pytest.raises(UnsupportedBackendError, match="curio"):
                async with Cancellable():
                    pass
        finally:
            sniffio.current_async_library_cvar.reset(token)
        sniffio.thread_local.name = "curio"
        try:
            with pytest.raises(UnsupportedBackendError, match="curio"):
                async with Cancellable():
                    pass
        finally:
            sniffio.thread_local.name = None

    asyncio.run(main())


def test_trio_with_forced_asyncio_backend_is_refused() -> None:
    async def main() -> None:
        with use_backend("asyncio"), pytest.raises(Exception):  # noqa: B017
            async with Cancellable():
                pass

    trio.run(main)


def test_sources_that_are_not_a_list_disable_the_fast_path() -> None:
    op = Cancellable()
    op._sources = ()
    assert run_enter_exit(op) is False


def test_enter_outside_a_task_takes_the_python_path() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException] = loop.create_future()

        def callback() -> None:
            awaitable = Cancellable().__aenter__()
            try:
                awaitable.send(None)
            except BaseException as exc:
                done.set_result(exc)

        loop.call_soon(callback)
        exc = await done
        assert isinstance(exc, RuntimeError) and "inside an asyncio task" in str(exc)

    asyncio.run(main())


# -- failures while entering on the fast path -----------------------------------------------------


class HookRefused(Cancellable):
    """Registering the token hook fails (its bound method cannot be read)."""

    @property
    def _on_token_cancelled(self) -> Any:
        raise Boom("_on_token_cancelled")


def test_token_hook_error_at_enter_undoes_the_enter() -> None:
    async def main() -> None:
        op = HookRefused()
        op._token  # noqa: B018  (created before enter: the fast enter registers its hook)
        with pytest.raises(Boom):
            await op.__aenter__()
        assert op.status == OperationStatus.FAILED
        assert _engine.current_scope() is None
        assert _engine.current_operation() is None

    asyncio.run(main())


def test_token_hook_error_when_the_token_is_created_inside() -> None:
    async def main() -> None:
        async with HookRefused() as op:
            with pytest.raises(Boom):
                op._token  # noqa: B018

    asyncio.run(main())


def test_clock_error_at_fast_enter_propagates() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        loop.fail["time"] = Boom("clock")
        op = Cancellable.with_timeout(5)
        with pytest.raises(Boom):
            op.__aenter__()
        assert _engine._task_scopes.get(task) is None
        assert op.status == OperationStatus.PENDING


def test_timer_error_at_fast_enter_leaves_no_orphan_scope() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        loop.fail["call_at"] = Boom("call_at")
        op = Cancellable.with_timeout(5)
        with pytest.raises(Boom):
            op.__aenter__()
        orphan = _engine._task_scopes.get(task)
        if orphan is not None:  # leave it, so that nothing leaks from this test
            loop.fail.clear()
            orphan.__exit__(None, None, None)
        assert orphan is None


# -- exit ---------------------------------------------------------------------------------------


def test_exit_argument_and_state_errors() -> None:
    op = Cancellable()
    with pytest.raises(TypeError, match="3 arguments"):
        op.__aexit__(None, None)
    with pytest.raises(RuntimeError, match="without a successful __aenter__"):
        op.__aexit__(None, None, None)

    class ClassRaises:
        @property  # type: ignore[misc]
        def __class__(self) -> Any:
            raise Boom("__class__")

    loop, task = fake_pair()
    with running(loop, task):
        op.__aenter__()
        with pytest.raises(Boom):
            op.__aexit__(None, ClassRaises(), None)
        op.__aexit__(None, None, None)


def test_fast_exit_outside_the_loop_and_with_a_failing_task_lookup() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        op = Cancellable()
        op.__aenter__()
    with pytest.raises(RuntimeError, match="outside the event loop"):
        op.__aexit__(None, None, None)
    with running(loop, task):
        loop.hash_fails = True
        with pytest.raises(RuntimeError, match="unhashable loop"):
            op.__aexit__(None, None, None)
        loop.hash_fails = False
        op.__aexit__(None, None, None)
    assert op.is_completed


def test_exit_in_another_task_is_refused_after_recording_the_outcome() -> None:
    async def main() -> None:
        op = Cancellable()
        await op.__aenter__()

        async def elsewhere() -> None:
            await op.__aexit__(None, None, None)

        with pytest.raises(RuntimeError, match="different task"):
            await asyncio.create_task(elsewhere())
        assert _engine.current_scope() is op.scope  # still inside: left from its own task
        await op.__aexit__(None, None, None)
        assert _engine.current_scope() is None

    asyncio.run(main())


def test_cancel_reason_from_a_source_and_from_a_token_cancelled_elsewhere() -> None:
    loop, task = fake_pair()
    with running(loop, task):
        op = Cancellable()
        op.__aenter__()
        op._source_reason = (CancellationReason.CONDITION, "from the source")
        op.__aexit__(asyncio.CancelledError, asyncio.CancelledError(), None)
        assert op._cancel_reason == CancellationReason.CONDITION
        assert op._cancel_message == "from the source"
        op = Cancellable()
        token = op._token
        op.__aenter__()
    # cancelled from a thread with no loop: the hook is queued on the loop, not run yet
    token._cancel(CancellationReason.SIGNAL, "elsewhere")
    with running(loop, task):
        op.__aexit__(asyncio.CancelledError, asyncio.CancelledError(), None)
        assert op._cancel_reason == CancellationReason.SIGNAL
        assert op._cancel_message == "elsewhere"
        loop.run_soon()
    assert op.status == OperationStatus.CANCELLED


def test_unprintable_error_and_context_mismatch_at_exit() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise Boom("__str__")

    loop, task = fake_pair()
    with running(loop, task):
        op = Cancellable()
        contextvars.copy_context().run(op.__aenter__)  # its context token belongs elsewhere
        op.__aexit__(Unprintable, Unprintable(), None)
        assert op._error == "<unprintable exception>"
        assert op.status == OperationStatus.FAILED
        assert _engine.current_operation() is None


def test_debug_logging_of_the_fast_exit(caplog: pytest.LogCaptureFixture) -> None:
    class LogRaises(Cancellable):
        def _log_finished(self) -> None:
            raise Boom("log")

    logger = logging.getLogger("hother.cancelable.core.cancellable")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        assert run_enter_exit(Cancellable(operation_id="logged-op")) is True
        assert run_enter_exit(LogRaises()) is True  # a failing log call is ignored
    finished = [r for r in caplog.records if r.getMessage() == "operation finished"]
    assert [getattr(r, "operation_id", None) for r in finished] == ["logged-op"]


# -- trio fast path ------------------------------------------------------------------------------


def test_trio_fast_path_outcomes() -> None:
    async def main() -> None:
        with pytest.raises(trio.Cancelled):  # a Cancellable never swallows the cancellation
            async with Cancellable.with_timeout(0.01) as op:
                await trio.sleep(5)
        assert isinstance(op.scope, trio.CancelScope)  # the trio fast path
        assert op.status == OperationStatus.CANCELLED
        assert op._cancel_reason == CancellationReason.TIMEOUT
        with pytest.raises(trio.Cancelled):
            async with Cancellable() as op:
                op.scope.cancel()  # the block's trio scope, made on request
                await trio.sleep(5)
        assert op._cancel_reason == CancellationReason.MANUAL
        op = HookRefused()
        op._token  # noqa: B018
        with pytest.raises(Boom):
            await op.__aenter__()
        assert op.status == OperationStatus.FAILED

    trio.run(main)
    gc.collect()


# -- the light bound __aexit__, the operation's own scope view, the packed state -----------------


def test_aexit_descriptor_and_its_bound_object() -> None:
    descr = Cancellable.__dict__.get("__aexit__") or _engine.CancellableCore.__dict__["__aexit__"]
    assert Cancellable.__aexit__ is descr  # looked up on the class: the descriptor itself
    assert "never suppresses" in (descr.__doc__ or "")
    with pytest.raises(TypeError, match="needs a Cancellable"):
        descr.__get__(object(), type(object()))
    loop, task = fake_pair()
    with running(loop, task):
        op = Cancellable(name="bound")
        bound = op.__aexit__
        assert bound.__self__ is op
        assert repr(bound).startswith("<bound method __aexit__ of Cancellable(")
        with pytest.raises(TypeError, match="no keyword arguments"):
            bound(None, None, None, extra=1)
        with pytest.raises(TypeError, match="expects 4 arguments"):
            Cancellable.__aexit__(op, None, None)
        with pytest.raises(TypeError, match="expects 4 arguments"):
            Cancellable.__aexit__(object(), None, None, None)
        enter = op.__aenter__()
        with pytest.raises(StopIteration):
            enter.send(None)
        leave = Cancellable.__aexit__(op, None, None, None)  # the unbound form works too
        with pytest.raises(StopIteration) as info:
            leave.send(None)
        assert info.value.value is False
    assert op.status == OperationStatus.COMPLETED
    del bound
    gc.collect()


def test_bound_aexit_keeps_its_operation_alive_and_is_collected_in_a_cycle() -> None:
    import weakref

    op = Cancellable()
    bound = op.__aexit__
    ref = weakref.ref(op)
    op._metadata["cycle"] = bound  # op -> metadata -> bound -> op
    del op, bound
    assert ref() is not None or gc.collect() >= 0
    gc.collect()
    assert ref() is None


def test_operation_scope_view_of_the_asyncio_fast_path() -> None:
    async def main() -> None:
        async with Cancellable.with_timeout(30) as op:
            view = op.scope
            assert isinstance(view, _engine.OperationScope)
            assert isinstance(view, _engine.CancelScope)
            assert view is op.scope is _engine.current_scope()
            assert view.active and not view.cancel_called and view.deadline < float("inf")
            assert view.host_task is asyncio.current_task()
            with pytest.raises(RuntimeError, match="single 'with' block"):
                view.__enter__()
            with pytest.raises(RuntimeError, match="cannot be replaced"):
                op._scope = _engine.CancelScope()
        assert not view.active
        with pytest.raises(RuntimeError, match="its own"):
            op._scope = _engine.CancelScope()
        op._scope = None  # ignored: the operation keeps its own (exited) scope
        assert op.scope is view
        with pytest.raises(asyncio.CancelledError):
            async with Cancellable() as op2:
                op2.scope.cancel("from the view")
                await asyncio.sleep(5)
        assert op2.status == OperationStatus.CANCELLED
        # the scope caught its own cancellation; the Cancellable re-raises it all the same
        assert op2.scope.cancelled_caught is True and op2.scope.cancel_called

    asyncio.run(main())
    with pytest.raises(TypeError, match="cannot be created directly"):
        _engine.OperationScope()


def test_packed_state_accessors() -> None:
    op = Cancellable()
    assert op._entered is False and op._registered is False and op._register_globally is False
    op._registered = True
    assert op._registered is True
    op._registered = False
    with pytest.raises(TypeError, match="expected a bool"):
        op._registered = 1
    with pytest.raises(TypeError, match="cannot be deleted"):
        del op._status
    op._status = OperationStatus.SHIELDED  # a status outside the packed five
    assert op.status == OperationStatus.SHIELDED
    op._status = OperationStatus.RUNNING
    assert op.status == OperationStatus.RUNNING
    with pytest.raises(TypeError):
        op._hook = "x"
    with pytest.raises(TypeError, match="cannot be deleted"):
        del op._hook
    op._hook = 0
    assert op._hook == 0
    with pytest.raises(AttributeError):
        op.anything = 1  # no instance __dict__: user data goes in metadata


def test_end_time_set_while_the_block_runs_is_kept() -> None:
    """The end-time slot holds the previous current_operation during a fast block."""

    async def main() -> None:
        async with Cancellable() as op:
            stamp = datetime(2026, 1, 2, tzinfo=UTC)
            op._end_time = stamp
            assert op._end_time == stamp
            assert _engine.current_operation() is op
        assert _engine.current_operation() is None
        assert op._end_time is not None and op._end_time != stamp  # the exit sets it

    asyncio.run(main())


# -- with_timeout bound per class ----------------------------------------------------------------


def test_with_timeout_is_bound_once_per_class_not_per_call() -> None:
    # a classmethod is bound anew on every access; the engine binds it once per class
    assert Cancellable.with_timeout is Cancellable.with_timeout
    assert Cancellable.with_timeout.__self__ is Cancellable

    class Sub(Cancellable):
        pass

    assert Sub.with_timeout is Sub.with_timeout
    op = Sub.with_timeout(5, name="sub")
    assert type(op) is Sub and op._fast_timeout == 5
    assert type(Sub().with_timeout(1)) is Sub  # through an instance: still the class


def test_a_subclass_with_its_own_with_timeout_keeps_it_for_its_subclasses() -> None:
    class Own(Cancellable):
        @classmethod
        def with_timeout(cls, timeout: Any, *args: Any, **kwargs: Any) -> Any:
            return ("own", cls, timeout)

    class Below(Own):
        pass

    assert Below.with_timeout(3) == ("own", Below, 3)
    assert "with_timeout" not in Below.__dict__


def test_init_subclass_is_cooperative() -> None:
    seen: list[Any] = []

    class Mixin:
        def __init_subclass__(cls, tag: str = "", **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            seen.append((cls.__name__, tag))

    class Tagged(Cancellable, Mixin, tag="x"):
        pass

    assert seen == [("Tagged", "x")]
    assert type(Tagged.with_timeout(1)) is Tagged
    with pytest.raises(TypeError):

        class Bad(Cancellable, unknown=1):  # type: ignore[call-arg]
            pass


# -- with_token on the fast path -------------------------------------------------------------


def _with_token_outcomes(run: Any, sleep: Any, cancelled_exc: Any) -> list[Any]:
    """Completed, failed and token-cancelled with_token blocks: the fast path links the
    operation's token to the external one at enter and unlinks it at exit."""
    seen: list[Any] = []

    async def main() -> None:
        ext = CancellationToken()
        async with Cancellable.with_token(ext) as op:
            seen.append((op._fast, ext._hook_count, op.token._hook_count))
        seen.append((op.status, ext._hook_count))
        with pytest.raises(Boom):
            async with Cancellable.with_token(ext) as op:
                raise Boom
        seen.append((op.status, ext._hook_count))
        op = Cancellable.with_token(ext)
        with pytest.raises(cancelled_exc):
            async with op:
                ext._cancel(CancellationReason.SIGNAL, "stop")
                await sleep(1)
        seen.append((op.status, op.context.cancel_reason, op.context.cancel_message))
        seen.append((op.token.is_cancelled, ext._hook_count))

    run(main)
    return seen


def test_with_token_fast_path_on_asyncio() -> None:
    seen = _with_token_outcomes(
        lambda main: asyncio.run(main()), asyncio.sleep, asyncio.CancelledError
    )
    assert seen == [
        (True, 1, 1),  # fast; the external token holds one link, the own token one hook
        (OperationStatus.COMPLETED, 0),
        (OperationStatus.FAILED, 0),
        (OperationStatus.CANCELLED, CancellationReason.SIGNAL, "stop"),
        (True, 0),
    ]


def test_with_token_fast_path_on_trio() -> None:
    seen = _with_token_outcomes(lambda main: trio.run(main), trio.sleep, trio.Cancelled)
    assert seen == [
        (True, 1, 1),
        (OperationStatus.COMPLETED, 0),
        (OperationStatus.FAILED, 0),
        (OperationStatus.CANCELLED, CancellationReason.SIGNAL, "stop"),
        (True, 0),
    ]


def test_with_token_already_cancelled_cancels_at_the_first_checkpoint() -> None:
    async def main() -> Any:
        ext = CancellationToken()
        ext._cancel(CancellationReason.MANUAL, "before")
        op = Cancellable.with_token(ext)
        reached = []
        with pytest.raises(asyncio.CancelledError):
            async with op:
                reached.append(op._fast)
                await asyncio.sleep(0)
                reached.append("after the checkpoint")
        return reached, op.status, op.context.cancel_message, ext._hook_count

    assert asyncio.run(main()) == ([True], OperationStatus.CANCELLED, "before", 0)


def test_with_token_link_failure_undoes_the_enter() -> None:
    """A bad entry among the external tokens: the enter fails with the links already made
    undone, no scope left on the task and current_operation restored."""

    async def main() -> Any:
        good = CancellationToken()
        op = Cancellable.with_token(good)
        op._external_tokens.append(object())
        with pytest.raises(TypeError):
            await op.__aenter__()
        return good._hook_count, op.status, current_operation(), _engine.current_scope()

    assert asyncio.run(main()) == (0, OperationStatus.FAILED, None, None)


def test_with_token_slow_paths_still_link() -> None:
    """with_token with a parent, and on the anyio backend, keep the Python path."""

    async def main() -> Any:
        ext = CancellationToken()
        out = []
        async with Cancellable() as parent:
            async with Cancellable.with_token(ext, parent=parent) as op:
                out.append((op._fast, ext._hook_count))
        with use_backend("anyio"):
            async with Cancellable.with_token(ext) as op:
                out.append((op._fast, ext._hook_count))
        out.append(ext._hook_count)
        return out

    assert asyncio.run(main()) == [(False, 1), (False, 1), 0]
