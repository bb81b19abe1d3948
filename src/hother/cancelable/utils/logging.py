"""Logging helpers of hother.cancelable (plain stdlib :mod:`logging`, no structlog).

The library logs through loggers named after its modules, all below ``hother.cancelable``.
Importing the package only attaches a :class:`logging.NullHandler` to that logger
(:func:`install_null_handler`); the host application's logging configuration (the root
logger in particular) is never touched. :func:`configure_logging` is an opt-in
convenience that gives the ``hother.cancelable`` logger one handler of its own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["LIBRARY_LOGGER", "configure_logging", "get_logger", "install_null_handler"]

LIBRARY_LOGGER = "hother.cancelable"
"""Name of the logger every library logger descends from."""

# Marker attribute put on the handlers this module installs (so they can be replaced).
_MARK = "_hother_cancelable_handler"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_LEVELS = {
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.FATAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "NOTSET": logging.NOTSET,
}


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the stdlib logger ``name``; by default the calling module's ``__name__``.

    Falls back to ``"hother.cancelable"`` when the caller's module name is unknown.
    """
    if name is None:
        try:
            frame = sys._getframe(1)
        except ValueError:  # pragma: no cover - no caller frame (embedded interpreters)
            frame = None
        caller = frame.f_globals.get("__name__") if frame is not None else None
        name = caller if isinstance(caller, str) and caller else LIBRARY_LOGGER
    elif not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    return logging.getLogger(name)


def install_null_handler() -> None:
    """Attach one :class:`logging.NullHandler` to the ``hother.cancelable`` logger (idempotent).

    Called by the package on import; this is the only logging side effect of importing it.
    """
    lib = logging.getLogger(LIBRARY_LOGGER)
    for handler in lib.handlers:
        if isinstance(handler, logging.NullHandler):
            return
    lib.addHandler(logging.NullHandler())


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _ExtraFormatter(logging.Formatter):
    """A text formatter that appends the record's ``extra`` fields as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = [
            f"{key}={value!r}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRS and not key.startswith("_")
        ]
        if extra:
            first, sep, rest = text.partition("\n")
            text = f"{first} [{' '.join(extra)}]{sep}{rest}"
        return text


def _level(log_level: object) -> int:
    if isinstance(log_level, bool) or not isinstance(log_level, str | int):
        raise TypeError(f"log_level must be a str (e.g. 'INFO'), got {type(log_level).__name__}")
    if isinstance(log_level, int):
        if log_level < 0:
            raise ValueError(f"log_level must not be negative, got {log_level}")
        return log_level
    try:
        return _LEVELS[log_level.strip().upper()]
    except KeyError:
        raise ValueError(
            f"log_level must be one of {', '.join(sorted(_LEVELS))} (any case), got {log_level!r}"
        ) from None


def configure_logging(
    log_level: str = "INFO", json_output: bool = False, dev_mode: bool = True
) -> None:
    """Send the library's log records to standard output (opt-in convenience).

    Configures only the ``hother.cancelable`` logger: sets its level and gives it one
    stream handler; calling again replaces that handler instead of adding another. Handlers
    added by the application, the root logger and ``propagate`` are left alone.

    Args:
        log_level: level name (``"DEBUG"``, ``"INFO"``, ... any case) or a numeric level.
            Unknown names raise :class:`ValueError`.
        json_output: one JSON object per record (``extra`` fields included).
        dev_mode: human-readable ``time name level message`` lines (else ``level name message``).
    """
    level = _level(log_level)
    formatter: logging.Formatter
    if json_output:
        formatter = _JsonFormatter()
    elif dev_mode:
        formatter = _ExtraFormatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    else:
        formatter = _ExtraFormatter("%(levelname)s %(name)s %(message)s")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    setattr(handler, _MARK, True)
    lib = logging.getLogger(LIBRARY_LOGGER)
    for old in list(lib.handlers):
        if getattr(old, _MARK, False):
            lib.removeHandler(old)
            old.close()
    lib.addHandler(handler)
    lib.setLevel(level)
