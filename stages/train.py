"""Training: the student learns from the teacher by ``train.objective``, beside a plain-SFT baseline.

Reads:   data/select/rows.parquet (rows with keep = true), the student (``student.model``), and by method:
         data/generate/features.parquet (kd), data/generate/preferences.parquet (dpo, rl), a local teacher
         (on_policy, similarity: ``train.local_teacher``), general rows (``train.replay``)
Writes:  data/train/model/ (safetensors + tokenizer + resolved params, and what it was trained on:
         training_rows.parquet, lineage.json, the model card README.md; distill/model_card.py),
         data/train/baseline/ (the same for the plain-SFT baseline when train.objective is not sft),
         data/train/log.parquet,
         reports/plots/train_loss.csv, metrics/train.json, logs/train.json (runtime and throughput of this run)
Params:  train, student (its model, prompt template, seed and max_length through train; ``student.reasoning``
         and ``think_tags``: whether the targets carry the teacher's reasoning)

The data each method trains on is distill/transfer/data.py; one training run, the same for every
method (checkpoints, resuming, saving whole), is distill/transfer/training.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.entry import guarded
from distill.io import atomic_dir, atomic_path, content_hash, replace_dir, write_json, write_parquet
from distill.model_card import file_md5, gate_result, selection_summary, trained_rows, training_facts, write_lineage
from distill.transfer.data import TrainData, think_tags, training_data
from distill.transfer.training import STARTS_FROM_SFT, loss_log, train


def staging(folder: Path) -> Path:
    """Where ``folder`` is trained and given its lineage before it replaces ``folder`` whole, so that a kill never
    leaves a model folder without its lineage; a fixed name, so that a killed run's checkpoints (keyed by the
    folder) are resumed."""
    return folder.with_name(f".{folder.name}.staging")


def train_baseline(pairs: list[dict], params: params_module.TrainParams, baseline_dir: Path) -> float | None:
    """Beside any method but sft, the plain-SFT baseline on the same rows and steps, so that evaluate shows
    whether distillation helped, trained into ``staging(baseline_dir)``; with sft ``baseline_dir`` holds only a
    note. Its final loss."""
    if params.objective == "sft":
        with atomic_dir(baseline_dir) as folder:
            (folder / "NO_BASELINE.txt").write_text("train.objective is sft: data/train/model is the plain-SFT "
                                                    "model, so there is no separate baseline.\n")
        return None
    print(f"train: the plain-SFT baseline, same {len(pairs)} rows and {params.max_steps} steps")
    history = train(pairs, params.model_copy(update={"objective": "sft"}), staging(baseline_dir))
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return float(losses[-1]) if losses else None


def record_lineage(params: params_module.TrainParams, rows: pl.DataFrame, data: TrainData,
                   trained: dict[Path, tuple[params_module.TrainParams, dict]], rows_file: Path | None,
                   select_gate: Path | None) -> None:
    """Into each trained folder's staging folder (``trained``: folder -> its params and metrics): the rows it was
    trained on, the facts of its training and its model card (distill/model_card.py)."""
    replay = Path(params.replay.data)
    inputs = {"select": (str(rows_file) if rows_file else "(in memory)", file_md5(rows_file) if rows_file else None),
              "replay": (str(replay), file_md5(replay) if params.replay.ratio and replay.is_file() else None)}
    manifest = trained_rows(data.ids, data.pairs, rows.filter(pl.col("keep")), inputs)
    report = json.loads(select_gate.read_text(encoding="utf-8")) if select_gate and select_gate.is_file() else None
    selection = selection_summary(rows) | {"gate": gate_result(report, select_gate)}
    for folder, (folder_params, metrics) in trained.items():
        facts = training_facts(folder_params, manifest, content_hash(data.pairs), metrics, selection, folder)
        write_lineage(staging(folder), manifest, facts)


def run(params: params_module.TrainParams, rows: pl.DataFrame, features: pl.DataFrame, preferences: pl.DataFrame,
        model_dir: Path, baseline_dir: Path, tags: tuple[str, str] | None = None, rows_file: Path | None = None,
        select_gate: Path | None = None) -> tuple[pl.DataFrame, dict]:
    """Train the student into ``model_dir`` (and the baseline into ``baseline_dir``); the loss log and metrics.
    ``tags``: the targets carry the teacher's reasoning inside them (distill.transfer.data.think_tags).
    ``rows_file`` (the file ``rows`` was read from) and ``select_gate`` (its gate report) go into each folder's
    lineage (``record_lineage``)."""
    template = Path(params.prompt_template).read_text(encoding="utf-8")
    data = training_data(rows, template, params, features, preferences, tags)
    replayed = len(data.pairs) - rows.filter(pl.col("keep")).height
    if tags:
        reasoned = (rows.filter(pl.col("keep") & (pl.col("reasoning").str.strip_chars() != "")).height
                    if "reasoning" in rows.columns else 0)
        print(f"train: student.reasoning keep: {reasoned} of {len(data.pairs)} targets carry the teacher's reasoning "
              f"inside {tags[0]} {tags[1]}, the rest are the answer alone")
    baseline = train_baseline(data.pairs, params, baseline_dir)  # first: on_policy, dpo and rl start from it
    if params.objective != "sft":  # the baseline was trained on the same rows; in place whole before they start
        sft = params.model_copy(update={"objective": "sft"})
        record_lineage(params, rows, data, {baseline_dir: (sft, {"steps": params.max_steps, "final_loss": baseline,
                                                                 "started_from": params.student})},
                       rows_file, select_gate)
        replace_dir(staging(baseline_dir), baseline_dir)
    start = str(baseline_dir) if params.objective in STARTS_FROM_SFT and params.start_from_sft else None
    print(f"train: {params.objective}, {len(data.pairs)} examples ({replayed} replayed general rows), "
          f"{params.max_steps} steps of {params.batch_size}, student {params.student}"
          + (f", starting from the SFT baseline {start}" if start else ""))
    started = time.monotonic()
    history = train(data, params, staging(model_dir), start)
    log = loss_log(history, params.objective)
    summary = next((entry for entry in history if "train_runtime" in entry), {})
    metrics = {
        "examples": len(data.pairs),
        "replayed_general_rows": replayed,
        "preference_pairs": len(data.preferences),
        "steps": int(summary.get("step", 0)) or params.max_steps,
        "first_loss": log["loss"][0] if log.height else None,
        "final_loss": log["loss"][-1] if log.height else None,
        "processes": int(summary.get("processes", 1)),  # data-parallel processes that trained it (train.processes)
        "objective": params.objective,
        "started_from": start or params.student,
        "local_teacher": data.local_teacher,
        "kd_rows_with_teacher": data.kd.with_teacher if data.kd else None,
        "kd_rows_without_teacher": data.kd.without_teacher if data.kd else None,
        "baseline_sft_final_loss": baseline,
        # rl: the reward model's pairwise accuracy on the preference pairs (distill/transfer/rl.py)
        "reward_accuracy": next((entry["reward_accuracy"] for entry in history if "reward_accuracy" in entry), None),
        "lora": params.lora.enabled,
        "params_hash": content_hash(params.model_dump()),
        run_log.RUN: {"train_runtime_s": round(float(summary.get("train_runtime", time.monotonic() - started)), 2),
                      "samples_per_s": round(float(summary.get("train_samples_per_second", 0.0)), 2)},
    }
    record_lineage(params, rows, data, {model_dir: (params, metrics)}, rows_file, select_gate)
    replace_dir(staging(model_dir), model_dir)
    return log, metrics


def read_optional(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path) if path.exists() else pl.DataFrame()


def main() -> None:
    started = time.monotonic()
    params = params_module.load()
    log, metrics = run(params.train, pl.read_parquet(paths.SELECT_ROWS),
                       read_optional(paths.GENERATE_FEATURES), read_optional(paths.GENERATE_PREFERENCES),
                       paths.TRAIN_MODEL, paths.TRAIN_BASELINE, think_tags(params.student), paths.SELECT_ROWS,
                       paths.GATE_REPORTS / "select.json")
    facts = metrics.pop(run_log.RUN)
    write_parquet(log, paths.TRAIN_LOG)
    with atomic_path(paths.TRAIN_LOSS_PLOT) as tmp:
        log.select("step", "loss").write_csv(tmp)
    write_json(metrics, paths.metrics("train"))
    run_log.record("train", started, facts)
    print(f"train: loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} in {facts['train_runtime_s']} s")


if __name__ == "__main__":
    guarded("train", main)
