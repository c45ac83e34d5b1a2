"""Per-row quality checks of teacher answers, a quality score, and a keep/drop mark with a reason.

Checks (each its own column): answer length within bounds, truncation by max_tokens
(``finish_reason == "length"``), refusal / "as an AI" patterns, repetition (the share of word
3-grams that repeat an earlier one: generation loops), the character set (control characters
or U+FFFD: broken decoding), and the task's verifier (distill/task.py) where it can tell. Signals
that need a model (the judge's rating, IFD, a reward model; distill/curate/signals.py) are columns
only: thresholds on them are the selection policy's. Nothing is deleted: a dropped row keeps its
reason, so that ``distill lineage`` can explain it.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from distill import params as params_module
from distill.records import SCORED, conform
from distill.task import with_reference

REFUSAL = r"(?i)\b(i'?m sorry|i cannot|i can'?t|as an ai|i am unable|i'm unable)\b"
BAD_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]"  # control characters (not tab/newline) and U+FFFD


def repetition(text: pl.Expr) -> pl.Expr:
    """Share of word 3-grams that repeat an earlier one; 0 for answers under four words."""
    words = text.str.to_lowercase().str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    trigrams = words.list.eval(pl.concat_str([pl.element(), pl.element().shift(-1), pl.element().shift(-2)],
                                             separator=" ").drop_nulls())
    total = trigrams.list.len()
    return pl.when(total > 0).then(1 - trigrams.list.n_unique() / total).otherwise(0.0)


SIGNALS = {"id": pl.String, "judge_rating": pl.Float64, "judge_critique": pl.String, "ifd": pl.Float64,
           "reward": pl.Float64}


Verifier = Callable[..., "bool | None"]  # the task's (instruction, response, reference): None when it cannot tell


def verified(rows: pl.DataFrame, verify: Verifier) -> pl.Expr:
    """The verifier's verdict per row, given the row's seed reference (null when the rows carry none)."""
    check = with_reference(verify)  # a two-argument verifier (instruction, response) ignores the reference
    reference = pl.col("reference") if "reference" in rows.columns else pl.lit(None, dtype=pl.String)
    return pl.struct("instruction", "response", reference.alias("reference")).map_elements(
        lambda row: check(row["instruction"], row["response"], row["reference"]), return_dtype=pl.Boolean)


def score(rows: pl.DataFrame, params: params_module.ScoreParams, signals: pl.DataFrame | None = None,
          verify: Verifier | None = None) -> pl.DataFrame:
    """Checks, quality and the keep/drop mark. ``signals`` (SIGNALS, by id) are the judge's rating, IFD and
    reward computed by ``model_signals`` for the rows that passed the checks; absent, they are null.
    ``verify`` is the task's verifier, called with each row's ``reference`` (None: the task has none,
    ``verified`` is null)."""
    length = pl.col("response").str.len_chars()
    signals = signals if signals is not None else pl.DataFrame(schema=SIGNALS)
    checked = rows.with_columns(
        length_ok=length.is_between(params.min_response_chars, params.max_response_chars),
        truncated=pl.col("finish_reason") == "length",
        refusal=pl.col("response").str.contains(REFUSAL),
        repetition=repetition(pl.col("response").str.replace_all(r"\s+", " ")),
        charset_ok=~pl.col("response").str.contains(BAD_CHARS),
        verified=verified(rows, verify) if params.verify and verify is not None else pl.lit(None, dtype=pl.Boolean),
        # rejection sampling's pass rate as a signal ranked higher-first: the questions its teacher found hardest
        difficulty=(1 - pl.col("pass_rate")) if "pass_rate" in rows.columns else pl.lit(None, dtype=pl.Float64),
    ).join(conform(signals, SIGNALS), on="id", how="left")
    # Ordered: the first failing check is the reason recorded.
    failures = [
        ("refusal", pl.col("refusal") & params.drop_refusals),
        ("truncated", pl.col("truncated") & params.drop_truncated),
        ("length", ~pl.col("length_ok")),
        ("repetition", pl.col("repetition") > params.max_repetition),
        ("charset", ~pl.col("charset_ok") & params.drop_bad_charset),
        ("verifier_failed", pl.col("verified").fill_null(True).not_()),
    ]
    reason = pl.when(failures[0][1]).then(pl.lit(failures[0][0]))
    for name, failed in failures[1:]:
        reason = reason.when(failed).then(pl.lit(name))
    passes = [
        pl.col("length_ok").cast(pl.Float64),
        (~pl.col("truncated")).cast(pl.Float64),
        (~pl.col("refusal")).cast(pl.Float64),
        1 - pl.col("repetition"),
        pl.col("charset_ok").cast(pl.Float64),
        pl.col("verified").cast(pl.Float64),  # null (uncheckable) is left out of the mean
        pl.col("judge_rating"),  # null (not rated) too
    ]
    scored = checked.with_columns(
        quality=pl.mean_horizontal(passes),
        drop_reason=reason.otherwise(pl.lit(None, dtype=pl.String)),
    ).with_columns(keep=pl.col("drop_reason").is_null())
    return conform(scored, SCORED)


def summarise(scored: pl.DataFrame) -> dict:
    dropped = scored.filter(~pl.col("keep"))
    return {
        "rows": scored.height,
        "kept": scored.height - dropped.height,
        "dropped": dropped.height,
        "dropped_by_reason": dict(dropped["drop_reason"].value_counts().sort("drop_reason").iter_rows()),
        "mean_quality": round(float(scored["quality"].mean() or 0.0), 4),
        "verified_fraction": round(float(scored["verified"].cast(pl.Float64).mean() or 0.0), 4),
        **{f"mean_{name}": None if scored[name].null_count() == scored.height else round(float(scored[name].mean()), 4)
           for name in ("judge_rating", "ifd", "reward", "difficulty")},
    }
