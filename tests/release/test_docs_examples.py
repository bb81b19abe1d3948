"""The complete programs shown in the documentation run, and print what their comments say.

A fenced ``python`` block of the pages below is a *program* when a line starts with
``asyncio.run(``, ``trio.run(`` or ``anyio.run(``. Each program runs in a fresh interpreter
(all of them at once, to keep the test short); it must exit with status 0, and on every
``print(...)`` line ending with a ``# comment`` the comment text must appear in the output
(the docs use such comments to show the output).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("index.md", "getting_started.md", "backends.md", "migration_0.2.md")
_FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
_RUN = re.compile(r"^(asyncio|trio|anyio)\.run\(", re.M)
_PRINT_COMMENT = re.compile(r"print\(.*\)\s+#\s*(.+?)\s*$")


def _programs() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            code = match.group(1)
            if _RUN.search(code):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page}:{line}", code))
    return found


PROGRAMS = _programs()


def expected_output(code: str) -> list[str]:
    """The texts of the ``# comments`` closing the ``print(...)`` lines of ``code``."""
    return [m.group(1) for line in code.splitlines() if (m := _PRINT_COMMENT.search(line))]


def test_the_pages_have_programs() -> None:
    pages = {where.split(":")[0] for where, _ in PROGRAMS}
    assert {"index.md", "getting_started.md", "backends.md"} <= pages
    assert expected_output('    print(x.value)  # cancelled timeout\nprint("a")\n') == [
        "cancelled timeout"
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Run every program concurrently: ``where -> (returncode, stdout, stderr)``."""
    env = {k: v for k, v in os.environ.items() if k != "HOTHER_CANCELABLE_BACKEND"}
    running: dict[str, subprocess.Popen[str]] = {}
    try:
        for index, (where, code) in enumerate(PROGRAMS):
            directory = tmp_path_factory.mktemp(f"program{index}")
            script = directory / "program.py"
            script.write_text(code, encoding="utf-8")
            running[where] = subprocess.Popen(
                [sys.executable, str(script)],
                cwd=directory,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        out: dict[str, tuple[int, str, str]] = {}
        for where, proc in running.items():
            stdout, stderr = proc.communicate(timeout=60)
            out[where] = (proc.returncode, stdout, stderr)
        return out
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(("where", "code"), PROGRAMS, ids=[w for w, _ in PROGRAMS])
def test_documented_program_runs(
    where: str, code: str, results: dict[str, tuple[int, str, str]]
) -> None:
    returncode, stdout, stderr = results[where]
    assert returncode == 0, f"{where} failed:\n{stdout}\n{stderr}"
    for text in expected_output(code):
        assert text in stdout, f"{where}: expected {text!r} in the output:\n{stdout}"
