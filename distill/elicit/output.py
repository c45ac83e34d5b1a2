"""What an elicitation method hands back to the generate stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from distill.records import GENERATED, PREFERENCE, REJECT, empty


@dataclass
class MethodOutput:
    rows: pl.DataFrame = field(default_factory=lambda: empty(GENERATED))
    rejects: pl.DataFrame = field(default_factory=lambda: empty(REJECT))
    preferences: pl.DataFrame = field(default_factory=lambda: empty(PREFERENCE))
    metrics: dict = field(default_factory=dict)  # method-specific counts, under metrics["methods"][<name>]
