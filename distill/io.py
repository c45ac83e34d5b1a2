"""Atomic writes and content hashes shared by every stage.

Outputs are written to a temporary file (or folder) beside the target, flushed to disk and renamed into
place, so a failed or killed stage never leaves a partial file where DVC or the next stage looks. A write
the filesystem refuses (full disk, quota, read-only) is ``WriteFailed``, naming the target: the stage's
``guarded`` main prints it as one line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

# How Rust-backed writers (polars, safetensors) report an OS error: "... No space left on device (os error 28)"
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
# The filesystem refusing a write: full, over quota, file too large (RLIMIT_FSIZE), read-only, failing
REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


class WriteFailed(OSError):
    """The filesystem refused to write ``target`` (``code``: the errno); ``kept`` says what is left as it was
    (by default what an atomic write leaves: the previous file, no temporary one)."""

    def __init__(self, code: int, target: Path | str,
                 kept: str = "the previous file there, if any, is unchanged and no partial file is left"):
        super().__init__(code, os.strerror(code), str(target))
        self.kept = kept

    def __reduce__(self):  # pickled (by Prefect, between processes) with its own arguments, not OSError's
        return type(self), (self.errno, self.filename, self.kept)

    def __str__(self) -> str:
        free = ""
        if self.errno in (errno.ENOSPC, errno.EDQUOT):
            try:
                free = f" ({shutil.disk_usage(Path(self.filename).parent).free:,} bytes free there now)"
            except OSError:  # the folder itself is gone or unreadable: say nothing about space
                pass
        return (f"could not write {self.filename}: {self.strerror.lower()}{free}; {self.kept}. Free space or fix "
                f"the filesystem, then run the stage again")


def os_error_number(error: BaseException) -> int | None:
    """The OS error number behind ``error``, when it is a failed system call (None otherwise)."""
    if isinstance(error, OSError):
        return error.errno
    match = RUST_OS_ERROR.search(str(error))
    return int(match[1]) if match else None


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk. Some filesystems (NFS, quotas) report a full disk
    only here, and a rename made before the data is on disk can leave an empty file after a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def refused_as_write_failed(target: Path, temporary: Path) -> Iterator[None]:
    """Remove ``temporary`` on any failure; re-raise a write the filesystem refused (``REFUSED``) as
    ``WriteFailed`` naming ``target``."""
    try:
        yield
    except BaseException as error:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        code = os_error_number(error)
        if code not in REFUSED or isinstance(error, WriteFailed):
            raise
        raise WriteFailed(code, target) from error


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path next to ``target``; rename it over ``target`` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    with refused_as_write_failed(target, Path(tmp)):
        yield Path(tmp)
        fsync_path(Path(tmp))
        os.replace(tmp, target)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temp folder next to ``target``; swap it in for ``target`` only once it is complete
    (``replace_dir``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the model folder it becomes is shared like any other
    with refused_as_write_failed(target, tmp):
        yield tmp
        replace_dir(tmp, target)


def replace_dir(source: Path, target: Path) -> None:
    """Put the complete folder ``source`` (beside ``target``) in ``target``'s place, its files flushed first.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first renamed aside: for that
    instant ``target`` is absent (never partial), and a kill then leaves the old one beside it, whole."""
    for path in source.rglob("*"):
        if path.is_file():
            fsync_path(path)
    old = target.with_name(f"{source.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # a killed swap's leftover: os.replace cannot rename over it
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def write_parquet(frame: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp)


def write_json(data: object, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def write_text(text: str, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(data: object, length: int = 16) -> str:
    """Stable short hash of any JSON-able value (ids, template and sampling hashes)."""
    text = data if isinstance(data, str) else canonical_json(data)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_hash(path: Path, length: int = 16) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:length]
