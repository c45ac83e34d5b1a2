"""The request store keeps every paid answer: bad lines are quarantined, never lost; one answer per key;
one writer at a time; a plan sends each key once; bad throughput knobs are refused before anything starts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from demo.standin import Settings as StandinSettings
from demo.standin import running_standin
from distill.teacher.engine import EngineSettings, SettingsError, TeacherRequest
from distill.teacher.plan import write_plan
from distill.teacher.store import RequestStore, StoreBusy, lock_path, open_store, quarantine_path, request_key
from flows.teacher import run_plan

ROOT = Path(__file__).resolve().parents[1]


def entry_line(key: str, answer: str = "a") -> bytes:
    entry = {"key": key, "request": {"model": "m"}, "response": {"id": answer, "choices": []}, "stored_at": "t"}
    return (json.dumps(entry) + "\n").encode()


def write_store(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))


def answers(n: int) -> list[bytes]:
    return [entry_line(f"k{i}", f"r{i}") for i in range(n)]


def test_round_trip_and_the_first_answer_wins(tmp_path: Path) -> None:
    path = tmp_path / "store" / "s.jsonl"
    with RequestStore(path) as store:
        assert len(store) == 0 and store.get("k1") is None and store.entry("k1") is None
        store.put("k1", {"model": "m", "messages": []}, {"id": "r1", "choices": [{"text": "é"}]})
        store.put("k2", {"model": "m"}, {"id": "r2"})
        store.put("k1", {"model": "m"}, {"id": "r1b"})  # a second answer for a key: kept aside, not used
        assert store.get("k1") == {"id": "r1", "choices": [{"text": "é"}]}
        assert len(store.quarantined) == 1
    with RequestStore(path) as store:
        assert len(store) == 2 and "k1" in store and "k3" not in store
        assert store.get("k1") == {"id": "r1", "choices": [{"text": "é"}]}
        assert set(store.entry("k2")) == {"key", "request", "response", "stored_at"}
        assert store.quarantined == []
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert json.loads(quarantine_path(path).read_text(encoding="utf-8"))["response"] == {"id": "r1b"}


def test_a_garbage_line_in_the_middle_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "generate.jsonl"
    lines = answers(300)
    write_store(path, lines[:100] + [b"x\n"] + lines[100:])
    inode = path.stat().st_ino
    with RequestStore(path) as store:
        assert len(store) == 300
        assert [(q.line, q.reason) for q in store.quarantined] == [(101, "not JSON")]
    assert path.read_bytes() == b"".join(lines)  # every other line, byte for byte
    assert path.stat().st_ino != inode  # rewritten by a rename, never truncated in place
    assert quarantine_path(path) == tmp_path / "generate.quarantine.jsonl"
    assert quarantine_path(path).read_bytes() == b"x\n"
    warning = capsys.readouterr().err
    assert f"{path}: moved 1 line(s)" in warning and "line 101 (not JSON)" in warning
    assert str(quarantine_path(path)) in warning
    with RequestStore(path) as store:  # clean now: nothing more to move
        assert len(store) == 300 and store.quarantined == []


def test_keyless_responseless_and_duplicate_lines_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    bad = [b'{"request": {}, "response": {}}\n', b'{"key": "k9", "request": {}}\n', b"[1, 2]\n",
           entry_line("k1", "later")]
    lines = answers(3)
    write_store(path, lines[:2] + bad + lines[2:])
    with RequestStore(path) as store:
        assert len(store) == 3
        assert store.get("k1")["id"] == "r1"  # the first answer for k1, not the later duplicate
        assert [(q.line, q.reason) for q in store.quarantined] == [
            (3, "no key"), (4, "no response"), (5, "no key"), (6, "duplicate of line 2")]
    assert path.read_bytes() == b"".join(lines)
    assert quarantine_path(path).read_bytes() == b"".join(bad)


def test_a_torn_last_line_is_cut_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "s.jsonl"
    lines = answers(2)
    write_store(path, lines + [b'{"key": "k3", "request": {"mo'])  # a kill mid-write: no newline
    with RequestStore(path) as store:
        assert len(store) == 2 and "k3" not in store
        assert [(q.line, q.reason) for q in store.quarantined] == [(3, "torn last line")]
        store.put("k3", {}, {"id": "r3"})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k0", "k1", "k3"]
    assert quarantine_path(path).read_bytes() == b'{"key": "k3", "request": {"mo\n'
    assert "line 3 (torn last line)" in capsys.readouterr().err


def test_a_complete_last_line_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_store(path, [entry_line("k0"), entry_line("k1").rstrip(b"\n")])
    with RequestStore(path) as store:
        assert len(store) == 2 and store.quarantined == []
        store.put("k2", {}, {"id": "r2"})
    with RequestStore(path) as store:
        assert len(store) == 3
    assert not quarantine_path(path).exists()


def test_a_reader_skips_bad_lines_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_store(path, answers(2) + [b"x\n", entry_line("k0", "later"), b'{"key": "torn'])
    before = path.read_bytes()
    with RequestStore(path, read_only=True) as store:
        assert len(store) == 2 and store.get("k0")["id"] == "r0"
        assert [q.reason for q in store.quarantined] == ["not JSON", "duplicate of line 1", "torn last line"]
    assert path.read_bytes() == before
    assert not quarantine_path(path).exists() and not lock_path(path).exists()


# --- one writer at a time ------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from distill.teacher.store import RequestStore
store = RequestStore(Path(sys.argv[1]))
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
store.put("from-holder", {}, {"id": "h"})
store.close()
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds the store's writer lock for ``seconds``."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_writer_is_told_who_holds_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    holder = hold(path, 30)
    try:
        expected = f"{path} is being written by another run (PID {holder.pid}, `{sys.executable} -c "
        with pytest.raises(StoreBusy, match=re.escape(expected)):
            RequestStore(path)
        with RequestStore(path, read_only=True) as reader:  # readers take no lock
            assert len(reader) == 0
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    with RequestStore(path) as store:
        assert len(store) == 0


def test_a_second_writer_may_wait_for_the_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "s.jsonl"
    holder = hold(path, 1.5)
    with RequestStore(path, wait_s=60) as store:
        assert "from-holder" in store  # it opened after the holder's last answer
    assert holder.wait() == 0
    assert f"being written by PID {holder.pid}" in capsys.readouterr().err


def test_opens_in_one_process_share_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with open_store(path) as outer:
        with open_store(path) as inner:
            assert inner is outer
            inner.put("k", {}, {"id": "r"})
        assert "k" in outer and not outer._file.closed  # the inner close left the writer open
    with RequestStore(path) as store:  # the last close released the lock
        assert store.get("k") == {"id": "r"}


# --- a plan sends each key once ------------------------------------------------------------------


def test_a_key_in_two_shards_is_sent_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, billed) -> None:
    sampling = {"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0}
    requests = []
    for word in ("cat", "cat", "dog"):  # two seeds that make one request: shards 0 and 1 would both get it
        messages = [{"role": "user", "content": f"reverse {word}"}]
        requests.append(TeacherRequest(request_key("t", "standin-skill-1", messages, sampling), "standin-skill-1",
                                       messages, sampling))
    write_plan(requests, tmp_path / "plan.jsonl")
    assert (tmp_path / "plan.jsonl").stat().st_mode & 0o777 == 0o600  # it holds prompts
    log = tmp_path / "requests.jsonl"
    with running_standin(StandinSettings(idempotency=False), request_log=log) as url:
        ledger = run_plan(tmp_path / "plan.jsonl", tmp_path / "store.jsonl", url, None, 2)
    assert (ledger.requests_sent, ledger.attempts) == (2, 2)
    assert sorted(billed(log).values()) == [1, 1]
    assert len((tmp_path / "store.jsonl").read_text().splitlines()) == 2


# --- throughput knobs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("DISTILL_TEACHER_CONCURRENCY", "0", "greater than or equal to 1"),
    ("DISTILL_TEACHER_CONCURRENCY", "abc", "valid integer"),
    ("DISTILL_TEACHER_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("DISTILL_TEACHER_TIMEOUT_S", "-1", "greater than 0"),
    ("DISTILL_TEACHER_RPM", "0", "greater than 0"),
    ("DISTILL_TEACHER_TPM", "many", "valid number"),
    ("DISTILL_TEACHER_TRANSPORT", "bogus", "use one of ['aiohttp', 'openai']"),
    ("DISTILL_STORE_WAIT_S", "-5", "greater than or equal to 0"),
])
def test_a_bad_knob_names_the_variable_the_value_and_the_range(variable: str, value: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as caught:
        EngineSettings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable}={value!r}: ")
    assert allowed in str(caught.value) and "unset means" in str(caught.value)


def test_knobs_are_read_from_the_environment() -> None:
    settings = EngineSettings.from_env({"DISTILL_TEACHER_CONCURRENCY": "4", "DISTILL_TEACHER_RPM": "",
                                        "DISTILL_STORE_WAIT_S": "2.5"})
    assert (settings.concurrency, settings.requests_per_minute, settings.store_wait_s) == (4, None, 2.5)
    assert EngineSettings.from_env({}) == EngineSettings()


def test_the_stage_refuses_a_bad_knob_before_anything_starts(tmp_path: Path) -> None:
    """One line naming the variable, no traceback, and nothing started or written: no store, no lock, no scratch."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    env = os.environ | {"DISTILL_TEACHER_CONCURRENCY": "0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "stages.generate"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "generate: DISTILL_TEACHER_CONCURRENCY='0': Input should be greater than or equal to 1 "
        "(requests in flight at once; unset means 32)"]
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_a_killed_writer_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    holder = hold(path, 30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with RequestStore(path) as store:  # would raise StoreBusy if the lock were still held
        assert "from-holder" not in store


def test_merge_adds_only_the_answers_this_store_lacks(tmp_path: Path) -> None:
    """How a store pulled from a DVC remote joins one with answers paid for here (distill/sharing.py)."""
    here, remote = tmp_path / "here.jsonl", tmp_path / "remote.jsonl"
    write_store(here, [entry_line("k0", "ours"), entry_line("local", "l")])
    write_store(remote, [entry_line("k0", "theirs"), b"garbage\n", entry_line("k1", "r1"), entry_line("k1", "r1b")])
    with RequestStore(here) as store:
        assert store.merge(remote) == 1  # k1 only: k0 is answered here, garbage and the repeat are skipped
        assert store.get("k0")["id"] == "ours" and store.get("k1")["id"] == "r1"
    with RequestStore(here) as store:
        assert [e["key"] for e in store.entries()] == ["k0", "local", "k1"] and store.quarantined == []
    assert remote.read_bytes().count(b"\n") == 4  # the other file is only read
