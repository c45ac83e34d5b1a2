"""Eval: the student before and after training, and the teacher, on the held-out split.

Reads:   data/ingest/eval.parquet, data/train/model/, the student as it was before
         training (``train.student``, seeded like the training run), the teacher
Writes:  data/evaluate/predictions.parquet (PREDICTION), data/store/evaluate.jsonl (the
         teacher's eval answers, a request store), metrics/eval.json, reports/eval.md,
         reports/plots/eval_by_op.csv, reports/eval.png
Params:  evaluate, teacher, generate (template, system, max_tokens), train (student, prompt_template, seed)
Run:     python -m stages.evaluate

The metric is the demo skill's: exact match with the reference after trimming whitespace.
``metrics/eval.json`` has ``student_before``, ``student_after`` and ``teacher`` in [0, 1],
and the share of the teacher gap the training closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from stages import forgetting, paths, skill
from stages import params as params_module
from stages.entry import guarded
from stages.features import FeatureTokenizer, extract
from stages.io import atomic_path, content_hash, write_json, write_parquet, write_text
from stages.prompts import Prompt, parse_choice, student_prompt
from stages.records import FEATURES, OPTIONAL_SYSTEMS, PREDICTION, SYSTEMS, conform
from stages.student import has_weights
from stages.student_sampling import greedy_answers
from stages.teachers import capabilities
from stages.teachers.ask import ask, plan_requests
from stages.teachers.engine import EngineSettings, Ledger
from stages.teachers.store import open_store


def student_answers(model_path: str, prompts: list[str], seed: int, params: params_module.EvaluateParams) -> list[str]:
    """Greedy answers, batched with left padding."""
    return greedy_answers(model_path, prompts, seed, params.max_new_tokens, params.batch_size)


def teacher_answers(
    evals: pl.DataFrame, params: params_module.Params, store_path: Path, send: Callable[..., Ledger]
) -> tuple[list[str | None], dict, pl.DataFrame]:
    """The teacher's answers to the eval inputs, through its own request store, and (when generate.top_logprobs
    is set) its top-k log-probs on them by token id (FEATURES, by eval id): what the held-out KL compares with."""
    prompt = Prompt(params.generate.system, params.generate.template)
    sampling = {"temperature": 0.0, "max_tokens": params.generate.max_tokens, "n": 1, "seed": params.generate.seed}
    k = params.generate.top_logprobs
    if k:
        sampling |= {"logprobs": True, "top_logprobs": k}
        capabilities.check(sampling, params.teacher.capabilities, params.teacher.name)
    requests = plan_requests(evals.iter_rows(named=True), prompt, sampling, params.teacher)
    answers, features = [], []
    tokenizer = FeatureTokenizer(params.generate.feature_tokenizer) if k else None
    settings = EngineSettings.from_env()  # a bad DISTILL_* value fails before anything starts
    with open_store(store_path, settings.store_wait_s) as store:
        ledger = ask(requests, params.teacher, store, send, label="evaluate", settings=settings)
        for row_id, request in zip(evals["id"], requests, strict=True):
            response = store.get(request.key)
            choice = response["choices"][0] if response and response.get("choices") else None
            answers.append(parse_choice(choice) if choice else None)
            content = ((choice or {}).get("logprobs") or {}).get("content")
            found = extract(content, k, tokenizer) if tokenizer and content else None
            if isinstance(found, dict):
                features.append({"id": row_id, "tokenizer": tokenizer.identity, "k": k} | found)
    cost = {"requests_sent": ledger.requests_sent, "cache_hits": ledger.cache_hits,
            "store_lines_quarantined": len(store.quarantined)}
    return answers, cost, conform(pl.DataFrame(features, schema=FEATURES), FEATURES)


def heldout_kl(model_path: str, evals: pl.DataFrame, answers: list[str | None], teacher: pl.DataFrame,
               template: str, max_length: int) -> float | None:
    """Mean forward KL(teacher || student) per token of the teacher's held-out answers (teacher forcing,
    top-k with the tail as one outcome); None without the teacher's log-probs."""
    import torch

    from stages.kd import Collator, examples, kd_loss
    from stages.student import load_model, load_tokenizer

    if teacher.is_empty():
        return None
    rows = evals.select("id", "instruction", "input").with_columns(
        response=pl.Series(answers, dtype=pl.String).fill_null(""), keep=pl.lit(True))
    tokenizer = load_tokenizer(model_path)
    found = [e for e in examples(rows, teacher, template, tokenizer, max_length).examples
             if any(ids[0] >= 0 for ids in e["teacher_ids"])]
    if not found:
        return None
    model, collate = load_model(model_path, 0).eval(), Collator(tokenizer.pad_token_id)
    measure = params_module.KDParams(divergence="forward_kl", ce_weight=0.0, tail="bucket")
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(found), 64):
            batch = collate(found[start:start + 64])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            count = int(((batch["teacher_ids"][:, 1:, 0] >= 0) & (batch["labels"][:, 1:] != -100)).sum())
            _, _, divergence = kd_loss(logits, batch["labels"], batch["teacher_ids"], batch["teacher_logprobs"],
                                       measure)
            total, tokens = total + float(divergence) * count, tokens + count
    return round(total / tokens, 5) if tokens else None


def score_system(evals: pl.DataFrame, system: str, predictions: list[str | None]) -> pl.DataFrame:
    frame = evals.select("id", "instruction", "reference").with_columns(
        system=pl.lit(system), prediction=pl.Series(predictions, dtype=pl.String)
    )
    scores = [skill.exact_match(p, r) for p, r in zip(predictions, evals["reference"], strict=True)]
    return conform(frame.with_columns(score=pl.Series(scores, dtype=pl.Float64)), PREDICTION)


def gap_closed(before: float, after: float, teacher: float) -> float | None:
    """Share of the teacher-student gap that training closed (1.0 = reached the teacher)."""
    return None if teacher <= before else round((after - before) / (teacher - before), 4)


def chart(by_op: pl.DataFrame, target: Path) -> None:
    """Grouped bars: each system's score per operation, as a PNG a person can glance at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [column for column in by_op.columns if column != "op"]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        positions = [x + i * width for x in range(by_op.height)]
        axes.bar(positions, by_op[system].to_list(), width, label=system.replace("_", " "))
    axes.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(by_op.height)], by_op["op"].to_list())
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("held-out exact match")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(target, format="png", dpi=120)
    plt.close(figure)


def report(metrics: dict, by_op: pl.DataFrame, examples: pl.DataFrame) -> str:
    lines = [
        "# Eval report",
        "",
        f"Held-out split: {metrics['rows']} rows; metric: exact match (demo skill).",
        "",
        "| system | score |",
        "|---|---|",
        *(f"| {name} | {metrics[name]:.3f} |" for name in (*SYSTEMS, *OPTIONAL_SYSTEMS) if name in metrics),
        "",
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
        "## By operation",
        "",
        "| op | " + " | ".join(c for c in by_op.columns if c != "op") + " |",
        "|---" * by_op.width + "|",
        *("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
          for row in by_op.iter_rows()),
        "",
        "## Student mistakes after training (first 10)",
        "",
    ]
    if examples.is_empty():
        lines += ["None: every held-out answer was right.", ""]
    else:
        lines += ["| instruction | reference | prediction |", "|---|---|---|"]
        rows = examples.iter_rows(named=True)
        lines += [f"| {r['instruction']} | {r['reference']} | {r['prediction']} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    from flows.teacher import run_plan  # the orchestrator, handed to the library

    params = params_module.load()
    started = time.monotonic()
    evals = pl.read_parquet(paths.INGEST_EVAL)
    template = Path(params.train.prompt_template).read_text(encoding="utf-8")
    prompts = [student_prompt(template, row["instruction"], row["input"]) for row in evals.iter_rows(named=True)]
    before = student_answers(params.train.student, prompts, params.train.seed, params.evaluate)
    after = student_answers(str(paths.TRAIN_MODEL), prompts, params.train.seed, params.evaluate)
    teacher, teacher_cost, teacher_topk = teacher_answers(evals, params, paths.EVALUATE_STORE, run_plan)
    systems = [score_system(evals, "student_before", before), score_system(evals, "student_after", after),
               score_system(evals, "teacher", teacher)]
    models = {"student_after": paths.TRAIN_MODEL}
    if has_weights(paths.TRAIN_BASELINE):  # train.method is not sft: the plain-SFT baseline, same data and steps
        baseline = student_answers(str(paths.TRAIN_BASELINE), prompts, params.train.seed, params.evaluate)
        systems.append(score_system(evals, "baseline_sft", baseline))
        models["baseline_sft"] = paths.TRAIN_BASELINE
    predictions = pl.concat(systems)
    write_parquet(predictions, paths.EVALUATE_PREDICTIONS)

    means = dict(predictions.group_by("system").agg(pl.col("score").mean()).iter_rows())
    by_op = (
        predictions.with_columns(op=pl.col("instruction").map_elements(skill.op_of, return_dtype=pl.String))
        .pivot(on="system", index="op", values="score", aggregate_function="mean")
        .select("op", *SYSTEMS, *[name for name in OPTIONAL_SYSTEMS if name in models])
        .sort("op")
    )
    with atomic_path(paths.EVALUATE_BY_OP_PLOT) as tmp:
        by_op.unpivot(index="op", variable_name="system", value_name="score").write_csv(tmp)
    with atomic_path(paths.EVALUATE_CHART) as tmp:
        chart(by_op, tmp)
    metrics = {
        "rows": evals.height,
        **{name: round(float(means[name]), 4) for name in (*SYSTEMS, *OPTIONAL_SYSTEMS) if name in means},
        "method": params.train.method,
        # forward KL per token to the teacher's top-k on its held-out answers (needs generate.top_logprobs)
        "heldout_kl_to_teacher": {name: heldout_kl(str(path), evals, teacher, teacher_topk, template,
                                                   params.train.max_length) for name, path in models.items()},
        # loss on general held-out rows before vs after training: a rise is forgetting (stages/forgetting.py)
        "forgetting_probe": forgetting.probe({"student_before": params.train.student} | {
            name: str(path) for name, path in models.items()}, Path(params.evaluate.general_eval), template,
            params.train.max_length, params.train.seed),
        "teacher_requests_sent": teacher_cost["requests_sent"],
        "teacher_cache_hits": teacher_cost["cache_hits"],
        "store_lines_quarantined": teacher_cost["store_lines_quarantined"],
        "eval_hash": content_hash(evals["id"].to_list()),
        "wall_s": round(time.monotonic() - started, 2),
    }
    metrics["gap_closed"] = gap_closed(metrics["student_before"], metrics["student_after"], metrics["teacher"])
    ratio = metrics["student_after"] / metrics["teacher"] if metrics["teacher"] else None
    metrics["student_vs_teacher"] = None if ratio is None else round(ratio, 4)
    write_json(metrics, paths.metrics("evaluate"))
    mistakes = predictions.filter((pl.col("system") == "student_after") & (pl.col("score") < 1)).head(10)
    write_text(report(metrics, by_op, mistakes), paths.EVALUATE_REPORT)
    print(f"evaluate: before {metrics['student_before']:.3f}, after {metrics['student_after']:.3f}, "
          f"teacher {metrics['teacher']:.3f}")


if __name__ == "__main__":
    guarded("evaluate", main)
