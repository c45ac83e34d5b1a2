"""Training: the student learns from the teacher by ``train.method``, beside a plain-SFT baseline.

Reads:   data/select/rows.parquet (rows with keep = true), the student (``train.student``), and by method:
         data/generate/features.parquet (kd), data/generate/preferences.parquet (dpo, rl), a local teacher
         (on_policy, similarity: ``train.local_teacher``), general rows (``train.replay``)
Writes:  data/train/model/ (safetensors + tokenizer + resolved params), data/train/baseline/ (the plain-SFT
         baseline when train.method is not sft), data/train/log.parquet,
         reports/plots/train_loss.csv, metrics/train.json
Params:  train
Run:     python -m stages.train

Shaped like TRL's own scripts: build the data, the config, the trainer; train; save. ``sft`` is TRL's
SFTTrainer (loss on the completion only); every other method is a module whose ``make_trainer`` builds
its trainer (stages/train_data.py), while checkpoints, resuming, saving and metrics live here, the same
for all. ``train.lora.enabled`` trains LoRA adapters with PEFT and merges them at save, so the
checkpoint loads anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import polars as pl

from stages import kd, paths, replay
from stages import params as params_module
from stages.entry import StageError, guarded
from stages.io import atomic_path, content_hash, write_json, write_parquet
from stages.prompts import student_prompt
from stages.records import TRAIN_LOG, conform
from stages.student import load_model, load_tokenizer
from stages.train_args import (
    checkpoint_dir,
    common_args,
    lora_config,
    no_final_checkpoint,
    resume_point,
    sft_config,
)
from stages.train_data import TrainData


def training_pairs(rows: pl.DataFrame, template: str) -> list[dict]:
    kept = rows.filter(pl.col("keep"))
    if kept.is_empty():
        raise StageError(f"{paths.SELECT_ROWS} has no rows with keep = true: nothing to train on")
    return [
        {"prompt": student_prompt(template, row["instruction"], row["input"]), "completion": row["response"]}
        for row in kept.select("instruction", "input", "response").iter_rows(named=True)
    ]


# Methods that learn from the student's own answers or rank them: a raw student's answers are noise, so by
# default they start from the plain-SFT baseline (as GKD, DPO and RLHF recipes start from an SFT model).
STARTS_FROM_SFT = ("on_policy", "dpo", "rl")
TRAINED_ON = "distill_train_params.json"  # in the model folder: the params and the data it was trained on

def trained_on(pairs: list[dict], params: params_module.TrainParams) -> dict:
    """What makes a checkpoint: the train params and the training pairs (the sweep reuses a match)."""
    return params.model_dump() | {"params_hash": content_hash(params.model_dump()), "data_hash": content_hash(pairs)}


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data: TrainData):
    if params.method == "sft":
        from datasets import Dataset

        from stages.guards import sft_trainer_class

        return sft_trainer_class()(model=model, args=sft_config(params, args), processing_class=tokenizer,
                                   train_dataset=Dataset.from_list(data.pairs), reference_kl=params.reference_kl,
                                   peft_config=lora_config(params.lora) if params.lora.enabled else None)
    from stages import dpo, on_policy, rl, similarity  # imported here: each loads its TRL trainer

    # train.method -> the module whose make_trainer(model, tokenizer, params, args, data) builds its trainer
    methods = {"kd": kd, "on_policy": on_policy, "similarity": similarity, "dpo": dpo, "rl": rl}
    return methods[params.method].make_trainer(model, tokenizer, params, args, data)


def train(data: TrainData | list[dict], params: params_module.TrainParams, model_dir: Path,
          start: str | None = None) -> list[dict]:
    """Train with ``params.method`` and save the student to ``model_dir``; return the trainer's log history.
    ``start`` is the model to start from (default ``params.student``). A run killed midway resumes from its
    last checkpoint in ``.distill/checkpoints`` when it is started again with the same params and data."""
    import torch

    if isinstance(data, list):
        data = TrainData(pairs=data)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(params.student)
    model = load_model(start or params.student, params.seed)
    kd_print = [len(data.kd.examples), data.kd.with_teacher, data.kd.examples[:50]] if data.kd else None
    checkpoints = checkpoint_dir(model_dir, params, content_hash([data.pairs, data.preferences, start, kd_print]))
    trainer = make_trainer(model, tokenizer, params, common_args(params, checkpoints), data)
    trainer.add_callback(no_final_checkpoint())
    last = resume_point(checkpoints)
    if last:
        print(f"train: resuming {model_dir} from its last checkpoint, {last}")
    trainer.train(resume_from_checkpoint=last)
    trained = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    trained.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / TRAINED_ON).write_text(json.dumps(trained_on(data.pairs, params), indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staging, model_dir)  # the checkpoint appears whole or not at all
    shutil.rmtree(checkpoints, ignore_errors=True)
    return trainer.state.log_history


def kd_examples(rows: pl.DataFrame, template: str, params: params_module.TrainParams) -> kd.KDExamples:
    """The selected rows with the teacher's stored top-k, after checking that KD can run at all."""
    features = pl.read_parquet(paths.GENERATE_FEATURES) if paths.GENERATE_FEATURES.exists() else pl.DataFrame()
    if features.is_empty():
        raise StageError(f"train.method=kd needs the teacher's log-probs, but {paths.GENERATE_FEATURES} is empty: "
                         "add feature to generate.methods and set generate.top_logprobs (e.g. 20)")
    kd.check_tokenizer(features, params.student)
    found = kd.examples(rows, features, template, load_tokenizer(params.student), params.max_length)
    if not found.with_teacher:
        raise StageError(f"train.method=kd: no selected row's answer has its tokens in {paths.GENERATE_FEATURES}")
    print(f"train: kd on {found.with_teacher} rows with teacher log-probs, {found.without_teacher} on "
          "cross-entropy only")
    return found


def train_baseline(pairs: list[dict], params: params_module.TrainParams) -> float | None:
    """Beside any method but sft, the plain-SFT baseline on the same rows and steps (data/train/baseline), so
    that evaluate shows whether distillation helped; with sft the folder holds only a note. Its final loss."""
    if params.method == "sft":
        shutil.rmtree(paths.TRAIN_BASELINE, ignore_errors=True)
        paths.TRAIN_BASELINE.mkdir(parents=True)
        (paths.TRAIN_BASELINE / "NO_BASELINE.txt").write_text("train.method is sft: data/train/model is the plain-SFT "
                                                              "model, so there is no separate baseline.\n")
        return None
    print(f"train: the plain-SFT baseline, same {len(pairs)} rows and {params.max_steps} steps")
    history = train(pairs, params.model_copy(update={"method": "sft"}), paths.TRAIN_BASELINE)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return float(losses[-1]) if losses else None


def loss_log(history: list[dict], method: str = "sft") -> pl.DataFrame:
    entries = [entry for entry in history if "loss" in entry]
    frame = pl.DataFrame(
        {
            "step": [entry["step"] for entry in entries],
            "loss": [float(entry["loss"]) for entry in entries],
            "learning_rate": [float(entry.get("learning_rate", 0.0)) for entry in entries],
            "grad_norm": [float(entry.get("grad_norm", float("nan"))) for entry in entries],
            "objective": ["policy" if method == "rl" else "loss"] * len(entries),
        }
    )
    return conform(frame, TRAIN_LOG)


def preference_pairs(template: str, method: str) -> list[dict]:
    """The feedback method's pairs as TRL's prompt/chosen/rejected rows (train.method dpo and rl)."""
    frame = pl.read_parquet(paths.GENERATE_PREFERENCES) if paths.GENERATE_PREFERENCES.exists() else pl.DataFrame()
    if frame.is_empty():
        raise StageError(f"train.method={method} needs preference pairs, but {paths.GENERATE_PREFERENCES} is empty: "
                         "add feedback to generate.methods (the teacher grades and corrects the student)")
    return [{"prompt": student_prompt(template, row["instruction"], row["input"]), "chosen": row["chosen"],
             "rejected": row["rejected"]}
            for row in frame.select("instruction", "input", "chosen", "rejected").iter_rows(named=True)]


def training_rows(rows: pl.DataFrame, params: params_module.TrainParams) -> pl.DataFrame:
    """The kept rows and, with train.replay, the general rows mixed in (id, instruction, input, response, keep)."""
    kept = rows.filter(pl.col("keep")).select("id", "instruction", "input", "response", "keep")
    return pl.concat([kept, replay.general_rows(params.replay, kept.height, params.seed)])


def training_data(rows: pl.DataFrame, template: str, params: params_module.TrainParams) -> TrainData:
    """Everything ``params.method`` trains on, each part checked before any training starts."""
    rows = training_rows(rows, params)
    pairs = training_pairs(rows, template)
    local_teacher = None
    if params.method in ("on_policy", "similarity"):
        if params.local_teacher is None:
            raise StageError(f"train.method={params.method} needs a local Hugging Face teacher: set "
                             "train.local_teacher to a model id or path (e.g. a larger model sharing the "
                             "student's tokenizer)")
        local_teacher = params.local_teacher
    return TrainData(
        pairs=pairs,
        kd=kd_examples(rows, template, params) if params.method == "kd" else None,
        preferences=preference_pairs(template, params.method) if params.method in ("dpo", "rl") else [],
        local_teacher=local_teacher,
    )


def main() -> None:
    params = params_module.load().train
    rows = pl.read_parquet(paths.SELECT_ROWS)
    template = Path(params.prompt_template).read_text(encoding="utf-8")
    data = training_data(rows, template, params)
    replayed = len(data.pairs) - rows.filter(pl.col("keep")).height
    baseline = train_baseline(data.pairs, params)  # first: on_policy, dpo and rl start from it
    start = str(paths.TRAIN_BASELINE) if params.method in STARTS_FROM_SFT and params.start_from_sft else None
    print(f"train: {params.method}, {len(data.pairs)} examples ({replayed} replayed general rows), "
          f"{params.max_steps} steps of {params.batch_size}, student {params.student}"
          + (f", starting from the SFT baseline {start}" if start else ""))
    started = time.monotonic()
    history = train(data, params, paths.TRAIN_MODEL, start)
    wall = time.monotonic() - started
    log = loss_log(history, params.method)
    write_parquet(log, paths.TRAIN_LOG)
    with atomic_path(paths.TRAIN_LOSS_PLOT) as tmp:
        log.select("step", "loss").write_csv(tmp)
    summary = next((entry for entry in history if "train_runtime" in entry), {})
    metrics = {
        "examples": len(data.pairs),
        "replayed_general_rows": replayed,
        "preference_pairs": len(data.preferences),
        "steps": int(summary.get("step", 0)) or params.max_steps,
        "first_loss": log["loss"][0] if log.height else None,
        "final_loss": log["loss"][-1] if log.height else None,
        "train_runtime_s": round(float(summary.get("train_runtime", wall)), 2),
        "samples_per_s": round(float(summary.get("train_samples_per_second", 0.0)), 2),
        "method": params.method,
        "started_from": start or params.student,
        "local_teacher": data.local_teacher,
        "kd_rows_with_teacher": data.kd.with_teacher if data.kd else None,
        "kd_rows_without_teacher": data.kd.without_teacher if data.kd else None,
        "baseline_sft_final_loss": baseline,
        # rl: the reward model's pairwise accuracy on the preference pairs (stages/rl.py)
        "reward_accuracy": next((entry["reward_accuracy"] for entry in history if "reward_accuracy" in entry), None),
        "lora": params.lora.enabled,
        "params_hash": content_hash(params.model_dump()),
    }
    write_json(metrics, paths.metrics("train"))
    print(f"train: loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} in {metrics['train_runtime_s']} s")


if __name__ == "__main__":
    guarded("train", main)
