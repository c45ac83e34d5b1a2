"""The eval report a person reads: reports/eval.md (scores, held-out KL, forgetting, per group, mistakes) and
the per-group bar chart reports/eval.png."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from distill.records import OPTIONAL_SYSTEMS, SYSTEMS


def cell(text: object) -> str:
    """A table cell: a multi-line answer (reasoning in think tags) stays in its row, a pipe stays text."""
    return str(text).replace("|", "\\|").replace("\n", "<br>").replace("<think>", "&lt;think&gt;").replace(
        "</think>", "&lt;/think&gt;")


def chart(by_group: pl.DataFrame, target: Path) -> None:
    """Grouped bars: each system's score per group, as a PNG a person can glance at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [column for column in by_group.columns if column != "group"]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        positions = [x + i * width for x in range(by_group.height)]
        axes.bar(positions, by_group[system].to_list(), width, label=system.replace("_", " "))
    axes.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(by_group.height)], by_group["group"].to_list())
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("held-out score")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(target, format="png", dpi=120)
    plt.close(figure)


def protocol_text(protocol: dict) -> str:
    """How the scores were measured, in one line: sampling, samples per prompt, seed, max tokens."""
    how = ("greedy" if protocol["temperature"] == 0 else
           f"{protocol['samples']} samples per prompt at temperature {protocol['temperature']}")
    teacher = protocol["teacher"]
    return (f"Protocol: students {how}, seed {protocol['seed']}, at most {protocol['max_new_tokens']} new tokens; "
            f"the teacher greedy, seed {teacher['seed']}, at most {teacher['max_tokens']} tokens.")


def optional_lines(metrics: dict) -> list[str]:
    """pass@k (several samples per prompt) and the judge's win rate against the teacher, when measured."""
    lines = []
    if "pass_at_k" in metrics:
        lines += ["| system | " + " | ".join(metrics["pass_at_k"]) + " |", "|---" * (len(metrics["pass_at_k"]) + 1)
                  + "|"]
        systems = next(iter(metrics["pass_at_k"].values()))
        lines += [f"| {name} | " + " | ".join(f"{metrics['pass_at_k'][k][name]:.3f}" for k in metrics["pass_at_k"])
                  + " |" for name in systems] + [""]
    if "judge_win_rate" in metrics:
        lines += ["Judge's win rate against the teacher (both orders): " + ", ".join(
            f"{name} {result['win_rate']} ({result['pairs']} pairs, orders agree {result['position_consistency']})"
            for name, result in metrics["judge_win_rate"].items()) + ".", ""]
    return lines


def report(metrics: dict, by_group: pl.DataFrame, examples: pl.DataFrame) -> str:
    lines = [
        "# Eval report",
        "",
        f"Held-out split: {metrics['rows']} rows; metric: {metrics.get('metric', 'exact_match')} "
        f"(task {metrics.get('task', 'generic')}).",
        *([protocol_text(metrics["protocol"])] if "protocol" in metrics else []),
        "",
        f"| system | {metrics.get('metric', 'score')} |",
        "|---|---|",
        *(f"| {name} | {metrics[name]:.3f} |" for name in (*SYSTEMS, *OPTIONAL_SYSTEMS) if name in metrics),
        "",
        *optional_lines(metrics),
        *(["Held-out KL to the teacher, per answer token: "
           + ", ".join(f"{name} {value}" for name, value in metrics["heldout_kl_to_teacher"].items()) + ".", ""]
          if any(v is not None for v in metrics.get("heldout_kl_to_teacher", {}).values()) else []),
        f"Teacher gap closed: {metrics['gap_closed']}; student/teacher ratio: {metrics['student_vs_teacher']}.",
        "",
        f"Forgetting probe ({metrics['forgetting_probe']['rows']} general held-out rows, "
        f"{metrics['forgetting_probe']['general_eval']}), loss per answer token: "
        + ", ".join(f"{name} {value}" for name, value in metrics["forgetting_probe"]["loss"].items())
        + f"; after - before = {metrics['forgetting_probe']['forgetting']} (> 0: the student forgot).",
        "",
        "## By group",
        "",
        "| group | " + " | ".join(c for c in by_group.columns if c != "group") + " |",
        "|---" * by_group.width + "|",
        *("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
          for row in by_group.iter_rows()),
        "",
        "## Student mistakes after training (first 10)",
        "",
    ]
    if examples.is_empty():
        lines += ["None: every held-out answer was right.", ""]
    else:
        lines += ["| instruction | reference | prediction |", "|---|---|---|"]
        rows = examples.iter_rows(named=True)
        lines += [f"| {cell(r['instruction'])} | {cell(r['reference'])} | {cell(r['prediction'])} |" for r in rows]
        lines.append("")
    return "\n".join(lines)
