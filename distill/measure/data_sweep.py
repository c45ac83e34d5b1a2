"""How much teacher data is enough: students trained on nested subsets, best first and at random.

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

from distill import params as params_module
from distill.chat import frame_prompts
from distill.measure.metrics import scored_part
from distill.measure.sampling import student_answers
from distill.records import tie_break
from distill.student import load_tokenizer
from distill.task import Task
from distill.task import load as load_task
from distill.transfer.data import think_tags, training_pairs
from distill.transfer.training import TRAINED_ON, train, trained_on

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


def score_model(model_dir: Path, prompts: list[str], references: list[str], student: params_module.StudentParams,
                task: Task) -> float:
    """The mean of the task's metric (evaluate's, on the answer part) over the eval split."""
    answers = [scored_part(samples[0], student.think_tags) for samples in student_answers(str(model_dir), prompts,
                                                                                            student)]
    return sum(task.metric(a, r) for a, r in zip(answers, references, strict=True)) / len(references)


def matches(model_dir: Path, pairs: list[dict], params: params_module.TrainParams) -> bool:
    """The train stage's checkpoint was trained on exactly these pairs with these params."""
    record = model_dir / TRAINED_ON
    if not record.exists():
        return False
    saved = json.loads(record.read_text())
    wanted = trained_on(pairs, params)
    return saved.get("data_hash") == wanted["data_hash"] and saved.get("params_hash") == wanted["params_hash"]


def run_points(rows: pl.DataFrame, evals: pl.DataFrame, params: params_module.Params,
               trained_models: tuple[Path, ...]) -> list[dict]:
    """Train (or reuse one of ``trained_models``) and score a student per point of ``plan``."""
    # The sweep measures data, so every point is plain SFT: the train stage's model is reused when it is plain
    # SFT on the same rows, and so is its plain-SFT baseline (train.objective other than sft).
    params = params.model_copy(update={"train": params.train.model_copy(update={"objective": "sft"})})
    template = Path(params.student.prompt_template).read_text(encoding="utf-8")
    tokenizer = load_tokenizer(params.student.model)
    prompts = frame_prompts(tokenizer, evals, template)
    references = evals["reference"].to_list()
    task = load_task(params.task)
    points = plan(rows, params.sweep)
    results, spent = [], []
    for number, point in enumerate(points, start=1):
        subset = rows.with_columns(keep=point["mask"])
        pairs = training_pairs(subset, template, tokenizer, think_tags(params.student))
        label = f"sweep [{number}/{len(points)}] {point['policy']} {point['rows']:,} rows"
        started = time.monotonic()
        trained_model = next((model for model in trained_models if matches(model, pairs, params.train)), None)
        if trained_model is not None:
            print(f"{label}: {trained_model} was trained on exactly these rows; scoring it", flush=True)
            score, history = score_model(trained_model, prompts, references, params.student, task), []
        else:
            left = len(points) - number + 1
            eta = f"; about {sum(spent) / len(spent) * left / 60:.1f} min left" if spent else ""
            print(f"{label}: training {params.train.max_steps} steps{eta}", flush=True)
            with tempfile.TemporaryDirectory(prefix="sweep-") as scratch:
                model_dir = Path(scratch) / "model"
                history = train(pairs, params.train, model_dir)
                score = score_model(model_dir, prompts, references, params.student, task)
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
