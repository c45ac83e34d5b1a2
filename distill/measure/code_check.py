"""The ``code`` scorer's check: does an answer's code pass the reference's tests?

The answer's code (its last fenced Python block, else the whole text) and the reference's test code
(asserts) run as one script in a fresh ``python -I`` subprocess: isolated mode ignores PYTHON* variables
and the user's site-packages, the empty environment and a new temporary working directory leave nothing
shared between checks, and a new process group lets a timeout kill the script and anything it started.
Output is captured and discarded: only the exit status counts.

This isolates checks from each other and from the pipeline; it is not a security sandbox (the code can
still reach the file system and the network). Score answers from untrusted teachers in a container.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.IGNORECASE | re.DOTALL)
ANY_BLOCK = re.compile(r"```[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The last ```python block, else the last bare ``` block, else the whole text."""
    for fence in (PYTHON_BLOCK, ANY_BLOCK):
        blocks = fence.findall(text)
        if blocks:
            return blocks[-1]
    return text


def passes(answer: str, tests: str, timeout_s: float) -> bool:
    """True when the answer's code followed by ``tests`` exits 0 within ``timeout_s`` seconds."""
    with tempfile.TemporaryDirectory(prefix="distill-code-") as workdir:
        script = Path(workdir) / "check.py"
        script.write_text(f"{extract_code(answer)}\n\n{tests}\n", encoding="utf-8")
        process = subprocess.Popen([sys.executable, "-I", str(script)], cwd=workdir, env={},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout_s) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            _kill_group(process)  # also what the script left running, when it exited


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the script's process group (children too) and reap the script."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()
    process.wait()
