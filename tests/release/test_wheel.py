"""The release artifacts work as a user gets them: ``scripts/wheel_test.sh``.

One run of the script builds the sdist and, from it, the wheel (the C engine compiled from
the sdist's sources), checks their contents, installs the wheel with the examples' extras in a
fresh virtualenv and, from a directory outside the repository, checks where the package is
imported from, runs the installed pytest plugin, and runs the examples. About a minute;
marked ``release`` (``pytest -m "not release"`` skips it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "wheel_test.sh"


@pytest.mark.release
@pytest.mark.timeout(900)
def test_wheel_installs_and_runs_the_examples() -> None:
    env = dict(os.environ)
    env.setdefault("VPY", sys.executable)
    env.pop("HOTHER_CANCELABLE_BACKEND", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "wheel test: OK" in proc.stdout, output
    # the steps that matter all ran
    for line in (
        "every C source and header included",
        "4 passed",
        "showcase                 ok",
    ):
        assert line in proc.stdout, output
    assert f"from {ROOT}" not in proc.stdout, output
