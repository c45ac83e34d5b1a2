"""What the student is being taught: the task named by ``task`` in params.yaml.

A task is a module, or a ``module:attribute`` object, that may supply any of

- ``verify(instruction, response) -> bool | None``: whether a teacher answer is right (None: cannot
  tell). Score drops answers it rejects (``drop_reason: wrong``) and self_knowledge's ``verifier``
  filter keeps only answers it accepts. No ``verify``: verification is off.
- ``metric(prediction, reference) -> float``: the eval score of one answer, in [0, 1] (evaluate, sweep).
  No ``metric``: exact match after normalisation (``exact_match`` below).
- ``group(instruction) -> str``: a group name per eval row, for evaluate's per-group table. No
  ``group``: one group, ``all``.

``task: null`` is the generic task: no verifier, exact match, one group. The offline demo's task
is ``demo.words``; real tasks (open-ended, math, code) plug in here the same way.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass


def normalise(text: str) -> str:
    """NFKC, whitespace collapsed and trimmed: what exact match compares."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def exact_match(prediction: str | None, reference: str) -> float:
    """1.0 when the prediction equals the reference after normalisation, else 0.0."""
    return float(prediction is not None and normalise(prediction) == normalise(reference))


@dataclass(frozen=True)
class Task:
    name: str
    verify: Callable[[str, str], bool | None] | None
    metric: Callable[[str | None, str], float]
    group: Callable[[str], str]

    @property
    def metric_name(self) -> str:
        return getattr(self.metric, "__name__", "metric")


def load(name: str | None) -> Task:
    """The task called ``name`` (``module`` or ``module:attribute``); ValueError naming it when missing."""
    if name is None:
        return Task("generic", None, exact_match, lambda instruction: "all")
    module_name, _, attribute = name.partition(":")
    try:
        target = importlib.import_module(module_name)
        if attribute:
            target = getattr(target, attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"task {name!r} cannot be loaded: {error}") from None
    return Task(name, getattr(target, "verify", None), getattr(target, "metric", exact_match),
                getattr(target, "group", lambda instruction: "all"))
