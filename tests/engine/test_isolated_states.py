"""Engine states only a fresh interpreter can show: before the package hands its classes over,
with odd objects handed over, with a fake or half-imported ``trio``, and without asyncio's
current-task dict. Each test runs its snippet through :func:`.isolated.run_python` and checks
what the child printed."""

from __future__ import annotations

from .isolated import run_python


def test_bare_engine_refuses_until_configured() -> None:
    out = run_python(
        """
        engine = load_engine()
        Core = engine.CancellableCore
        for call in (
            lambda: Core(),
            lambda: Core(name="x"),
            lambda: Core.with_timeout(1),
            lambda: Core.__new__(Core).__aenter__(),
            lambda: Core.__new__(Core)._token,
        ):
            try:
                call()
            except RuntimeError as exc:
                assert "_set_classes() was not called" in str(exc), exc
            else:
                raise AssertionError("accepted before _set_classes")
        try:
            engine.TokenCore()._cancel(1)
        except RuntimeError as exc:
            assert "reason type is not set" in str(exc), exc
        for bad in ({}, {"pending": 1}):
            try:
                engine._set_classes(bad)
            except KeyError as exc:
                assert "_set_classes: missing" in str(exc), exc
        try:
            engine._set_classes([])
        except TypeError as exc:
            assert "expects a dict" in str(exc)
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_half_configured_engine_falls_back_to_the_python_path() -> None:
    """_set_classes stopped at a missing key: the fast path is not taken (no crash)."""
    out = run_python(
        """
        import asyncio
        engine = load_engine()
        keys = ("pending running completed cancelled failed reason_timeout reason_manual "
                "LinkedCancellationToken TimeoutSource CancellationError WeakSet "
                "validate_timeout asyncio_backend anyio_backend datetime_fromtimestamp utc "
                "debug_enabled logger_cache").split()
        partial = {k: object() for k in keys}  # stops at the missing backend_override
        try:
            engine._set_classes(partial)
        except KeyError as exc:
            assert "backend_override" in str(exc)
        async def main():
            op = engine.CancellableCore()
            try:
                op.__aenter__()
            except AttributeError as exc:  # no _aenter_slow on the bare core
                assert "_aenter_slow" in str(exc), exc
            else:
                raise AssertionError("fast path taken")
        asyncio.run(main())
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_odd_detection_objects_disable_the_fast_path() -> None:
    out = run_python(
        """
        import asyncio
        from hother.cancelable import Cancellable
        classes = engine_classes()
        engine = sys.modules["hother.cancelable._engine"]
        async def fast():
            async with Cancellable() as op:
                return op._fast
        results = []
        for key, value in (
            ("backend_override", object()),  # not a ContextVar
            ("sniffio_cvar", object()),
            ("sniffio_local", object()),  # no .name
        ):
            engine._set_classes({**classes, key: value})
            try:
                results.append(asyncio.run(fast()))
            except Exception as exc:  # the Python path may refuse the odd object
                results.append(type(exc).__name__)
        try:
            engine._set_classes({**classes, "environ_data": list(os.environ)})
        except TypeError as exc:
            results.append(str(exc))
        engine._set_classes(classes)
        results.append(asyncio.run(fast()))
        print(results)
        """
    )
    results = eval(out.strip())
    assert results[-1] is True  # restored: fast again
    assert results[-2] == "_set_classes: environ_data must be a dict"
    assert all(r is not True for r in results[:-2]), results


def test_handed_over_callables_that_misbehave() -> None:
    out = run_python(
        """
        import asyncio, datetime
        import hother.cancelable as hc
        from hother.cancelable import Cancellable, CancellationReason
        classes = engine_classes()
        engine = sys.modules["hother.cancelable._engine"]

        def boom(*args, **kwargs):
            raise ZeroDivisionError("handed-over callable")

        def expect(exc_type, call):
            try:
                call()
            except exc_type:
                return "raised"
            return "no error"

        out = {}
        engine._set_classes({**classes, "validate_timeout": lambda t: "not seconds"})
        out["validate"] = expect(TypeError, lambda: Cancellable.with_timeout(
            datetime.timedelta(seconds=1)))
        engine._set_classes({**classes, "LinkedCancellationToken": boom})
        out["token-class-raises"] = expect(ZeroDivisionError, lambda: Cancellable()._token)
        engine._set_classes({**classes, "LinkedCancellationToken": dict})
        out["token-class-odd"] = expect(TypeError, lambda: Cancellable()._token)
        engine._set_classes({**classes, "WeakSet": boom})
        out["weakset"] = expect(ZeroDivisionError, lambda: Cancellable(parent=Cancellable()))
        out["children"] = expect(ZeroDivisionError, lambda: Cancellable()._children)
        engine._set_classes({**classes, "TimeoutSource": boom})
        out["source"] = expect(ZeroDivisionError, lambda: Cancellable.with_timeout(1)._sources)
        op = Cancellable.with_timeout(1, register_globally=True)
        async def enter_slow():
            await op.__aenter__()
        out["enter-slow"] = expect(ZeroDivisionError, lambda: asyncio.run(enter_slow()))
        engine._set_classes({**classes, "asyncio_backend": boom})
        async def fast():
            async with Cancellable():
                pass
        out["asyncio-backend"] = expect(ZeroDivisionError, lambda: asyncio.run(fast()))
        engine._set_classes({**classes, "debug_enabled": boom, "logger_cache": {}})
        asyncio.run(fast())  # the failing log guard is ignored
        out["debug"] = "ignored"

        class ReasonRaises(classes["LinkedCancellationToken"]):
            @property
            def reason(self):
                raise ZeroDivisionError("reason")
        reported = []
        engine._set_error_handler(lambda where, exc: reported.append(where))
        engine._set_classes({**classes, "LinkedCancellationToken": ReasonRaises})
        async def token_cancelled_elsewhere():
            op = Cancellable()
            token = op._token
            async with op:
                await asyncio.to_thread(token._cancel, CancellationReason.SIGNAL, "x")
                raise asyncio.CancelledError
        try:
            asyncio.run(token_cancelled_elsewhere())
        except asyncio.CancelledError:
            pass
        out["reason-report"] = "hother.cancelable: reading a token's reason" in reported
        engine._set_classes(classes)
        print(out)
        """
    )
    out_d = eval(out.strip())
    assert out_d == {
        "validate": "raised",
        "token-class-raises": "raised",
        "token-class-odd": "raised",
        "weakset": "raised",
        "children": "raised",
        "source": "raised",
        "enter-slow": "raised",
        "asyncio-backend": "raised",
        "debug": "ignored",
        "reason-report": True,
    }, out_d


def test_anyio_backend_factory_error_on_the_trio_fast_path() -> None:
    out = run_python(
        """
        import trio
        from hother.cancelable import Cancellable
        classes = engine_classes()
        engine = sys.modules["hother.cancelable._engine"]
        def boom():
            raise ZeroDivisionError("anyio backend")
        engine._set_classes({**classes, "anyio_backend": boom})
        async def main():
            async with Cancellable() as op:  # the fast path does not need the backend object
                pass
            try:
                op._backend  # asked for: created then, and its error surfaces then
            except ZeroDivisionError:
                return f"raised, {op.status.value}"
        print(trio.run(main))
        """
    )
    assert out.strip() == "raised, completed"


FAKE_TRIO = """
import types
trio = types.ModuleType("trio")
sys.modules["trio"] = trio
"""


def enter_in_trio_context(prelude: str) -> str:
    """Enter a Cancellable outside any loop while sniffio claims trio; report the path."""
    return run_python(
        prelude
        + """
import sniffio, inspect
from hother.cancelable import Cancellable
sniffio.thread_local.name = "trio"
result = Cancellable().__aenter__()
print("python path" if inspect.iscoroutine(result) else type(result).__name__)
result.close()
"""
    ).strip()


def test_trio_fast_path_needs_an_importable_trio() -> None:
    assert enter_in_trio_context('import sys; sys.modules["trio"] = None\n') == "python path"


def test_trio_fast_path_needs_a_complete_trio() -> None:
    assert enter_in_trio_context(FAKE_TRIO) == "python path"


def test_trio_fast_path_needs_relative_deadlines() -> None:
    prelude = (
        FAKE_TRIO
        + """
class CancelScope:
    def __init__(self, deadline=None):
        pass
trio.CancelScope = CancelScope
trio.Cancelled = type("Cancelled", (BaseException,), {})
trio.current_time = lambda: 0.0
"""
    )
    assert enter_in_trio_context(prelude) == "python path"


def test_executor_without_trio_and_with_a_partial_trio() -> None:
    out = run_python(
        """
        engine = load_engine()
        results = [engine.capture_executor()]  # trio never imported: None
        import types
        sys.modules["trio"] = types.ModuleType("trio")  # being imported: no lowlevel yet
        results.append(engine.capture_executor())
        sys.modules["trio"].lowlevel = types.SimpleNamespace()  # incomplete
        results.append(engine.capture_executor())
        print(results)
        """
    )
    assert out.strip() == "[None, None, None]"


def test_trio_system_task_spawn_failure_is_reported() -> None:
    out = run_python(
        """
        import types
        engine = load_engine()
        class Token:
            def run_sync_soon(self, *args):
                raise RuntimeError("no")
        token = Token()
        def spawn(*args):
            raise ZeroDivisionError("spawn")
        trio = types.ModuleType("trio")
        trio.lowlevel = types.SimpleNamespace(
            current_trio_token=lambda: token, TrioToken=Token, spawn_system_task=spawn)
        trio.RunFinishedError = type("RunFinishedError", (RuntimeError,), {})
        sys.modules["trio"] = trio
        reported = []
        engine._set_error_handler(lambda where, exc: reported.append((where, type(exc).__name__)))
        async def callback_body():
            pass
        coro = callback_body()
        engine._run_hook(lambda arg: coro, None)
        print(reported, coro.cr_frame is None)
        """
    )
    assert out.strip() == (
        "[('hother.cancelable: cannot run async token callback', 'ZeroDivisionError')] True"
    )


def test_engine_without_asyncio_current_task_dict() -> None:
    """Pythons whose asyncio has no _current_tasks dict: asyncio.current_task() is used."""
    for patch in ("del asyncio.tasks._current_tasks", "asyncio.tasks._current_tasks = 'odd'"):
        out = run_python(
            f"""
            import asyncio, asyncio.tasks
            saved = asyncio.tasks._current_tasks
            {patch}
            engine = load_engine()
            asyncio.tasks._current_tasks = saved
            async def main():
                with engine.CancelScope() as scope:
                    return engine.current_scope() is scope
            print(asyncio.run(main()))
            """
        )
        assert out.strip() == "True", patch


def test_a_memory_error_while_probing_trio_does_not_disable_the_trio_fast_path() -> None:
    # the first probe of trio fails with MemoryError (transient): that enter takes the Python
    # path, and the next enter probes again and takes the fast path
    out = run_python(
        FAKE_TRIO
        + """
import inspect, sniffio

class CancelScope:
    def __init__(self, deadline=None, relative_deadline=None):
        pass
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False

probes = []

class Trio(types.ModuleType):
    def __getattr__(self, name):
        if name != "CancelScope":
            raise AttributeError(name)
        probes.append(name)
        if len(probes) == 1:
            raise MemoryError
        return CancelScope

trio = Trio("trio")
trio.Cancelled = type("Cancelled", (BaseException,), {})
trio.current_time = lambda: 0.0
sys.modules["trio"] = trio
from hother.cancelable import Cancellable
sniffio.thread_local.name = "trio"
first = Cancellable().__aenter__()
print("python path" if inspect.iscoroutine(first) else "fast path")
first.close()
second = Cancellable().__aenter__()
print("python path" if inspect.iscoroutine(second) else "fast path", len(probes))
"""
    )
    assert out.split("\n")[:2] == ["python path", "fast path 2"], out


def test_the_running_loop_is_read_from_asyncios_record() -> None:
    """Python 3.11's asyncio._get_running_loop() makes a getpid() system call each time; the
    engine reads asyncio's record itself (recognised on first use) with asyncio's answer."""
    out = run_python(
        """
        import asyncio, sys
        engine = load_engine()
        before = engine._loop_read_mode()
        async def main():
            with engine.CancelScope() as scope:
                found = engine.current_scope() is scope
            return found, engine._loop_read_mode()
        found, after = asyncio.run(main())
        outside = engine.current_scope()  # no loop running any more
        print(before, found, after, outside, sys.version_info >= (3, 12))
        """
    )
    before, found, after, outside, newer = out.split()
    assert (found, outside) == ("True", "None")
    if newer == "True":  # 3.12 has no system call to avoid: asyncio's function is used
        assert (before, after) == ("-1", "-1")
    else:
        assert (before, after) == ("0", "1")


def test_a_forked_child_does_not_see_the_parents_running_loop() -> None:
    """After fork() inside a running loop, asyncio says no loop runs in the child: the engine
    says the same (the pid it compares with is taken again after the fork)."""
    out = run_python(
        """
        import asyncio, os
        engine = load_engine()
        async def main():
            with engine.CancelScope() as scope:
                parent_sees = engine.current_scope() is scope
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    seen = (asyncio.events._get_running_loop(), engine.current_scope())
                    os.write(w, repr(seen).encode())
                    os._exit(0)
                os.close(w)
                child_saw = os.read(r, 200).decode()
                os.waitpid(pid, 0)
                again = engine.current_scope() is scope  # the parent is unaffected
            return parent_sees, child_saw, again
        print(asyncio.run(main()))
        """
    )
    assert out.strip() == "(True, '(None, None)', True)"


def test_an_unknown_get_running_loop_is_called_as_it_is() -> None:
    """When asyncio's _get_running_loop is not the C function that reads the record (a
    replaced function here), the engine calls it instead of reading the record."""
    out = run_python(
        """
        import asyncio, asyncio.events
        real = asyncio.events._get_running_loop
        calls = []
        def counting():
            calls.append(1)
            return real()
        asyncio.events._get_running_loop = counting
        engine = load_engine()
        asyncio.events._get_running_loop = real
        async def main():
            with engine.CancelScope() as scope:
                calls.clear()
                found = [engine.current_scope() is scope for _ in range(5)]
                return all(found), len(calls)
        print(*asyncio.run(main()), engine._loop_read_mode())
        """
    )
    assert out.split() == ["True", "5", "-1"]
