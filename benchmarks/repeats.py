"""Measurements that hold still on a shared machine: each one repeated, interleaved, reported as a median with its
spread. Every benchmark under benchmarks/ measures this way.

- ``interleaved`` runs every measurement once per repeat, each repeat starting one further along the list, so a
  slow spell of the machine (other jobs on its 2 cores) hits every measurement alike instead of one of them;
- ``median`` is the figure reported;
- ``spread`` is max / min - 1 over the repeats: how far one repeat's figure can be trusted. A ratio's spread is
  taken over the per-repeat ratios (``ratios``), which pairs the measurements of one repeat.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def interleaved(measure: dict[str, Callable[[int], T]], repeats: int,
                report: Callable[[int, str, T], None] | None = None) -> dict[str, list[T]]:
    """Each measurement's results, one per repeat. ``measure`` maps a name to a function of the repeat's index
    (from 0); ``report(repeat, name, result)`` is called after each, for progress lines."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: measure at least once (3 or more for a median worth the name)")
    names = list(measure)
    results: dict[str, list[T]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(measure[name](repeat))
            if report is not None:
                report(repeat, name, results[name][-1])
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """max / min - 1 over the repeats (0 for one repeat or all-equal values; inf when the least is 0 and others
    are not)."""
    low, high = min(values), max(values)
    if high == low:
        return 0.0
    return round(high / low - 1, 3) if low > 0 else float("inf")


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-repeat ratios: the i-th measurement of one over the i-th of the other."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def summary(values: Sequence[float], digits: int = 2) -> dict:
    """``{"median", "runs", "spread"}`` of one measurement's repeats."""
    return {"median": round(median(values), digits), "runs": [round(v, digits) for v in values],
            "spread": spread(values)}
