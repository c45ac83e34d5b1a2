"""What a checkpoint was trained on, and its model card.

The train stage writes three files into each checkpoint folder (data/train/model, and data/train/baseline when
it trains one), beside the weights:

- ``training_rows.parquet`` (``records.TRAINED_ROW``): every row trained on, in order: its id, the hash of its
  text exactly as trained, the table it came from and that table's md5, its teacher and teacher call;
- ``lineage.json``: the facts known at training time (``training_facts``): objective and train params, the rows'
  count and hash, the teachers with their calls and tokens, the selection and its gate, the git commit;
- ``README.md``: a Hugging Face model card of those facts (``model_card`` with no evaluation).

``distill lineage --model <folder>`` reads them (distill/lineage.py, which also prices the calls). A report
stage writes the full card, with the eval table, as
``model_card(read_facts(paths.TRAIN_MODEL), json.loads(paths.metrics("evaluate").read_text()))`` (or, with the
teachers' costs, ``model_lineage(paths.TRAIN_MODEL)["facts"]`` as the facts).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import polars as pl
import yaml

from distill import params as params_module
from distill.io import content_hash, write_json, write_parquet, write_text
from distill.records import TRAINED_ROW

MANIFEST = "training_rows.parquet"
FACTS = "lineage.json"
CARD = "README.md"
# The gates a selected row passed on its way to training (replayed general rows pass none).
SELECTED_GATES = ("ingest", "generate", "score", "dedupe", "select")
# The systems of metrics/eval.json, in the eval table's order, with their labels.
SYSTEMS = {"student_before": "student before", "student_after": "student after (this model)",
           "baseline_sft": "plain-SFT baseline", "teacher": "teacher"}


class NotTrainedHere(ValueError):
    """A folder without the train stage's manifest."""


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file."""
    return hashlib.md5(path.read_bytes()).hexdigest()


# What the pipeline and `make run` write into git itself (the figures in README.md and docs/, the report's
# screenshot): a run rewriting them changes none of its inputs, and counting them would make a rerun at the same
# commit record another state than the first run (tests/test_reproducible.py).
PIPELINE_WRITTEN = (":(exclude)metrics", ":(exclude)reports", ":(exclude)dvc.lock", ":(exclude)README.md",
                    ":(exclude)docs/*.md", ":(exclude)docs/report.png")


def git_state(folder: Path = Path(".")) -> dict:
    """``{"commit": HEAD's sha, "dirty": whether tracked files differ from it}``; both None outside a git repo.
    Untracked files do not count as dirty (a first run's dvc.lock is untracked until committed), nor the files the
    pipeline writes (``PIPELINE_WRITTEN``)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *PIPELINE_WRITTEN).stdout.strip()
        return {"commit": head.stdout.strip(), "dirty": bool(changed)}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def trained_rows(ids: list[str], pairs: list[dict], selected: pl.DataFrame, inputs: dict[str, tuple[str, str | None]]
                 ) -> pl.DataFrame:
    """The manifest (TRAINED_ROW): row ``ids[i]`` was trained as ``pairs[i]``; a row of ``selected`` (the select
    stage's rows; teacher, request_key and token columns when it has them) is a "select" row, any other a
    "replay" row. ``inputs``: source -> (its file, that file's md5 or None)."""
    wanted = [name for name in ("teacher", "request_key", "prompt_tokens", "completion_tokens")
              if name in selected.columns]
    by_id = {row["id"]: row for row in selected.select("id", *wanted).iter_rows(named=True)}
    records = []
    for row_id, pair in zip(ids, pairs, strict=True):
        source = "select" if row_id in by_id else "replay"
        call = by_id.get(row_id, {})
        records.append({"id": row_id, "content_hash": content_hash(pair), "source": source,
                        "input_file": inputs[source][0], "input_md5": inputs[source][1]}
                       | {name: call.get(name) for name in TRAINED_ROW if name in wanted})
    return pl.DataFrame(records, schema=TRAINED_ROW)


def teacher_calls(manifest: pl.DataFrame) -> dict[str, dict]:
    """Per teacher: the rows it wrote, its distinct calls and their tokens (each call counted once)."""
    selected = manifest.filter(pl.col("teacher").is_not_null())
    calls = selected.unique("request_key", keep="first")
    return {
        row.pop("teacher"): row for row in calls.group_by("teacher").agg(
            pl.len().alias("calls"), pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum()
        ).join(selected.group_by("teacher").agg(pl.len().alias("rows")), on="teacher").sort("teacher")
        .iter_rows(named=True)
    }


def gate_result(report: dict | None, file: Path) -> dict:
    """A gate report's verdict (reports/gates/<stage>.json): passed, expectations evaluated and failed."""
    if report is None:
        return {"file": str(file), "success": None}
    return {"file": str(file)} | {key: report.get(key) for key in ("success", "evaluated", "failed")}


def selection_summary(rows: pl.DataFrame) -> dict:
    """What the select stage kept of its input and why it dropped the rest."""
    dropped = rows.filter(~pl.col("keep"))
    if "drop_reason" not in dropped.columns:
        dropped = dropped.with_columns(pl.lit("unrecorded").alias("drop_reason"))
    drops = dropped.group_by("drop_reason").len().sort("drop_reason").iter_rows()
    clusters = rows.filter(pl.col("keep"))["select_cluster"].n_unique() if "select_cluster" in rows.columns else None
    return {"input_rows": rows.height, "kept": rows.filter(pl.col("keep")).height,
            "drop_reasons": {str(reason): count for reason, count in drops}, "clusters": clusters}


def training_facts(params: params_module.TrainParams, manifest: pl.DataFrame, data_hash: str, metrics: dict,
                   selection: dict, folder: Path) -> dict:
    """What ``lineage.json`` records: the facts known when ``folder`` was trained. ``data_hash``: the hash of the
    training pairs (as distill.transfer.training.trained_on records it); ``metrics``: the run's
    (started_from, steps, first_loss, final_loss); ``selection``: ``selection_summary`` plus the select
    gate's ``gate_result`` under "gate"."""
    inputs = manifest.unique("source", keep="first", maintain_order=True)
    return {
        "model": str(folder),
        "base_model": params.student,
        "started_from": metrics.get("started_from") or params.student,
        "objective": params.objective,
        "params_hash": content_hash(params.model_dump()),
        "train_params": params.model_dump(mode="json"),
        "training": {key: metrics.get(key) for key in ("steps", "first_loss", "final_loss")},
        "rows": {"count": manifest.height,
                 "selected": manifest.filter(pl.col("source") == "select").height,
                 "replayed": manifest.filter(pl.col("source") == "replay").height,
                 "data_hash": data_hash,
                 "inputs": {row["input_file"]: row["input_md5"] for row in inputs.iter_rows(named=True)}},
        "teachers": teacher_calls(manifest),
        "selection": selection,
        "git": git_state(),
    }


def write_lineage(folder: Path, manifest: pl.DataFrame, facts: dict) -> None:
    """The manifest, the facts and the card (without evaluation) into the checkpoint ``folder``."""
    write_parquet(manifest, folder / MANIFEST)
    write_json(facts, folder / FACTS)
    write_text(model_card(facts), folder / CARD)


def read_facts(folder: Path) -> dict:
    """A checkpoint's ``lineage.json``; NotTrainedHere when the folder lacks the train stage's manifest."""
    if not (folder / MANIFEST).is_file() or not (folder / FACTS).is_file():
        raise NotTrainedHere(
            f"{folder}: no {MANIFEST} and {FACTS} in it, so it was not trained by this pipeline's train stage "
            f"(stages/train.py writes them into data/train/model); run `dvc repro train`, or pass that folder")
    return json.loads((folder / FACTS).read_text(encoding="utf-8"))


def model_index(facts: dict, evaluation: dict) -> list[dict]:
    """The card's ``model-index`` block: this model's eval score, and the other systems' for comparison."""
    metric = evaluation.get("metric", "score")
    dataset = {"name": f"{evaluation.get('task', 'task')} held-out eval", "type": str(evaluation.get("task", "eval"))}
    metrics = [{"type": metric, "name": f"{metric} ({system})", "value": evaluation[system]}
               for system in SYSTEMS if isinstance(evaluation.get(system), int | float)]
    return [{"name": Path(facts.get("model", "model")).name,
             "results": [{"task": {"type": "text-generation"}, "dataset": dataset, "metrics": metrics}]}]


def front_matter(facts: dict, evaluation: dict | None) -> dict:
    front = {"base_model": facts["base_model"]} if facts.get("base_model") else {}
    if facts.get("license"):
        front["license"] = facts["license"]
    front |= {"library_name": "transformers", "pipeline_tag": "text-generation",
              "tags": ["distillation", "knowledge-distillation", f"objective-{facts['objective']}"]}
    if evaluation:
        front["model-index"] = model_index(facts, evaluation)
    return front


def evaluation_section(evaluation: dict | None) -> list[str]:
    if not evaluation:
        return ["Not evaluated when trained: the evaluate stage scores this model on the held-out set "
                "(metrics/eval.json, reports/eval.md), and the full card with the eval table is "
                "reports/model_card.md."]
    metric = evaluation.get("metric", "score")
    lines = [f"Held-out set: {evaluation.get('rows')} rows of task `{evaluation.get('task')}`, metric `{metric}`.", "",
             f"| system | {metric} |", "|---|---|"]
    lines += [f"| {label} | {evaluation[system]:.3f} |" for system, label in SYSTEMS.items()
              if isinstance(evaluation.get(system), int | float)]
    if evaluation.get("gap_closed") is not None:
        lines += ["", f"Gap closed (student after - before, over teacher - student before): "
                  f"{evaluation['gap_closed']:.3f}."]
    if evaluation.get("protocol"):
        lines += ["", f"Protocol: `{yaml.safe_dump(evaluation['protocol'], default_flow_style=True).strip()}`."]
    return lines


def model_card(facts: dict, evaluation: dict | None = None) -> str:
    """A Hugging Face model card (README.md: YAML front matter, then markdown) of a checkpoint.

    ``facts``: the checkpoint's ``lineage.json`` (``read_facts(folder)``; ``training_facts`` writes it): base_model,
    objective, train_params, training (steps, losses), rows (count, selected, replayed, data_hash, inputs),
    teachers (per name: rows, calls, prompt_tokens, completion_tokens, and cost_usd when priced: the facts of
    ``distill.lineage.model_lineage(folder)["facts"]`` are), selection (kept, drop reasons, clusters, gate), git
    (commit, dirty), and optionally license.
    ``evaluation``: None at training time (the card says where the eval will be), or metrics/eval.json's content:
    the scores of student_before, student_after, teacher and baseline_sft (optional) in [0, 1], metric, task,
    rows, protocol (sampling settings) and gap_closed. With it the card has the eval table and a ``model-index``
    block in its front matter."""
    front = yaml.safe_dump(front_matter(facts, evaluation), sort_keys=False, allow_unicode=True)
    rows, git, train = facts["rows"], facts.get("git") or {}, facts.get("train_params") or {}
    training = facts.get("training") or {}
    losses = " -> ".join(f"{loss:.4f}" for loss in (training.get("first_loss"), training.get("final_loss"))
                         if loss is not None) or "not logged"
    lines = [f"# {Path(facts.get('model', 'model')).name}: a distilled student", "",
             f"The student `{facts['base_model']}` trained with objective `{facts['objective']}` by the train stage of "
             "this distillation pipeline. `distill lineage --model <this folder>` lists every row it was trained on "
             "with its teacher call and cost.", "", "## Training", "",
             f"- objective: `{facts['objective']}`, started from `{facts.get('started_from')}`",
             f"- {training.get('steps')} steps of batch {train.get('batch_size')}, learning rate "
             f"{train.get('learning_rate')}, loss {losses}",
             f"- train params hash `{facts.get('params_hash')}` (all train params: lineage.json)", "",
             "## Training data", "",
             f"- rows trained on: {rows['count']} ({rows['selected']} selected, {rows['replayed']} replayed general "
             f"rows); table hash `{rows['data_hash']}`"]
    lines += [f"- from `{file}`" + (f" (md5 `{md5}`)" if md5 else "") for file, md5 in rows.get("inputs", {}).items()]
    lines += teachers_section(facts.get("teachers") or {}) + selection_section(facts.get("selection") or {})
    lines += ["", "## Provenance", "",
              (f"- git commit `{git['commit']}`" + (" (with uncommitted changes)" if git.get("dirty") else "")
               if git.get("commit") else "- not trained in a git repository"),
              # no training time: the same inputs must give the same checkpoint folder, byte for byte
              "", "## Evaluation", ""]
    lines += evaluation_section(evaluation)
    return f"---\n{front}---\n\n" + "\n".join(lines) + "\n"


def teachers_section(teachers: dict) -> list[str]:
    lines = ["", "## Teachers", ""]
    if not teachers:
        return lines + ["No teacher calls recorded for these rows."]
    priced = all("cost_usd" in calls for calls in teachers.values())
    lines += ["| teacher | rows | calls | prompt tokens | completion tokens |" + (" cost (USD) |" if priced else ""),
              "|---|---|---|---|---|" + ("---|" if priced else "")]
    for name, calls in teachers.items():
        lines.append(f"| {name} | {calls['rows']} | {calls['calls']} | {calls['prompt_tokens']} | "
                     f"{calls['completion_tokens']} |" + (f" {calls['cost_usd']:.4f} |" if priced else ""))
    if not priced:
        lines += ["", "Cost at the teachers' prices (params.yaml teacher.price): `distill lineage --model`, "
                  "reports/model_card.md."]
    return lines


def selection_section(selection: dict) -> list[str]:
    if not selection:
        return []
    gate = selection.get("gate") or {}
    drops = ", ".join(f"{reason} {count}" for reason, count in selection.get("drop_reasons", {}).items()) or "none"
    gates = (f"- gates passed before training: {', '.join(SELECTED_GATES)}; the select gate ({gate.get('file')}): "
             f"{gate.get('evaluated')} expectations evaluated, {gate.get('failed')} failed" if gate.get("success")
             else "- no passed select gate report: trained outside the pipeline")
    return ["", "## Selection", "",
            f"- kept {selection.get('kept')} of {selection.get('input_rows')} rows"
            + (f" in {selection['clusters']} diversity clusters" if selection.get("clusters") else "")
            + f"; dropped: {drops}", gates]
