"""The virtual clock (``hother.cancelable.testing.clock``) and its pytest integration.

Async tests marked ``virtual_clock`` run on a ``VirtualClockEventLoop`` in the asyncio and
anyio modes and on ``trio.testing.MockClock(autojump_threshold=0)`` in trio mode; the uvloop
mode is reported as skipped. Virtual times are asserted exactly; real durations only against
generous bounds (an hour of virtual sleep must not take an hour, nor even seconds).
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
import warnings
from typing import Any

import anyio
import pytest

from hother.cancelable import Cancellable, CancellationReason, OperationStatus, _engine
from hother.cancelable.testing import (
    VirtualClock,
    VirtualClockEventLoop,
    run_with_virtual_clock,
    trio_mock_clock,
    virtual_clock_loop_factory,
)

#: Real seconds a virtual-time test may take at most (it would take an hour on real time).
REAL_BOUND = 10.0

asyncio_modes = pytest.mark.modes("asyncio", "anyio", reason="asyncio event loop specifics")


# ====================================================================== through the plugin


@pytest.mark.virtual_clock
async def test_sleeping_an_hour_takes_no_real_time(backend: Any) -> None:
    real0 = time.perf_counter()
    t0 = backend.current_time()
    await backend.sleep(3600)
    assert backend.current_time() - t0 == 3600
    assert time.perf_counter() - real0 < REAL_BOUND


@pytest.mark.virtual_clock
async def test_cancellable_with_timeout_fires_at_the_exact_virtual_time(backend: Any) -> None:
    real0 = time.perf_counter()
    t0 = backend.current_time()
    with pytest.raises(backend.get_cancelled_exc_class()):
        async with Cancellable.with_timeout(600) as op:
            await backend.sleep(10_000)
    assert backend.current_time() == t0 + 600
    assert op.status == OperationStatus.CANCELLED
    assert op.context.cancel_reason == CancellationReason.TIMEOUT
    assert time.perf_counter() - real0 < REAL_BOUND


@pytest.mark.virtual_clock
async def test_timeout_not_reached_lets_the_block_complete(backend: Any) -> None:
    t0 = backend.current_time()
    async with Cancellable.with_timeout(600) as op:
        await backend.sleep(599.5)
    assert op.status == OperationStatus.COMPLETED
    assert backend.current_time() == t0 + 599.5


@asyncio_modes
@pytest.mark.virtual_clock
async def test_engine_scope_deadline_fires_at_the_exact_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with _engine.CancelScope(deadline=t0 + 5.25) as scope:
        await asyncio.sleep(3600)
    assert scope.cancelled_caught
    assert loop.time() == t0 + 5.25
    # A deadline moved later while waiting: the engine re-arms on the virtual clock.
    with _engine.CancelScope(deadline=loop.time() + 1) as scope:
        scope.deadline = loop.time() + 7
        await asyncio.sleep(3600)
    assert loop.time() == t0 + 5.25 + 7


@pytest.mark.virtual_clock
async def test_nested_and_sequential_timeouts_fire_in_deadline_order(backend: Any) -> None:
    t0 = backend.current_time()
    seen: list[tuple[str, float]] = []
    cancelled = backend.get_cancelled_exc_class()
    with pytest.raises(cancelled):
        async with Cancellable.with_timeout(50, name="outer"):
            for timeout in (10, 20):
                with pytest.raises(cancelled):
                    async with Cancellable.with_timeout(timeout):
                        await backend.sleep(1000)
                seen.append((f"inner{timeout}", backend.current_time() - t0))
            await backend.sleep(1000)
    seen.append(("outer", backend.current_time() - t0))
    assert seen == [("inner10", 10), ("inner20", 30), ("outer", 50)]


@pytest.mark.virtual_clock
async def test_concurrent_sleepers_wake_in_timer_order_at_exact_times(backend: Any) -> None:
    t0 = backend.current_time()
    woke: list[tuple[int, float]] = []

    async def sleeper(n: int, seconds: float) -> None:
        await backend.sleep(seconds)
        woke.append((n, backend.current_time() - t0))

    async with backend.create_task_group() as tg:
        for n, seconds in enumerate([30.0, 0.5, 86_400.0, 7.0, 0.75]):
            tg.start_soon(sleeper, n, seconds)
    assert woke == [(1, 0.5), (4, 0.75), (3, 7.0), (0, 30.0), (2, 86_400.0)]


@pytest.mark.virtual_clock
async def test_anyio_timeouts_use_the_virtual_clock(backend: Any) -> None:
    t0 = backend.current_time()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(120):
            await anyio.sleep(3600)
    assert backend.current_time() == t0 + 120
    with anyio.move_on_after(3) as scope:
        await anyio.Event().wait()
    assert scope.cancelled_caught
    assert backend.current_time() == t0 + 123


@asyncio_modes
@pytest.mark.virtual_clock
async def test_asyncio_timeouts_use_the_virtual_clock() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.Event().wait()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.sleep(3600), 45)
    assert loop.time() == t0 + 75
    order: list[str] = []
    loop.call_at(t0 + 100, order.append, "b")
    loop.call_later(24.5, order.append, "a")  # at t0 + 99.5
    await asyncio.sleep(25)
    assert order == ["a", "b"]
    assert loop.time() == t0 + 100


async def test_fixture_clock_jump_and_current_time(virtual_clock: Any, backend: Any) -> None:
    # requesting the fixture turns virtual time on (no marker needed)
    assert virtual_clock.current_time() == backend.current_time()
    t0 = backend.current_time()
    virtual_clock.jump(42.5)
    assert backend.current_time() == t0 + 42.5
    await backend.sleep(1)
    assert backend.current_time() == t0 + 43.5


@pytest.mark.virtual_clock
async def test_manual_jump_with_autojump_disabled(virtual_clock: Any, backend: Any) -> None:
    virtual_clock.autojump_threshold = math.inf
    t0 = backend.current_time()
    done: list[float] = []

    async def sleeper() -> None:
        await backend.sleep(10)
        done.append(backend.current_time() - t0)

    async with backend.create_task_group() as tg:
        tg.start_soon(sleeper)
        for _ in range(5):  # plenty of loop iterations: time stands still without jumps
            await backend.sleep(0)
        assert done == [] and backend.current_time() == t0
        virtual_clock.jump(10)
    assert done == [10]


@pytest.mark.virtual_clock(autojump_threshold=0.02)
async def test_positive_threshold_jumps_after_real_idleness(
    virtual_clock: Any, backend: Any
) -> None:
    assert virtual_clock.autojump_threshold == 0.02
    real0 = time.perf_counter()
    t0 = backend.current_time()
    await backend.sleep(3600)
    assert backend.current_time() == t0 + 3600
    assert 0.015 <= time.perf_counter() - real0 < REAL_BOUND


@pytest.mark.virtual_clock
async def test_thread_work_takes_no_virtual_time(backend: Any) -> None:
    t0 = backend.current_time()
    assert await backend.run_sync_in_thread(time.sleep, 0.02) is None
    assert backend.current_time() == t0  # no timer pending: the loop waited for the thread


@asyncio_modes
@pytest.mark.virtual_clock
async def test_call_soon_threadsafe_wakes_the_virtual_loop(plain_thread: Any) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    future: asyncio.Future[str] = loop.create_future()
    plain_thread.start(lambda: loop.call_soon_threadsafe(future.set_result, "woken"))
    assert await future == "woken"
    assert loop.time() == t0


@asyncio_modes
@pytest.mark.virtual_clock(autojump_threshold=5.0)
async def test_io_arriving_before_the_threshold_prevents_a_jump(plain_thread: Any) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        sleeper = asyncio.ensure_future(asyncio.sleep(100))  # a far timer to jump to
        plain_thread.start(b.sendall, b"ping")  # arrives long before 5 s of idleness
        assert await loop.sock_recv(a, 4) == b"ping"
        assert loop.time() == t0  # woken by I/O, no jump
        assert not sleeper.done()
        sleeper.cancel()
    finally:
        a.close()
        b.close()


@asyncio_modes
@pytest.mark.virtual_clock
async def test_io_keeps_working_on_the_virtual_clock() -> None:
    loop = asyncio.get_running_loop()
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readline())
        writer.write(b"pong\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = loop.time()
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 3600) == b"pong\n"
        writer.close()
        await writer.wait_closed()
    assert received == [b"ping\n"]
    assert loop.time() == t0


@asyncio_modes
@pytest.mark.virtual_clock
async def test_pitfall_threads_race_timeouts_unless_jumps_are_held(virtual_clock: Any) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # autojump 0: the loop is idle while the thread works, so the timeout fires at once
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.run_in_executor(None, release.wait, REAL_BOUND), 1)
    finally:
        release.set()
    assert loop.time() == t0 + 1
    # no jumps while the thread works: the thread wins, virtual time does not move
    virtual_clock.autojump_threshold = math.inf
    assert await asyncio.wait_for(loop.run_in_executor(None, time.sleep, 0.01), 1) is None
    assert loop.time() == t0 + 1


# ====================================================================== direct use (sync)


class TestVirtualClock:
    def test_defaults_and_jump(self) -> None:
        clock = VirtualClock()
        assert clock.time() == clock.current_time() == 0.0
        assert clock.autojump_threshold == 0.0
        clock.jump(2)
        clock.jump(0.5)
        assert clock.time() == 2.5
        assert repr(clock) == "VirtualClock(time=2.5, autojump_threshold=0.0)"
        clock.autojump_threshold = math.inf
        assert clock.autojump_threshold == math.inf

    def test_start(self) -> None:
        assert VirtualClock(start=1000).time() == 1000.0
        assert VirtualClock(start=-5.5).time() == -5.5

    @pytest.mark.parametrize(
        ("kwargs", "exc", "match"),
        [
            ({"autojump_threshold": "0"}, TypeError, "autojump_threshold"),
            ({"autojump_threshold": True}, TypeError, "autojump_threshold"),
            ({"autojump_threshold": -1}, ValueError, "autojump_threshold"),
            ({"autojump_threshold": math.nan}, ValueError, "autojump_threshold"),
            ({"start": None}, TypeError, "start"),
            ({"start": math.inf}, ValueError, "start"),
            ({"start": math.nan}, ValueError, "start"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
        with pytest.raises(exc, match=match):
            VirtualClock(**kwargs)

    @pytest.mark.parametrize(
        ("value", "exc"), [(-1, ValueError), (math.inf, ValueError), ("1", TypeError)]
    )
    def test_bad_jump(self, value: Any, exc: type[Exception]) -> None:
        clock = VirtualClock()
        with pytest.raises(exc, match="seconds"):
            clock.jump(value)
        assert clock.time() == 0.0

    def test_bad_threshold_assignment(self) -> None:
        clock = VirtualClock()
        with pytest.raises(ValueError, match="autojump_threshold"):
            clock.autojump_threshold = -0.1
        assert clock.autojump_threshold == 0.0


class TestVirtualClockEventLoop:
    def test_run_until_complete_on_a_given_clock(self) -> None:
        clock = VirtualClock(start=500)
        loop = VirtualClockEventLoop(clock)
        try:
            assert loop.clock is clock
            assert loop.time() == 500
            loop.run_until_complete(asyncio.sleep(86_400))
            assert loop.time() == clock.time() == 500 + 86_400
            assert "time=86900.0" in repr(loop)
        finally:
            loop.close()

    def test_bad_arguments(self) -> None:
        with pytest.raises(TypeError, match="clock"):
            VirtualClockEventLoop("clock")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="selector"):
            VirtualClockEventLoop(selector=object())  # type: ignore[arg-type]

    def test_cancelled_timers_are_not_jumped_to(self) -> None:
        loop = VirtualClockEventLoop()
        try:
            handles = [loop.call_later(10 + i, lambda: None) for i in range(100)]
            for handle in handles:
                handle.cancel()
            loop.run_until_complete(asyncio.sleep(500))
            assert loop.time() == 500  # not 10: cancelled handles are skipped
        finally:
            loop.close()

    def test_factory_shares_a_given_clock(self) -> None:
        clock = VirtualClock()
        factory = virtual_clock_loop_factory(clock)
        for _ in range(2):
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(asyncio.sleep(10))
        assert clock.time() == 20

    def test_factory_makes_fresh_clocks(self) -> None:
        factory = virtual_clock_loop_factory(autojump_threshold=0.0, start=7)
        loops = [factory(), factory()]
        try:
            assert loops[0].clock is not loops[1].clock
            assert loops[0].time() == loops[1].time() == 7
        finally:
            for loop in loops:
                loop.close()

    def test_factory_bad_arguments(self) -> None:
        with pytest.raises(TypeError, match="clock"):
            virtual_clock_loop_factory("x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="either clock"):
            virtual_clock_loop_factory(VirtualClock(), start=3)
        with pytest.raises(ValueError, match="autojump_threshold"):
            virtual_clock_loop_factory(autojump_threshold=-1)

    def test_default_executor_shutdown_does_not_jump(self) -> None:
        async def main() -> float:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, time.sleep, 0.01)
            return loop.time()

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert run_with_virtual_clock(main()) == 0.0


class TestRunWithVirtualClock:
    def test_coroutine_and_function(self) -> None:
        async def main(x: int) -> tuple[int, float]:
            await asyncio.sleep(3600)
            return x, asyncio.get_running_loop().time()

        real0 = time.perf_counter()
        assert run_with_virtual_clock(main(1)) == (1, 3600.0)
        assert run_with_virtual_clock(main, 2) == (2, 3600.0)
        assert time.perf_counter() - real0 < REAL_BOUND

    def test_given_clock(self) -> None:
        clock = VirtualClock(start=10)

        async def main() -> float:
            await asyncio.sleep(5)
            return asyncio.get_running_loop().time()

        assert run_with_virtual_clock(main, clock=clock) == 15
        assert clock.time() == 15

    def test_anyio_mode_forces_the_anyio_backend(self) -> None:
        async def main() -> tuple[str, float]:
            from hother.cancelable.backends import detect_backend

            with anyio.move_on_after(60):
                await anyio.sleep(3600)
            return detect_backend(), anyio.current_time()

        assert run_with_virtual_clock(main, mode="anyio") == ("anyio", 60.0)

    def test_trio_mode(self) -> None:
        import trio

        async def main() -> float:
            t0 = trio.current_time()
            async with Cancellable.with_timeout(600) as op:
                await trio.sleep(599)
            assert op.is_completed
            return trio.current_time() - t0

        assert run_with_virtual_clock(main, mode="trio") == 599
        clock = trio_mock_clock()
        assert run_with_virtual_clock(main, mode="trio", clock=clock) == 599
        assert clock.autojump_threshold == 0

    def test_autojump_threshold(self) -> None:
        async def main() -> float:
            await asyncio.sleep(50)
            return asyncio.get_running_loop().time()

        assert run_with_virtual_clock(main, autojump_threshold=0.01) == 50

    @pytest.mark.parametrize(
        ("kwargs", "exc", "match"),
        [
            ({"mode": "uvloop"}, ValueError, "uvloop"),
            ({"mode": "curio"}, ValueError, "mode"),
            ({"mode": 1}, TypeError, "mode"),
            ({"mode": "trio"}, TypeError, "async function"),  # a coroutine in trio mode
            ({"clock": "x"}, TypeError, "clock"),
            ({"clock": VirtualClock(), "autojump_threshold": 1}, ValueError, "either"),
            ({"autojump_threshold": -1}, ValueError, "autojump_threshold"),
        ],
    )
    def test_bad_arguments_close_the_coroutine(
        self, kwargs: dict[str, Any], exc: type[Exception], match: str
    ) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine was never awaited" would be an error
            with pytest.raises(exc, match=match):
                run_with_virtual_clock(asyncio.sleep(1), **kwargs)

    def test_bad_main(self) -> None:
        with pytest.raises(TypeError, match="main"):
            run_with_virtual_clock(42)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(TypeError, match="args"):
                run_with_virtual_clock(asyncio.sleep(1), 2)

    def test_bad_trio_clock(self) -> None:
        async def main() -> None:
            pass

        with pytest.raises(TypeError, match="trio Clock"):
            run_with_virtual_clock(main, mode="trio", clock=VirtualClock())

    def test_trio_mock_clock_validation(self) -> None:
        with pytest.raises(ValueError, match="autojump_threshold"):
            trio_mock_clock(-1)


def test_threads_and_signals_still_reach_a_loop_waiting_without_timers() -> None:
    """No timer pending: the loop blocks on the real selector until a thread wakes it."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        def worker() -> None:
            time.sleep(0.02)
            loop.call_soon_threadsafe(future.set_result, "done")

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            return await future
        finally:
            thread.join(REAL_BOUND)

    assert run_with_virtual_clock(main) == "done"
