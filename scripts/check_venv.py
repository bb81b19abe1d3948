"""Offline check that the running interpreter's environment satisfies pyproject.toml.

Exit 0 when the project is installed in editable mode from this checkout and every
requirement of ``[build-system]``, ``[project]`` and the ``dev`` extra (recursively through
self-referencing extras) is installed at an acceptable version; otherwise print what is
missing and exit 1. Used by scripts/ensure-venv.sh to avoid needless pip runs.
"""

from __future__ import annotations

import json
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _problems() -> list[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    name = canonicalize_name(project["name"])
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    todo = [(r, "") for r in data.get("build-system", {}).get("requires", [])]
    todo += [(r, "") for r in project.get("dependencies", [])]
    todo += [(r, "dev") for r in extras.get("dev", [])]
    seen_extras = {"dev"}
    problems: list[str] = []
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        if canonicalize_name(req.name) == name:
            for e in sorted(req.extras - seen_extras):
                seen_extras.add(e)
                todo += [(r, e) for r in extras.get(e, [])]
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"missing: {text}")
            continue
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"wrong version: {text} (installed {version})")
    try:
        dist = metadata.distribution(project["name"])
    except metadata.PackageNotFoundError:
        return [*problems, f"missing: {project['name']} (editable install of {ROOT})"]
    direct_url = dist.read_text("direct_url.json")
    url = json.loads(direct_url).get("url", "") if direct_url else ""
    if url.rstrip("/") != ROOT.as_uri():
        problems.append(f"{project['name']} is not installed editable from {ROOT} ({url!r})")
    return problems


def main() -> int:
    """Print the problems found; 0 when there are none."""
    try:
        problems = _problems()
    except ImportError as exc:  # no `packaging` yet: let pip sort it out
        problems = [f"cannot check: {exc}"]
    for p in problems:
        print(f"check_venv: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
