"""Eval: the student before and after training, the plain-SFT baseline, and the teacher, on the held-out split.

Reads:   data/ingest/eval.parquet, data/train/model/, data/train/baseline/, the student as it was before
         training (``student.model``, seeded like the training run), the teacher, the general eval rows
Writes:  data/evaluate/predictions.parquet (PREDICTION), data/store/evaluate.jsonl (the teacher's eval
         answers, a request store), metrics/eval.json, reports/eval.md, reports/plots/eval_by_group.csv,
         reports/eval.png, logs/evaluate.json (the teacher and judge requests this run sent, its wall time)
Params:  evaluate, task, student, teacher, generate (the teacher is asked as generate asks it), train.objective

Scores are the task's metric (``task``, distill/task.py; no metric: exact match after normalisation), per
system and per the task's groups, on each answer without its reasoning: a student's after its think block
(``student.think_tags``; predictions.parquet keeps the whole text), the teacher's without its reasoning field or
block. ``metrics/eval.json`` also has the share of the teacher gap training
closed, the held-out KL to the teacher and the forgetting probe (distill/measure/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.chat import frame_prompts, frame_turns, plain_prompt
from distill.entry import guarded
from distill.io import atomic_path, content_hash, write_json, write_parquet, write_text
from distill.measure import forgetting
from distill.measure.eval_report import chart, report
from distill.measure.heldout_kl import heldout_kl
from distill.measure.metrics import gap_closed, pass_at, score_system, scored_part
from distill.measure.pairwise import win_rate
from distill.measure.sampling import student_answers
from distill.measure.teacher_answers import teacher_answers
from distill.records import OPTIONAL_SYSTEMS, SYSTEMS
from distill.student import has_weights, load_tokenizer
from distill.task import load as load_task
from distill.teacher.engine import Ledger


def judge_win_rates(evals: pl.DataFrame, answers: dict, params: params_module.Params, store_path: Path,
                    send: Callable[..., Ledger]) -> tuple[dict, dict]:
    """Each student's win rate against the teacher's own answers, judged by the teacher in both orders, on the
    answers without their reasoning (the metric's part); and per student the judge requests this run sent and
    those its store served (the run log's)."""
    tasks = [plain_prompt(turns) for turns in frame_turns(evals, "{instruction}")]  # chats as transcripts
    teacher = [samples[0] for samples in answers["teacher"]]
    rates = {name: win_rate(list(zip(tasks, [scored_part(samples[0], params.student.think_tags)
                                             for samples in answers[name]], teacher, strict=True)),
                            params, store_path, send) for name in answers if name != "teacher"}
    ledger = ("requests_sent", "cache_hits")
    return ({name: {key: value for key, value in rate.items() if key not in ledger} for name, rate in rates.items()},
            {name: {key: rate[key] for key in ledger} for name, rate in rates.items()})


def run(params: params_module.Params, evals: pl.DataFrame, store_path: Path, send: Callable[..., Ledger],
        model_dir: Path, baseline_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Predictions of every system (PREDICTION), the mean score per group and system, and the metrics.
    ``store_path`` is the teacher's eval request store; ``send`` sends its requests (handed in by main)."""
    task = load_task(params.task)
    template = Path(params.student.prompt_template).read_text(encoding="utf-8")
    prompts = frame_prompts(load_tokenizer(params.student.model), evals, template)
    models = {"student_after": model_dir}
    if has_weights(baseline_dir):  # train.objective is not sft: the plain-SFT baseline, same data and steps
        models["baseline_sft"] = baseline_dir
    protocol = params.evaluate
    answers = {name: student_answers(str(path), prompts, params.student, protocol.samples, protocol.temperature)
               for name, path in {"student_before": params.student.model, **models}.items()}
    teacher, teacher_cost, teacher_topk = teacher_answers(evals, params, store_path, send)
    answers["teacher"] = [[answer] for answer in teacher]
    predictions = pl.concat([score_system(evals, name, answers[name], task,
                                          None if name == "teacher" else params.student.think_tags)
                             for name in (*SYSTEMS, *OPTIONAL_SYSTEMS) if name in answers])
    means = dict(predictions.group_by("system").agg(pl.col("score").mean()).iter_rows())
    by_group = (
        predictions.with_columns(group=pl.col("instruction").map_elements(task.group, return_dtype=pl.String))
        .pivot(on="system", index="group", values="score", aggregate_function="mean")
        .select("group", *SYSTEMS, *[name for name in OPTIONAL_SYSTEMS if name in models])
        .sort("group")
    )
    metrics = {
        "rows": evals.height,
        "task": task.name,
        "metric": task.metric_name,
        "protocol": {  # how every student score was measured; the teacher answers greedily, as generate asks it
            "samples": protocol.samples, "temperature": protocol.temperature,
            "max_new_tokens": params.student.max_new_tokens, "seed": params.student.seed,
            "teacher": {"temperature": 0.0, "max_tokens": params.generate.max_tokens, "seed": params.generate.seed}},
        **{name: round(float(means[name]), 4) for name in (*SYSTEMS, *OPTIONAL_SYSTEMS) if name in means},
        "objective": params.train.objective,
        # forward KL per token to the teacher's top-k on its held-out answers (needs generate.top_logprobs)
        "heldout_kl_to_teacher": {name: heldout_kl(str(path), evals, teacher, teacher_topk, template,
                                                   params.student.max_length, params.student.device)
                                  for name, path in models.items()},
        # loss on general held-out rows before vs after training: a rise is forgetting (distill/measure/forgetting.py)
        "forgetting_probe": forgetting.probe({"student_before": params.student.model} | {
            name: str(path) for name, path in models.items()}, Path(params.evaluate.general_eval), template,
            params.student.max_length, params.student.seed, params.student.device),
        "store_lines_quarantined": teacher_cost["store_lines_quarantined"],
        "eval_hash": content_hash(evals["id"].to_list()),
        run_log.RUN: {"teacher_requests_sent": teacher_cost["requests_sent"],
                      "teacher_cache_hits": teacher_cost["cache_hits"]},
    }
    if protocol.samples > 1:  # a sample passes at the task's min_score
        metrics["pass_at_k"] = {f"pass@{k}": pass_at(predictions.filter(pl.col("system") != "teacher"), k,
                                                     params.task.min_score) for k in sorted({1, protocol.samples})}
    if protocol.judge:
        metrics["judge_win_rate"], metrics[run_log.RUN]["judge"] = judge_win_rates(evals, answers, params,
                                                                                    store_path, send)
    metrics["gap_closed"] = gap_closed(metrics["student_before"], metrics["student_after"], metrics["teacher"])
    ratio = metrics["student_after"] / metrics["teacher"] if metrics["teacher"] else None
    metrics["student_vs_teacher"] = None if ratio is None else round(ratio, 4)
    return predictions, by_group, metrics


def main() -> None:
    from flows.teacher import run_plan  # the orchestrator, handed to the library

    started = time.monotonic()
    predictions, by_group, metrics = run(params_module.load(), pl.read_parquet(paths.INGEST_EVAL),
                                         paths.EVALUATE_STORE, run_plan, paths.TRAIN_MODEL, paths.TRAIN_BASELINE)
    facts = metrics.pop(run_log.RUN)
    write_parquet(predictions, paths.EVALUATE_PREDICTIONS)
    with atomic_path(paths.EVALUATE_BY_GROUP_PLOT) as tmp:
        by_group.unpivot(index="group", variable_name="system", value_name="score").write_csv(tmp)
    with atomic_path(paths.EVALUATE_CHART) as tmp:
        chart(by_group, tmp)
    write_json(metrics, paths.metrics("evaluate"))
    run_log.record("evaluate", started, facts)
    mistakes = predictions.filter((pl.col("system") == "student_after") & (pl.col("sample") == 0)
                                  & (pl.col("score") < 1)).head(10)
    write_text(report(metrics, by_group, mistakes), paths.EVALUATE_REPORT)
    print(f"evaluate: before {metrics['student_before']:.3f}, after {metrics['student_after']:.3f}, "
          f"teacher {metrics['teacher']:.3f}")


if __name__ == "__main__":
    guarded("evaluate", main)
