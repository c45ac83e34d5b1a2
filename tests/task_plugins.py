"""A user's task functions, for tests/test_scorers.py: named by ``module:function`` in ``task``."""

from __future__ import annotations


def length_ratio(prediction: str | None, reference: str) -> float:
    """A metric: the shorter length over the longer (1.0 for equal lengths, 0.0 for a missing answer)."""
    if prediction is None or not (prediction or reference):
        return float(prediction is not None)
    return min(len(prediction), len(reference)) / max(len(prediction), len(reference))


def contains_reference(instruction: str, response: str, reference: str | None) -> bool | None:
    """A three-argument verifier: the reference appears in the answer (None: no reference)."""
    return None if not reference else reference in response


def verify(instruction: str, response: str) -> bool | None:
    """The module's own two-argument verifier: answers must not be empty."""
    return bool(response.strip())


NOT_A_FUNCTION = 42
