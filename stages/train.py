"""Training: supervised fine-tuning of the student on the kept teacher answers (TRL SFTTrainer).

Reads:   data/select/rows.parquet (rows with keep = true), the student (``train.student``)
Writes:  data/train/model/ (safetensors + tokenizer + resolved params), data/train/baseline/ (the plain-SFT
         baseline when train.method is not sft), data/train/log.parquet,
         reports/plots/train_loss.csv, metrics/train.json
Params:  train
Run:     python -m stages.train

Shaped like TRL's own scripts: build the dataset, the config, the trainer; train; save.
Loss is on the completion only (TRL's prompt-completion format). ``train.lora.enabled``
trains LoRA adapters with PEFT and merges them at save, so the checkpoint loads anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import polars as pl

from stages import kd, paths
from stages import params as params_module
from stages.entry import StageError, guarded
from stages.io import atomic_path, content_hash, write_json, write_parquet
from stages.prompts import student_prompt
from stages.records import TRAIN_LOG, conform
from stages.student import load_model, load_tokenizer


def training_pairs(rows: pl.DataFrame, template: str) -> list[dict]:
    kept = rows.filter(pl.col("keep"))
    if kept.is_empty():
        raise StageError(f"{paths.SELECT_ROWS} has no rows with keep = true: nothing to train on")
    return [
        {"prompt": student_prompt(template, row["instruction"], row["input"]), "completion": row["response"]}
        for row in kept.select("instruction", "input", "response").iter_rows(named=True)
    ]


def sft_config(params: params_module.TrainParams, output_dir: str):
    from trl import SFTConfig

    kd = params.method == "kd"  # the KD data is tokenised here (stages/kd.py); TRL must keep its columns
    return SFTConfig(
        dataset_kwargs={"skip_prepare_dataset": True} if kd else None,
        remove_unused_columns=not kd,
        output_dir=output_dir,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler,
        warmup_steps=params.warmup_steps,
        max_length=params.max_length,
        activation_checkpointing=params.activation_checkpointing,
        completion_only_loss=True,
        logging_steps=max(1, params.max_steps // 50),
        save_strategy="no",
        report_to="none",
        seed=params.seed,
        data_seed=params.seed,
        use_cpu=not _has_accelerator(),
        dataloader_num_workers=0,
    )


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def lora_config(params: params_module.LoraParams):
    from peft import LoraConfig

    return LoraConfig(
        r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
        target_modules=params.target_modules, task_type="CAUSAL_LM",
    )


TRAINED_ON = "distill_train_params.json"  # in the model folder: the params and the data it was trained on


def trained_on(pairs: list[dict], params: params_module.TrainParams) -> dict:
    """What makes a checkpoint: the train params and the training pairs (the sweep reuses a match)."""
    return params.model_dump() | {"params_hash": content_hash(params.model_dump()), "data_hash": content_hash(pairs)}


def train(pairs: list[dict], params: params_module.TrainParams, model_dir: Path,
          kd_data: kd.KDExamples | None = None) -> list[dict]:
    """Train and save the student to ``model_dir``; return the trainer's log history. ``pairs`` are the
    prompt/completion rows (SFT); with train.method kd, ``kd_data`` are the same rows with the teacher's top-k."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(params.student)
    model = load_model(params.student, params.seed)
    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    common = {"model": model, "args": sft_config(params, str(staging / "trainer")), "processing_class": tokenizer,
              "peft_config": lora_config(params.lora) if params.lora.enabled else None}
    if params.method == "kd":
        if kd_data is None:
            raise StageError("train.method=kd needs the teacher's log-probs (stages.kd.examples)")
        trainer = kd.trainer_class()(train_dataset=Dataset.from_list(kd_data.examples),
                                     data_collator=kd.Collator(tokenizer.pad_token_id), kd=params.kd, **common)
    else:
        trainer = SFTTrainer(train_dataset=Dataset.from_list(pairs), **common)
    trainer.train()
    trained = trainer.model.merge_and_unload() if params.lora.enabled else trainer.model
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    trained.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / TRAINED_ON).write_text(json.dumps(trained_on(pairs, params), indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staging, model_dir)  # the checkpoint appears whole or not at all
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


def loss_log(history: list[dict]) -> pl.DataFrame:
    entries = [entry for entry in history if "loss" in entry]
    frame = pl.DataFrame(
        {
            "step": [entry["step"] for entry in entries],
            "loss": [float(entry["loss"]) for entry in entries],
            "learning_rate": [float(entry.get("learning_rate", 0.0)) for entry in entries],
            "grad_norm": [float(entry.get("grad_norm", float("nan"))) for entry in entries],
        }
    )
    return conform(frame, TRAIN_LOG)


def main() -> None:
    params = params_module.load().train
    rows = pl.read_parquet(paths.SELECT_ROWS)
    template = Path(params.prompt_template).read_text(encoding="utf-8")
    pairs = training_pairs(rows, template)
    kd_data = kd_examples(rows, template, params) if params.method == "kd" else None
    print(f"train: {params.method}, {len(pairs)} examples, {params.max_steps} steps of {params.batch_size}, "
          f"student {params.student}")
    started = time.monotonic()
    history = train(pairs, params, paths.TRAIN_MODEL, kd_data)
    wall = time.monotonic() - started
    baseline = train_baseline(pairs, params)
    log = loss_log(history)
    write_parquet(log, paths.TRAIN_LOG)
    with atomic_path(paths.TRAIN_LOSS_PLOT) as tmp:
        log.select("step", "loss").write_csv(tmp)
    summary = next((entry for entry in history if "train_runtime" in entry), {})
    metrics = {
        "examples": len(pairs),
        "steps": params.max_steps,
        "first_loss": log["loss"][0] if log.height else None,
        "final_loss": log["loss"][-1] if log.height else None,
        "train_runtime_s": round(float(summary.get("train_runtime", wall)), 2),
        "samples_per_s": round(float(summary.get("train_samples_per_second", 0.0)), 2),
        "method": params.method,
        "kd_rows_with_teacher": kd_data.with_teacher if kd_data else None,
        "kd_rows_without_teacher": kd_data.without_teacher if kd_data else None,
        "baseline_sft_final_loss": baseline,
        "lora": params.lora.enabled,
        "params_hash": content_hash(params.model_dump()),
    }
    write_json(metrics, paths.metrics("train"))
    print(f"train: loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} in {metrics['train_runtime_s']} s")


if __name__ == "__main__":
    guarded("train", main)
