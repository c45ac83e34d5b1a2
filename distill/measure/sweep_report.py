"""The data sweep a person reads: reports/sweep.md and the two curves in reports/sweep.png."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def chart(lines: dict[str, pl.DataFrame], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.4))
    names = {"selected": "best first (the selection's order)", "random": "random order"}
    for policy, frame in lines.items():
        if frame.height:
            axes.plot(frame["teacher_tokens"] / 1000, frame["score"], marker="o", label=names[policy])
    ends = lines["selected"]
    if ends.height:  # the last point of both curves is every generated row
        axes.annotate("all rows", (ends["teacher_tokens"][-1] / 1000, ends["score"][-1]), textcoords="offset points",
                      xytext=(-10, 8), ha="right", fontsize=8)
    axes.set_xlabel("teacher tokens of the training rows (thousands)")
    axes.set_ylabel("held-out score")
    axes.set_ylim(0, 1.05)
    if axes.get_legend_handles_labels()[0]:  # nothing to label when the sweep is off
        axes.legend(loc="lower right", fontsize=8)
    axes.set_title("How much teacher data is enough", fontsize=10)
    figure.tight_layout()
    figure.savefig(target, format="png", dpi=120)
    plt.close(figure)


def report(metrics: dict) -> str:
    if not metrics["enabled"]:
        return "# Data sweep\n\nOff (`sweep.enabled: false`).\n"
    head = metrics["comparison"]
    lines = ["# Data sweep", "",
             f"Students trained {metrics['steps']} steps each on subsets of the {metrics['generated_rows']:,} "
             f"generated rows, scored on {metrics['eval_rows']} held-out rows "
             f"({metrics.get('metric', 'exact_match')}).", "",
             "| subset | rows | teacher tokens | score |", "|---|---|---|---|"]
    for name in ("selected", "all", "random"):
        if head[name]:
            lines.append(f"| {name} | {head[name]['rows']:,} | {head[name]['teacher_tokens']:,} | "
                         f"{head[name]['score']:.3f} |")
    lines += ["", "## Every point", "", "| order | rows | share | teacher tokens | score | final loss |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {p['policy']} | {p['rows']:,} | {p['fraction']:.0%} | {p['teacher_tokens']:,} | {p['score']:.3f} | "
              f"{p['final_loss'] if p['final_loss'] is not None else 'reused'} |" for p in metrics["points"]]
    return "\n".join(lines) + "\n"
