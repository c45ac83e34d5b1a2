"""What a transfer method trains on: one bundle, built once by the train stage and handed to each method.

Each method module (``distill/transfer/kd.py``, ``distill/transfer/on_policy.py``, ``distill/transfer/similarity.py``,
``distill/transfer/dpo.py``, ``distill/transfer/rl.py``) exposes ``make_trainer(model, tokenizer, params, args, data)``
and returns a ready transformers/TRL ``Trainer``; the train stage runs it (resuming from a checkpoint
when there is one) and saves the model, so saving, checkpoints and metrics are the same for all.

A row's target is its answer (``response``), or with ``student.reasoning: keep`` the teacher's reasoning inside the
student's think tags, then the answer (``distill.reasoning.render``). The pairs carry it to sft, similarity and
on_policy (GOLD's teacher-answer batches); kd is refused with keep at load (its stored log-probs cover the answer
tokens only); dpo and rl rank the feedback pairs as they are (answers without reasoning) after an SFT start that
learnt the targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from distill import params as params_module
from distill import paths
from distill.chat import frame_prompts, frame_turns, render_example
from distill.entry import StageError
from distill.reasoning import render
from distill.records import conform
from distill.student import load_tokenizer
from distill.transfer import kd, replay

TRAINING_ROW = {"id": pl.String, "instruction": pl.String, "input": pl.String, "context": pl.String,
                "response": pl.String, "reasoning": pl.String, "keep": pl.Boolean}


@dataclass(frozen=True)
class TrainData:
    pairs: list[dict]  # {"prompt", "completion"}: the selected rows (plus replayed general rows), SFT format
    kd: object | None = None  # distill.transfer.kd.KDExamples with train.objective kd
    preferences: list[dict] = field(default_factory=list)  # {"prompt", "chosen", "rejected"}: dpo, rl
    local_teacher: str | None = None  # a Hugging Face id or path: on_policy, similarity
    ids: list[str] = field(default_factory=list)  # each pair's row id, in pairs' order (the checkpoint's manifest)


def think_tags(student: params_module.StudentParams) -> tuple[str, str] | None:
    """The tags a target's reasoning is written in; None with ``student.reasoning: drop`` (the answer alone)."""
    return student.think_tags if student.reasoning == "keep" else None


def targets(rows: pl.DataFrame, tags: tuple[str, str] | None) -> list[str]:
    """What the student learns to write for each row: the answer, or (``tags``) the reasoning in them, then the
    answer; a row without reasoning (or without the column: replayed rows, rows from before it) is its answer."""
    if tags is None or "reasoning" not in rows.columns:
        return rows["response"].to_list()
    return [render(reasoning, response, tags) for reasoning, response in zip(rows["reasoning"], rows["response"],
                                                                             strict=True)]


def training_pairs(rows: pl.DataFrame, template: str, tokenizer, tags: tuple[str, str] | None = None) -> list[dict]:
    """Prompt/completion pairs rendered as the student sees them (its chat template, if it has one): TRL trains on
    the completion only. ``tags``: train on the reasoning too (``think_tags``); None: on the answer alone."""
    kept = rows.filter(pl.col("keep"))
    if kept.is_empty():
        raise StageError(f"{paths.SELECT_ROWS} has no rows with keep = true: nothing to train on")
    wanted = targets(kept, tags)
    pairs = [render_example(tokenizer, turns, target)
             for turns, target in zip(frame_turns(kept, template), wanted, strict=True)]
    if tags is not None:
        check_reasoning_rendered(tokenizer, wanted, [completion for _, completion in pairs], tags)
    return [{"prompt": prompt, "completion": completion} for prompt, completion in pairs]


def check_reasoning_rendered(tokenizer, wanted: list[str], completions: list[str], tags: tuple[str, str]) -> None:
    """Refuse a chat template that rewrites the reasoning out of the answer (DeepSeek-R1 distills' templates keep
    only the text after </think>): the student would silently learn the answer alone."""
    for target, completion in zip(wanted, completions, strict=True):
        if target.startswith(tags[0]) and target not in completion:
            raise StageError(
                f"student.reasoning=keep: the chat template of {getattr(tokenizer, 'name_or_path', '')} rewrites the "
                f"target {target[:80]!r}... into {completion[:80]!r}..., so the reasoning would not be trained on. Use "
                "a chat template that keeps the think block of the last assistant turn (Qwen3's does), or set "
                "student.reasoning: drop")


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
    """The kept rows and, with train.replay, the general rows mixed in (TRAINING_ROW)."""
    kept = conform(rows.filter(pl.col("keep")), TRAINING_ROW)
    return pl.concat([kept, replay.general_rows(params.replay, kept.height, params.seed)])


def training_data(rows: pl.DataFrame, template: str, params: params_module.TrainParams,
                  features: pl.DataFrame | None = None, preferences: pl.DataFrame | None = None,
                  tags: tuple[str, str] | None = None) -> TrainData:
    """Everything ``params.objective`` trains on, each part checked before any training starts: the selected
    rows (with their reasoning in ``tags``, ``think_tags``), and the teacher's log-probs (``features``, kd) or the
    feedback pairs (``preferences``, dpo, rl)."""
    rows = training_rows(rows, params)
    pairs = training_pairs(rows, template, load_tokenizer(params.student), tags)
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
        ids=rows["id"].to_list(),
    )
