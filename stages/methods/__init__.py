"""Elicitation methods: each turns inputs into knowledge examples by asking the teacher (or the student).

``generate.methods`` lists the ones a run uses, in order; each is ``run(session, seeds, evals)
-> MethodOutput``. ``feature`` is not a module: it makes the answer step (labelling, expansion,
curation) also ask for token log-probabilities (see stages/features.py).
"""

from __future__ import annotations

from collections.abc import Callable

from stages.methods import curation, expansion, feedback, labelling, self_knowledge

RUNNERS: dict[str, Callable] = {
    "labelling": labelling.run,
    "expansion": expansion.run,
    "curation": curation.run,
    "feedback": feedback.run,
    "self_knowledge": self_knowledge.run,
}


def to_run(methods: list[str]) -> list[str]:
    """The method modules a ``generate.methods`` list runs: ``feature`` alone means labelling with log-probs."""
    names = [m for m in methods if m != "feature"]
    if "feature" in methods and "labelling" not in names:
        names.insert(0, "labelling")
    return names
