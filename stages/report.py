"""Report: the whole run on one self-contained page, reports/index.html.

Reads:   metrics/*.json, reports/gates/*.json, data/select/rows.parquet, data/generate/rejects.parquet,
         data/train/log.parquet, data/evaluate/predictions.parquet, reports/plots/eval_by_group.csv, the student's
         lineage (data/train/model's manifest, the request store, dvc.lock)
Writes:  reports/index.html, reports/model_card.md (the student's Hugging Face model card with the eval table)
Params:  teacher, teachers (their prices: what the student's rows cost); the rest is what the stages wrote

The funnel (rows kept and dropped by reason at each stage, with example rows), cost (estimate vs spent per
teacher, store hits, batch vs online, dollars per point of eval gain and per 10% of the teacher gap closed),
the eval with its protocol, the standard benchmarks, training curves and the sweep, every gate's expectations
with links to its Great Expectations Data Docs, and lineage from sample rows and from the student. Facts come
from distill/report/run_facts.py, charts from distill/report/charts.py, the page from distill/report/page.py.
Open it from disk (file://): it needs no server and no internet.
"""

from __future__ import annotations

import subprocess

from distill import paths
from distill.entry import guarded
from distill.io import write_text
from distill.lineage import model_lineage
from distill.model_card import NotTrainedHere, model_card
from distill.report.page import render
from distill.report.run_facts import RunFiles, gather, student_summary


def commit() -> str:
    """HEAD's short hash, marked when the workspace has changes git would commit (the run is not HEAD's)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "no git commit"
    return head + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def run(files: RunFiles, head: str, lineage: dict | None) -> tuple[str, str | None]:
    """The page's HTML and the student's model card (None without a student) from the run's files and the
    student's lineage (``distill.lineage.model_lineage``)."""
    facts = gather(files)
    student = student_summary(lineage, paths.MODEL_CARD) if lineage else None
    card = model_card(lineage["facts"], files.json(paths.metrics("evaluate"))) if lineage else None
    return render(facts, paths.REPORT_PAGE, head, student), card


def main() -> None:
    try:
        lineage = model_lineage(paths.TRAIN_MODEL)
    except NotTrainedHere:  # a checkpoint from before the train stage wrote its manifest: the page says so
        lineage = None
    page, card = run(RunFiles(), commit(), lineage)
    write_text(card or "No student trained by this pipeline's train stage yet.\n", paths.MODEL_CARD)
    write_text(page, paths.REPORT_PAGE)
    print(f"report: {paths.REPORT_PAGE} (open it in a browser; it needs no server), the model card: "
          f"{paths.MODEL_CARD}")


if __name__ == "__main__":
    guarded("report", main)
