"""Built-in scorers: how one answer compares with its reference, a float in [0, 1].

A task picks one by name as its eval metric (``task.metric``) or as score's verifier (``task.verifier``,
accepting at ``task.min_score``), so that common tasks (math, multiple choice, open-ended text, code)
need no code of their own. Each is ``(prediction, reference) -> float``; a missing prediction (None)
scores 0. ``SCORERS`` maps a name to a factory taking the TaskParams, which is how options such as
``task.tolerance``, ``task.pattern`` and ``task.timeout_s`` reach a scorer; ``scorer`` also imports a
user's ``module:function``.
"""

from __future__ import annotations

import importlib
import math
import re
import unicodedata
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING

from distill.measure import code_check

if TYPE_CHECKING:
    from distill.params import TaskParams

Scorer = Callable[[str | None, str], float]


def normalise(text: str) -> str:
    """NFKC, whitespace collapsed and trimmed: what exact match compares."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def exact_match(prediction: str | None, reference: str) -> float:
    """1.0 when the prediction equals the reference after normalisation, else 0.0."""
    return float(prediction is not None and normalise(prediction) == normalise(reference))


# --- numbers ---------------------------------------------------------------------------------------

_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+"
# A number not glued to a word or another number; a sign; an optional "/ denominator" (a simple fraction).
NUMBER = re.compile(rf"(?<![\w./-])(-?)({_DIGITS})(?:\s*/\s*(-?)({_DIGITS}))?(?![\d/])")
LATEX_FRACTION = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def boxed(text: str) -> str | None:
    r"""The contents of the last ``\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth < 0:
            return text[begin:index]
    return None


def final_number(text: str) -> float | None:
    r"""The answer's number: inside the last ``\boxed{}``, else after GSM8K's last ``####``, else the last
    number in the text. Thousands separators, a sign, decimals and ``a/b`` fractions are read; a unit or
    ``%`` after it is ignored. None when there is no number (or a zero denominator)."""
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-").replace("{,}", ",")
    inner = boxed(text)
    text = inner if inner is not None else text.rsplit("####", 1)[-1]
    text = LATEX_FRACTION.sub(r"\1/\2", text)
    matches = NUMBER.findall(text)
    if not matches:
        return None
    sign, digits, denominator_sign, denominator = matches[-1]
    value = float(sign + digits.replace(",", ""))
    if denominator:
        divisor = float(denominator_sign + denominator.replace(",", ""))
        return None if divisor == 0 else value / divisor
    return value


def numeric(tolerance: float) -> Scorer:
    def numeric(prediction: str | None, reference: str) -> float:
        got = None if prediction is None else final_number(prediction)
        want = final_number(reference)
        return float(got is not None and want is not None and math.isclose(got, want, rel_tol=tolerance,
                                                                              abs_tol=tolerance))
    return numeric


# --- multiple choice -------------------------------------------------------------------------------

ANSWER_LETTER = re.compile(r"(?i:\banswer\b(?:\s+is)?)\s*[:=]?\s*\(?([A-J])\b")
LEADING_LETTER = re.compile(r"^\(?([A-J])(?:[.):\]]|$)")
ONLY_LETTER = re.compile(r"^\(?([a-jA-J])[.)]?$")
BRACKETED_LETTER = re.compile(r"\(([A-J])\)")


def choice_letter(text: str) -> str | None:
    """The chosen letter A-J: after "answer (is)", else leading ("B", "(B)", "B.", "B) text"), else the last
    "(C)". A bare leading capital followed by a space is not a choice ("A dog ..."); a lone lower-case letter
    is ("b")."""
    text = text.replace("*", "").strip()
    for pattern in (ANSWER_LETTER, LEADING_LETTER, ONLY_LETTER, BRACKETED_LETTER):
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


def choice(prediction: str | None, reference: str) -> float:
    got = None if prediction is None else choice_letter(prediction)
    return float(got is not None and got == choice_letter(reference.strip().upper()))


# --- a final-answer line ---------------------------------------------------------------------------


def regex(pattern: str) -> Scorer:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"task.pattern={pattern!r} is not a regular expression: {error}") from None

    def regex(prediction: str | None, reference: str) -> float:
        matches = list(compiled.finditer(prediction or ""))
        if not matches:
            return 0.0
        last = matches[-1]
        return exact_match(last.group(1) if compiled.groups else last.group(0), reference)
    return regex


# --- overlap (open-ended text) ---------------------------------------------------------------------


def rouge_l() -> Scorer:
    from rouge_score import rouge_scorer  # imported on use: only tasks that ask pay for it

    scorer_ = rouge_scorer.RougeScorer(["rougeL"])

    def rouge_l(prediction: str | None, reference: str) -> float:
        return 0.0 if prediction is None else scorer_.score(reference, prediction)["rougeL"].fmeasure
    return rouge_l


def chrf() -> Scorer:
    from sacrebleu.metrics import CHRF

    metric = CHRF()

    def chrf(prediction: str | None, reference: str) -> float:
        return 0.0 if prediction is None else metric.sentence_score(prediction, [reference]).score / 100
    return chrf


# --- code ------------------------------------------------------------------------------------------


def code(timeout_s: float) -> Scorer:
    def code(prediction: str | None, reference: str) -> float:
        return float(prediction is not None and code_check.passes(prediction, reference, timeout_s))
    return code


SCORERS: dict[str, Callable[[TaskParams], Scorer]] = {
    "exact_match": lambda task: exact_match,
    "numeric": lambda task: numeric(task.tolerance),
    "choice": lambda task: choice,
    "regex": lambda task: regex(task.pattern),
    "rouge_l": lambda task: rouge_l(),
    "chrf": lambda task: chrf(),
    "code": lambda task: code(task.timeout_s),
}


def scorer(name: str, task: TaskParams, key: str = "task.metric") -> Callable:
    """The built-in scorer ``name``, or the function a ``module:function`` names; ValueError naming ``key``."""
    if name in SCORERS:
        return SCORERS[name](task)
    module_name, colon, function_name = name.partition(":")
    if not colon or not module_name or not function_name:
        raise ValueError(f"{key}={name!r}: not a built-in scorer ({', '.join(SCORERS)}) nor module:function")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{key}={name!r} cannot be loaded: {error}") from None
    if not callable(function):
        raise ValueError(f"{key}={name!r} is not a function")
    return function


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k), the unbiased estimator of Chen et
    al. 2021 (exact, by integer binomials)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))
