"""Starting and stopping real servers and workers for the tests (a helper, not a test module)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process, what: str, log: Path, timeout_s: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{what} did not start; its log:\n{log.read_text()[-3000:]}")


def background(command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Start ``command`` with its output in ``log``; a process group of its own, so that stopping it stops its
    children too."""
    bin_dir = str(Path(sys.executable).parent)
    full_env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"} | (env or {})
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                start_new_session=True)


def stop(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
