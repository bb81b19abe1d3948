"""griffe extension used by the documentation build (``mkdocs.yml``).

1. ``hother.cancelable._engine`` is a C extension; it is documented from its type stub
   ``_engine.pyi`` (signatures and types). griffe finds both the stub and the compiled module
   and, depending on the directory listing order, keeps the stub or the compiled module with
   the stub merged into it (whose classes lose their ``__init__`` signatures); the stub alone
   is loaded explicitly in that case. Where the stub gives an object no docstring, the
   docstring compiled into the C module is used instead (the C source stays the single place
   where the engine's behaviour is described). A leading ``name(args) -> result`` signature
   line of a C docstring is dropped: mkdocstrings renders the stub's signature.
2. Sphinx cross-reference roles in docstrings (``:class:`~.base.TaskGroup```) are rendered
   as code spans (``TaskGroup``), since the site is rendered from Markdown.

Enabled in ``mkdocs.yml`` under the python handler's ``extensions`` option; importing the
engine needs the built extension module (``make build``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import griffe

ENGINE = "hother.cancelable._engine"
PACKAGE = "hother.cancelable"

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|exc|data|obj|const):`(~?)([^`<]+?)`")


def _role_to_code(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2).strip()
    target = target.rstrip("()")
    if tilde or target.startswith("."):
        target = target.lstrip(".").rsplit(".", 1)[-1]
    return f"`{target}`"


def strip_roles(text: str) -> str:
    """Replace Sphinx roles (``:class:`x```) with Markdown code spans."""
    return _ROLE.sub(_role_to_code, text)


def _matching_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def clean_c_docstring(name: str, doc: str) -> str:
    """Drop the ``name(args) [-> result][:]`` prefix a C docstring starts with."""
    doc = doc.strip()
    if not doc.startswith(f"{name}("):
        return doc
    first, _, rest = doc.partition("\n")
    close = _matching_paren(first, len(name))
    if close < 0:
        return doc
    tail = first[close + 1 :].strip()
    result = ""
    if tail.startswith("->"):
        # "-> result: text" or "-> result"; the result may contain ':' (dict[str, int]).
        tail = tail[2:].strip()
        colon = tail.find(": ")
        if colon >= 0:
            result, tail = tail[:colon], tail[colon + 2 :]
        else:
            result, tail = tail, ""
    elif tail.startswith(":"):
        tail = tail[1:]
    tail = tail.strip()
    first_word = tail.split(" ", 1)[0]
    if first_word.isalpha() and first_word.islower():
        tail = tail[0].upper() + tail[1:]
    parts = [tail, rest.strip()]
    if result.strip():
        parts.append(f"**Returns:** {result.strip()}")
    return "\n\n".join(part for part in parts if part)


def _runtime(obj_path: str) -> Any:
    module = importlib.import_module(ENGINE)
    target: Any = module
    for part in obj_path.removeprefix(ENGINE + ".").split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


class EngineDocstrings(griffe.Extension):
    """Fill the engine stub's missing docstrings from the C module; render Sphinx roles."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Post-process a loaded package (``hother`` / ``hother.cancelable``)."""
        if not pkg.path.startswith("hother"):
            return
        self._use_stub(pkg, loader)
        self._walk(pkg, set())

    @staticmethod
    def _use_stub(pkg: griffe.Module, loader: griffe.GriffeLoader) -> None:
        package = pkg if pkg.path == PACKAGE else pkg.members.get(PACKAGE.rsplit(".", 1)[1])
        if not isinstance(package, griffe.Module):
            return
        engine = package.members.get("_engine")
        if not isinstance(engine, griffe.Module) or not isinstance(engine.filepath, Path):
            return
        if engine.filepath.suffix == ".pyi":
            return
        stub = engine.filepath.parent / "_engine.pyi"
        stub_module = griffe.visit(
            "_engine",
            filepath=stub,
            code=stub.read_text(encoding="utf-8"),
            extensions=loader.extensions,
            parent=package,
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            lines_collection=loader.lines_collection,
            modules_collection=loader.modules_collection,
        )
        # set_member() would merge the stub into the inspected module (keeping the compiled
        # module's parameterless signatures): replace it instead, and re-point its aliases.
        del package.members["_engine"]
        package.set_member("_engine", stub_module)
        for alias in list(engine.aliases.values()):
            alias.target = stub_module

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.path == ENGINE or obj.path.startswith(ENGINE + "."):
            self._fill_from_runtime(obj)
        if obj.docstring is not None and obj.path.startswith(PACKAGE):
            obj.docstring.value = strip_roles(obj.docstring.value)
        for member in obj.members.values():
            if member.is_alias:
                continue
            assert isinstance(member, griffe.Object)
            self._walk(member, seen)

    @staticmethod
    def _fill_from_runtime(obj: griffe.Object) -> None:
        if obj.docstring is not None and obj.docstring.value.strip():
            return
        if obj.path == ENGINE or obj.name.startswith("__"):
            return  # dunders only carry CPython's generic slot texts
        runtime = _runtime(obj.path)
        doc = getattr(runtime, "__doc__", None) if runtime is not None else None
        if not isinstance(doc, str) or not doc.strip():
            return
        # An instance (a ContextVar, a dict...) only inherits its type's docstring.
        if doc == type(runtime).__doc__:
            return
        text = clean_c_docstring(obj.name, doc)
        if text:
            obj.docstring = griffe.Docstring(text, parent=obj)
