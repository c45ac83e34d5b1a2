"""Running one ``dvc`` command for the flows and the CLI: its output streamed line by line (so a
scheduled run shows progress in Prefect's logs as it happens), a failure raised with its last lines
(so a failed gate's message is the error a person sees first)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from distill.entry import StageError

TAIL_LINES = 25  # of a failed command's output, in the error
PROGRESS_EVERY_S = 5.0


class DvcFailed(StageError):
    """A dvc command exited non-zero; the message holds its last lines."""


def dvc_executable() -> str:
    """dvc from the same environment as this Python, so a flow run or worker works without activation."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"


def child_env() -> dict[str, str]:
    """This environment, minus the variable that ties a process to one Prefect flow run: a stage's own
    flows (the teacher's) are runs of their own, not this one."""
    return {name: value for name, value in os.environ.items() if name != "PREFECT__FLOW_RUN_ID"}


def run_dvc(args: list[str], cwd: str | Path = ".", on_line: Callable[[str], None] = print) -> str:
    """Run ``dvc <args>`` in ``cwd``; each output line (stdout and stderr) goes to ``on_line`` as it comes.
    A progress bar's in-place updates (ended by ``\r``) are passed on at most every PROGRESS_EVERY_S seconds,
    so a run's log shows its rate and ETA without thousands of lines. Returns the whole output (progress
    updates left out); raises ``DvcFailed`` with the last lines."""
    process = subprocess.Popen([dvc_executable(), *args], cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output: list[str] = []
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    pending, last_progress = b"", 0.0

    def lasting(line: str) -> None:
        output.append(line)
        tail.append(line)
        on_line(line)

    for chunk in iter(lambda: process.stdout.read1(65536), b""):
        *parts, pending = re.split(rb"(\r|\n)", pending + chunk)
        for raw, end in zip(parts[::2], parts[1::2], strict=True):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if not line:
                continue
            if end == b"\r":  # an in-place update
                if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                    last_progress = time.monotonic()
                    on_line(line)
                continue
            lasting(line)
    if line := pending.decode("utf-8", errors="replace").rstrip():
        lasting(line)
    code = process.wait()
    if code != 0:
        last = "\n".join(tail)
        raise DvcFailed(f"dvc {' '.join(args)} failed (exit {code}); its last lines:\n{last}")
    return "\n".join(output)


def dvc_output(args: list[str], cwd: str | Path = ".") -> str:
    """The stdout of ``dvc <args>`` (for machine-readable output such as ``--json``); raises ``DvcFailed``."""
    result = subprocess.run([dvc_executable(), *args], cwd=cwd, env=child_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise DvcFailed(f"dvc {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout
