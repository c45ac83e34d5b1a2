"""Labelling: the teacher answers every seed input (with k demonstrations and chain of thought, if on).
With ``feature`` in ``generate.elicit`` the same requests also ask for token log-probabilities."""

from __future__ import annotations

import polars as pl

from distill.elicit.answering import answer, as_inputs, prompt_of
from distill.elicit.output import MethodOutput
from distill.elicit.session import Session

METHOD = "labelling"


def run(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame) -> MethodOutput:
    rows, rejects = answer(session, as_inputs(seeds), METHOD)
    return MethodOutput(rows=rows, rejects=rejects, metrics={"inputs": seeds.height,
                                                              "template_hash": prompt_of(session.params.generate).hash})
