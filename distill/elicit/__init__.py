"""Elicitation methods: each turns inputs into knowledge examples by asking the teacher (or the student).

``generate.elicit`` lists the ones a run uses, in order; each is ``run(session, seeds, evals)
-> MethodOutput``. ``feature`` is not a module: it makes the answer step (labelling, expansion,
curation) also ask for token log-probabilities (see distill/elicit/features.py).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from distill.elicit import curation, expansion, feedback, labelling, self_knowledge
from distill.elicit.answering import ANSWER_METHODS, sampling_of
from distill.elicit.features import FeatureTokenizer, split_features
from distill.elicit.session import Session
from distill.params import Params
from distill.records import FEATURES, empty
from distill.teacher import capabilities

RUNNERS: dict[str, Callable] = {
    "labelling": labelling.run,
    "expansion": expansion.run,
    "curation": curation.run,
    "feedback": feedback.run,
    "self_knowledge": self_knowledge.run,
}


def to_run(methods: list[str]) -> list[str]:
    """The method modules a ``generate.elicit`` list runs: ``feature`` alone means labelling with log-probs."""
    names = [m for m in methods if m != "feature"]
    if "feature" in methods and "labelling" not in names:
        names.insert(0, "labelling")
    return names


def check_capabilities(params: Params) -> None:
    """Before anything is sent or a stand-in started: a plan a teacher cannot serve costs nothing."""
    for teacher in params.all_teachers:
        capabilities.check(sampling_of(params.generate), capabilities.of(teacher), teacher.name)


def elicit(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame, tokenizer: FeatureTokenizer | None
           ) -> tuple[dict, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Run the methods of ``generate.elicit``: their outputs by method, then rows, rejects, preferences and
    features (answers without usable log-probs move to the rejects)."""
    outputs = {method: RUNNERS[method](session, seeds, evals) for method in to_run(session.params.generate.elicit)}
    rows = pl.concat([out.rows for out in outputs.values()])
    rejects = pl.concat([out.rejects for out in outputs.values()])
    preferences = pl.concat([out.preferences for out in outputs.values()])
    features = empty(FEATURES)
    if tokenizer is not None:
        answered = rows.filter(pl.col("method").is_in(ANSWER_METHODS))
        kept, rejects, features = split_features(answered, rejects, session.store, session.params, tokenizer)
        rows = pl.concat([kept, rows.filter(~pl.col("method").is_in(ANSWER_METHODS))])
    return outputs, rows, rejects, preferences, features
