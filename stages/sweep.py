"""Sweep: how much teacher data is enough? Students trained on nested subsets, best first and at random.

Reads:   data/select/rows.parquet, data/ingest/eval.parquet, data/train/model (reused where it matches)
Writes:  metrics/sweep.json, reports/plots/sweep_selected.csv, reports/plots/sweep_random.csv,
         reports/sweep.png, reports/sweep.md
Params:  sweep, train, evaluate
Run:     python -m stages.sweep

Two orders of all generated rows: ``selected`` is the selection policy's (the ranked rows that passed
every check, then the others by quality), ``random`` a seeded shuffle. Each size takes a prefix of
each order, so the subsets are nested. The sizes are ``sweep.fractions`` of the generated rows, the
select stage's own selection, and all rows. A student is trained on each subset with the train
params (same steps, same seed) and scored on the held-out split as the evaluate stage scores it.
The x axis is what the subset cost: the teacher tokens (prompt + completion) of its rows.

The headline, in ``metrics/sweep.json`` under ``comparison``: the selection against all generated
rows and against a random subset of the same size (AlpaGasus' experiment). The subset that matches
the train stage's model exactly (same training pairs and params) is scored from that model, not
trained again.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import polars as pl

from stages import params as params_module
from stages import paths
from stages.entry import guarded
from stages.io import atomic_path, write_json, write_text
from stages.prompts import student_prompt
from stages.records import tie_break
from stages.skill import exact_match
from stages.student_sampling import greedy_answers
from stages.train import TRAINED_ON, train, trained_on, training_pairs

TOKENS = pl.col("prompt_tokens") + pl.col("completion_tokens")


def orders(rows: pl.DataFrame, seed: int) -> dict[str, pl.Series]:
    """Row indices of ``rows`` (SELECTED), best first and in a seeded random order."""
    indexed = rows.with_row_index("_index").with_columns(_tie=tie_break(seed))
    best_first = indexed.sort(["select_rank", "quality", "_tie"], descending=[False, True, False], nulls_last=True)
    return {"selected": best_first["_index"], "random": indexed.sort("_tie")["_index"]}


def sizes(params: params_module.SweepParams, generated: int, selected: int) -> list[int]:
    wanted = {round(fraction * generated) for fraction in params.fractions} | {selected, generated}
    return sorted(size for size in wanted if size > 0)


def plan(rows: pl.DataFrame, params: params_module.SweepParams) -> list[dict]:
    """One point per (policy, size): a boolean mask over ``rows``; all rows once, as policy ``all``."""
    found = orders(rows, params.seed)
    selected = int(rows["keep"].sum())
    points = []
    for size in sizes(params, rows.height, selected):
        policies = ["all"] if size == rows.height else ["selected", *(["random"] if params.random else [])]
        for policy in policies:
            chosen = found["selected" if policy == "all" else policy][:size]
            mask = pl.Series("keep", [False] * rows.height).scatter(chosen, True)
            points.append({"policy": policy, "rows": size, "mask": mask, "is_selection": policy == "selected"
                           and size == selected})
    return points


def score_model(model_dir: Path, prompts: list[str], references: list[str], seed: int,
                params: params_module.EvaluateParams) -> float:
    answers = greedy_answers(str(model_dir), prompts, seed, params.max_new_tokens, params.batch_size)
    return sum(exact_match(a, r) for a, r in zip(answers, references, strict=True)) / len(references)


def matches(model_dir: Path, pairs: list[dict], params: params_module.TrainParams) -> bool:
    """The train stage's checkpoint was trained on exactly these pairs with these params."""
    record = model_dir / TRAINED_ON
    if not record.exists():
        return False
    saved = json.loads(record.read_text())
    wanted = trained_on(pairs, params)
    return saved.get("data_hash") == wanted["data_hash"] and saved.get("params_hash") == wanted["params_hash"]


def run_points(rows: pl.DataFrame, evals: pl.DataFrame, params: params_module.Params,
               trained_models: tuple[Path, ...] = (paths.TRAIN_MODEL, paths.TRAIN_BASELINE)) -> list[dict]:
    # The sweep measures data, so every point is plain SFT: the train stage's model is reused when it is plain
    # SFT on the same rows, and so is its plain-SFT baseline (train.method other than sft).
    params = params.model_copy(update={"train": params.train.model_copy(update={"method": "sft"})})
    template = Path(params.train.prompt_template).read_text(encoding="utf-8")
    prompts = [student_prompt(template, r["instruction"], r["input"]) for r in evals.iter_rows(named=True)]
    references = evals["reference"].to_list()
    points = plan(rows, params.sweep)
    results, spent = [], []
    for number, point in enumerate(points, start=1):
        subset = rows.with_columns(keep=point["mask"])
        pairs = training_pairs(subset, template)
        label = f"sweep [{number}/{len(points)}] {point['policy']} {point['rows']:,} rows"
        started = time.monotonic()
        trained_model = next((model for model in trained_models if matches(model, pairs, params.train)), None)
        if trained_model is not None:
            print(f"{label}: {trained_model} was trained on exactly these rows; scoring it", flush=True)
            score, history = score_model(trained_model, prompts, references, params.train.seed, params.evaluate), []
        else:
            left = len(points) - number + 1
            eta = f"; about {sum(spent) / len(spent) * left / 60:.1f} min left" if spent else ""
            print(f"{label}: training {params.train.max_steps} steps{eta}", flush=True)
            with tempfile.TemporaryDirectory(prefix="sweep-") as scratch:
                model_dir = Path(scratch) / "model"
                history = train(pairs, params.train, model_dir)
                score = score_model(model_dir, prompts, references, params.train.seed, params.evaluate)
            spent.append(time.monotonic() - started)
        losses = [entry["loss"] for entry in history if "loss" in entry]
        results.append({
            "policy": point["policy"], "rows": point["rows"], "fraction": round(point["rows"] / rows.height, 4),
            "teacher_tokens": int(subset.filter(pl.col("keep")).select(TOKENS.sum()).item() or 0),
            "score": round(score, 4), "final_loss": round(float(losses[-1]), 4) if losses else None,
            "reused_train_model": not history, "is_selection": point["is_selection"],
            "seconds": round(time.monotonic() - started, 1),
        })
        print(f"{label}: score {score:.3f}", flush=True)
    return results


def comparison(points: list[dict]) -> dict:
    """The selection against all rows and a random subset of its size."""
    picked = next(p for p in points if p["is_selection"]) if any(p["is_selection"] for p in points) else None
    everything = next(p for p in points if p["policy"] == "all")
    picked = picked or everything  # every row was selected
    random_twin = next((p for p in points if p["policy"] == "random" and p["rows"] == picked["rows"]), None)

    def brief(point: dict | None) -> dict | None:
        return point and {key: point[key] for key in ("rows", "fraction", "teacher_tokens", "score")}

    out = {"selected": brief(picked), "all": brief(everything), "random": brief(random_twin),
           "selected_minus_all": round(picked["score"] - everything["score"], 4)}
    out["selected_minus_random"] = round(picked["score"] - random_twin["score"], 4) if random_twin else None
    return out


def curves(points: list[dict]) -> dict[str, pl.DataFrame]:
    """One curve per order; all rows (the 100% point) ends both."""
    everything = [p for p in points if p["policy"] == "all"]
    return {policy: pl.DataFrame([p for p in points if p["policy"] == policy] + everything,
                                 schema={"rows": pl.Int64, "fraction": pl.Float64, "teacher_tokens": pl.Int64,
                                         "score": pl.Float64}).sort("rows")
            for policy in ("selected", "random")}


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
    axes.set_ylabel("held-out exact match")
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
             f"generated rows, scored on {metrics['eval_rows']} held-out rows (exact match).", "",
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


def main() -> None:
    params = params_module.load()
    started = time.monotonic()
    rows = pl.read_parquet(paths.SELECT_ROWS)
    evals = pl.read_parquet(paths.INGEST_EVAL)
    metrics: dict = {"enabled": params.sweep.enabled}
    points = run_points(rows, evals, params) if params.sweep.enabled else []
    if points:
        metrics |= {"steps": params.train.max_steps, "eval_rows": evals.height, "generated_rows": rows.height,
                    "comparison": comparison(points), "points": points}
    lines = curves(points)
    for policy, frame in lines.items():
        with atomic_path(paths.SWEEP_PLOTS[policy]) as tmp:
            frame.select("teacher_tokens", "rows", "fraction", "score").write_csv(tmp)
    with atomic_path(paths.SWEEP_CHART) as tmp:
        chart(lines, tmp)
    write_text(report(metrics), paths.SWEEP_REPORT)
    write_json(metrics | {"wall_s": round(time.monotonic() - started, 2)}, paths.metrics("sweep"))
    if points:
        head = metrics["comparison"]
        random_score = f"{head['random']['score']:.3f}" if head["random"] else "n/a"
        print(f"sweep: selected {head['selected']['rows']:,} rows {head['selected']['score']:.3f}; "
              f"all {head['all']['rows']:,} rows {head['all']['score']:.3f}; random same size {random_score}")


if __name__ == "__main__":
    guarded("sweep", main)
