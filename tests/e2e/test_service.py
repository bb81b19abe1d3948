"""A subprocess service shut down by SIGTERM (``service_app.py``): clean exit status, the
cleanup ran, and no in-flight record was lost (every ``begin N`` has its ``commit N``,
records are consecutive)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hother.cancelable.pytest_plugin import RUN_MODES

APP = Path(__file__).with_name("service_app.py")


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float) -> None:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip() == expected:
                return
    proc.kill()
    out, err = proc.communicate(timeout=10)
    pytest.fail(f"the service did not print {expected!r}\nstdout: {out}\nstderr: {err}")


@pytest.mark.parametrize("mode", RUN_MODES)
def test_sigterm_stops_the_service_cleanly(mode: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(APP), mode, str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_line(proc, "ready", 60)
        _wait_line(proc, "busy", 60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout: {out}\nstderr: {err}"
    lines = journal.read_text().splitlines()
    assert lines[-1] == "cleanup", lines[-5:]
    records = [line for line in lines[:-1] if not line.startswith("stop requested")]
    assert len(records) >= 8 and len(records) % 2 == 0, records
    for i in range(0, len(records), 2):
        n = i // 2
        assert records[i : i + 2] == [f"begin {n}", f"commit {n}"], records[i : i + 2]
    # the SIGTERM arrived while a record was in flight: that record was still committed,
    # and it was the last one
    stops = [line for line in lines if line.startswith("stop requested")]
    assert stops == ["stop requested during 3"], lines
    n = 3
    assert lines[lines.index(stops[0]) + 1] == f"commit {n}"
    assert records[-1] == f"commit {n}", records[-4:]
