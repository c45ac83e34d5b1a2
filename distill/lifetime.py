"""What a stage starts dies with it, even under ``kill -9``: its child processes and its scratch files.

A stage that asks a teacher starts processes (Prefect's temporary API server, the stand-in) and
writes scratch files (the plan, which holds every prompt). Its own cleanup does not run when it is
killed with SIGKILL, and Prefect's temporary server outlives it by minutes. So, on first use,
``watch()`` starts a small watchdog beside the stage:

- it blocks reading a pipe whose only writer is the stage: the read returns when the stage has
  exited, however it exited;
- it then stops (SIGTERM, then SIGKILL after 3 s) every process that carries the stage's token in
  its environment. Every process the stage starts inherits the token, grandchildren included, so a
  child that was re-parented when the stage died is still found;
- and it removes the stage's scratch folder.

Scratch lives under ``.distill/tmp/<pid>-<start time>/`` in the repo (ignored by git; the folder is
0700 and files 0600, since plans hold prompts), not in the system temp folder. It is removed when
its use ends, by the watchdog after a kill, and failing both, by the next stage that starts.

Run by ``watch()`` as ``python -m distill.lifetime TOKEN FD SCRATCH``; not meant to be run by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

SCRATCH = Path(".distill/tmp")  # in the repo the stage runs in, beside .distill/checkpoints; ignored by git
TOKEN_VARIABLE = "DISTILL_STAGE_TOKEN"
_watching: int | None = None  # the pipe's write end while a watchdog watches this process (never closed)


def _folder_name(process: psutil.Process) -> str:
    """``<pid>-<start time in ms>``: a later process that reuses the PID gets another name."""
    return f"{process.pid}-{int(process.create_time() * 1000)}"


def _alive(name: str) -> bool:
    """Whether the process a scratch folder is named after still runs (the same PID and start time)."""
    try:
        return _folder_name(psutil.Process(int(name.partition("-")[0]))) == name
    except (ValueError, psutil.Error):
        return False


def scratch_root() -> Path:
    """This process's scratch folder (created 0700 on first use; the ones of dead stages are removed then)."""
    root = SCRATCH.resolve()
    mine = root / _folder_name(psutil.Process())
    if not mine.exists():
        root.mkdir(parents=True, exist_ok=True)
        for folder in root.iterdir():
            if folder.is_dir() and not _alive(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        mine.mkdir(mode=0o700)
    return mine


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A fresh private folder ``<scratch root>/<name>-<random>``, removed on exit; the watchdog is started
    first, so that it is removed after a kill too."""
    watch()
    folder = scratch_root() / f"{name}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def private_file(path: Path) -> int:
    """Create ``path`` readable and writable by its owner only (0600); return the open descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def watch() -> None:
    """Start this process's watchdog, once; call it before starting a child process or writing scratch."""
    global _watching
    if _watching is not None:
        return
    token = uuid.uuid4().hex
    os.environ[TOKEN_VARIABLE] = token  # inherited by every process started from now on
    read_end, write_end = os.pipe()  # not inheritable: children started later do not hold the write end
    # A session of its own: a Ctrl-C or a kill of the stage's process group does not stop the watchdog first.
    subprocess.Popen([sys.executable, "-m", "distill.lifetime", token, str(read_end), str(scratch_root())],
                     pass_fds=(read_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, cwd=Path(__file__).resolve().parents[1])
    os.close(read_end)
    _watching = write_end


def carries(process: psutil.Process, token: str) -> bool:
    try:
        return process.environ().get(TOKEN_VARIABLE) == token
    except psutil.Error:  # gone, or another user's
        return False


def reap(token: str, scratch_folder: Path) -> None:
    """Stop every process that carries ``token`` (but this one) and remove ``scratch_folder``."""
    me = os.getpid()
    left = [process for process in psutil.process_iter() if process.pid != me and carries(process, token)]
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=3)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    shutil.rmtree(scratch_folder, ignore_errors=True)


def main(argv: list[str]) -> None:
    token, read_end, scratch_folder = argv
    while os.read(int(read_end), 4096):  # nothing is ever written: this returns b"" when the stage has exited
        pass
    reap(token, Path(scratch_folder))


if __name__ == "__main__":
    main(sys.argv[1:])
