"""The one-page HTML report: ``run_facts`` and ``charts`` rendered through ``index.html.j2`` (Jinja2, escaped).

The page is self-contained: inline CSS, charts as data URIs, no script, no font or file from the internet; its
only links are anchors within it and relative links to local files the run wrote (Data Docs, the model card).
"""

from __future__ import annotations

import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape

from distill.report import charts

TEMPLATE = "index.html.j2"


def missing(value: object) -> bool:
    """A figure the run did not produce: None in a metrics file, or a key it does not have."""
    return value is None or isinstance(value, Undefined)


def usd(value: float | None) -> str:
    if missing(value):
        return "n/a"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.6f}"  # a row's share: fractions of a cent


def pct(value: float | None) -> str:
    return "n/a" if missing(value) else f"{value:.1%}"


def num(value: int | float | None) -> str:
    if missing(value):
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def fixed(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals; "n/a" for a figure the run did not produce (None)."""
    return "n/a" if missing(value) else f"{value:.{digits}f}"


def score(value: float | None) -> str:
    return "n/a" if missing(value) else f"{value:.3f}"


def environment(page: Path) -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    # links in the facts are relative to the repository; the page sits in its own folder
    link = lambda path: os.path.relpath(path, page.parent).replace(os.sep, "/")  # noqa: E731
    env.globals.update(usd=usd, pct=pct, num=num, score=score, fixed=fixed, link=link)
    return env


def render(facts: dict, page: Path, commit: str, student: dict | None = None) -> str:
    """The page's HTML for ``facts`` (``run_facts.gather``), to be written at ``page`` (links are relative to it)."""
    evaluation = facts["evaluation"]
    teacher = None
    if evaluation:
        teacher = next((item["score"] for item in evaluation["systems"] if item["system"] == "teacher"), None)
    drawn = {"funnel": charts.funnel_chart(facts["funnel"]), "eval": charts.eval_chart(evaluation),
             "training": charts.training_chart(facts["train_log"]),
             "sweep": charts.sweep_chart(facts["sweep"], teacher)}
    context = {key: value for key, value in facts.items() if key != "train_log"}
    return environment(page).get_template(TEMPLATE).render(**context, charts=drawn, commit=commit, student=student)
