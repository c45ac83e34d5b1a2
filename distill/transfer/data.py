"""What a transfer method trains on: one bundle, built once by the train stage and handed to each method.

Each method module (``distill/transfer/kd.py``, ``distill/transfer/on_policy.py``, ``distill/transfer/similarity.py``,
``distill/transfer/dpo.py``, ``distill/transfer/rl.py``) exposes ``make_trainer(model, tokenizer, params, args, data)``
and returns a ready transformers/TRL ``Trainer``; the train stage runs it (resuming from a checkpoint
when there is one) and saves the model, so saving, checkpoints and metrics are the same for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from distill import params as params_module
from distill import paths
from distill.chat import frame_prompts, frame_turns, render_example
from distill.entry import StageError
from distill.records import conform
from distill.student import load_tokenizer
from distill.transfer import kd, replay

TRAINING_ROW = {"id": pl.String, "instruction": pl.String, "input": pl.String, "context": pl.String,
                "response": pl.String, "keep": pl.Boolean}


@dataclass(frozen=True)
class TrainData:
    pairs: list[dict]  # {"prompt", "completion"}: the selected rows (plus replayed general rows), SFT format
    kd: object | None = None  # distill.transfer.kd.KDExamples with train.objective kd
    preferences: list[dict] = field(default_factory=list)  # {"prompt", "chosen", "rejected"}: dpo, rl
    local_teacher: str | None = None  # a Hugging Face id or path: on_policy, similarity


def training_pairs(rows: pl.DataFrame, template: str, tokenizer) -> list[dict]:
    """Prompt/completion pairs rendered as the student sees them (its chat template, if it has one): TRL trains on
    the completion only."""
    kept = rows.filter(pl.col("keep"))
    if kept.is_empty():
        raise StageError(f"{paths.SELECT_ROWS} has no rows with keep = true: nothing to train on")
    pairs = [render_example(tokenizer, turns, response)
             for turns, response in zip(frame_turns(kept, template), kept["response"], strict=True)]
    return [{"prompt": prompt, "completion": completion} for prompt, completion in pairs]


def kd_examples(rows: pl.DataFrame, features: pl.DataFrame, template: str, params: params_module.TrainParams
                ) -> kd.KDExamples:
    """The selected rows with the teacher's stored top-k, after checking that KD can run at all."""
    if features.is_empty():
        raise StageError(f"train.objective=kd needs the teacher's log-probs, but {paths.GENERATE_FEATURES} is empty: "
                         "add feature to generate.elicit and set generate.top_logprobs (e.g. 20)")
    kd.check_tokenizer(features, params.student)
    found = kd.examples(rows, features, template, load_tokenizer(params.student), params.max_length)
    if not found.with_teacher:
        raise StageError(f"train.objective=kd: no selected row's answer has its tokens in {paths.GENERATE_FEATURES}")
    print(f"train: kd on {found.with_teacher} rows with teacher log-probs, {found.without_teacher} on "
          "cross-entropy only")
    return found


def preference_pairs(frame: pl.DataFrame, template: str, method: str, student: str) -> list[dict]:
    """The feedback method's pairs as TRL's prompt/chosen/rejected rows (train.objective dpo and rl)."""
    if frame.is_empty():
        raise StageError(f"train.objective={method} needs preference pairs, but {paths.GENERATE_PREFERENCES} is empty: "
                         "add feedback to generate.elicit (the teacher grades and corrects the student)")
    tokenizer = load_tokenizer(student)
    return [{"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]}
            for prompt, row in zip(frame_prompts(tokenizer, frame, template), frame.iter_rows(named=True), strict=True)]


def training_rows(rows: pl.DataFrame, params: params_module.TrainParams) -> pl.DataFrame:
    """The kept rows and, with train.replay, the general rows mixed in (id, instruction, input, response, keep)."""
    kept = conform(rows.filter(pl.col("keep")), TRAINING_ROW)
    return pl.concat([kept, replay.general_rows(params.replay, kept.height, params.seed)])


def training_data(rows: pl.DataFrame, template: str, params: params_module.TrainParams,
                  features: pl.DataFrame | None = None, preferences: pl.DataFrame | None = None) -> TrainData:
    """Everything ``params.objective`` trains on, each part checked before any training starts: the selected
    rows, and the teacher's log-probs (``features``, kd) or the feedback pairs (``preferences``, dpo, rl)."""
    rows = training_rows(rows, params)
    pairs = training_pairs(rows, template, load_tokenizer(params.student))
    local_teacher = None
    if params.objective in ("on_policy", "similarity"):
        if params.local_teacher is None:
            raise StageError(f"train.objective={params.objective} needs a local Hugging Face teacher: set "
                             "train.local_teacher to a model id or path (e.g. a larger model sharing the "
                             "student's tokenizer)")
        local_teacher = params.local_teacher
    return TrainData(
        pairs=pairs,
        kd=kd_examples(rows, features if features is not None else pl.DataFrame(), template, params)
        if params.objective == "kd" else None,
        preferences=preference_pairs(preferences if preferences is not None else pl.DataFrame(), template,
                                     params.objective, params.student) if params.objective in ("dpo", "rl") else [],
        local_teacher=local_teacher,
    )
