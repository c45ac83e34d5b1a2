"""Report: the whole run on one self-contained page, reports/index.html.

Reads:   metrics/*.json, reports/gates/*.json, data/select/rows.parquet, data/generate/rejects.parquet,
         data/train/log.parquet, data/evaluate/predictions.parquet, reports/plots/eval_by_group.csv, the student's
         lineage (data/train/model's manifest, the request store, dvc.lock)
Writes:  reports/index.html, reports/model_card.md (the student's Hugging Face model card with the eval table),
         logs/report.json (wall time)
Params:  teacher, teachers (their prices: what the student's rows cost); the rest is what the stages wrote

The funnel (rows kept and dropped by reason at each stage, with example rows), cost (per teacher and method the
answers behind the data, dollars per point of eval gain and per 10% of the teacher gap closed; not what one run
sent or spent, which logs/ and `dvc metrics show` have: a rerun writes the same page),
the eval with its protocol, the standard benchmarks, training curves and the sweep, every gate's expectations
with links to its Great Expectations Data Docs, and lineage from sample rows and from the student. Facts come
from distill/report/run_facts.py, charts from distill/report/charts.py, the page from distill/report/page.py.
Open it from disk (file://): it needs no server and no internet.
"""

from __future__ import annotations

import time

from distill import paths, run_log
from distill.entry import guarded
from distill.io import write_text
from distill.lineage import model_lineage
from distill.model_card import NotTrainedHere, git_state, model_card
from distill.report.page import render
from distill.report.run_facts import RunFiles, gather, student_summary


def commit() -> str:
    """HEAD's short hash, marked when tracked files other than the pipeline's own outputs differ from it (the run
    is not HEAD's; distill.model_card.git_state)."""
    state = git_state()
    if state["commit"] is None:
        return "no git commit"
    return state["commit"][:12] + (" + uncommitted changes" if state["dirty"] else "")


def run(files: RunFiles, head: str, lineage: dict | None) -> tuple[str, str | None]:
    """The page's HTML and the student's model card (None without a student) from the run's files and the
    student's lineage (``distill.lineage.model_lineage``)."""
    facts = gather(files)
    student = student_summary(lineage, paths.MODEL_CARD) if lineage else None
    card = model_card(lineage["facts"], files.json(paths.metrics("evaluate"))) if lineage else None
    return render(facts, paths.REPORT_PAGE, head, student), card


def main() -> None:
    started = time.monotonic()
    try:
        lineage = model_lineage(paths.TRAIN_MODEL)
    except NotTrainedHere:  # a checkpoint from before the train stage wrote its manifest: the page says so
        lineage = None
    page, card = run(RunFiles(), commit(), lineage)
    write_text(card or "No student trained by this pipeline's train stage yet.\n", paths.MODEL_CARD)
    write_text(page, paths.REPORT_PAGE)
    run_log.record("report", started)
    print(f"report: {paths.REPORT_PAGE} (open it in a browser; it needs no server), the model card: "
          f"{paths.MODEL_CARD}")


if __name__ == "__main__":
    guarded("report", main)
