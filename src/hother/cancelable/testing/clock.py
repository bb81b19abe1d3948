"""A virtual clock for asyncio: ``await asyncio.sleep(3600)`` returns at once, deterministically.

asyncio (and anyio on asyncio) have no equivalent of :class:`trio.testing.MockClock`; this
module provides one. :class:`VirtualClockEventLoop` is a selector event loop whose
:meth:`~VirtualClockEventLoop.time` reads a :class:`VirtualClock`. Virtual time stands still
while anything can run; when the loop has nothing ready and is about to block, it first polls
I/O and thread wake-ups without blocking, and only if nothing arrived does it **jump** the clock
to the earliest scheduled timer (``call_at`` / ``call_later`` handle) -- at once with
``autojump_threshold=0`` (the default), or after that many *real* seconds of idleness
otherwise (``math.inf`` disables jumping: time then moves only through
:meth:`VirtualClock.jump`).

Everything scheduled on the loop's clock follows virtual time: ``asyncio.sleep``,
``asyncio.timeout``/``wait_for``, anyio's sleeps, deadlines and ``fail_after`` (anyio on
asyncio reads ``loop.time()``), and the deadlines of this library's C engine, which reads
``loop.time()`` and arms ``loop.call_at`` -- so ``Cancellable.with_timeout(600)`` expires at
virtual time ``start + 600`` exactly, in microseconds of real time.

Semantics match trio's ``MockClock(autojump_threshold=...)`` with ``rate=0``:

* timers fire in ``call_at`` order, each at its exact virtual time;
* I/O (sockets, pipes) and ``call_soon_threadsafe`` keep working: they are polled before
  every jump, and with a positive ``autojump_threshold`` they reset the idle wait;
* work in other threads takes no virtual time, but the loop does not wait for it: with
  ``autojump_threshold=0`` a task waiting for a thread while a timer is pending sees the
  timer fire first. Use a positive threshold (or ``math.inf``) around thread work that races
  a timeout. (``shutdown_default_executor`` never jumps, so Python 3.12's 300 s shutdown
  timeout cannot expire virtually.)

uvloop's loop is implemented in C and cannot be given a virtual clock. For trio use
``trio.testing.MockClock(autojump_threshold=0)`` (see :func:`trio_mock_clock`).
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = [
    "VirtualClock",
    "VirtualClockEventLoop",
    "run_with_virtual_clock",
    "trio_mock_clock",
    "virtual_clock_loop_factory",
]

T = TypeVar("T")

_MODES = ("asyncio", "anyio", "trio")


def _check_seconds(value: object, what: str, *, allow_inf: bool) -> float:
    """``value`` as a float >= 0 (TypeError / ValueError naming ``what``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{what} must not be NaN")
    if seconds < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    if not allow_inf and math.isinf(seconds):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return seconds


class VirtualClock:
    """Virtual time for :class:`VirtualClockEventLoop` (the asyncio twin of trio's MockClock).

    Args:
        autojump_threshold: real seconds the loop must stay idle before the clock jumps to the
            next timer. ``0`` (default): jump as soon as every task is blocked; ``math.inf``:
            never jump (advance with :meth:`jump` only).
        start: the initial virtual time (default ``0.0``).

    One clock may serve several loops one after the other, or several loops at once (they
    then share one time line). :meth:`time`, :meth:`jump` and the threshold setter must be
    used from the loop's thread.
    """

    __slots__ = ("_autojump_threshold", "_now")

    def __init__(self, autojump_threshold: float = 0.0, start: float = 0.0) -> None:
        """Create a clock at virtual time ``start``."""
        self._autojump_threshold = _check_seconds(
            autojump_threshold, "autojump_threshold", allow_inf=True
        )
        if isinstance(start, bool) or not isinstance(start, int | float):
            raise TypeError(f"start must be a number, got {type(start).__name__}")
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._now = float(start)

    @property
    def autojump_threshold(self) -> float:
        """Real seconds of idleness before a jump (``0``: at once, ``inf``: never). Settable."""
        return self._autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        self._autojump_threshold = _check_seconds(value, "autojump_threshold", allow_inf=True)

    def time(self) -> float:
        """The current virtual time (what ``loop.time()`` returns)."""
        return self._now

    def current_time(self) -> float:
        """Same as :meth:`time` (the name trio's ``MockClock`` uses)."""
        return self._now

    def jump(self, seconds: float) -> None:
        """Advance virtual time by ``seconds`` (>= 0, finite); due timers run next iteration."""
        self._now += _check_seconds(seconds, "seconds", allow_inf=False)

    def _advance_to(self, when: float) -> None:
        if when > self._now:
            self._now = when

    def __repr__(self) -> str:
        return f"VirtualClock(time={self._now!r}, autojump_threshold={self._autojump_threshold!r})"


class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector; ``select`` jumps the virtual clock instead of blocking."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualClockEventLoop) -> None:
        self._inner = inner
        self._loop_ref: weakref.ref[VirtualClockEventLoop] = weakref.ref(loop)

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        inner = self._inner
        if timeout is not None and timeout <= 0:
            return inner.select(0)  # something is ready: just poll
        events = inner.select(0)  # I/O and thread wake-ups come first
        if events:
            return events
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - the loop owns its selector
            return inner.select(timeout)
        clock = loop.clock
        target = loop._next_timer_when()
        threshold = math.inf if loop._autojump_suspended else clock.autojump_threshold
        if target is None or math.isinf(threshold):
            # Nothing to jump to (or jumps disabled): only I/O or another thread can wake us.
            return inner.select(None)
        if threshold > 0:
            deadline = time.monotonic() + threshold
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events = inner.select(remaining)
                if events:
                    return events
            target = loop._next_timer_when()  # unchanged (no callback ran), but be exact
            if target is None:  # pragma: no cover - defensive
                return []
        clock._advance_to(target)
        return []


class VirtualClockEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop running on a :class:`VirtualClock` (see the module docs).

    Args:
        clock: the clock (a new ``VirtualClock()`` by default: time 0, jump at once).
        selector: the real selector to poll I/O with (``selectors.DefaultSelector()``).

    Use it like any loop: ``asyncio.Runner(loop_factory=virtual_clock_loop_factory())``,
    ``anyio.run(fn, backend_options={"loop_factory": virtual_clock_loop_factory()})`` or
    :func:`run_with_virtual_clock`.
    """

    def __new__(
        cls,
        clock: VirtualClock | None = None,
        *,
        selector: selectors.BaseSelector | None = None,
    ) -> VirtualClockEventLoop:
        # Validate here: a loop object whose __init__ failed would complain in __del__.
        if clock is not None and not isinstance(clock, VirtualClock):
            raise TypeError(f"clock must be a VirtualClock or None, got {type(clock).__name__}")
        if selector is not None and not isinstance(selector, selectors.BaseSelector):
            raise TypeError(
                f"selector must be a selectors.BaseSelector or None, got {type(selector).__name__}"
            )
        return super().__new__(cls)

    def __init__(
        self,
        clock: VirtualClock | None = None,
        *,
        selector: selectors.BaseSelector | None = None,
    ) -> None:
        """Create the loop (not running, not set as the current loop)."""
        if clock is None:
            clock = VirtualClock()
        if selector is None:
            selector = selectors.DefaultSelector()
        self._clock = clock
        self._autojump_suspended = 0
        super().__init__(_VirtualSelector(selector, self))

    @property
    def clock(self) -> VirtualClock:
        """The :class:`VirtualClock` this loop reads."""
        return self._clock

    def time(self) -> float:
        """The virtual time (deadlines, ``call_at`` and ``call_later`` use this clock)."""
        return self._clock._now

    def _next_timer_when(self) -> float | None:
        """When the earliest live timer is due, ``None`` without timers."""
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if not scheduled:
            return None
        head = scheduled[0]
        if not head.cancelled():  # _run_once has dropped cancelled heads: the usual case
            return head.when()
        return min((h.when() for h in scheduled if not h.cancelled()), default=None)

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """As the base method, but without virtual jumps while the worker threads join."""
        self._autojump_suspended += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._autojump_suspended -= 1

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} running={self.is_running()} closed={self.is_closed()} "
            f"time={self._clock._now!r}>"
        )


def virtual_clock_loop_factory(
    clock: VirtualClock | None = None,
    *,
    autojump_threshold: float = 0.0,
    start: float = 0.0,
) -> Callable[[], VirtualClockEventLoop]:
    """A ``loop_factory`` creating :class:`VirtualClockEventLoop` instances.

    With ``clock`` every loop shares it (``autojump_threshold`` and ``start`` must then be
    left at their defaults); without, each loop gets a fresh
    ``VirtualClock(autojump_threshold, start)``.
    """
    if clock is not None:
        if not isinstance(clock, VirtualClock):
            raise TypeError(f"clock must be a VirtualClock or None, got {type(clock).__name__}")
        if autojump_threshold != 0.0 or start != 0.0:
            raise ValueError("pass either clock or autojump_threshold/start, not both")
    else:
        # validate now, not in the loop
        VirtualClock(autojump_threshold, start)

    def factory() -> VirtualClockEventLoop:
        return VirtualClockEventLoop(
            clock if clock is not None else VirtualClock(autojump_threshold, start)
        )

    return factory


def trio_mock_clock(autojump_threshold: float = 0.0) -> Any:
    """``trio.testing.MockClock(autojump_threshold=...)`` (trio's virtual clock)."""
    threshold = _check_seconds(autojump_threshold, "autojump_threshold", allow_inf=True)
    from trio.testing import MockClock

    return MockClock(autojump_threshold=threshold)


def run_with_virtual_clock(
    main: Callable[..., Coroutine[Any, Any, T]] | Coroutine[Any, Any, T],
    *args: Any,
    mode: str = "asyncio",
    clock: Any = None,
    autojump_threshold: float = 0.0,
) -> T:
    """Run ``main`` to completion on virtual time and return its result.

    Args:
        main: an async function (called with ``*args``) or, for the asyncio-based modes,
            a coroutine object.
        mode: ``"asyncio"`` (plain asyncio), ``"anyio"`` (asyncio with this library's anyio
            backend forced) or ``"trio"`` (``trio.run`` with a ``MockClock``).
        clock: the clock to use: a :class:`VirtualClock` (asyncio, anyio) or a trio
            ``MockClock`` (trio); default a new one with ``autojump_threshold``.
        autojump_threshold: for a new clock (see :class:`VirtualClock`).

    ``"uvloop"`` is refused: its C loop cannot run on a virtual clock.
    """
    coro: Coroutine[Any, Any, T] | None = main if asyncio.iscoroutine(main) else None
    try:
        _check_run_args(main, args, mode, clock, autojump_threshold, is_coro=coro is not None)
    except BaseException:
        if coro is not None:
            coro.close()  # never awaited: avoid the "coroutine was never awaited" warning
        raise

    if mode == "trio":
        import trio

        if clock is None:
            clock = trio_mock_clock(autojump_threshold)
        return trio.run(main, *args, clock=clock)  # type: ignore[arg-type]

    if clock is None:
        clock = VirtualClock(autojump_threshold)

    async def runner() -> T:
        if coro is not None:
            awaitable = coro
        else:
            awaitable = cast(Callable[..., Coroutine[Any, Any, T]], main)(*args)
        if mode == "anyio":
            from ..backends.detection import use_backend

            with use_backend("anyio"):
                return await awaitable
        return await awaitable

    with asyncio.Runner(loop_factory=virtual_clock_loop_factory(clock)) as asyncio_runner:
        return asyncio_runner.run(runner())


def _check_run_args(
    main: object,
    args: tuple[Any, ...],
    mode: object,
    clock: object,
    autojump_threshold: object,
    *,
    is_coro: bool,
) -> None:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    if mode == "uvloop":
        raise ValueError("mode: uvloop's event loop cannot run on a virtual clock")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not is_coro and not callable(main):
        raise TypeError(f"main must be an async function or a coroutine, got {type(main).__name__}")
    if is_coro and args:
        raise TypeError("args are only accepted when main is a function, not a coroutine")
    _check_seconds(autojump_threshold, "autojump_threshold", allow_inf=True)
    if clock is not None and autojump_threshold != 0.0:
        raise ValueError("pass either clock or autojump_threshold, not both")
    if mode == "trio":
        if is_coro:
            raise TypeError("main must be an async function (not a coroutine) in trio mode")
        if clock is not None:
            import trio

            if not isinstance(clock, trio.abc.Clock):
                raise TypeError(
                    f"clock must be a trio Clock in trio mode, got {type(clock).__name__}"
                )
    elif clock is not None and not isinstance(clock, VirtualClock):
        raise TypeError(f"clock must be a VirtualClock in {mode} mode, got {type(clock).__name__}")
