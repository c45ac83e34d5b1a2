"""Atomic writes and content hashes shared by every stage.

Outputs are written to a temporary file beside the target and renamed into place, so a
failed or killed stage never leaves a partial file where DVC or the next stage looks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path next to ``target``; rename it over ``target`` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
