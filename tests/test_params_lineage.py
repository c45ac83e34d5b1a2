"""Strict params (one error naming the dotted key) and row lineage back to the seed line."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill import lineage, paths
from distill.elicit import answering
from distill.io import write_parquet
from distill.params import Params, ParamsError, load, parse
from distill.prompts import Prompt
from distill.task import load as load_task
from distill.teacher import capabilities
from distill.teacher.endpoint import teacher_identity
from distill.teacher.store import RequestStore
from stages import dedupe, score
from stages.ingest import normalise, read_records

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def params_error(edit) -> str:
    raw = copy.deepcopy(RAW)
    edit(raw)
    with pytest.raises(ParamsError) as caught:
        parse(raw)
    return str(caught.value)


def test_repo_params_load() -> None:
    params = load(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.teacher.provider == "standin" and params.teacher.base_url is None
    assert params.generate.max_tokens == 16
    assert params.teacher.settings["wrong_rate"] == 0.04
    assert params.train.lora.enabled is False


def test_unknown_key_is_named() -> None:
    message = params_error(lambda raw: raw["train"].update(max_stepz=600))
    assert message == "params.yaml: train.max_stepz: Extra inputs are not permitted (got 600)"


def test_wrong_type_names_key_and_value() -> None:
    message = params_error(lambda raw: raw["train"].update(max_steps="many"))
    assert message.startswith("params.yaml: train.max_steps: Input should be a valid integer")
    assert message.endswith("(got 'many')")
    assert "\n" not in message


def test_missing_section_is_named() -> None:
    assert params_error(lambda raw: raw.pop("score")) == "params.yaml: score: Field required"


@pytest.mark.parametrize(("value", "bound"), [(-0.1, "greater than or equal to 0"), (1.5, "less than or equal to 1")])
def test_rate_outside_unit_interval(value: float, bound: str) -> None:
    message = params_error(lambda raw: raw["teacher"]["settings"].update(wrong_rate=value))
    assert message == f"params.yaml: teacher.settings.wrong_rate: Input should be {bound} (got {value})"


def test_provider_errors_name_the_key() -> None:
    """The stand-in's knobs are checked by its own schema (demo/standin.py), not the product's teacher fields."""
    second = {"name": "other", "provider": "standin", "model": "m", "settings": {"latency_ms": -1}}
    message = params_error(lambda raw: raw.update(teachers=[second]))
    assert message == "params.yaml: teachers.0.settings.latency_ms: Input should be greater than or equal to 0 (got -1)"
    message = params_error(lambda raw: raw["teacher"]["settings"].update(colour="blue"))
    assert message == "params.yaml: teacher.settings.colour: Extra inputs are not permitted (got 'blue')"
    message = params_error(lambda raw: raw["teacher"].update(provider="nowhere"))
    assert message.startswith("params.yaml: teacher.provider: unknown provider 'nowhere': expected one of openai, hf")
    message = params_error(lambda raw: raw["teacher"].update(provider="openai"))
    assert message.startswith("params.yaml: teacher: Value error, provider openai needs base_url")


def test_a_real_endpoint_is_one_params_change(tmp_path: Path) -> None:
    """provider, base_url and model: the stand-in's settings may stay, unused; its identity is the URL."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["teacher"] |= {"provider": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"}
    params = parse(raw)
    assert teacher_identity(params.teacher) == "standin:https://api.openai.com/v1"
    assert capabilities.of(params.teacher) == params.teacher.capabilities


def test_every_error_is_one_line_each() -> None:
    def two_errors(raw: dict) -> None:
        raw["train"]["max_stepz"] = 1
        raw["generate"]["n"] = 0

    lines = params_error(two_errors).splitlines()
    assert lines == [
        "params.yaml: generate.n: Input should be greater than 0 (got 0)",
        "params.yaml: train.max_stepz: Extra inputs are not permitted (got 1)",
    ]


def test_unreadable_params_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read params"):
        load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="cannot read params"):
        load(tmp_path / "params.yaml")


# --- lineage -------------------------------------------------------------------------------------

SEED_LINES = ['{"instruction": "reverse planet"}', '{"instruction": "upper cat"}', '{"instruction": "Reverse  PLANET"}']
ANSWERS = {"reverse planet": "tenalp", "upper cat": "CAT", "Reverse  PLANET": "tenalp"}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pl.DataFrame:
    """A tiny finished pipeline in tmp_path (seeds -> ingest -> generate -> score -> dedupe) plus its dvc.lock."""
    monkeypatch.chdir(tmp_path)
    params = parse(RAW)
    seeds_file = Path("data/seeds/train.jsonl")
    seeds_file.parent.mkdir(parents=True)
    seeds_file.write_text("\n".join(SEED_LINES) + "\n", encoding="utf-8")
    Path("data/seeds/eval.jsonl").write_text('{"instruction": "reverse dog", "reference": "god"}\n')
    seeds = normalise(seeds_file, read_records(seeds_file), "train")
    write_parquet(seeds, paths.INGEST_TRAIN)
    write_parquet(normalise(Path("data/seeds/eval.jsonl"), read_records(Path("data/seeds/eval.jsonl")), "eval"),
                  paths.INGEST_EVAL)

    prompt = Prompt(str(REPO / "templates/system.txt"), str(REPO / "templates/labelling.txt"))
    requests = answering.plan(seeds, prompt, params.generate, params.teacher)
    with RequestStore(paths.GENERATE_STORE) as store:
        for number, (seed, request) in enumerate(zip(seeds.iter_rows(named=True), requests, strict=True)):
            answer = ANSWERS[seed["instruction"]]
            store.put(request.key, request.payload(), {
                "id": f"chatcmpl-{number}", "model": "standin-skill-1-2026-11-01",
                "choices": [{"index": 0, "message": {"content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 150, "completion_tokens": len(answer)},
            })
        rows, _ = answering.frames(*answering.build_rows(
            "labelling", list(answering.as_inputs(seeds).iter_rows(named=True)), requests, store, "standin",
            prompt.hash, {}, {}))
    write_parquet(rows, paths.GENERATE_ROWS)
    scored = score.score(rows, params.score, verify=load_task(params.task).verify)
    write_parquet(scored, paths.SCORE_ROWS)
    deduped = dedupe.dedupe(scored, params.dedupe)
    write_parquet(deduped, paths.DEDUPE_ROWS)

    def out(path: Path) -> dict:
        return {"path": str(path), "hash": "md5", "md5": md5(path)}

    lock = {"schema": "2.0", "stages": {
        "ingest": {"cmd": "python -m stages.ingest", "deps": [out(seeds_file), out(Path("data/seeds/eval.jsonl"))],
                   "outs": [{"path": "data/ingest", "hash": "md5", "md5": "0ef61d826a634001f096a4d8837b001e.dir"}]},
        "generate": {"cmd": "python -m stages.generate",
                     "deps": [{"path": "data/ingest", "md5": "0ef61d826a634001f096a4d8837b001e.dir"}],
                     "outs": [out(paths.GENERATE_ROWS), out(paths.GENERATE_STORE)]},
        "score": {"cmd": "python -m stages.score", "deps": [out(paths.GENERATE_ROWS)], "outs": [out(paths.SCORE_ROWS)]},
        "dedupe": {"cmd": "python -m stages.dedupe", "deps": [out(paths.SCORE_ROWS)], "outs": [out(paths.DEDUPE_ROWS)]},
    }}
    Path("dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return deduped


def by_instruction(frame: pl.DataFrame, instruction: str) -> dict:
    return frame.filter(pl.col("instruction") == instruction).row(0, named=True)


def test_fixture_has_one_duplicate(workspace: pl.DataFrame) -> None:
    twins = workspace.filter(pl.col("instruction").str.to_lowercase().str.contains("planet"))
    winner = min(twins["id"])  # equal quality: the smaller id is kept
    assert sorted(workspace.select("id", "keep", "drop_reason", "dup_of").rows()) == sorted([
        (winner, True, None, None),
        (max(twins["id"]), False, "duplicate", winner),
        (by_instruction(workspace, "upper cat")["id"], True, None, None),
    ])


def test_trace_kept_row_reaches_seed_line(workspace: pl.DataFrame) -> None:
    row = by_instruction(workspace, "upper cat")
    chain = lineage.trace(row["id"])
    assert chain["id"] == row["id"]
    assert chain["selection"] == {
        "keep": True, "drop_reason": None, "dup_of": None, "dup_kind": None, "dup_similarity": None,
        "contaminated_by": None, "contamination_similarity": None, "quality": 1.0, "length_ok": True,
        "truncated": False, "refusal": False, "verified": True,
        "provenance": {"file": "data/dedupe/rows.parquet", "dvc_stage": "dedupe",
                       "dvc_md5": md5(paths.DEDUPE_ROWS), "dvc_out": "data/dedupe/rows.parquet",
                       "matches_workspace": True},
    }
    generation = chain["generation"]
    assert generation["response"] == "CAT"
    assert generation["model_answered"] == "standin-skill-1-2026-11-01"
    assert generation["response_id"] == "chatcmpl-1"
    assert generation["request_key"] == row["request_key"]
    assert generation["provenance"]["dvc_stage"] == "generate"
    assert generation["provenance"]["matches_workspace"] is True
    assert chain["teacher_store"]["answered"] is True
    assert chain["teacher_store"]["file"] == "data/store/generate.jsonl"
    seed = chain["seed"]
    assert (seed["id"], seed["source_file"], seed["source_line"]) == (row["seed_id"], "data/seeds/train.jsonl", 2)
    assert seed["source_text"] == '{"instruction": "upper cat"}'
    assert seed["provenance"] == {"file": "data/ingest/train.parquet", "dvc_stage": "ingest",
                                  "dvc_md5": "0ef61d826a634001f096a4d8837b001e.dir", "dvc_out": "data/ingest"}
    assert seed["source_provenance"] == {
        "file": "data/seeds/train.jsonl", "dvc_stage": "ingest", "dvc_md5": md5(Path("data/seeds/train.jsonl")),
        "dvc_out": "data/seeds/train.jsonl", "matches_workspace": True,
    }
    text = lineage.render(chain)
    assert text.startswith(f"lineage of {row['id']}\n\nselection:\n  keep: True\n")
    assert "  source_line: 2\n" in text
    assert '  source_text: {"instruction": "upper cat"}' in text
    assert (f"  from data/seeds/train.jsonl (dvc stage ingest, md5 {md5(Path('data/seeds/train.jsonl'))}) "
            "matches workspace") in text


def test_edited_seed_file_is_flagged(workspace: pl.DataFrame) -> None:
    row = by_instruction(workspace, "upper cat")
    Path("data/seeds/train.jsonl").write_text('{"instruction": "new first line"}\n' + "\n".join(SEED_LINES) + "\n")
    chain = lineage.trace(row["id"])
    assert chain["seed"]["source_provenance"]["matches_workspace"] is False
    assert "WORKSPACE DIFFERS" in lineage.render(chain)


def test_trace_duplicate_names_its_twin(workspace: pl.DataFrame) -> None:
    dropped = workspace.filter(pl.col("drop_reason") == "duplicate").row(0, named=True)
    winner = workspace.filter(pl.col("id") == dropped["dup_of"]).row(0, named=True)
    assert {dropped["instruction"], winner["instruction"]} == {"reverse planet", "Reverse  PLANET"}
    chain = lineage.trace(dropped["id"])
    assert chain["selection"]["keep"] is False
    assert chain["selection"]["drop_reason"] == "duplicate"
    assert chain["selection"]["duplicate_of"] == {"id": winner["id"], "instruction": winner["instruction"]}
    assert chain["seed"]["source_text"] == SEED_LINES[dropped["source_line"] - 1]
    text = lineage.render(chain)
    assert "  drop_reason: duplicate\n" in text
    assert f"  dup_of: {winner['id']}\n" in text
    assert f'  duplicate_of: {json.dumps({"id": winner["id"], "instruction": winner["instruction"]})}' in text


def test_trace_seed_id_has_only_the_seed(workspace: pl.DataFrame) -> None:
    eval_seed = pl.read_parquet(paths.INGEST_EVAL).row(0, named=True)
    chain = lineage.trace(eval_seed["id"])
    assert set(chain) == {"id", "seed"}
    assert chain["seed"]["split"] == "eval"
    assert chain["seed"]["source_text"] == '{"instruction": "reverse dog", "reference": "god"}'
    assert chain["seed"]["provenance"]["dvc_out"] == "data/ingest"
    assert lineage.render(chain).splitlines()[:3] == [f"lineage of {eval_seed['id']}", "", "seed:"]


def test_trace_unknown_id(workspace: pl.DataFrame) -> None:
    with pytest.raises(KeyError, match="no row or seed with id 'nope'"):
        lineage.trace("nope")


def test_trace_without_lock_has_no_hashes(workspace: pl.DataFrame) -> None:
    Path("dvc.lock").unlink()
    chain = lineage.trace(by_instruction(workspace, "upper cat")["id"])
    assert chain["selection"]["provenance"] == {"file": "data/dedupe/rows.parquet", "dvc_stage": None,
                                                "dvc_md5": None}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill.cli", "lineage", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_the_chain_and_fails_cleanly_on_unknown_id(workspace: pl.DataFrame, tmp_path: Path) -> None:
    row = by_instruction(workspace, "upper cat")
    result = cli(row["id"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == lineage.render(lineage.trace(row["id"])) + "\n"
    assert "  source_file: data/seeds/train.jsonl\n" in result.stdout
    as_json = cli(row["id"], "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout)["seed"]["source_line"] == 2
    missing = cli("nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr == ("distill lineage: no row or seed with id 'nope' in the stage outputs "
                              "(has the pipeline run?)\n")
