"""What a stage starts dies with it: child processes after a kill -9, scratch folders at once or at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]

STAGE = """
import subprocess, sys, time
from distill.lifetime import scratch
with scratch("plan") as folder:
    (folder / "plan.jsonl").write_text("prompts")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    grandchild = subprocess.Popen(["sh", "-c", "sleep 120 & wait"])
    print(child.pid, grandchild.pid, folder, flush=True)
    time.sleep(120)
"""


def gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_killed_stage_takes_its_processes_and_scratch_with_it(tmp_path: Path) -> None:
    stage = subprocess.Popen([sys.executable, "-c", STAGE], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                             env=os.environ | {"PYTHONPATH": str(ROOT)})
    child, shell, folder = stage.stdout.readline().split()
    descendants = psutil.Process(stage.pid).children(recursive=True)
    assert oct(Path(folder).parent.stat().st_mode & 0o777) == "0o700"
    assert Path(folder).parent.parent == tmp_path / ".distill/tmp"
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()
    for process in descendants:  # the watchdog, the child, the shell and its sleep
        assert gone(process.pid), " ".join(process.cmdline())
    assert {int(child), int(shell)} <= {process.pid for process in descendants}
    assert not Path(folder).parent.exists()


def test_scratch_of_dead_stages_is_removed_at_the_next_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill import lifetime

    monkeypatch.chdir(tmp_path)
    dead = tmp_path / ".distill/tmp/999999999-1"  # no such process
    reused = tmp_path / f".distill/tmp/{os.getppid()}-1"  # a live PID with another start time: a reused PID
    for folder in (dead, reused):
        folder.mkdir(parents=True)
        (folder / "plan.jsonl").write_text("prompts")
    mine = lifetime.scratch_root()
    assert mine.parent == (tmp_path / ".distill/tmp").resolve()
    assert sorted(path.name for path in mine.parent.iterdir()) == [mine.name]
