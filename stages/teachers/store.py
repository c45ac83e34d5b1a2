"""The teacher request store: every paid answer, keyed by a hash of the request.

An append-only JSONL file, one answer per line, flushed as each answer arrives, so a
kill at any moment loses at most the requests in flight. A re-run looks keys up here
first and pays only for the ones not yet answered. A line torn by a kill is cut off on
open (it was never a complete answer). JSONL rather than SQLite: it is one file DVC can
hash and share (``persist: true``), and a person can read and grep it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from stages.io import content_hash


def request_key(teacher: str, model: str, messages: list[dict], sampling: dict) -> str:
    """Hash of (teacher, model, messages, sampling params incl. seed): the store's key."""
    return content_hash({"teacher": teacher, "model": model, "messages": messages, "sampling": sampling}, 32)


class RequestStore:
    def __init__(self, path: Path, fsync_every: int = 64, read_only: bool = False):
        self.path = path
        self.fsync_every = fsync_every  # a kill -9 keeps flushed lines; fsync guards power loss
        self.read_only = read_only  # read_only: never creates, truncates or appends (e.g. `distill estimate`)
        self._answers: dict[str, dict] = {}
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._file = None if read_only else path.open("a", encoding="utf-8")
        self._unsynced = 0

    def _load(self) -> None:
        if not self.path.exists():
            return
        good_bytes = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    break  # torn tail from a kill: everything after it is dropped below
                if not raw.endswith(b"\n"):
                    break
                self._answers[entry["key"]] = entry
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size and not self.read_only:
            with self.path.open("r+b") as handle:
                handle.truncate(good_bytes)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> dict | None:
        entry = self._answers.get(key)
        return None if entry is None else entry["response"]

    def entry(self, key: str) -> dict | None:
        return self._answers.get(key)

    def entries(self) -> list[dict]:
        return list(self._answers.values())

    def put(self, key: str, request: dict, response: dict) -> None:
        entry = {
            "key": key,
            "request": request,
            "response": response,
            "stored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")  # unsorted: this is the hot path
        self._file.flush()
        self._answers[key] = entry
        self._unsynced += 1
        if self._unsynced >= self.fsync_every:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> RequestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
