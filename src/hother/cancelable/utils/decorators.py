"""Decorators and helpers that run async functions inside a :class:`Cancellable` (API.md §9.4).

* :func:`cancellable` -- every call of the decorated coroutine function runs in a new
  operation (optional timeout, optional registration, the instance injected into a parameter);
* :func:`with_timeout` -- await one awaitable under a timeout (the coroutine helper, not the
  classmethod);
* :func:`with_current_operation` -- inject :func:`current_operation` into ``operation``;
* :func:`cancellable_method` -- :func:`cancellable` for methods, named ``Class.method``.

Differences from 0.1 (fixes of API.md §14.20 and §14.21):

* **Fixed operation ids never collide.** With ``@cancellable(operation_id="job")`` a call
  gets exactly ``"job"`` when no other operation with that id is running (neither another
  call of a function decorated with that id, nor an operation registered in the
  :class:`~hother.cancelable.core.registry.OperationRegistry`). A call made while ``"job"``
  is taken gets the first free id among ``"job-2"``, ``"job-3"``, ... Sequential calls all
  get ``"job"`` (their history entries share the id, as the user asked).
* **Injection never overrides the caller.** The instance is injected only when the caller
  passed no value for that parameter, neither by keyword nor positionally (an explicit
  ``None`` is respected too).
* Bad input fails at decoration time: a function that is not an ``async def`` raises
  :class:`TypeError` naming it; a timeout that is not a positive number of seconds (or a
  ``timedelta``) raises :class:`TypeError`/:class:`ValueError` -- ``timeout=0`` is an error,
  not "no timeout" (use ``None``).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar, cast

from ..core.cancellable import Cancellable, current_operation
from ..sources.timeout import validate_timeout

__all__ = ["cancellable", "cancellable_method", "with_current_operation", "with_timeout"]

T = TypeVar("T")
AsyncFn = TypeVar("AsyncFn", bound=Callable[..., Coroutine[Any, Any, Any]])

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


# ---------------------------------------------------------------------------------- checks
def _describe(func: object) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if isinstance(name, str):
        return f"{type(func).__name__} {name!r}"
    return f"{type(func).__name__} object {func!r}"


def _is_async_callable(func: object) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    if isinstance(func, functools.partial):
        return _is_async_callable(func.func)
    call = getattr(type(func), "__call__", None)  # noqa: B004 (an async __call__ method)
    return (
        call is not None
        and not inspect.isfunction(func)
        and not inspect.ismethod(func)
        and not isinstance(func, type)
        and inspect.iscoroutinefunction(call)
    )


def _require_async(func: object, decorator: str) -> None:
    if not callable(func):
        raise TypeError(f"{decorator} decorates an async function, got {_describe(func)}")
    if not _is_async_callable(func):
        kind = "async generator function" if inspect.isasyncgenfunction(func) else "function"
        raise TypeError(
            f"{decorator} can only decorate an async function (async def), "
            f"got the {kind} {_describe(func)}"
        )


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if callable(timeout) and not isinstance(timeout, timedelta):
        raise TypeError(
            "timeout must be a number of seconds, a timedelta or None, got a callable: "
            "call the decorator factory, e.g. @cancellable() instead of @cancellable"
        )
    return validate_timeout(timeout)


def _check_optional_str(value: object, what: str, *, non_empty: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, got {type(value).__name__}")
    if non_empty and not value:
        raise ValueError(f"{what} must be a non-empty str or None")
    return value


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------- injection
class _Injection:
    """Where a parameter sits in a signature, and how to pass a value to it."""

    __slots__ = ("index", "name", "positional_only")

    def __init__(self, name: str, index: int | None, positional_only: bool) -> None:
        self.name = name
        self.index = index
        self.positional_only = positional_only

    @classmethod
    def of(cls, func: Callable[..., Any], name: str) -> _Injection | None:
        """The injection plan for parameter ``name`` of ``func`` (None: no such parameter)."""
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            return None
        index = 0
        for param in params:
            if param.kind in _POSITIONAL:
                if param.name == name:
                    return cls(name, index, param.kind is inspect.Parameter.POSITIONAL_ONLY)
                index += 1
            elif param.kind is inspect.Parameter.KEYWORD_ONLY and param.name == name:
                return cls(name, None, False)
        return None

    def apply(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` with ``value`` added, unless the caller passed the parameter."""
        index = self.index
        if index is not None and len(args) > index:
            return args, kwargs  # passed positionally
        if self.positional_only:
            if index == len(args):
                return (*args, value), kwargs
            return args, kwargs  # cannot be placed; let Python report the missing arguments
        if self.name in kwargs:
            return args, kwargs  # passed by keyword
        kwargs[self.name] = value
        return args, kwargs


# ---------------------------------------------------------------------------------- ids
_ids_lock = threading.Lock()
_ids_in_use: set[str] = set()


def _taken(candidate: str) -> bool:
    if candidate in _ids_in_use:
        return True
    from ..core.registry import OperationRegistry

    return OperationRegistry.get_instance().get_operation_sync(candidate) is not None


def _claim_id(base: str) -> str:
    """Reserve ``base``, or ``base-2``, ``base-3``... when it is in use (thread-safe)."""
    with _ids_lock:
        candidate = base
        suffix = 1
        while _taken(candidate):
            suffix += 1
            candidate = f"{base}-{suffix}"
        _ids_in_use.add(candidate)
    return candidate


def _release_id(claimed: str) -> None:
    with _ids_lock:
        _ids_in_use.discard(claimed)


def _new_operation(
    seconds: float | None, operation_id: str | None, name: str, register_globally: bool
) -> Cancellable:
    if seconds is not None:
        op: Cancellable = Cancellable.with_timeout(
            seconds, operation_id=operation_id, name=name, register_globally=register_globally
        )
        return op
    return Cancellable(operation_id=operation_id, name=name, register_globally=register_globally)


# ---------------------------------------------------------------------------------- cancellable
def cancellable(
    timeout: float | timedelta | None = None,
    operation_id: str | None = None,
    name: str | None = None,
    register_globally: bool = False,
    inject_param: str | None = "cancellable",
) -> Callable[[AsyncFn], AsyncFn]:
    """Run every call of the decorated async function in a new :class:`Cancellable`.

    Args:
        timeout: seconds (or a ``timedelta``) after which a call is cancelled; ``None``: no
            timeout. Must be positive.
        operation_id: the id of each call's operation. A call made while another operation
            with this id is running gets ``{operation_id}-2``, ``-3``... instead (see the
            module docstring); by default every call gets a fresh uuid4.
        name: the operation name (default: the function's ``__name__``).
        register_globally: register each call in the ``OperationRegistry`` while it runs.
        inject_param: if the function has a parameter of this name, the operation is passed
            to it -- unless the caller supplied that argument. ``None`` disables injection.

    Returns:
        A decorator. The wrapper keeps the function's metadata (``functools.wraps``) and has
        ``_cancellable_params = {"timeout", "operation_id", "name", "register_globally"}``.

    A cancellation ends the call with the runtime's cancel exception
    (``asyncio.CancelledError`` / ``trio.Cancelled``); exceptions are never swallowed.
    """
    seconds = _check_timeout(timeout)
    _check_optional_str(operation_id, "operation_id", non_empty=True)
    _check_optional_str(name, "name")
    _check_bool(register_globally, "register_globally")
    if inject_param is not None:
        if not isinstance(inject_param, str):
            raise TypeError(
                f"inject_param must be a str or None, got {type(inject_param).__name__}"
            )
        if not inject_param.isidentifier():
            raise ValueError(f"inject_param must be a valid parameter name, got {inject_param!r}")

    def decorator(func: AsyncFn) -> AsyncFn:
        _require_async(func, "@cancellable()")
        op_name = name or getattr(func, "__name__", None) or type(func).__name__
        plan = _Injection.of(func, inject_param) if inject_param is not None else None

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            claimed = _claim_id(operation_id) if operation_id is not None else None
            try:
                op = _new_operation(seconds, claimed, op_name, register_globally)
                if plan is not None:
                    args, kwargs = plan.apply(args, kwargs, op)
                async with op:
                    return await func(*args, **kwargs)
            finally:
                if claimed is not None:
                    _release_id(claimed)

        wrapper._cancellable_params = {  # type: ignore[attr-defined]
            "timeout": timeout,
            "operation_id": operation_id,
            "name": op_name,
            "register_globally": register_globally,
        }
        return cast(AsyncFn, wrapper)

    return decorator


# ---------------------------------------------------------------------------------- with_timeout
def _discard(awaitable: object) -> None:
    """Close a coroutine we refuse to run (no "coroutine was never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if inspect.iscoroutine(awaitable) and close is not None:
        close()


async def with_timeout(
    timeout: float | timedelta,
    coro: Awaitable[T],
    operation_id: str | None = None,
    name: str | None = None,
) -> T:
    """Await ``coro`` inside ``Cancellable.with_timeout(timeout, operation_id, name)``.

    ``current_operation()`` inside ``coro`` is that operation (default name
    ``timeout_{seconds}s``). On expiry the runtime's cancel exception propagates (not
    ``TimeoutError``); the operation ends CANCELLED with reason TIMEOUT.

    Raises:
        TypeError: ``coro`` is not awaitable (e.g. a coroutine *function* that was not
            called), or ``timeout`` is not a number/``timedelta``.
        ValueError: ``timeout`` is not positive.

    The arguments are checked before ``coro`` runs; a coroutine refused for bad arguments is
    closed, so no "never awaited" warning is emitted.
    """
    if not inspect.isawaitable(coro):
        hint = " (did you forget to call it?)" if callable(coro) else ""
        raise TypeError(f"coro must be an awaitable, got {_describe(coro)}{hint}")
    entered = False
    try:
        op = Cancellable.with_timeout(timeout, operation_id=operation_id, name=name)
        async with op:
            entered = True
            return await coro
    finally:
        if not entered:
            _discard(coro)


# ---------------------------------------------------------------------------------- operation
def with_current_operation() -> Callable[[AsyncFn], AsyncFn]:
    """Decorator factory: pass :func:`current_operation` to a parameter named ``operation``.

    The value (possibly ``None`` outside any operation) is injected only when the caller did
    not pass ``operation`` (by keyword or positionally). Functions without such a parameter
    are called unchanged. Use as ``@with_current_operation()``.
    """

    def decorator(func: AsyncFn) -> AsyncFn:
        _require_async(func, "@with_current_operation()")
        plan = _Injection.of(func, "operation")

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if plan is not None:
                args, kwargs = plan.apply(args, kwargs, current_operation())
            return await func(*args, **kwargs)

        return cast(AsyncFn, wrapper)

    return decorator


def cancellable_method(
    timeout: float | timedelta | None = None,
    name: str | None = None,
    register_globally: bool = False,
) -> Callable[[AsyncFn], AsyncFn]:
    """:func:`cancellable` for methods: each call (``super()`` calls included) is an operation.

    Args:
        timeout: seconds (or a ``timedelta``) after which the call is cancelled; ``None``:
            no timeout. Must be positive.
        name: the operation name; default ``{type(self).__name__}.{method name}`` (the
            runtime class, so an inherited method called on a subclass is ``Sub.method``).
        register_globally: register each call in the ``OperationRegistry`` while it runs.

    A parameter named ``cancellable`` receives the operation unless the caller passed one.
    """
    seconds = _check_timeout(timeout)
    _check_optional_str(name, "name")
    _check_bool(register_globally, "register_globally")

    def decorator(func: AsyncFn) -> AsyncFn:
        _require_async(func, "@cancellable_method()")
        func_name = getattr(func, "__name__", None) or type(func).__name__
        plan = _Injection.of(func, "cancellable")

        @functools.wraps(func)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            op = _new_operation(
                seconds, None, name or f"{type(self).__name__}.{func_name}", register_globally
            )
            full_args: tuple[Any, ...] = (self, *args)
            if plan is not None:
                full_args, kwargs = plan.apply(full_args, kwargs, op)
            async with op:
                return await func(*full_args, **kwargs)

        return cast(AsyncFn, wrapper)

    return decorator
