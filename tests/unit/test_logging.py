"""utils.logging: get_logger, configure_logging, the import-time NullHandler (§9.6, §14.25)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from hother.cancelable.utils.logging import (
    LIBRARY_LOGGER,
    configure_logging,
    get_logger,
    install_null_handler,
)


@pytest.fixture
def lib_logger() -> Iterator[logging.Logger]:
    """The library logger, restored (handlers, level, propagate) after the test."""
    lib = logging.getLogger(LIBRARY_LOGGER)
    saved = (list(lib.handlers), lib.level, lib.propagate)
    root = logging.getLogger()
    root_saved = (list(root.handlers), root.level, root.propagate)
    try:
        yield lib
    finally:
        for h in list(lib.handlers):
            if h not in saved[0]:
                h.close()
        lib.handlers[:] = saved[0]
        lib.setLevel(saved[1])
        lib.propagate = saved[2]
        assert (list(root.handlers), root.level, root.propagate) == root_saved


def _ours(lib: logging.Logger) -> list[logging.Handler]:
    return [h for h in lib.handlers if getattr(h, "_hother_cancelable_handler", False)]


def test_get_logger_defaults_to_caller_module() -> None:
    assert get_logger().name == __name__
    assert get_logger("x.y").name == "x.y"
    assert get_logger("x.y") is logging.getLogger("x.y")


def test_get_logger_fallback_without_module_name() -> None:
    namespace: dict[str, object] = {"get_logger": get_logger}
    exec("result = get_logger()", namespace)  # a frame whose globals have no __name__
    assert namespace["result"] is logging.getLogger(LIBRARY_LOGGER)


def test_get_logger_bad_name() -> None:
    with pytest.raises(TypeError, match="name"):
        get_logger(3)  # type: ignore[arg-type]


def test_package_import_adds_only_null_handler(lib_logger: logging.Logger) -> None:
    install_null_handler()
    install_null_handler()
    nulls = [h for h in lib_logger.handlers if isinstance(h, logging.NullHandler)]
    assert len(nulls) == 1


def test_configure_logging_touches_only_library_logger(
    lib_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level, root.propagate)
    configure_logging("DEBUG")
    assert (list(root.handlers), root.level, root.propagate) == before
    assert lib_logger.level == logging.DEBUG
    assert len(_ours(lib_logger)) == 1
    logging.getLogger("hother.cancelable.test").debug("hello %s", "world", extra={"op": "x1"})
    out = capsys.readouterr().out
    assert "hello world" in out
    assert "hother.cancelable.test" in out
    assert "DEBUG" in out
    assert "op='x1'" in out


def test_configure_logging_replaces_its_handler(lib_logger: logging.Logger) -> None:
    user_handler = logging.NullHandler()
    lib_logger.addHandler(user_handler)
    for _ in range(3):
        configure_logging("INFO")
    assert len(_ours(lib_logger)) == 1
    assert user_handler in lib_logger.handlers
    configure_logging("warning", dev_mode=False)
    assert len(_ours(lib_logger)) == 1
    assert lib_logger.level == logging.WARNING


def test_configure_logging_json(
    lib_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json_output=True)
    logging.getLogger("hother.cancelable.j").info("msg", extra={"operation_id": "abc"})
    logging.getLogger("hother.cancelable.j").debug("hidden")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["message"] == "msg"
    assert data["level"] == "INFO"
    assert data["logger"] == "hother.cancelable.j"
    assert data["operation_id"] == "abc"


def test_configure_logging_plain_format(
    lib_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", dev_mode=False)
    logging.getLogger("hother.cancelable.p").warning("careful")
    assert capsys.readouterr().out.strip() == "WARNING hother.cancelable.p careful"


def test_configure_logging_numeric_level(lib_logger: logging.Logger) -> None:
    configure_logging(logging.ERROR)  # type: ignore[arg-type]
    assert lib_logger.level == logging.ERROR


@pytest.mark.parametrize(
    ("level", "exc"),
    [("LOUD", ValueError), ("", ValueError), (None, TypeError), (2.5, TypeError), (-1, ValueError)],
)
def test_configure_logging_bad_level(
    lib_logger: logging.Logger, level: object, exc: type[Exception]
) -> None:
    handlers = list(lib_logger.handlers)
    with pytest.raises(exc, match="log_level"):
        configure_logging(level)  # type: ignore[arg-type]
    assert lib_logger.handlers == handlers
