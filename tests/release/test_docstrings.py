"""Every public item of hother.cancelable has a docstring (the API reference is built from them).

Public items:

* every module of the package whose dotted path has no ``_``-prefixed part, plus the C
  engine ``hother.cancelable._engine`` (documented from its stub and compiled docstrings);
* in each module, the names of its ``__all__`` -- or, without ``__all__``, the public classes
  and functions defined in it;
* in each public class defined in the package, the public methods and properties it defines
  itself (inherited ones are checked on the class that defines them).

Classes and functions need their own ``__doc__`` (an inherited class docstring does not
count). Data names listed in ``__all__`` (type aliases, constants) need an attribute
docstring: a string literal right after the assignment, as in ``X = ...`` then ``\"\"\"...\"\"\"``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hother.cancelable as package

PACKAGE = package.__name__
ENGINE = f"{PACKAGE}._engine"
# Third-party libraries of the optional extras: a module needing one that is not installed
# cannot be imported here (the dev environment installs them all).
OPTIONAL = frozenset(
    {"fastapi", "starlette", "httpx", "aiofiles", "sqlalchemy", "aiosqlite", "psutil", "trio"}
)


def _public_module_names() -> list[str]:
    names = [PACKAGE, ENGINE]
    for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
        if any(part.startswith("_") for part in info.name.split(".")[2:]):
            continue
        names.append(info.name)
    return sorted(names)


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional dependency {exc.name!r}, not installed")
        raise


def _own_doc(obj: Any) -> str | None:
    """The docstring ``obj`` defines itself (classes: not inherited from a base)."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
    else:
        doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def _is_routine(obj: Any) -> bool:
    return inspect.isroutine(obj) or isinstance(obj, functools.partial)


def _defined_in(obj: Any, module: types.ModuleType) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def _module_names(module: types.ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return list(exported)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (isinstance(obj, type) or _is_routine(obj))
        and _defined_in(obj, module)
    ]


def _member_docs(cls: type) -> Iterator[tuple[str, str | None]]:
    """``(name, docstring)`` of the public methods and properties ``cls`` defines itself."""
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, classmethod | staticmethod):
            yield name, _own_doc(attr.__func__)
        elif isinstance(attr, property | functools.cached_property):
            yield name, _own_doc(attr)
        elif inspect.isfunction(attr) or inspect.ismethoddescriptor(attr):
            # Python functions, and methods of the C types (method descriptors).
            if isinstance(attr, types.MemberDescriptorType):
                continue  # a __slots__ / C struct field: data, not a routine
            yield name, _own_doc(attr)
        elif inspect.isgetsetdescriptor(attr):
            yield name, _own_doc(attr)  # a C property


@functools.cache
def _attribute_docstrings(path: str) -> frozenset[str]:
    """Names assigned at module level in ``path`` that are followed by a string literal."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    documented: set[str] = set()
    body = tree.body
    for node, following in zip(body, [*body[1:], None], strict=True):
        if not (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            continue
        if isinstance(node, ast.Assign):
            documented.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            documented.add(node.target.id)
    return frozenset(documented)


@functools.cache
def _assignments() -> dict[str, list[str]]:
    """Module-level assigned names -> source files of the package assigning them."""
    out: dict[str, list[str]] = {}
    root = Path(package.__file__).parent
    for path in sorted(root.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    out.setdefault(target.id, []).append(str(path))
    return out


def _data_documented(name: str, module: types.ModuleType) -> bool:
    """A data name of ``module`` has an attribute docstring where it is assigned."""
    own = getattr(module, "__file__", None)
    candidates = _assignments().get(name, [])
    if own is not None and own in candidates:
        candidates = [own]  # defined in the module itself
    return any(name in _attribute_docstrings(path) for path in candidates)


def _missing_in_module(module_name: str) -> list[str]:
    module = _import(module_name)
    missing: list[str] = []
    if _own_doc(module) is None:
        missing.append(f"{module_name} (module docstring)")
    for name in _module_names(module):
        obj = getattr(module, name)
        where = f"{module_name}.{name}"
        if isinstance(obj, type):
            if _own_doc(obj) is None:
                missing.append(where)
            if _defined_in(obj, module):
                missing.extend(
                    f"{where}.{member}" for member, doc in _member_docs(obj) if doc is None
                )
        elif _is_routine(obj):
            if _own_doc(obj) is None:
                missing.append(where)
        elif isinstance(obj, types.ModuleType):
            continue  # checked as a module of its own
        elif not _data_documented(name, module):
            missing.append(f"{where} (data: add a docstring after the assignment)")
    return missing


@pytest.mark.parametrize("module_name", _public_module_names())
def test_public_items_have_docstrings(module_name: str) -> None:
    missing = _missing_in_module(module_name)
    assert not missing, "public items without a docstring:\n  " + "\n  ".join(missing)


def test_the_walk_covers_the_api() -> None:
    """The walk sees the package's main modules and the names of the top-level namespace."""
    modules = _public_module_names()
    for expected in (
        PACKAGE,
        ENGINE,
        f"{PACKAGE}.core.cancellable",
        f"{PACKAGE}.core.token",
        f"{PACKAGE}.backends.detection",
        f"{PACKAGE}.sources.timeout",
        f"{PACKAGE}.utils.streams",
        f"{PACKAGE}.testing.clock",
        f"{PACKAGE}.pytest_plugin",
    ):
        assert expected in modules
    assert not any(part.startswith("_ext") for name in modules for part in name.split("."))
    names = _module_names(package)
    assert "Cancellable" in names and "CancellationToken" in names and "BackendType" in names
    # a module without __all__ contributes its own public classes and functions only
    detection = _import(f"{PACKAGE}.backends.detection")
    assert "detect_backend" in _module_names(detection)
    assert "contextmanager" not in _module_names(detection)


def test_the_checker_catches_a_missing_docstring() -> None:
    """The checks themselves: undocumented class, inherited-only doc, method, data alias."""

    class Documented:
        """Has a docstring."""

        def method(self) -> None:
            """Documented."""

        @property
        def prop(self) -> int:
            return 1

    class Undocumented(Documented):
        def other(self) -> None:
            pass

    assert _own_doc(Documented) is not None
    assert _own_doc(Undocumented) is None  # the base's docstring does not count
    assert dict(_member_docs(Documented)) == {"method": "Documented.", "prop": None}
    assert dict(_member_docs(Undocumented)) == {"other": None}
    detection = _import(f"{PACKAGE}.backends.detection")
    base = _import(f"{PACKAGE}.sources.base")
    assert _data_documented("CancelCallback", base)
    assert not _data_documented("_VALID", detection)
