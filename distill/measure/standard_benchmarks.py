"""Standard benchmarks through lm-evaluation-harness: the student before and after training and the teacher, each
scored by the same harness on the same task, prompt, few-shot count, item limit and generation settings.

The students run as lm-eval's ``hf`` model (HFLM) on an already loaded checkpoint (a config-only student is
initialised from ``student.seed``, as everywhere else), through their chat template when they have one. The teacher
runs as lm-eval's ``local-chat-completions`` model at its endpoint: the prompt is one user message (that API takes
messages only), the same text the students get. Its answers go into lm-eval's own request cache (a SQLite file per
teacher identity under data/store/benchmark), so a rerun sends nothing it has an answer for. Retries are lm-eval's
(``DISTILL_TEACHER_MAX_ATTEMPTS``), with ``DISTILL_TEACHER_CONCURRENCY`` requests in flight and
``DISTILL_TEACHER_TIMEOUT_S`` per request, as the engine reads them.

lm_eval is imported only inside the functions that run it: with ``benchmarks.lm_eval: false`` nothing here loads it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from distill.chat import has_chat_template
from distill.device import for_inference, use_all_cores
from distill.entry import StageError
from distill.measure.metrics import gap_closed
from distill.params import BenchmarkSet, BenchmarksParams, StudentParams, TeacherParams
from distill.records import SYSTEMS
from distill.student import load_model, load_tokenizer
from distill.teacher.engine import EngineSettings

NO_KEY = "standin-needs-no-key"  # what a plugin teacher (the stand-in) is sent as its key: it checks none


def is_task_file(spec: str) -> bool:
    """A task given as a YAML file (a path) rather than as a registered lm-eval task name."""
    return spec.endswith((".yaml", ".yml")) or "/" in spec or os.sep in spec


def task_manager(specs: list[str]):
    """lm-eval's task index: its registered tasks only when a spec names one (indexing them takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=not all(is_task_file(spec) for spec in specs))


def scored_sets(benchmarks: BenchmarksParams) -> list[BenchmarkSet]:
    """The sets with a task, each checked before anything runs: a task file must exist, a name must be registered."""
    chosen = [item for item in benchmarks.sets if item.task]
    if not chosen:
        return []
    manager = task_manager([item.task for item in chosen])
    for index, item in enumerate(benchmarks.sets):
        if not item.task:
            continue
        where = f"benchmarks.sets[{index}].task={item.task!r} ({item.name})"
        if is_task_file(item.task) and not Path(item.task).is_file():
            raise StageError(f"{where}: no such task file (paths are relative to the repo root, where stages run); "
                             "point it at an lm-eval task YAML, or set task: null to only decontaminate against it")
        if not is_task_file(item.task) and item.task not in manager.all_tasks:
            raise StageError(f"{where}: not a task lm-eval knows (`lm_eval ls tasks` lists them) nor a task YAML "
                             "file; fix the name, give a path to a YAML, or set task: null")
    return chosen


class Redact(logging.Filter):
    """Hides the teacher's key in lm-eval's log lines: a failed request's error message repeats its headers."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret and self.secret in message:
            record.msg, record.args = message.replace(self.secret, "***"), ()
        return True


def student_lm(path: str, student: StudentParams, batch_size: int):
    """(lm-eval's hf model on the checkpoint at ``path``, whether it answers through a chat template)."""
    from lm_eval.models.huggingface import HFLM

    use_all_cores()
    tokenizer = load_tokenizer(path, padding_side="left")
    model = for_inference(load_model(path, student.seed), student.device)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size), has_chat_template(tokenizer)


def teacher_lm(teacher: TeacherParams, base_url: str, api_key_env: str | None, engine: EngineSettings):
    """lm-eval's local-chat-completions model at the teacher's endpoint. The key is read from the variable
    ``teacher.api_key_env`` names, handed to lm-eval as a header in memory, and hidden in its logs."""
    from lm_eval.models.openai_completions import LocalChatCompletion

    key = os.environ[api_key_env] if api_key_env else NO_KEY
    for name in ("lm_eval.models.api_models", "lm_eval.models.openai_completions"):
        logging.getLogger(name).addFilter(Redact(key))
    return LocalChatCompletion(model=teacher.model, base_url=base_url.rstrip("/") + "/chat/completions",
                               num_concurrent=engine.concurrency, max_retries=engine.max_attempts,
                               timeout=max(1, round(engine.timeout_s)), header={"Authorization": f"Bearer {key}"})


def harness(lm, task: str, benchmarks: BenchmarksParams, chat: bool, cache: Path | None = None) -> dict:
    """One lm-eval run of ``lm`` on ``task``; ``cache``: lm-eval's request cache (its sqlite files start with it)."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm, tasks=[task], task_manager=task_manager([task]), num_fewshot=benchmarks.num_fewshot,
        limit=benchmarks.limit, bootstrap_iters=0, log_samples=True, apply_chat_template=chat,
        fewshot_as_multiturn=chat, use_cache=None if cache is None else str(cache))


def cached_answers(cache: Path) -> int:
    """Answers in lm-eval's request cache (one file per rank, ``<cache>_rank<r>.db``)."""
    from sqlitedict import SqliteDict

    total = 0
    for path in cache.parent.glob(f"{cache.name}_rank*.db"):
        with SqliteDict(str(path), flag="r") as db:
            total += len(db)
    return total


def leaves(result: dict) -> list[str]:
    """The tasks a run scored (a group's subtasks; the task itself otherwise)."""
    return sorted(result["configs"])


def headline(result: dict) -> tuple[str, str]:
    """(the task or group reported, its first metric as lm-eval names it, e.g. ``exact_match,strip``)."""
    table = result.get("groups") or result["results"]
    name = next(iter(table))
    metric = next(key for key in table[name] if "," in key and "_stderr" not in key)
    return name, metric


def protocol(result: dict) -> dict:
    """How a run measured: what must be the same for every system."""
    import lm_eval

    configs = result["configs"]
    return {"lm_eval": lm_eval.__version__, "limit": result["config"]["limit"],
            "num_fewshot": {task: configs[task]["num_fewshot"] for task in leaves(result)},
            "generation_kwargs": {task: configs[task].get("generation_kwargs") for task in leaves(result)},
            "task_versions": {task: result["versions"][task] for task in leaves(result)},
            "fewshot_seed": result["config"]["fewshot_seed"]}


def prompt_text(argument) -> str:
    """The prompt of a logged request: the text itself, or a chat request's last user message (local-chat-completions
    gets the prompt as JSON messages)."""
    text = argument[0] if isinstance(argument, tuple) else argument  # a chat prompt is lm-eval's JsonChatStr
    if isinstance(argument, tuple):
        messages = json.loads(text)
        return next(message["content"] for message in reversed(messages) if message["role"] == "user")
    return text


def sample_rows(benchmark: str, system: str, result: dict, metric: str) -> list[dict]:
    """lm-eval's logged samples of a run (BENCHMARK_SAMPLE rows) under the headline metric's filter."""
    key, _, filter_name = metric.partition(",")
    return [{"benchmark": benchmark, "task": task, "system": system, "doc_id": sample["doc_id"],
             "prompt": prompt_text(sample["arguments"][0][0]), "target": str(sample["target"]),
             "response": str(sample["resps"][0][0]), "answer": str(sample["filtered_resps"][0]),
             "score": float(sample[key])}
            for task, samples in result["samples"].items() for sample in samples
            if sample.get("filter", filter_name) == filter_name]


def summarise(item: BenchmarkSet, results: dict[str, dict], interfaces: dict[str, dict]) -> dict:
    """One benchmark's metrics: every system's score on the headline metric, the gap closed, the shared protocol."""
    name, metric = headline(results["teacher"])
    protocols = {system: protocol(results[system]) for system in SYSTEMS}
    if any(protocols[system] != protocols["teacher"] for system in SYSTEMS):
        raise StageError(f"benchmarks.sets {item.name}: the systems were measured differently ({protocols}); "
                         "they must share the task, few-shot count, limit and generation settings")
    scores = {}
    for system in SYSTEMS:
        table = results[system].get("groups") or results[system]["results"]
        scores[system] = round(float(table[name][metric]), 4)
    n = sum(results["teacher"]["n-samples"][task]["effective"] for task in leaves(results["teacher"]))
    return {"task": item.task, "lm_eval_task": name, "metric": metric, "n": n, **scores,
            "gap_closed": gap_closed(scores["student_before"], scores["student_after"], scores["teacher"]),
            "protocol": protocols["teacher"],
            "runs": {system: interfaces[system] | {"protocol": protocols[system]} for system in SYSTEMS}}


def measure(benchmarks: BenchmarksParams, student: StudentParams, teacher: TeacherParams, students: dict[str, str],
            endpoint, cache: Path) -> tuple[dict[str, dict], list[dict], dict]:
    """Every scored set's metrics, by name, lm-eval's logged samples, and what this run did (each system's wall
    time, the teacher requests sent and those answered from the cache, per set: a run log's facts, which a rerun
    changes). ``students``: system -> checkpoint; ``endpoint(teacher)``: a context manager yielding the teacher's
    (base_url, api_key_env)."""
    if teacher.provider == "hf":
        raise StageError("benchmarks.lm_eval: lm-eval reaches the teacher over the OpenAI API, and teacher.provider "
                         "is hf; serve the model (vLLM, `transformers serve`) and set provider: openai and base_url, "
                         "or set benchmarks.lm_eval: false")
    chosen = scored_sets(benchmarks)
    results: dict[str, dict[str, dict]] = {system: {} for system in SYSTEMS}
    interfaces: dict[str, dict] = {}
    facts: dict[str, dict] = {"wall_s_by_system": {}, "teacher_requests_sent": {}, "teacher_cache_hits": {}}
    for system, path in students.items():
        started = time.monotonic()
        lm, chat = student_lm(path, student, benchmarks.batch_size)
        for item in chosen:
            results[system][item.name] = harness(lm, item.task, benchmarks, chat)
        interfaces[system] = {"model": "hf", "checkpoint": path, "chat_template": chat}
        facts["wall_s_by_system"][system] = round(time.monotonic() - started, 2)
        del lm
    engine = EngineSettings.from_env()
    started = time.monotonic()
    with endpoint(teacher) as (base_url, api_key_env):
        lm = teacher_lm(teacher, base_url, api_key_env, engine)
        for item in chosen:
            before = cached_answers(cache)
            results["teacher"][item.name] = harness(lm, item.task, benchmarks, True, cache)
            sent = cached_answers(cache) - before
            requests = sum(results["teacher"][item.name]["n-samples"][task]["effective"]
                           for task in leaves(results["teacher"][item.name]))
            facts["teacher_requests_sent"][item.name] = sent
            facts["teacher_cache_hits"][item.name] = requests - sent
    interfaces["teacher"] = {"model": "local-chat-completions", "endpoint": teacher.name, "chat_template": True}
    facts["wall_s_by_system"]["teacher"] = round(time.monotonic() - started, 2)
    metrics, samples = {}, []
    for item in chosen:
        by_system = {system: results[system][item.name] for system in SYSTEMS}
        metrics[item.name] = summarise(item, by_system, interfaces)
        samples += [row for system in SYSTEMS
                    for row in sample_rows(item.name, system, by_system[system], metrics[item.name]["metric"])]
    return metrics, samples, facts


def cell(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def report(metrics: dict) -> str:
    """reports/benchmark.md: one row per benchmark, then how it was measured."""
    lines = ["# Standard benchmarks (lm-evaluation-harness)", ""]
    if not metrics["lm_eval"]:
        return "\n".join(lines + ["Off (`benchmarks.lm_eval: false`): the benchmark sets are only decontaminated "
                                  "against (dedupe.decontaminate).", ""])
    if not metrics["benchmarks"]:
        return "\n".join(lines + ["No benchmark set has a task (`benchmarks.sets[].task`): nothing to score.", ""])
    lines += [f"lm-eval {metrics['lm_eval_version']}: the students as its `hf` model, the teacher as its "
              "`local-chat-completions` model, each on the same task, prompt, few-shot count, item limit and "
              "generation settings.", "",
              "| benchmark | task | metric | n | student before | student after | teacher | gap closed |",
              "|---|---|---|---|---|---|---|---|"]
    for name, row in metrics["benchmarks"].items():
        lines.append(f"| {name} | {row['task']} | {row['metric']} | {row['n']} | {cell(row['student_before'])} | "
                     f"{cell(row['student_after'])} | {cell(row['teacher'])} | {cell(row['gap_closed'])} |")
    lines += ["", "Gap closed = (after - before) / (teacher - before); n/a when the teacher does not beat the "
              "student before training.", "", "## Protocol", ""]
    for name, row in metrics["benchmarks"].items():
        how = row["protocol"]
        lines.append(f"- {name}: limit {how['limit'] or 'none'}, few-shot {how['num_fewshot']}, generation "
                     f"{json.dumps(how['generation_kwargs'])}.")
    lines += ["", "The teacher requests the last run sent, and those lm-eval's cache answered: `logs/benchmark.json`."]
    skipped = metrics.get("skipped") or []
    if skipped:
        lines += ["", f"Decontamination only (no task): {', '.join(skipped)}."]
    return "\n".join(lines + [""])
