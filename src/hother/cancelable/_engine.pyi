"""Type stubs of the C engine ``hother.cancelable._engine`` (see docs/architecture.md)."""

import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, overload

class LoopStats(TypedDict):
    armed_timers: int
    deadlines: int
    pending_redelivery: int
    active_scopes: int
    timer_when: float

# ---------------------------------------------------------------- cancel scope (asyncio)
class CancelScope:
    """anyio/trio cancel-scope semantics on asyncio: a plain ``with`` block, single use."""

    def __init__(self, deadline: float = ..., shield: bool = ...) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool: ...
    def cancel(self, reason: str | None = None) -> None: ...
    deadline: float
    shield: bool
    @property
    def cancel_called(self) -> bool: ...
    @property
    def cancelled_caught(self) -> bool: ...
    @property
    def deadline_reached(self) -> bool: ...
    @property
    def active(self) -> bool: ...
    @property
    def effectively_cancelled(self) -> bool: ...
    @property
    def host_task(self) -> Any: ...

class LoopEngine: ...

def adopt_task(task: Any, scope: CancelScope, /) -> None: ...
def current_scope(task: Any = None) -> CancelScope | None: ...
def loop_stats(loop: Any = None) -> LoopStats: ...
def armed_timers() -> int: ...

_task_scopes: dict[Any, CancelScope]

# ---------------------------------------------------------------- tokens and executors
class TokenCore:
    """C core of a cancellation token: one-shot thread-safe state, hooks, links."""

    def __init__(
        self,
        *,
        id: str | None = None,
        is_cancelled: bool = False,
        reason: Any = None,
        message: str | None = None,
        cancelled_at: datetime | None = None,
    ) -> None: ...
    @property
    def id(self) -> str: ...
    @property
    def is_cancelled(self) -> bool: ...
    @property
    def reason(self) -> Any: ...  # the CancellationReason member, or None
    @property
    def message(self) -> str | None: ...
    @property
    def cancelled_at(self) -> datetime | None: ...
    @property
    def _hook_count(self) -> int: ...
    @overload
    def _cancel(
        self, reason: Any, message: str | None = None, collect: Literal[False] = False
    ) -> bool: ...
    @overload
    def _cancel(
        self, reason: Any, message: str | None, collect: Literal[True]
    ) -> tuple[bool, list[Awaitable[Any]]]: ...
    @overload
    def _cancel(
        self, reason: Any, message: str | None = None, *, collect: Literal[True]
    ) -> tuple[bool, list[Awaitable[Any]]]: ...
    def _add_hook(self, fn: Callable[[Any], Any], *, executor: Any = ...) -> int: ...
    def _remove_hook(self, handle: int, /) -> bool: ...
    def _link_from(self, source: TokenCore, preserve_reason: bool = False) -> None: ...
    def _unlink_from(self, source: TokenCore, /) -> bool: ...

def _set_reason_type(enum_cls: type, /) -> None: ...
def _run_hook(fn: Callable[[Any], Any], arg: Any, /) -> None: ...
def capture_executor() -> Any: ...
def _report_error(where: str, exc: BaseException, /) -> None: ...

_pending_hook_tasks: set[Any]  # asyncio tasks spawned for async hooks (kept alive)

# ---------------------------------------------------------------- registry table
class RegistryTable:
    def __init__(self) -> None: ...
    def set(self, key: str, value: object, /) -> Any: ...
    def get(self, key: str, default: Any = None, /) -> Any: ...
    def pop(self, key: str, default: Any = None, /) -> Any: ...
    def discard(self, key: str, value: object, /) -> bool: ...
    def values(self) -> list[Any]: ...
    def clear(self) -> list[Any]: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: str, /) -> Any: ...
    def __setitem__(self, key: str, value: object, /) -> None: ...
    def __delitem__(self, key: str, /) -> None: ...

# ---------------------------------------------------------------- operation core
class CancellableCore:
    """C base of ``Cancellable``: state fields and the enter/exit hot path."""

    def __init__(
        self,
        operation_id: str | None = None,
        name: str | None = None,
        parent: CancellableCore | None = None,
        metadata: dict[str, Any] | None = None,
        register_globally: bool = False,
    ) -> None: ...
    @classmethod
    def with_timeout(
        cls,
        timeout: float | Any,
        operation_id: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Self: ...
    def __aenter__(self) -> Coroutine[Any, Any, Self]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Coroutine[Any, Any, Literal[False]]: ...
    _id: str | None
    _ctx: Any
    _status: Any
    _cancel_reason: Any
    _cancel_message: str | None
    _error: str | None
    _partial_result: Any
    _token_obj: Any
    _scope: Any
    _backend: Any
    _cv_token: Any
    _parent_ref: Any
    _parent_id: str | None
    _source_reason: tuple[Any, str | None] | None
    _hook_reason: tuple[Any, str | None] | None
    _source_error: BaseException | None
    _hook: int
    _entered: bool
    _registered: bool
    _register_globally: bool
    _sources: list[Any]
    _shields: list[Any]
    _external_tokens: list[Any]
    _cancellables_to_link: list[Any]
    _linked_to: list[Any]
    _progress_callbacks: list[Callable[..., Any]]
    _start_callbacks: list[Callable[..., Any]]
    _complete_callbacks: list[Callable[..., Any]]
    _cancel_callbacks: list[Callable[..., Any]]
    _error_callbacks: list[Callable[..., Any]]
    _children: Any
    _metadata: dict[str, Any]
    _name: str | None
    _start_time: Any
    _end_time: Any
    @property
    def _token(self) -> Any: ...
    @property
    def _fast_timeout(self) -> float | None: ...
    @property
    def _fast(self) -> bool: ...
    @property
    def _timed_out(self) -> bool: ...
    def _restore_current(self) -> None: ...

current_operation_var: contextvars.ContextVar[Any]

def current_operation() -> Any: ...
def _set_classes(objects: dict[str, Any], /) -> None: ...
def _set_error_handler(handler: Callable[[str, BaseException], Any] | None, /) -> None: ...
def live_objects() -> dict[str, int]: ...

class OperationScope(CancelScope):
    """The CancelScope API of a running Cancellable's own scope (the asyncio fast path)."""

class TrioDeadlines:
    """The with_timeout deadlines of one trio run, served by one system task."""

    def _next(self) -> float: ...
    def _set_waker(self, scope: Any, deadline: float, /) -> None: ...
    def _fire(self, now: float, /) -> None: ...
    def _close(self) -> None: ...
    def _len(self) -> int: ...
