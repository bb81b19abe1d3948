"""Duplicated-code gate: the share of source lines that repeat elsewhere (make lint).

A line counts as duplicated when it lies in a run of ``--min-lines`` (default 6) consecutive
significant lines that appears, identically after whitespace normalisation, somewhere else in
the scanned files (or elsewhere in the same file). Blank lines, comment-only lines, lone
punctuation and import lines are not significant (the same rule as the workplace's
``duplicates`` tool). Prints the percentage per tree and fails above ``--max-percent``.

Usage: python scripts/dupcheck.py [--min-lines 6] [--max-percent 5] [paths...]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

SUFFIXES = {".py", ".c", ".h", ".pyi"}
_TRIVIAL = re.compile(r"^[\s{}()\[\];,:]*$")


def significant(line: str) -> str | None:
    text = " ".join(line.split())
    if not text or _TRIVIAL.match(text):
        return None
    if text.startswith(("#", "//", "/*", "*", "*/")):
        return None
    if text.startswith(("import ", "from ", "#include")):
        return None
    return text


def scan(paths: list[Path]) -> dict[Path, list[tuple[int, str]]]:
    files: dict[Path, list[tuple[int, str]]] = {}
    for root in paths:
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in candidates:
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            files[path] = [(i, t) for i, raw in enumerate(lines) if (t := significant(raw))]
    return files


def duplicated_lines(
    files: dict[Path, list[tuple[int, str]]], min_lines: int
) -> dict[Path, set[int]]:
    windows: dict[tuple[str, ...], list[tuple[Path, int]]] = defaultdict(list)
    for path, lines in files.items():
        texts = [t for _, t in lines]
        for start in range(len(texts) - min_lines + 1):
            windows[tuple(texts[start : start + min_lines])].append((path, start))
    dup: dict[Path, set[int]] = defaultdict(set)
    for places in windows.values():
        if len(places) < 2:
            continue
        for path, start in places:
            for k in range(start, start + min_lines):
                dup[path].add(files[path][k][0])
    return dup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["src", "csrc"])
    parser.add_argument("--min-lines", type=int, default=6)
    parser.add_argument("--max-percent", type=float, default=5.0)
    args = parser.parse_args()
    files = scan([Path(p) for p in args.paths])
    dup = duplicated_lines(files, args.min_lines)
    total = sum(len(v) for v in files.values())
    duplicated = sum(len(v) for v in dup.values())
    percent = 100.0 * duplicated / total if total else 0.0
    worst = sorted(dup.items(), key=lambda kv: -len(kv[1]))[:5]
    print(
        f"duplicated code: {duplicated} of {total} significant lines ({percent:.2f} %) in "
        f"{', '.join(args.paths)}; runs of >= {args.min_lines} lines"
    )
    for path, lines in worst:
        print(f"  {path}: {len(lines)} lines")
    if percent > args.max_percent:
        print(f"dupcheck: FAILED (> {args.max_percent} %)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
