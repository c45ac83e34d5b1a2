"""Quality scoring: per-row checks, a quality score, and a keep/drop mark with a reason.

Reads:   data/generate/rows.parquet
Writes:  data/score/rows.parquet (SCORED: every row, marked), metrics/score.json
Params:  score
Run:     python -m stages.score

Checks (each its own column): answer length within bounds, truncation by max_tokens
(``finish_reason == "length"``), refusal / "as an AI" patterns, repetition (the share of word
3-grams that repeat an earlier one: generation loops), the character set (control characters
or U+FFFD: broken decoding), and the demo skill's verifier where the instruction is checkable.
Signals that need a model (the teacher's judge rating, IFD, a reward model) are columns only:
thresholds on them are the selection policy's (stages/select.py, ``select.min`` / ``select.max``).
Nothing is deleted: dropped rows keep their reason so that ``distill lineage`` can explain them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from stages import params as params_module
from stages import paths, skill
from stages.entry import guarded
from stages.io import write_json, write_parquet
from stages.prompts import student_prompt
from stages.records import SCORED, conform

if TYPE_CHECKING:  # the engine (openai, aiohttp) is imported only when the judge is on
    from stages.teachers.engine import Ledger

REFUSAL = r"(?i)\b(i'?m sorry|i cannot|i can'?t|as an ai|i am unable|i'm unable)\b"
BAD_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]"  # control characters (not tab/newline) and U+FFFD


def repetition(text: pl.Expr) -> pl.Expr:
    """Share of word 3-grams that repeat an earlier one; 0 for answers under four words."""
    words = text.str.to_lowercase().str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    trigrams = words.list.eval(pl.concat_str([pl.element(), pl.element().shift(-1), pl.element().shift(-2)],
                                             separator=" ").drop_nulls())
    total = trigrams.list.len()
    return pl.when(total > 0).then(1 - trigrams.list.n_unique() / total).otherwise(0.0)


def verify(instruction: str, response: str) -> bool | None:
    """The demo skill's checker; None when the instruction is not checkable."""
    return None if skill.parse(instruction) is None else skill.is_correct(instruction, response)


SIGNALS = {"id": pl.String, "judge_rating": pl.Float64, "judge_critique": pl.String, "ifd": pl.Float64,
           "reward": pl.Float64}


def score(rows: pl.DataFrame, params: params_module.ScoreParams, signals: pl.DataFrame | None = None) -> pl.DataFrame:
    """Checks, quality and the keep/drop mark. ``signals`` (SIGNALS, by id) are the judge's rating, IFD and
    reward computed by ``model_signals`` for the rows that passed the checks; absent, they are null."""
    length = pl.col("response").str.len_chars()
    signals = signals if signals is not None else pl.DataFrame(schema=SIGNALS)
    checked = rows.with_columns(
        length_ok=length.is_between(params.min_response_chars, params.max_response_chars),
        truncated=pl.col("finish_reason") == "length",
        refusal=pl.col("response").str.contains(REFUSAL),
        repetition=repetition(pl.col("response").str.replace_all(r"\s+", " ")),
        charset_ok=~pl.col("response").str.contains(BAD_CHARS),
        verified=(
            pl.struct("instruction", "response").map_elements(
                lambda row: verify(row["instruction"], row["response"]), return_dtype=pl.Boolean
            )
            if params.verify
            else pl.lit(None, dtype=pl.Boolean)
        ),
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


def judge_ratings(rows: pl.DataFrame, params: params_module.Params, store_path: Path, send: Callable[..., Ledger]
                  ) -> tuple[pl.DataFrame, int]:
    """The primary teacher's rating of each row (generate.judge's prompt), through its own request store, and how
    many of the store's lines were quarantined on opening it (stages/teachers/store.py)."""
    from stages.methods.judge import grade
    from stages.methods.session import Session
    from stages.teachers.engine import EngineSettings
    from stages.teachers.store import open_store

    settings = EngineSettings.from_env()  # a bad DISTILL_* value fails before anything starts
    with open_store(store_path, settings.store_wait_s) as store:
        session = Session(params, store, send, settings)
        graded = grade(session, list(rows.select("instruction", "input", "response").iter_rows()), "score")
        quarantined = len(store.quarantined)
    return pl.DataFrame({
        "id": rows["id"],
        "judge_rating": [g.judgement.score if g.judgement else None for g in graded],
        "judge_critique": [g.judgement.critique if g.judgement else f"not rated: {g.reason}" for g in graded],
    }, schema={"id": pl.String, "judge_rating": pl.Float64, "judge_critique": pl.String}), quarantined


def model_signals(rows: pl.DataFrame, params: params_module.Params, store_path: Path,
                  send: Callable[..., Ledger]) -> tuple[pl.DataFrame | None, int]:
    """The switched-on signals that need a model or the teacher, for ``rows`` (None when all are off), and how
    many lines of the judge's request store were quarantined."""
    settings = params.score
    if not (settings.judge or settings.ifd or settings.reward_model):
        return None, 0
    signals, quarantined = rows.select("id"), 0
    if settings.judge:
        ratings, quarantined = judge_ratings(rows, params, store_path, send)
        signals = signals.join(ratings, on="id", how="left")
    student = params.generate.student
    template = Path(student.prompt_template).read_text(encoding="utf-8")
    prompts = [student_prompt(template, r["instruction"], r["input"]) for r in rows.iter_rows(named=True)]
    if settings.ifd:
        from stages.ifd import ifd_scores

        signals = signals.with_columns(ifd=pl.Series(ifd_scores(student.model, prompts, rows["response"].to_list(),
                                                                student.seed), dtype=pl.Float64))
    if settings.reward_model:
        from stages.reward import reward_scores

        signals = signals.with_columns(reward=pl.Series(reward_scores(settings.reward_model, prompts,
                                                                      rows["response"].to_list()), dtype=pl.Float64))
    return signals.with_columns([pl.lit(None, dtype).alias(name) for name, dtype in SIGNALS.items()
                                 if name not in signals.columns]), quarantined


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
           for name in ("judge_rating", "ifd", "reward")},
    }


def run(params: params_module.Params, rows_path: Path = paths.GENERATE_ROWS, out_path: Path = paths.SCORE_ROWS,
        store_path: Path = paths.SCORE_STORE, *, send: Callable[..., Ledger]) -> tuple[pl.DataFrame, int]:
    """Checks first; the costly signals (judge, IFD, reward) only for the rows that passed them. Returns the
    scored rows and how many lines of the judge's request store were quarantined. ``send`` sends the judge's
    requests (the Prefect teacher flow, from main)."""
    rows = pl.read_parquet(rows_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.touch()  # a DVC out even when no judge is asked: the ratings paid for survive every run
    checked = score(rows, params.score)
    signals, quarantined = model_signals(checked.filter(pl.col("keep")).select(rows.columns), params, store_path, send)
    scored = score(rows, params.score, signals) if signals is not None else checked
    write_parquet(scored, out_path)
    return scored, quarantined


def main() -> None:
    from flows.teacher import run_plan  # the orchestrator, handed to the library

    scored, quarantined = run(params_module.load(), send=run_plan)
    metrics = summarise(scored) | {"store_lines_quarantined": quarantined}
    write_json(metrics, paths.metrics("score"))
    print(f"score: kept {metrics['kept']} of {metrics['rows']} rows; dropped {metrics['dropped_by_reason']}")


if __name__ == "__main__":
    guarded("score", main)
