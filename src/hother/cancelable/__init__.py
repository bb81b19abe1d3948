"""hother.cancelable: async cancellation for asyncio, anyio and trio, with a C engine.

One way to cancel work on every backend: timeouts, manual tokens, OS signals, conditions,
parent/child hierarchies, cancellable streams, and cancellation from plain threads.

The backend is detected with sniffio (asyncio, uvloop included -> the native asyncio backend
on the C engine; trio -> the anyio backend); ``use_backend("anyio")`` or the environment
variable ``HOTHER_CANCELABLE_BACKEND`` force one.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .backends import (
    BackendDetectionError,
    BackendType,
    NoAsyncContextError,
    UnsupportedBackendError,
    detect_backend,
    get_backend,
    use_backend,
)
from .core.cancellable import Cancellable, current_operation
from .core.exceptions import (
    CancellationError,
    ConditionCancellation,
    ManualCancellation,
    ParentCancellation,
    SignalCancellation,
    TimeoutCancellation,
)
from .core.models import CancellationReason, OperationContext, OperationStatus
from .core.registry import OperationRegistry
from .core.token import CancellationToken
from .utils.anyio_bridge import AnyioBridge, call_soon_threadsafe
from .utils.decorators import cancellable, with_timeout
from .utils.logging import configure_logging as configure_logging
from .utils.logging import install_null_handler
from .utils.streams import cancellable_stream

try:
    __version__ = _version("hother-cancelable")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0+dev"

install_null_handler()

__all__ = [
    "AnyioBridge",
    "BackendDetectionError",
    "BackendType",
    "Cancellable",
    "CancellationError",
    "CancellationReason",
    "CancellationToken",
    "ConditionCancellation",
    "ManualCancellation",
    "NoAsyncContextError",
    "OperationContext",
    "OperationRegistry",
    "OperationStatus",
    "ParentCancellation",
    "SignalCancellation",
    "TimeoutCancellation",
    "UnsupportedBackendError",
    "call_soon_threadsafe",
    "cancellable",
    "cancellable_stream",
    "current_operation",
    "detect_backend",
    "get_backend",
    "use_backend",
    "with_timeout",
]
