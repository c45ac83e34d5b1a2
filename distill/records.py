"""Column contracts of every stage output (one record schema for all stages).

Every row carries its ``id`` and its provenance; later stages add columns and never
drop rows silently: lossy stages mark rows (``keep``, ``drop_reason``, ``dup_of``) and
the training stage filters on ``keep``. Signals are joined by ``id``, never by position.
"""

from __future__ import annotations

import json

import polars as pl

from distill.io import content_hash

# ingest: data/ingest/{train,eval}.parquet
SEED = {
    "id": pl.String,  # content hash of (instruction, input, and context when there is one)
    "instruction": pl.String,  # the task; for a chat seed, its final user turn
    "input": pl.String,  # optional text the instruction applies to; "" when absent
    "context": pl.String,  # a chat seed's earlier turns as a JSON list of {role, content}; "" when none
    "reference": pl.String,  # expected answer (required in the eval split), else null
    "split": pl.String,  # "train" | "eval"
    "source_file": pl.String,
    "source_line": pl.Int64,  # 1-based line (JSONL/CSV) or row (parquet) in source_file
    "source_hash": pl.String,  # hash of the whole source file
}

# generate: data/generate/rows.parquet; one row per teacher answer (choice)
GENERATED = {
    "id": pl.String,  # hash of (request_key, choice_index)
    "seed_id": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
    "method": pl.String,  # elicitation method: labelling, expansion, curation, feedback or self_knowledge
    "teacher": pl.String,  # name of the teacher that wrote the response ("student" for self_knowledge)
    "model_requested": pl.String,
    "model_answered": pl.String,  # the model the endpoint says answered
    "template_hash": pl.String,
    "sampling_hash": pl.String,
    "request_key": pl.String,  # key in the teacher request store
    "response_id": pl.String,
    "choice_index": pl.Int64,
    "created_at": pl.String,  # ISO time the answer was received
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "finish_reason": pl.String,
    "instruction": pl.String,
    "input": pl.String,
    "context": pl.String,  # the seed's earlier chat turns (SEED.context); "" when none
    "reference": pl.String,  # the seed's reference answer, when it has one (the task's verifier checks against it)
    "response": pl.String,  # the answer (without the reasoning)
    "reasoning": pl.String,  # the teacher's reasoning: message.reasoning_content, a <think> block or the text before
    # the chain-of-thought's Answer: line; null when it gave none
    "input_origin": pl.String,  # "seed", "expansion round <r>" or "curation: <topic> / <subtopic>"
    "parent_key": pl.String,  # store key of the request that wrote the input; null for seed inputs
    "judge_score": pl.Float64,  # the judge's grade in [0, 1] where one graded the row, else null
    "pass_rate": pl.Float64,  # rejection sampling: share of its question's n answers that passed, else null
}

# generate: data/generate/rejects.parquet; everything that did not become a row, with the reason
REJECT = {
    "method": pl.String,
    "seed_id": pl.String,  # id of the input (a seed, or an input a teacher wrote)
    "request_key": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
    "reason": pl.String,  # short class, e.g. "teacher_error", "empty_answer"
    "detail": pl.String,
}

# generate: data/generate/features.parquet; the teacher's token log-probabilities (feature method),
# one row per generated row that has them (empty when generate.top_logprobs is null); see distill/elicit/features.py
FEATURES = {
    "id": pl.String,  # the generated row's id
    "tokenizer": pl.String,  # identity of the tokenizer the ids belong to: <path-or-id>@<sha of tokenizer.json>
    "k": pl.Int64,  # alternatives per position (generate.top_logprobs)
    "token_ids": pl.List(pl.Int32),  # the chosen token per position
    "top_ids": pl.List(pl.Int32),  # positions x k, flattened; -1 pads when the endpoint gave fewer than k
    "top_logprobs": pl.List(pl.Float16),  # same layout as top_ids; -inf pads
    "tail_mass": pl.List(pl.Float32),  # per position: 1 - sum(exp(top logprobs)), clipped at 0
}

# generate: data/generate/preferences.parquet; the feedback method's pairs, ready for DPO and reward models
PREFERENCE = {
    "id": pl.String,  # hash of (seed_id, rejected)
    "seed_id": pl.String,
    "instruction": pl.String,
    "input": pl.String,
    "context": pl.String,  # the seed's earlier chat turns (SEED.context); "" when none
    "chosen": pl.String,  # the teacher's correction
    "rejected": pl.String,  # the student's answer
    "score_chosen": pl.Float64,  # the teacher's correction is taken as fully right: 1.0
    "score_rejected": pl.Float64,  # the teacher's grade of the student's answer, in [0, 1]
    "critique": pl.String,
    "teacher": pl.String,  # the judge that graded and corrected
    "student": pl.String,  # the model that wrote `rejected`
    "student_confidence": pl.Float64,  # mean log-prob of the student's answer
    "request_key": pl.String,  # the judge request in the store
}

# score: data/score/rows.parquet = GENERATED + these
SCORES = {
    "length_ok": pl.Boolean,
    "truncated": pl.Boolean,
    "refusal": pl.Boolean,
    "repetition": pl.Float64,  # share of the response's word 3-grams that repeat an earlier one (0 = none)
    "charset_ok": pl.Boolean,  # printable characters only (no control characters, no U+FFFD)
    "verified": pl.Boolean,  # null when verification is off or the skill cannot check it
    "judge_rating": pl.Float64,  # the teacher's grade in [0, 1] (score.judge), else null
    "judge_critique": pl.String,
    "ifd": pl.Float64,  # instruction-following difficulty with the student (score.ifd), else null
    "reward": pl.Float64,  # the reward model's score (score.reward_model), else null
    "difficulty": pl.Float64,  # 1 - pass_rate (generate.rejection), else null
    "quality": pl.Float64,  # in [0, 1]; higher is better; used to pick among duplicates
    "keep": pl.Boolean,
    "drop_reason": pl.String,  # null when keep
}
SCORED = GENERATED | SCORES

# dedupe: data/dedupe/rows.parquet = SCORED + these (keep/drop_reason updated: duplicate, eval_overlap, and
# contaminated for a row that shares an n-gram with a benchmark item)
DEDUPED = SCORED | {
    "norm_hash": pl.String,  # hash of the normalised instruction + input
    "dup_of": pl.String,  # id of the kept row of its duplicate cluster, for rows dropped as duplicates
    "dup_kind": pl.String,  # how it joined that cluster: "exact", "near" (MinHash) or "semantic" (embeddings)
    "dup_similarity": pl.Float64,  # its similarity to the kept row when the two were paired directly, else null
    "contaminated_by": pl.String,  # id of the eval row it near-duplicates, else null
    "contamination_similarity": pl.Float64,
}

# select: data/select/rows.parquet = DEDUPED + these (keep/drop_reason updated)
SELECTED = DEDUPED | {
    "select_rank": pl.Int64,  # place in the selection order (from 1) of a row that passed the thresholds, else null
    "select_cluster": pl.Int64,  # its diversity cluster (0 when diversity is off), else null
}

# train: data/train/log.parquet
TRAIN_LOG = {
    "step": pl.Int64,
    "loss": pl.Float64,
    "learning_rate": pl.Float64,
    "grad_norm": pl.Float64,
    "objective": pl.String,  # "loss": never negative (CE, divergences, DPO); "policy": rl's objective, any sign
    "ce": pl.Float64,  # objective kd: the loss's cross-entropy term on the teacher's answer (null otherwise)
    "kd": pl.Float64,  # objective kd: the loss's divergence term to the teacher's distribution (null otherwise)
}

# train: data/train/model/training_rows.parquet (and baseline/): every row the checkpoint was trained on, in order
TRAINED_ROW = {
    "id": pl.String,  # the row's id in its input table (replayed general rows: general-<i>)
    "content_hash": pl.String,  # content_hash of the {"prompt", "completion"} pair exactly as the row was trained on
    "source": pl.String,  # "select" (data/select/rows.parquet, keep) or "replay" (train.replay.data)
    "input_file": pl.String,  # the table the row came from
    "input_md5": pl.String,  # md5 of that file when training read it (what dvc.lock records for a dep)
    "teacher": pl.String,  # the teacher that wrote the answer; null for replayed rows
    "request_key": pl.String,  # its call in the request store (data/store/generate.jsonl); null for replayed rows
    "prompt_tokens": pl.Int64,  # the call's usage (shared by the answers of one call); null for replayed rows
    "completion_tokens": pl.Int64,
}

# evaluate: data/evaluate/predictions.parquet
SYSTEMS = ("student_before", "student_after", "teacher")
OPTIONAL_SYSTEMS = ("baseline_sft",)  # the plain-SFT baseline, trained beside a train.objective other than sft
PREDICTION = {
    "id": pl.String,  # eval seed id
    "system": pl.String,  # one of SYSTEMS
    "instruction": pl.String,
    "reference": pl.String,
    "sample": pl.Int64,  # which of the answers drawn for this prompt (0 when one is drawn: evaluate.samples)
    "prediction": pl.String,
    "score": pl.Float64,  # the task's metric for this answer, in [0, 1]
}


# sweep: reports/plots/sweep_selected.csv and sweep_random.csv, one row per trained student
SWEEP_POINT = {
    "teacher_tokens": pl.Int64,  # teacher tokens the subset's rows cost
    "rows": pl.Int64,  # rows the student was trained on
    "fraction": pl.Float64,  # share of the generated rows
    "score": pl.Float64,  # the student's eval score, in [0, 1]
}

# benchmark: data/benchmark/samples.parquet, lm-eval's logged samples, one row per system and item
BENCHMARK_SAMPLE = {
    "benchmark": pl.String,  # benchmarks.sets[].name
    "task": pl.String,  # the lm-eval task that scored it (a group's subtask)
    "system": pl.String,  # one of SYSTEMS
    "doc_id": pl.Int64,  # the item's index in the task's split
    "prompt": pl.String,  # the task's prompt (the teacher's user message; a student's text before any chat template)
    "target": pl.String,  # the reference, as the task renders it
    "response": pl.String,  # the system's whole answer
    "answer": pl.String,  # the answer after the task's filters (what the metric compares)
    "score": pl.Float64,  # the task's metric on this item
}

def tie_break(seed: int) -> pl.Expr:
    """A seeded, reproducible order of rows by id (ties in a ranking, random subsets). sha256 rather than
    polars' hash(): that one is not stable across polars versions."""
    return pl.col("id").map_elements(lambda row_id: content_hash([seed, row_id]), return_dtype=pl.String)


def context_text(context: str | None) -> str:
    """A chat seed's earlier turns as plain text ("" when none): part of what makes two tasks the same."""
    return "\n".join(turn["content"] for turn in json.loads(context)) if context else ""


def task_texts(frame: pl.DataFrame) -> list[str]:
    """A row's task: earlier chat turns, instruction and input (not the answer): what duplicates, contamination
    and diversity are judged on."""
    contexts = frame["context"] if "context" in frame.columns else [""] * frame.height
    return [f"{context_text(context)}\n{instruction}\n{input_text}".strip()
            for context, instruction, input_text in zip(contexts, frame["instruction"], frame["input"], strict=True)]


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


# Columns a frame may lack (rows from before chat seeds, inputs a teacher wrote): filled in by conform.
OPTIONAL_COLUMNS = {"context": "", "reference": None, "reasoning": None, "pass_rate": None}


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast to the contract's columns, in order; a missing column is an error (but for the optional
    ones, filled with their default)."""
    frame = frame.with_columns(pl.lit(OPTIONAL_COLUMNS[name], schema[name]).alias(name) for name in OPTIONAL_COLUMNS
                               if name in schema and name not in frame.columns)
    if "context" in schema:  # "" is no context; a null one (a frame built without the column) means the same
        frame = frame.with_columns(pl.col("context").fill_null(""))
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise ValueError(f"missing columns {missing}; expected {list(schema)}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
