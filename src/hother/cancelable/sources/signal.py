"""Signal source: cancel the operation when the process receives a signal."""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import sniffio

from ..core.models import CancellationReason
from .base import CancellationSource

__all__ = ["SignalSource", "signal_name"]

logger = logging.getLogger(__name__)

_UNCATCHABLE = frozenset(
    s for s in (getattr(signal, "SIGKILL", None), getattr(signal, "SIGSTOP", None)) if s is not None
)


def signal_name(signum: int) -> str:
    """The symbolic name of ``signum`` (``"SIGTERM"``), or ``"SIG{n}"`` when it has none."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def _validate_signal(sig: object) -> int:
    if isinstance(sig, bool) or not isinstance(sig, int):
        raise TypeError(f"signals must be int signal numbers, got {type(sig).__name__}: {sig!r}")
    if sig in _UNCATCHABLE:
        raise ValueError(f"signal {signal_name(sig)} ({int(sig)}) cannot be caught or watched")
    if sig not in signal.valid_signals():
        raise ValueError(f"signal {int(sig)} is not a valid signal number on this platform")
    return int(sig)


def _is_loop_managed(handler: Any, loop: Any) -> bool:
    """``True`` when ``handler`` is the placeholder an event loop installs for its handlers."""
    if getattr(handler, "__self__", None) is loop:  # uvloop: a bound method of the loop
        return True
    return (
        getattr(handler, "__module__", None) == "asyncio.unix_events"
        and getattr(handler, "__name__", None) == "_sighandler_noop"
    )


def _target_alive(installed: _Installation) -> bool:
    """``False`` when the loop of an installation is closed or its trio run finished."""
    target = installed.target
    if installed.kind == "trio":
        try:
            target.run_sync_soon(_noop)
        except Exception:  # trio.RunFinishedError
            return False
        return True
    return not target.is_closed()


def _noop() -> None:
    pass


@dataclass
class _Installation:
    """How the class-level handler of one signal is installed, and what it replaced."""

    kind: str  # "asyncio" (loop.add_signal_handler), "trio" or "threadsafe" (signal.signal)
    target: Any  # the asyncio loop or the TrioToken
    previous: Any  # signal.getsignal() before installing
    loop_handle: Any = None  # a handler the asyncio loop already had for this signal


class SignalSource(CancellationSource):
    """Cancel the monitored scope when one of ``signals`` is received.

    Default signals: SIGINT and SIGTERM. While at least one source watches a signal, a
    class-level handler is installed for it (under asyncio and uvloop with
    ``loop.add_signal_handler``, under trio with :func:`signal.signal` forwarding to the
    run with ``TrioToken.run_sync_soon``); every source watching that signal fires on
    delivery, with the message ``Received signal {NAME} ({num})``. The handler that was in
    place before is restored when the last watcher stops. Signals can only be watched from
    the main thread (:class:`RuntimeError` otherwise); they may be *sent* from anywhere.

    Attributes:
        signals: the set of watched signal numbers.
        signal_number: the signal that fired this source (``None`` before).
    """

    _handlers: ClassVar[dict[int, weakref.WeakSet[SignalSource]]] = {}
    """Watching sources per signal number (0.1-compatible, read-only for users)."""
    _original_handlers: ClassVar[dict[int, Any]] = {}
    """The handler each watched signal had before the first watcher started."""
    _installations: ClassVar[dict[int, _Installation]] = {}
    _lock: ClassVar[threading.RLock] = threading.RLock()

    def __init__(self, *signals: int, name: str | None = None) -> None:
        """Watch ``signals`` (signal numbers; default SIGINT and SIGTERM)."""
        validated = [_validate_signal(s) for s in signals]
        super().__init__(CancellationReason.SIGNAL, name)
        default = {int(signal.SIGINT), int(signal.SIGTERM)}
        self.signals: set[int] = set(validated) if validated else default
        self.signal_number: int | None = None
        self._registered: list[int] = []

    # ----------------------------------------------------------- lifecycle

    async def start_monitoring(self, scope: Any) -> None:
        """Install (or share) the handlers of the watched signals."""
        await super().start_monitoring(scope)
        self.signal_number = None
        self._registered = []
        try:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError(
                    "SignalSource can only watch signals from the main thread "
                    "(Python delivers signals to the main thread only)"
                )
            kind, target = self._current_target()
            cls = type(self)
            with cls._lock:
                for signum in sorted(self.signals):
                    cls._register(signum, self, kind, target)
                    self._registered.append(signum)
        except BaseException:
            self._unregister_all()
            await super().stop_monitoring()
            raise

    async def stop_monitoring(self) -> None:
        """Stop watching; the last watcher of a signal restores its previous handler."""
        try:
            self._unregister_all()
        finally:
            await super().stop_monitoring()

    @staticmethod
    def _current_target() -> tuple[str, Any]:
        library = sniffio.current_async_library()
        if library == "trio":
            import trio

            return "trio", trio.lowlevel.current_trio_token()
        if library == "asyncio":
            import asyncio

            return "asyncio", asyncio.get_running_loop()
        raise RuntimeError(f"SignalSource does not support the async library {library!r}")

    def _unregister_all(self) -> None:
        cls = type(self)
        with cls._lock:
            registered, self._registered = self._registered, []
            for signum in registered:
                watchers = cls._handlers.get(signum)
                if watchers is not None:
                    watchers.discard(self)
                    if len(watchers) == 0:
                        cls._uninstall(signum)

    # ------------------------------------------------- class-level registry

    @classmethod
    def _register(cls, signum: int, source: SignalSource, kind: str, target: Any) -> None:
        installed = cls._installations.get(signum)
        watchers = cls._handlers.get(signum)
        if installed is not None and installed.target is not target:
            if watchers and _target_alive(installed):
                raise RuntimeError(
                    f"signal {signal_name(signum)} is already watched from another event loop"
                )
            # Stale installation: its watchers were collected, or its loop / trio run is
            # over (they were never stopped). Drop it and install for the current run.
            cls._uninstall(signum)
            installed = None
        if installed is None:
            cls._install(signum, kind, target)
        cls._handlers.setdefault(signum, weakref.WeakSet()).add(source)

    @classmethod
    def _install(cls, signum: int, kind: str, target: Any) -> None:
        previous = signal.getsignal(signum)
        loop_handle = None
        if kind == "asyncio":
            loop_handlers = getattr(target, "_signal_handlers", None)
            if isinstance(loop_handlers, dict):
                loop_handle = loop_handlers.get(signum)
            if loop_handle is None and _is_loop_managed(previous, target):
                logger.warning(
                    "the event loop already has a handler for this signal; it cannot be "
                    "restored after the SignalSource stops (this loop does not expose it)",
                    extra={"signal": signal_name(signum)},
                )
            try:
                target.add_signal_handler(signum, cls._deliver, signum)
            except NotImplementedError:  # event loops without signal support (Windows)
                kind = "threadsafe"
        if kind in ("trio", "threadsafe"):
            signal.signal(signum, cls._make_forwarder(kind, target))
        cls._installations[signum] = _Installation(kind, target, previous, loop_handle)
        cls._original_handlers[signum] = previous
        logger.debug(
            "signal handler installed", extra={"signal": signal_name(signum), "mode": kind}
        )

    @classmethod
    def _make_forwarder(cls, kind: str, target: Any) -> Any:
        if kind == "trio":

            def forward(signum: int, frame: Any) -> None:
                try:
                    target.run_sync_soon(cls._deliver, signum)
                except Exception:  # the trio run is over: nothing to cancel
                    pass

            return forward

        def forward_threadsafe(signum: int, frame: Any) -> None:
            try:
                target.call_soon_threadsafe(cls._deliver, signum)
            except RuntimeError:  # the loop is closed: nothing to cancel
                pass

        return forward_threadsafe

    @classmethod
    def _uninstall(cls, signum: int) -> None:
        installed = cls._installations.pop(signum, None)
        cls._handlers.pop(signum, None)
        cls._original_handlers.pop(signum, None)
        if installed is None:
            return
        try:
            if installed.kind == "asyncio":
                loop = installed.target
                try:
                    loop.remove_signal_handler(signum)
                except Exception as exc:
                    logger.warning(
                        "removing a loop signal handler failed",
                        extra={"signal": signal_name(signum), "error": repr(exc)},
                    )
                handle = installed.loop_handle
                if (
                    handle is not None
                    and not getattr(handle, "_cancelled", True)
                    and not loop.is_closed()
                ):
                    # The loop had its own handler for this signal: put it back.
                    loop.add_signal_handler(signum, handle._callback, *handle._args)
                    return
            previous = installed.previous
            if previous is None:  # installed from C: the best we can do is the default
                previous = signal.SIG_DFL
            signal.signal(signum, previous)
        except Exception as exc:
            logger.error(
                "restoring the previous signal handler failed",
                exc_info=True,
                extra={"signal": signal_name(signum), "error": repr(exc)},
            )
        else:
            logger.debug("signal handler restored", extra={"signal": signal_name(signum)})

    @classmethod
    def _deliver(cls, signum: int) -> None:
        """Fire every source watching ``signum`` (runs in the event loop's thread)."""
        with cls._lock:
            watchers = list(cls._handlers.get(signum, ()))
        message = f"Received signal {signal_name(signum)} ({signum})"
        for source in watchers:
            if not source._monitoring or source._triggered:
                continue
            source.signal_number = signum
            source.trigger_cancellation_nowait(message)
            if not source._triggered:
                source.signal_number = None

    def __repr__(self) -> str:
        names = ", ".join(signal_name(s) for s in sorted(self.signals))
        return f"<SignalSource name={self.name!r} signals=[{names}] triggered={self.triggered}>"
