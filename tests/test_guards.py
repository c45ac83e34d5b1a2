"""Forgetting guards: the replay mix, the reference KL, the forgetting probe; and resuming a killed training."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from demo import words
from distill.entry import StageError
from distill.measure import forgetting
from distill.params import ReplayParams
from distill.transfer import data as train_data
from distill.transfer import guards, replay
from stages import train

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_replay_mixes_the_ratio_of_general_rows_seeded(tmp_path: Path) -> None:
    general = write_jsonl(tmp_path / "g.jsonl", [{"instruction": f"copy w{i}", "response": f"w{i}"} for i in range(5)])
    settings = ReplayParams(data=str(general), ratio=0.5)
    drawn = replay.general_rows(settings, 4, seed=0)
    assert drawn.height == 2 and drawn.equals(replay.general_rows(settings, 4, seed=0))
    assert drawn["instruction"].str.starts_with("copy w").all() and drawn["keep"].all()
    assert replay.general_rows(settings, 30, seed=0).height == 15  # past the file's size: with replacement
    assert replay.general_rows(ReplayParams(data="nowhere.jsonl", ratio=0.0), 4, 0).is_empty()


def test_replayed_rows_join_the_training_rows_and_train_kd_on_cross_entropy(
    tmp_path: Path,
    train_params,
    student_template,
) -> None:
    import polars as pl

    from distill.student import load_tokenizer
    from distill.transfer import kd

    general = write_jsonl(tmp_path / "g.jsonl", [{"instruction": f"copy w{i}", "response": f"w{i}"} for i in range(5)])
    rows = pl.DataFrame({"id": ["a", "b", "c", "d"],
                         "instruction": ["reverse cat", "upper dog", "reverse ox", "upper ox"],
                         "input": [""] * 4, "response": ["tac", "DOG", "xo", "OX"], "keep": [True, True, True, False]})
    params = train_params(REPO / "data/students/tiny-char", replay=ReplayParams(data=str(general), ratio=1.0))
    mixed = train_data.training_rows(rows, params)
    assert mixed.height == 6 and mixed["id"].str.starts_with("general-").sum() == 3
    assert len(train.training_data(rows, student_template, params).pairs) == 6
    features = pl.DataFrame({"id": ["a"], "k": [1], "token_ids": [[0]], "top_ids": [[0]], "top_logprobs": [[0.0]]})
    found = kd.examples(mixed, features, student_template, load_tokenizer(params.student), 64)
    assert len(found.examples) == 6 and found.without_teacher == 6  # general rows: cross-entropy only


def test_a_checkpoint_cut_off_while_being_written_is_skipped(tmp_path: Path) -> None:
    from distill.transfer.arguments import resume_point

    assert resume_point(tmp_path / "none") is None
    for step, state in ((5, '{"global_step": 5}'), (10, '{"global_st'), (15, None)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}/trainer_state.json").write_text(state)
    assert resume_point(tmp_path) == str(tmp_path / "checkpoint-5")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-5"]


def test_bad_general_data_names_the_file_and_line(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "g.jsonl", [{"instruction": "copy a", "response": "a"}, "{not json"])
    with pytest.raises(StageError, match=r"g.jsonl:2: not JSON"):
        replay.read_general(bad)
    missing = write_jsonl(tmp_path / "m.jsonl", [{"instruction": "copy a"}])
    with pytest.raises(StageError, match=r"m.jsonl:1: needs string fields instruction and response"):
        replay.read_general(missing)
    with pytest.raises(StageError, match=r"nowhere.jsonl: the general data file does not exist"):
        replay.read_general(tmp_path / "nowhere.jsonl")


def test_shipped_general_data_is_disjoint_from_the_skill() -> None:
    general = REPO / "data/general"
    rows = replay.read_general(general / "train.jsonl") + replay.read_general(general / "eval.jsonl")
    assert len(rows) == 2200 and all(words.parse(row["instruction"]) is None for row in rows)
    train_set = {row["instruction"] for row in replay.read_general(REPO / "data/general/train.jsonl")}
    assert not train_set & {row["instruction"] for row in replay.read_general(REPO / "data/general/eval.jsonl")}


def test_reference_kl_is_zero_for_the_reference_and_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    logits, reference = torch.randn(1, 3, 5, dtype=torch.float64), torch.randn(1, 3, 5, dtype=torch.float64)
    labels = torch.tensor([[guards.IGNORE, 4, 2]])  # positions 0 and 1 predict the answer tokens
    assert guards.reference_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-12)
    q, r = logits[0].softmax(-1), reference[0].softmax(-1)
    direct = sum(float((q[t] * (q[t] / r[t]).log()).sum()) for t in (0, 1)) / 2
    assert guards.reference_kl(logits, reference, labels).item() == pytest.approx(direct)


def test_reference_kl_keeps_the_student_closer_to_where_it_started(tiny_student: Path, skill_pairs: list[dict],
                                                                   tmp_path: Path, train_params) -> None:
    from distill.student import load_model

    start = load_model(str(tiny_student), 0).state_dict()

    def drift(model_dir: Path) -> float:
        trained = load_model(str(model_dir), 0).state_dict()
        return sum(float((trained[name] - start[name]).pow(2).sum()) for name in start)

    history = train.train(skill_pairs, train_params(tiny_student, reference_kl=5.0, learning_rate=0.01),
                          tmp_path / "guarded")
    assert all(math.isfinite(entry["reference_kl"]) for entry in history if "reference_kl" in entry)
    assert any("reference_kl" in entry for entry in history)
    train.train(skill_pairs, train_params(tiny_student, learning_rate=0.01), tmp_path / "free")
    assert drift(tmp_path / "guarded") < drift(tmp_path / "free")


def test_forgetting_probe_reports_before_after_and_the_difference(
    tiny_student: Path,
    skill_pairs: list[dict],
    tmp_path: Path,
    train_params,
    student_template,
) -> None:
    train.train(skill_pairs, train_params(tiny_student), tmp_path / "model")
    general = write_jsonl(tmp_path / "g.jsonl", [{"instruction": f"copy w{i}", "response": f"w{i}"} for i in range(9)])
    found = forgetting.probe({"student_before": str(tiny_student), "student_after": str(tmp_path / "model")},
                             general, student_template, 64, seed=0)
    before, after = found["loss"]["student_before"], found["loss"]["student_after"]
    assert found["rows"] == 9 and 0 < before and 0 < after and before != after
    assert found["forgetting"] == pytest.approx(after - before, abs=1e-4)
    # an untrained student knows nothing: its loss is about log(vocabulary) per token
    assert before == pytest.approx(math.log(100), rel=0.2)


DRIVER = """
import random, sys, time
from pathlib import Path
import transformers
from demo import words
from stages import train
from distill.params import TrainParams
from distill.prompts import student_prompt

step = transformers.Trainer.training_step
def slow_step(*args, **kwargs):  # slow enough to be killed midway; the numbers are unchanged
    time.sleep(0.1)
    return step(*args, **kwargs)
transformers.Trainer.training_step = slow_step
rng = random.Random(0)
texts = [words.random_instruction(rng) for _ in range(128)]
params = TrainParams.model_validate_json(Path(sys.argv[1]).read_text())  # the test's train_params
template = Path(params.prompt_template).read_text(encoding="utf-8")
pairs = [{"prompt": student_prompt(template, t), "completion": words.solve(t)} for t in texts]
history = train.train(pairs, params, Path(sys.argv[2]))
print("FINAL", [e["loss"] for e in history if "loss" in e][-1])
"""


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_checkpoint(tiny_student: Path, tmp_path: Path, train_params) -> None:
    """kill -9 midway, run again: the log says it resumes, and it ends where an uninterrupted run ends."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    params = tmp_path / "train_params.json"
    params.write_text(train_params(tiny_student, max_steps=20, batch_size=8, checkpoint_every=5,
                                   learning_rate=0.01).model_dump_json())

    def start(out: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", DRIVER, str(params), str(tmp_path / out)], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    whole = start("whole").communicate(timeout=600)[0]
    killed = start("resumed")
    deadline = time.monotonic() + 300
    while not list((tmp_path / ".distill/checkpoints").glob("resumed-*/checkpoint-10")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "resumed").exists()
    resumed = start("resumed").communicate(timeout=600)[0]
    assert "FINAL " in whole and "FINAL " in resumed, whole[-3000:] + resumed[-3000:]
    # checkpoint-10, or checkpoint-5 when the kill cut checkpoint-10 off while it was being written
    assert re.search(r"from its last checkpoint, .*checkpoint-(5|10)\b", resumed), resumed[-3000:]
    final = {name: float(text.split("FINAL ")[1].split()[0]) for name, text in (("whole", whole), ("resumed", resumed))}
    assert final["resumed"] == pytest.approx(final["whole"], rel=0.02)
    assert not list((tmp_path / ".distill/checkpoints").iterdir())  # the finished run cleans up after itself
