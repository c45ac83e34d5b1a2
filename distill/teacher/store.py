"""The teacher request store: every paid answer, keyed by a hash of the request.

An append-only JSONL file, one answer per line: ``{"key", "request", "response", "stored_at"}``.
JSONL rather than SQLite: it is one file DVC can hash and share (``persist: true``), and a
person can read and grep it.

The contract, which every reader and writer relies on (scale-out across processes or machines
must keep it too):

1. **Durable as it arrives.** Each answer is appended and flushed the moment it arrives (fsync
   every ``fsync_every`` lines and on close), so a kill at any moment loses at most the requests
   in flight.
2. **Opening never destroys data.** Every line that parses and has a key and a response is kept,
   wherever it sits. Lines that do not parse, lack a key or a response, or repeat a key are moved
   byte for byte to ``<name>.quarantine.jsonl`` beside the store, counted (``quarantined``) and
   named with their line numbers in one warning; a last line torn by a kill goes there too. The
   store is then rewritten atomically (temp file, fsync, rename), never truncated in place.
   Read-only opens skip such lines and change nothing.
3. **One answer per key, decided once.** The first stored line for a key wins, on every open and
   in every reader, so rows and features are always built from the same answer. ``put`` never
   replaces an answer: a second answer for a stored key goes to the quarantine file.
4. **One writer at a time.** A writable open takes an exclusive OS lock (``flock`` on
   ``<name>.lock`` beside the store, which records the holder's PID and command) and holds it
   until closed. A second process waits up to ``wait_s`` seconds (``DISTILL_STORE_WAIT_S``), then
   stops with a message naming the holder. Within one process, ``open_store`` shares one writable
   instance per path, so a stage, its cost estimate and its Prefect flow see the same answers and
   the lock is held for the whole stage. Readers (``read_only=True``) take no lock and see
   complete lines only.
5. **Scale-out keeps 3 and 4.** Shards that run in other processes or on other machines must not
   append to this file themselves: they hand their answers to the lock holder, or each writes a
   store file of its own that the holder merges (first line per key wins, in a fixed shard order)
   before anything reads it. The plan is de-duplicated by key before it is split into shards, so
   no key is ever sent by two shards. Shard ``i`` writes ``<name>.shard-<i>.jsonl`` beside the
   store (``shard_path``; flows/scale.py runs shards on Dask workers), under a writer lock of its
   own. ``merge_shards`` merges them in index order, keys the store lacks only, and deletes each
   only once the store is fsynced; the first writable open (``open_store``) merges the files a
   killed run left, so answers paid for in a killed run are never paid again.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from distill.entry import StageError
from distill.io import REFUSED, WriteFailed, atomic_path, content_hash


def request_key(teacher: str, model: str, messages: list[dict], sampling: dict) -> str:
    """Hash of (teacher, model, messages, sampling params incl. seed): the store's key."""
    return content_hash({"teacher": teacher, "model": model, "messages": messages, "sampling": sampling}, 32)


def quarantine_path(store: Path) -> Path:
    """Where lines the store could not keep are moved: ``generate.jsonl`` -> ``generate.quarantine.jsonl``."""
    return store.with_name(f"{store.stem}.quarantine{store.suffix}")


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def shard_path(store: Path, index: int) -> Path:
    """Where shard ``index`` of a scaled-out run keeps its answers: ``generate.jsonl`` -> ``generate.shard-0.jsonl``."""
    return store.with_name(f"{store.stem}.shard-{index}{store.suffix}")


def shard_files(store: Path) -> list[Path]:
    """The shard files beside ``store``, in shard order (2 before 10); their quarantine files are not shards."""
    pattern = re.compile(rf"{re.escape(store.stem)}\.shard-(\d+){re.escape(store.suffix)}")
    found = [(int(match[1]), path) for path in store.parent.glob(f"{store.stem}.shard-*{store.suffix}")
             if (match := pattern.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


KEPT_ON_A_FULL_DISK = ("every answer stored before it is kept (a line the full disk cut off is set aside when the "
                       "store is next opened)")


class StoreBusy(StageError):
    """Another process holds the store's writer lock."""


@dataclass(frozen=True)
class Quarantined:
    line: int  # 1-based line number in the store as it was found (0: an answer ``put`` twice)
    reason: str  # not JSON | no key | no response | duplicate of line N | torn last line


class WriterLock:
    """An exclusive ``flock`` on ``<store>.lock``; the file records the holder for the next one's message.

    The lock file is never deleted: unlinking a lock file another process is waiting on would let a third
    take a lock on a new file. ``flock`` is released by the kernel when the holder dies, even by kill -9."""

    def __init__(self, store: Path, wait_s: float = 0.0):
        self.path = lock_path(store)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        deadline = time.monotonic() + wait_s
        waiting = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self.holder()
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise StoreBusy(
                        f"{store} is being written by another run ({holder}); two writers would pay twice for the "
                        f"same answers. Wait for it to finish, or set DISTILL_STORE_WAIT_S to wait up to that many "
                        f"seconds (now {wait_s:g})") from None
                if not waiting:
                    print(f"{store} is being written by {holder}: waiting up to {wait_s:g} s (DISTILL_STORE_WAIT_S)",
                          file=sys.stderr)
                    waiting = True
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        holder = {"pid": os.getpid(), "command": " ".join(sys.orig_argv)[:200],
                  "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.pwrite(self.fd, (json.dumps(holder) + "\n").encode(), 0)

    def holder(self) -> str:
        try:
            holder = json.loads(os.pread(self.fd, 4096, 0))
            return f"PID {holder['pid']}, `{holder['command']}`, since {holder['since']}"
        except (ValueError, KeyError, TypeError):  # the holder is still writing its name
            return "a process that is starting"

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


def fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RequestStore:
    def __init__(self, path: Path, fsync_every: int = 64, read_only: bool = False, wait_s: float = 0.0):
        self.path = path
        self.fsync_every = fsync_every  # a kill -9 keeps flushed lines; fsync guards power loss
        self.read_only = read_only  # read_only: takes no lock, never creates, rewrites or appends
        self._answers: dict[str, dict] = {}
        self._lock = None
        self._file = None
        self._refused: int | None = None  # the errno of an append the filesystem refused (a full disk)
        self.quarantined: list[Quarantined] = []  # what this open moved out of the store (or skipped, read-only)
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = WriterLock(path, wait_s)
        try:
            needs_newline = self._load()
            if not read_only:
                self._file = path.open("a", encoding="utf-8")
                if needs_newline:  # a complete last line without its newline: end it before appending
                    self._file.write("\n")
        except BaseException:
            self.close()
            raise
        self._unsynced = 0

    def _load(self) -> bool:
        """Read every usable line; quarantine the rest (writable). True when the last line, kept, lacks its newline."""
        if not self.path.exists():
            return False
        needs_newline = False
        first_line: dict[str, int] = {}
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                torn = not raw.endswith(b"\n")
                reason, entry = self._check(raw, first_line)
                if reason is None:
                    self._answers[entry["key"]] = entry
                    first_line[entry["key"]] = number
                    needs_newline = torn
                else:
                    self.quarantined.append(Quarantined(number, "torn last line" if torn else reason))
        if self.quarantined and not self.read_only:
            self._move_out({q.line for q in self.quarantined})
            needs_newline = False  # the rewrite ends every line
        return needs_newline

    @staticmethod
    def _check(raw: bytes, first_line: dict[str, int]) -> tuple[str | None, dict | None]:
        """Why a line cannot be kept (None: it can), and its entry."""
        try:
            entry = json.loads(raw)
        except ValueError:
            return "not JSON", None
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
            return "no key", None
        if not isinstance(entry.get("response"), dict):
            return "no response", None
        if entry["key"] in first_line:
            return f"duplicate of line {first_line[entry['key']]}", None
        return None, entry

    def _move_out(self, bad: set[int]) -> None:
        """Append the ``bad`` lines to the quarantine file (durably, first), then replace the store by the rest."""
        target = quarantine_path(self.path)
        mode = self.path.stat().st_mode & 0o777
        with atomic_path(self.path) as tmp:  # renamed over the store only once both files are durable
            with self.path.open("rb") as source, target.open("ab") as quarantine, tmp.open("wb") as kept:
                for number, raw in enumerate(source, start=1):
                    out = quarantine if number in bad else kept
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                for out in (quarantine, kept):
                    out.flush()
                    os.fsync(out.fileno())
            tmp.chmod(mode)
        fsync_directory(self.path.parent)
        listed = ", ".join(f"line {q.line} ({q.reason})" for q in self.quarantined[:20])
        more = f" and {len(self.quarantined) - 20} more" if len(self.quarantined) > 20 else ""
        print(f"warning: {self.path}: moved {len(self.quarantined)} line(s) it could not keep to {target}: "
              f"{listed}{more}; every other answer is kept", file=sys.stderr)

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
        line = json.dumps(entry, ensure_ascii=False) + "\n"  # unsorted: this is the hot path
        if key in self._answers:  # the first answer stays; a second one paid for is kept aside, not lost
            with quarantine_path(self.path).open("a", encoding="utf-8") as quarantine:
                quarantine.write(line)
            self.quarantined.append(Quarantined(0, f"answer put twice for key {key}"))
            return
        if self._refused is not None:  # the disk is full: no later answer can be kept either
            raise WriteFailed(self._refused, self.path, kept=KEPT_ON_A_FULL_DISK)
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as error:
            if error.errno not in REFUSED:
                raise
            self._refused = error.errno
            with suppress(OSError):  # closes the file even though its unwritten buffer cannot be flushed
                self._file.close()
            raise WriteFailed(error.errno, self.path, kept=KEPT_ON_A_FULL_DISK) from error
        self._answers[key] = entry
        self._unsynced += 1
        if self._unsynced >= self.fsync_every:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def merge(self, other: Path) -> int:
        """Append every answer in the store file ``other`` whose key this store lacks (its first line per key,
        in its order; lines it cannot keep are skipped); returns how many. How a copy pulled from a DVC
        remote joins answers paid for here without losing either (distill/sharing.py)."""
        with RequestStore(other, read_only=True) as incoming:
            return self.merge_entries(incoming.entries())

    def merge_entries(self, entries: list[dict]) -> int:
        """Append each stored entry (``{"key", "request", "response", "stored_at"}``, as another store holds it)
        whose key this store lacks, in order, first per key; fsync; return how many."""
        added = 0
        for entry in entries:
            if entry["key"] in self._answers:
                continue
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._answers[entry["key"]] = entry
            added += 1
        self._file.flush()
        os.fsync(self._file.fileno())
        return added

    def sync(self) -> None:
        """Make every answer put so far durable now (not only every ``fsync_every`` lines)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced = 0

    def merge_shards(self, wait_s: float = 0.0) -> tuple[int, int]:
        """Merge every shard file beside this store (contract point 5), in shard order: (files, answers added).
        Each is opened under its own writer lock (a shard still writing it is waited for up to ``wait_s``, then
        named) and repaired like any store, and deleted only once this store is fsynced, the lock still held."""
        files = added = 0
        for path in shard_files(self.path):
            with RequestStore(path, wait_s=wait_s):
                added += self.merge(path)  # fsyncs this store
                path.unlink()
                fsync_directory(path.parent)
            files += 1
        return files, added

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> RequestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[Path, tuple[RequestStore, int]] = {}  # resolved path -> (the open writer, how many opens share it)
_shared_lock = threading.Lock()


@contextmanager
def open_store(path: Path, wait_s: float = 0.0) -> Iterator[RequestStore]:
    """The writable store at ``path``, shared by every ``open_store`` of it in this process: the first open
    takes the writer lock, repairs the file and merges the shard files a killed run left; the last close releases
    it (see the contract above)."""
    key = path.resolve()
    with _shared_lock:
        store, opens = _shared.get(key, (None, 0))
        if store is None:
            store = RequestStore(path, wait_s=wait_s)
            try:
                files, added = store.merge_shards(wait_s)  # what a killed scaled-out run paid for, first
            except BaseException:
                store.close()
                raise
            if files:
                print(f"{path}: merged {added} answer(s) from {files} shard file(s) an earlier run left",
                      file=sys.stderr)
        _shared[key] = (store, opens + 1)
    try:
        yield store
    finally:
        with _shared_lock:
            store, opens = _shared.pop(key)
            if opens > 1:
                _shared[key] = (store, opens - 1)
            else:
                store.close()
