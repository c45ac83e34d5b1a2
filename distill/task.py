"""What the student is being taught, and how an answer is checked: the ``task`` section of params.yaml.

The seam has two halves, both optional:

- ``task.module``: a module, or a ``module:attribute`` object, that may supply any of
  ``verify(instruction, response[, reference]) -> bool | None`` (is a teacher answer right; None: cannot
  tell), ``metric(prediction, reference) -> float`` (one eval answer's score, in [0, 1]) and
  ``group(instruction) -> str`` (a group per eval row, for evaluate's per-group table).
- built-in scorers (distill/measure/scorers.py: exact_match, numeric, choice, regex, rouge_l, chrf, code)
  or a user's ``module:function``, named by ``task.metric`` and ``task.verifier``; they take precedence
  over the module's. A scorer used as a verifier accepts an answer scoring at least ``task.min_score``
  against the row's reference, and cannot tell (None) when the row has no reference.

Defaults: metric = the module's, else exact match after normalisation; verifier = the module's ``verify``,
else none (verification off); group = the module's, else one group, ``all``. Score drops answers the
verifier rejects (``drop_reason: verifier_failed``) and self_knowledge's ``verifier`` filter
keeps only those it accepts. ``task: null`` is the generic task; the offline demo's is ``demo.words``.
Every verifier is called ``verify(instruction, response, reference)``; a module's two-argument one is
wrapped (``with_reference``), so tasks written before references existed keep working.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from distill.measure.scorers import SCORERS, exact_match, normalise, scorer
from distill.params import TaskParams

__all__ = ["Task", "exact_match", "load", "normalise", "with_reference"]

Verify = Callable[[str, str, "str | None"], "bool | None"]


@dataclass(frozen=True)
class Task:
    name: str
    verify: Verify | None  # verify(instruction, response, reference); None: verification is off
    metric: Callable[[str | None, str], float]
    group: Callable[[str], str]
    metric_name: str = "exact_match"


def with_reference(verify: Callable) -> Verify:
    """``verify`` as a three-argument verifier: one taking (instruction, response) ignores the reference."""
    try:
        parameters = list(inspect.signature(verify).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): assume the current form
        return verify
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return verify

    @functools.wraps(verify)
    def two_arguments(instruction: str, response: str, reference: str | None = None) -> bool | None:
        return verify(instruction, response)
    return two_arguments


def scorer_verifier(score: Callable[[str | None, str], float], min_score: float) -> Verify:
    """A scorer as a verifier: accepts at ``min_score`` or more; None when the row has no reference."""
    def verify(instruction: str, response: str, reference: str | None) -> bool | None:
        if reference is None or not reference.strip():
            return None
        return score(response, reference) >= min_score
    verify.__name__ = getattr(score, "__name__", "verify")
    return verify


def module_target(module: str) -> object:
    module_name, _, attribute = module.partition(":")
    try:
        target = importlib.import_module(module_name)
        return getattr(target, attribute) if attribute else target
    except (ImportError, AttributeError) as error:
        raise ValueError(f"task {module!r} cannot be loaded (task.module): {error}") from None


def load(task: TaskParams | str | None) -> Task:
    """The task ``task`` describes (a bare module name or None stands for ``TaskParams(module=...)``);
    ValueError naming the key (task.module, task.metric, task.verifier, task.pattern) when it cannot be built."""
    if not isinstance(task, TaskParams):
        task = TaskParams(module=task)
    target = module_target(task.module) if task.module else None
    if task.metric:
        metric = scorer(task.metric, task, "task.metric")
        metric_name = task.metric if task.metric in SCORERS else getattr(metric, "__name__", task.metric)
    else:
        metric = getattr(target, "metric", exact_match)
        metric_name = getattr(metric, "__name__", "metric")
    if task.verifier in SCORERS:
        verify = scorer_verifier(scorer(task.verifier, task, "task.verifier"), task.min_score)
    elif task.verifier:
        verify = with_reference(scorer(task.verifier, task, "task.verifier"))
    else:
        module_verify = getattr(target, "verify", None)
        verify = None if module_verify is None else with_reference(module_verify)
    return Task(task.module or "generic", verify, metric, getattr(target, "group", lambda instruction: "all"),
                metric_name)
