"""Benchmark: the student before and after training and the teacher on standard benchmarks, through
lm-evaluation-harness, with the same task, prompt, few-shot count, item limit and generation settings for all three.

Reads:   every benchmarks.sets[] task (a task YAML such as data/benchmarks/words.yaml and the items it names, or a
         task lm-eval knows by name, online), the student as it was before training (``student.model``, seeded like
         the training run), data/train/model/, the teacher at its endpoint (the stand-in started on 127.0.0.1)
Writes:  metrics/benchmark.json, reports/benchmark.md, data/benchmark/samples.parquet (BENCHMARK_SAMPLE: lm-eval's
         logged samples), data/store/benchmark/ (lm-eval's cache of the teacher's answers: a rerun pays nothing twice),
         logs/benchmark.json (each system's wall time, the teacher requests this run sent and those the cache served)
Params:  benchmarks (sets, lm_eval, limit, num_fewshot, batch_size), student, teacher

With ``benchmarks.lm_eval: false`` it writes metrics and a report that say so, and never imports lm_eval. Each
benchmark's score is its task's first metric (as lm-eval names it, e.g. ``exact_match,strip``); gap closed =
(after - before) / (teacher - before). The library is distill/measure/standard_benchmarks.py.

Run: ``python -m stages.benchmark`` (DVC stage ``benchmark``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths, run_log
from distill.entry import guarded
from distill.io import content_hash, write_json, write_parquet, write_text
from distill.measure.standard_benchmarks import measure, report
from distill.records import BENCHMARK_SAMPLE
from distill.teacher.endpoint import teacher_endpoint, teacher_identity


def run(params: params_module.Params, model_dir: Path, store_dir: Path,
        endpoint: Callable = teacher_endpoint) -> tuple[dict, pl.DataFrame]:
    """The metrics and lm-eval's logged samples (BENCHMARK_SAMPLE). ``store_dir`` holds the teacher's request cache;
    ``endpoint(teacher)`` yields its (base_url, api_key_env) and starts a plugin provider (the stand-in)."""
    bench = params.benchmarks
    metrics: dict = {"lm_eval": bench.lm_eval, "lm_eval_version": None, "benchmarks": {},
                     "skipped": [item.name for item in bench.sets if bench.lm_eval and not item.task]}
    samples: list[dict] = []
    facts: dict = {}
    if bench.lm_eval:
        from importlib.metadata import version

        cache = store_dir / content_hash(teacher_identity(params.teacher))  # lm-eval's keys omit the model
        students = {"student_before": params.student.model, "student_after": str(model_dir)}
        metrics["benchmarks"], samples, facts = measure(bench, params.student, params.teacher, students, endpoint,
                                                        cache)
        metrics["lm_eval_version"] = version("lm_eval")
    return metrics | {run_log.RUN: facts}, pl.DataFrame(samples, schema=BENCHMARK_SAMPLE)


def main() -> None:
    started = time.monotonic()
    metrics, samples = run(params_module.load(), paths.TRAIN_MODEL, paths.BENCHMARK_STORE)
    facts = metrics.pop(run_log.RUN)
    paths.BENCHMARK_STORE.mkdir(parents=True, exist_ok=True)  # a DVC out even when off (then empty)
    write_parquet(samples, paths.BENCHMARK_SAMPLES)
    write_json(metrics, paths.metrics("benchmark"))
    write_text(report(metrics), paths.BENCHMARK_REPORT)
    run_log.record("benchmark", started, facts)
    for name, row in metrics["benchmarks"].items():
        print(f"benchmark {name}: before {row['student_before']:.3f}, after {row['student_after']:.3f}, "
              f"teacher {row['teacher']:.3f} ({row['metric']}, n={row['n']})")
    if not metrics["lm_eval"]:
        print("benchmark: off (benchmarks.lm_eval: false)")


if __name__ == "__main__":
    guarded("benchmark", main)
