"""What a run did, gathered from what its stages wrote: the facts the HTML report shows.

Every number is read from a stage's metrics file or table (``metrics/*.json``, ``reports/gates/*.json``,
``data/*/*.parquet``), never recomputed a second way; this module only arranges them (the funnel's drops per
stage are differences of the cumulative counts the stages report) and derives the two ratios no stage owns:
dollars per point of eval gain and per 10% of the teacher gap closed.

``gather(read)`` takes a reader (``read.json(path)``, ``read.table(path)``, ``read.csv(path)``, each returning
None for a file the run did not write), so that a run without a sweep, a baseline or benchmarks still
reports what it has, and tests can hand in literal inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from distill import paths
from distill.gate_docs import latest_page

EXAMPLES_PER_REASON = 3  # example rows shown for each drop reason
MISTAKES = 10  # student mistakes shown after training
LINEAGE_SAMPLES = 3  # training rows traced back to their seed line
STUDENT_ROWS = 10  # the student's first training rows listed (distill lineage --model lists them all)
TEXT_CHARS = 160  # longer texts are cut in the page (the tables keep them whole)
SYSTEMS = ("student_before", "student_after", "baseline_sft", "teacher")
STAGES = ("ingest", "generate", "score", "dedupe", "select", "train", "evaluate", "sweep", "benchmark")  # in order


@dataclass
class RunFiles:
    """Reads a run's files under ``root``; a file the run did not write reads as None."""

    root: Path = Path(".")

    def json(self, path: Path | str) -> dict | None:
        file = self.root / path
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    def table(self, path: Path | str) -> pl.DataFrame | None:
        file = self.root / path
        return pl.read_parquet(file) if file.is_file() else None

    def csv(self, path: Path | str) -> pl.DataFrame | None:
        file = self.root / path
        return pl.read_csv(file) if file.is_file() else None


def cut(text: Any, chars: int = TEXT_CHARS) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def funnel(metrics: Mapping[str, dict | None]) -> list[dict]:
    """Seeds -> generated -> scored -> deduplicated -> selected -> trained on: rows after each stage and the
    rows each stage dropped, by reason. Score, dedupe and select report cumulative drops (their tables mark
    every row, including those an earlier stage dropped), so a stage's own drops are the difference."""
    ingest, generate = metrics.get("ingest") or {}, metrics.get("generate") or {}
    score, dedupe, select = metrics.get("score") or {}, metrics.get("dedupe") or {}, metrics.get("select") or {}
    train = metrics.get("train") or {}
    steps = [{"stage": "ingest", "label": "seeds", "rows": (ingest.get("train") or {}).get("rows"), "dropped": {}},
             {"stage": "generate", "label": "generated", "rows": generate.get("rows"),
              "dropped": dict(generate.get("rejects_by_reason") or {})}]
    before: dict[str, int] = {}
    for stage, label, stage_metrics, kept_key in (("score", "scored", score, "kept"),
                                                  ("dedupe", "deduplicated", dedupe, "kept"),
                                                  ("select", "selected", select, "selected")):
        cumulative = dict(stage_metrics.get("dropped_by_reason") or {})
        own = {reason: count - before.get(reason, 0) for reason, count in cumulative.items()
               if count - before.get(reason, 0) > 0}
        steps.append({"stage": stage, "label": label, "rows": stage_metrics.get(kept_key), "dropped": own})
        before = cumulative or before
    trained = train.get("examples")
    replayed = train.get("replayed_general_rows") or 0
    steps.append({"stage": "train", "label": "trained on", "rows": trained, "dropped": {},
                  "note": f"+ {replayed} general rows replayed" if replayed else ""})
    for step in steps:
        step["dropped_total"] = sum(step["dropped"].values())
    return steps


def drop_examples(marked: pl.DataFrame | None, rejects: pl.DataFrame | None) -> dict[str, list[dict]]:
    """A few rows per drop reason (the first ids, so the same run shows the same rows): from the select stage's
    table, which marks every generated row, and from generate's rejects (inputs that never became a row)."""
    examples: dict[str, list[dict]] = {}
    if rejects is not None and rejects.height:
        for (reason,), group in rejects.sort("request_key", nulls_last=True).group_by("reason", maintain_order=True):
            examples[str(reason)] = [
                {"id": row.get("request_key"), "text": cut(row.get("detail")),
                 "where": f"{row.get('source_file')}:{row.get('source_line')}"}
                for row in group.head(EXAMPLES_PER_REASON).to_dicts()]
    if marked is None:
        return examples
    dropped = marked.filter(~pl.col("keep")).sort("id")
    for (reason,), group in dropped.group_by("drop_reason", maintain_order=True):
        rows = []
        for row in group.head(EXAMPLES_PER_REASON).to_dicts():
            detail = {"duplicate": f"twin {row.get('dup_of')} ({row.get('dup_kind')})",
                      "over_budget": f"rank {row.get('select_rank')}, cluster {row.get('select_cluster')}",
                      "eval_overlap": f"eval row {row.get('contaminated_by')}"}.get(str(reason), "")
            rows.append({"id": row["id"], "text": cut(row.get("instruction")), "answer": cut(row.get("response")),
                         "detail": detail or cut(row.get("contaminated_by") or "")})
        examples[str(reason)] = rows
    return dict(sorted(examples.items()))


def per_unit(dollars: float | None, amount: float | None) -> float | None:
    """``dollars / amount``, None when there is nothing to divide by (no gain, or a loss)."""
    if dollars is None or amount is None or amount <= 0:
        return None
    return dollars / amount


def cost(generate: dict | None, evaluation: dict | None) -> dict:
    """What the teacher answers behind the data cost, per teacher (its rows, the requests and tokens behind them)
    and per method, and per point of eval gain (0.01 of the metric) and per 10% of the teacher gap closed. Only
    facts of the data, the same on every rerun: what one run sent, served from the request store and spent is
    that run's (logs/generate.json, ``dvc metrics show``), and a page that showed it would change with every
    rerun (tests/test_reproducible.py)."""
    generate, evaluation = generate or {}, evaluation or {}
    answers = generate.get("answers_by_teacher") or {}
    rows = generate.get("rows_by_teacher") or {}
    costs = generate.get("answers_cost_by_teacher") or {}
    teachers = [{"teacher": name, "rows": rows.get(name), **answers.get(name, {}), "answers_cost_usd": costs.get(name)}
                for name in sorted(set(answers) | set(costs))]
    by_method = generate.get("answers_cost_by_method") or {}
    methods = [{"method": name, "rows": (out or {}).get("rows"), "rejects": (out or {}).get("rejects"),
                "answers_cost_usd": by_method.get(name)} for name, out in (generate.get("elicit") or {}).items()]
    data_cost = generate.get("answers_cost_usd")
    before, after = evaluation.get("student_before"), evaluation.get("student_after")
    gain_points = None if before is None or after is None else (after - before) * 100
    gap_closed = evaluation.get("gap_closed")
    return {
        "teachers": teachers,
        "methods": methods,
        "data_cost_usd": data_cost,
        "gain_points": gain_points,
        "usd_per_point": per_unit(data_cost, gain_points),
        "usd_per_10pct_gap": per_unit(data_cost, None if gap_closed is None else gap_closed * 10),
    }


def protocol_text(evaluation: dict, system: str) -> str:
    protocol = evaluation.get("protocol") or {}
    if system == "teacher":
        teacher = protocol.get("teacher") or {}
        mode = "greedy" if not teacher.get("temperature") else f"T {teacher['temperature']}"
        return f"{mode}, seed {teacher.get('seed')}, at most {teacher.get('max_tokens')} tokens"
    mode = "greedy" if not protocol.get("temperature") else f"T {protocol['temperature']}"
    samples = protocol.get("samples") or 1
    return (f"{mode}, seed {protocol.get('seed')}, at most {protocol.get('max_new_tokens')} new tokens"
            + (f", {samples} samples" if samples > 1 else ""))


def evaluation_facts(evaluation: dict | None, by_group: pl.DataFrame | None,
                     predictions: pl.DataFrame | None) -> dict | None:
    """Before / after / baseline / teacher with the metric and protocol beside each, the gap closed, the
    per-group table, the student's mistakes, the held-out KL and the forgetting probe."""
    if not evaluation:
        return None
    systems = [{"system": name, "score": evaluation[name], "protocol": protocol_text(evaluation, name)}
               for name in SYSTEMS if evaluation.get(name) is not None]
    groups: list[dict] = []
    if by_group is not None and by_group.height:
        wide = by_group.pivot(on="system", index="group", values="score", aggregate_function="first")
        groups = wide.sort("group").to_dicts()
    mistakes: list[dict] = []
    if predictions is not None and predictions.height:
        wrong = predictions.filter((pl.col("system") == "student_after") & (pl.col("score") < 1)).sort("id")
        mistakes = [{"id": row["id"], "instruction": cut(row["instruction"]), "reference": cut(row["reference"]),
                     "prediction": cut(row["prediction"])} for row in wrong.head(MISTAKES).to_dicts()]
        mistakes_total = wrong.height
    else:
        mistakes_total = 0
    return {
        "task": evaluation.get("task"), "metric": evaluation.get("metric"), "rows": evaluation.get("rows"),
        "objective": evaluation.get("objective"), "systems": systems,
        "group_systems": [name for name in SYSTEMS if any(name in group for group in groups)],
        "gap_closed": evaluation.get("gap_closed"), "student_vs_teacher": evaluation.get("student_vs_teacher"),
        "groups": groups, "mistakes": mistakes, "mistakes_total": mistakes_total,
        "heldout_kl": evaluation.get("heldout_kl_to_teacher") or {},
        "forgetting": evaluation.get("forgetting_probe"),
        "win_rate": evaluation.get("judge"),
    }


def gate_facts(gates: Mapping[str, dict | None], root: Path = Path(".")) -> list[dict]:
    """Each gate's expectations (label, pass, observed, failing ids) and its Data Docs pages (found under
    ``root``: a report names its suites; each suite's page is linked at its stable address, since the page's own
    path holds the run's time)."""
    facts = []
    for stage, report in gates.items():
        if report is None:
            continue
        expectations = []
        for item in report.get("expectations") or []:
            kwargs = item.get("kwargs") or {}
            column = kwargs.get("column") or ", ".join(map(str, kwargs.get("column_list") or [])) or ""
            observed = item.get("observed")
            if item.get("unexpected_count") is not None:
                observed = f"{item['unexpected_count']} of {item.get('element_count')} rows unexpected"
            expectations.append({
                "table": item.get("table"), "type": item.get("type"), "column": column,
                "success": item.get("success"), "observed": cut(observed, 80),
                "failing_ids": ", ".join(map(str, item.get("failing_ids") or []))
                + (f" (+{item['more_ids']} more)" if item.get("more_ids") else "")})
        docs = report.get("data_docs") or {}
        pages = {suite: page for suite in docs.get("suites") or [] if (page := latest_page(suite, root))}
        facts.append({"stage": stage, "success": report.get("success"), "rows": report.get("rows") or {},
                      "evaluated": report.get("evaluated", len(expectations)), "failed": report.get("failed", 0),
                      "error": report.get("error"), "expectations": expectations,
                      "data_docs": pages, "data_docs_index": docs.get("index")})
    return facts


def lineage_samples(marked: pl.DataFrame | None) -> list[dict]:
    """A few training rows traced back: selection -> score -> dedupe -> teacher call -> seed line."""
    if marked is None:
        return []
    kept = marked.filter(pl.col("keep")).sort("select_rank", nulls_last=True)
    samples = []
    for row in kept.head(LINEAGE_SAMPLES).to_dicts():
        samples.append({
            "id": row["id"], "instruction": cut(row.get("instruction")), "response": cut(row.get("response")),
            "chain": [
                ("select", f"rank {row.get('select_rank')}, cluster {row.get('select_cluster')}"),
                ("score", f"quality {row.get('quality'):.3g}, verified {row.get('verified')}"
                 if row.get("quality") is not None else f"verified {row.get('verified')}"),
                ("dedupe", f"normalised hash {row.get('norm_hash')}, no kept twin"),
                ("generate", f"{row.get('method')} by {row.get('teacher')} ({row.get('model_answered')}), "
                             f"request {row.get('request_key')}, response {row.get('response_id')}, "
                             f"{row.get('prompt_tokens')} + {row.get('completion_tokens')} tokens"),
                ("ingest", f"seed {row.get('seed_id')}: {row.get('source_file')} line {row.get('source_line')}"),
            ]})
    return samples


def student_summary(lineage: dict, card: Path) -> dict:
    """The student's lineage (``distill.lineage.model_lineage``) as the page shows it: rows, teachers and their
    calls and cost, the commit, and the train stage's code with the md5 dvc.lock recorded."""
    facts, git = lineage["facts"], lineage["git"]
    trained_at = git.get("at_training") or {}
    commit = trained_at.get("commit") or "not in git"
    return {
        "model": lineage["model"], "rows": facts["rows"]["count"], "table_hash": facts["rows"].get("data_hash"),
        "teachers": [{"name": name} | total for name, total in sorted(lineage["teachers"].items())],
        "commit": commit + (" + uncommitted changes" if trained_at.get("dirty") else ""),
        "code": [{"path": dep["path"], "md5": dep["md5"]} for dep in lineage["dvc"].get("code", [])],
        "first_rows": [{key: row.get(key) for key in ("id", "content_hash", "source", "teacher", "request_key",
                                                      "cost_usd")} for row in lineage["rows"][:STUDENT_ROWS]],
        "card": str(card),
    }


def gather(files: RunFiles) -> dict:
    """Every fact the page shows, from the run's files."""
    metrics = {stage: files.json(paths.metrics(stage)) for stage in STAGES}
    reports = {path.stem: path for path in (files.root / paths.GATE_REPORTS).glob("*.json")}
    order = sorted(reports, key=lambda stage: (STAGES.index(stage) if stage in STAGES else len(STAGES), stage))
    gates = {stage: files.json(reports[stage].relative_to(files.root)) for stage in order}
    marked = files.table(paths.SELECT_ROWS)
    dedupe = metrics["dedupe"] or {}
    return {
        "task": (metrics["evaluate"] or {}).get("task"),
        "objective": (metrics["train"] or {}).get("objective"),
        "funnel": funnel(metrics),
        "examples": drop_examples(marked, files.table(paths.GENERATE_REJECTS)),
        "cost": cost(metrics["generate"], metrics["evaluate"]),
        "evaluation": evaluation_facts(metrics["evaluate"], files.csv(paths.EVALUATE_BY_GROUP_PLOT),
                                       files.table(paths.EVALUATE_PREDICTIONS)),
        "benchmarks": metrics["benchmark"],
        "decontamination": dedupe.get("decontamination"),
        "train": metrics["train"],
        "train_log": files.table(paths.TRAIN_LOG),
        "sweep": metrics["sweep"],
        "gates": gate_facts(gates, files.root),
        "lineage": lineage_samples(marked),
    }
