"""The report's charts, drawn with matplotlib and embedded as PNG data URIs (the page needs no server,
no internet and no other file). Each function takes facts from ``run_facts`` and returns a data URI, or None
when the run has nothing to draw."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402 -- after the backend is chosen
import polars as pl  # noqa: E402

COLOURS = {"student_before": "#9aa5b1", "student_after": "#2f6fdf", "baseline_sft": "#e0a030",
           "teacher": "#3a9a5b", "selected": "#2f6fdf", "random": "#e0a030", "all": "#3a9a5b"}


def data_uri(figure: plt.Figure) -> str:
    """PNG bytes without a timestamp or version stamp (the same run draws the same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def funnel_chart(funnel: list[dict]) -> str | None:
    steps = [step for step in funnel if step["rows"] is not None]
    if not steps:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(steps) + 0.8))
    labels = [step["label"] for step in steps][::-1]
    rows = [step["rows"] for step in steps][::-1]
    bars = axes.barh(labels, rows, color="#2f6fdf")
    for bar, step in zip(bars, steps[::-1], strict=True):
        text = f"{step['rows']:,}" + (f"   (-{step['dropped_total']:,})" if step["dropped_total"] else "")
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + text, va="center", fontsize=9)
    axes.set_xlim(0, max(rows) * 1.3)
    axes.set_xlabel("rows")
    axes.spines[["top", "right"]].set_visible(False)
    return data_uri(figure)


def eval_chart(evaluation: dict | None) -> str | None:
    """Score per system overall and per group."""
    if not evaluation or not evaluation["systems"]:
        return None
    names = [item["system"] for item in evaluation["systems"]]
    groups = [("all", {item["system"]: item["score"] for item in evaluation["systems"]})]
    groups += [(str(group["group"]), group) for group in evaluation["groups"]]
    figure, axes = plt.subplots(figsize=(min(2 + 1.3 * len(groups) * len(names) / 3, 10), 3.2))
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        xs = [index + offset * width for index in range(len(groups))]
        axes.bar(xs, [group.get(name) or 0.0 for _, group in groups], width, label=name,
                 color=COLOURS.get(name))
    axes.set_xticks([index + width * (len(names) - 1) / 2 for index in range(len(groups))],
                    [label for label, _ in groups])
    axes.set_ylabel(evaluation["metric"] or "score")
    axes.set_ylim(0, 1.05)
    axes.legend(fontsize=8, ncols=len(names), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return data_uri(figure)


def training_chart(log: pl.DataFrame | None) -> str | None:
    """The loss (and the KD loss's cross-entropy and divergence terms) and the learning rate against the step."""
    if log is None or not log.height:
        return None
    figure, (loss_axes, rate_axes) = plt.subplots(1, 2, figsize=(9, 3))
    for (objective,), part in log.sort("step").group_by("objective", maintain_order=True):
        loss_axes.plot(part["step"], part["loss"], label=str(objective))
        for term in ("ce", "kd"):  # the KD loss's terms, when the objective has them
            if term in part.columns and part[term].drop_nulls().len():
                loss_axes.plot(part["step"], part[term], label=f"{term} term", linestyle="--")
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("training loss")
    loss_axes.legend(fontsize=8, frameon=False)
    rates = log.sort("step").unique("step", keep="first", maintain_order=True)
    rate_axes.plot(rates["step"], rates["learning_rate"], color="#e0a030")
    rate_axes.set_xlabel("step")
    rate_axes.set_ylabel("learning rate")
    for axes in (loss_axes, rate_axes):
        axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return data_uri(figure)


def sweep_chart(sweep: dict | None, teacher_score: float | None) -> str | None:
    """Student score against the teacher tokens its training rows cost, per subset policy."""
    points = (sweep or {}).get("points") or []
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.2))
    by_policy: dict[str, list[dict]] = {}
    for point in points:
        by_policy.setdefault(point["policy"], []).append(point)
    for policy, items in sorted(by_policy.items()):
        items = sorted(items, key=lambda point: point["teacher_tokens"])
        axes.plot([point["teacher_tokens"] for point in items], [point["score"] for point in items], "o-",
                  label=policy, color=COLOURS.get(policy))
    if teacher_score is not None:
        axes.axhline(teacher_score, color=COLOURS["teacher"], linestyle=":", label="teacher")
    axes.set_xlim(left=0)
    axes.xaxis.set_major_formatter(lambda value, _: f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k")
    axes.set_xlabel("teacher tokens in the training rows")
    axes.set_ylabel(sweep.get("metric") or "score")
    axes.legend(fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return data_uri(figure)
