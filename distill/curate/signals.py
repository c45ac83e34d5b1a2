"""Score signals that need a model or the teacher: the judge's rating, IFD, a reward model's score.

Each is computed only when switched on (``score.judge``, ``score.ifd``, ``score.reward_model``) and
only for the rows that passed the checks; the selection policy thresholds and ranks on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from distill import params as params_module
from distill.chat import frame_prompts
from distill.curate.checks import SIGNALS
from distill.student import load_tokenizer

if TYPE_CHECKING:  # the engine (openai, aiohttp) is imported only when the judge is on
    from distill.teacher.engine import Ledger


def judge_ratings(rows: pl.DataFrame, params: params_module.Params, store_path: Path, send: Callable[..., Ledger]
                  ) -> tuple[pl.DataFrame, int]:
    """The primary teacher's rating of each row (the judge section's prompt), through its own request store, and how
    many of the store's lines were quarantined on opening it (distill/teacher/store.py)."""
    from distill.elicit.judge import grade
    from distill.elicit.session import Session
    from distill.teacher.engine import EngineSettings
    from distill.teacher.store import open_store

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
    student = params.student
    template = Path(student.prompt_template).read_text(encoding="utf-8")
    prompts = frame_prompts(load_tokenizer(student.model), rows, template)
    if settings.ifd:
        from distill.curate.ifd import ifd_scores

        signals = signals.with_columns(ifd=pl.Series(ifd_scores(student.model, prompts, rows["response"].to_list(),
                                                                student.seed, device=student.device),
                                                     dtype=pl.Float64))
    if settings.reward_model:
        from distill.curate.reward import reward_scores

        signals = signals.with_columns(reward=pl.Series(reward_scores(settings.reward_model, prompts,
                                                                      rows["response"].to_list(),
                                                                      device=student.device), dtype=pl.Float64))
    return signals.with_columns([pl.lit(None, dtype).alias(name) for name, dtype in SIGNALS.items()
                                 if name not in signals.columns]), quarantined
