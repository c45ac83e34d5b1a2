"""The report stage: reports/index.html from a real `dvc repro` (the shared tiny run), its numbers against the
metrics files, and the page in headless Chromium (every chart decodes, no link is broken, a screenshot)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from distill.report.browser import broken_links, loaded_images, screenshot
from distill.report.page import render, usd
from distill.report.run_facts import RunFiles, cost, funnel, gather

METRICS = {
    "ingest": {"train": {"rows": 1000}},
    "generate": {"rows": 1100, "rejects_by_reason": {"http_400": 5}},
    "score": {"kept": 900, "dropped_by_reason": {"refusal": 150, "truncated": 50}},
    "dedupe": {"kept": 850, "dropped_by_reason": {"refusal": 150, "truncated": 50, "duplicate": 40,
                                                  "contaminated": 10}},
    "select": {"selected": 400, "dropped_by_reason": {"refusal": 150, "truncated": 50, "duplicate": 40,
                                                      "contaminated": 10, "over_budget": 450}},
    "train": {"examples": 400, "replayed_general_rows": 40},
}


def text_of(page: str) -> str:
    """The page as text: tags, charts and styles dropped, whitespace collapsed."""
    page = re.sub(r"<style>.*?</style>|data:image/png;base64,[A-Za-z0-9+/=]+", "", page, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).replace("&#39;", "'").replace("&amp;", "&")


def test_funnel_shows_each_stages_own_drops() -> None:
    steps = {step["stage"]: step for step in funnel(METRICS)}
    assert [step["rows"] for step in steps.values()] == [1000, 1100, 900, 850, 400, 400]
    assert steps["generate"]["dropped"] == {"http_400": 5}
    assert steps["score"]["dropped"] == {"refusal": 150, "truncated": 50}
    assert steps["dedupe"]["dropped"] == {"duplicate": 40, "contaminated": 10}  # not score's again
    assert steps["select"]["dropped"] == {"over_budget": 450}
    assert steps["select"]["dropped_total"] == 450
    assert steps["train"]["note"] == "+ 40 general rows replayed"


def test_dollars_per_point_and_per_gap_closed() -> None:
    generate = {"answers_cost_usd": 3.0, "cost_usd": 1.0, "rows_by_teacher": {"a": 12}, "by_teacher": {
        "a": {"requests_sent": 10, "cache_hits": 5, "answered_by_batch": 4, "batches": 1, "cost_usd": 1.0}},
        "answers_cost_by_teacher": {"a": 3.0},
        "answers_by_teacher": {"a": {"requests": 12, "prompt_tokens": 300, "completion_tokens": 90}}}
    facts = cost(generate, {"student_before": 0.2, "student_after": 0.5, "gap_closed": 0.6})
    assert facts["gain_points"] == pytest.approx(30)
    assert facts["usd_per_point"] == pytest.approx(0.1)  # $3 over 30 points
    assert facts["usd_per_10pct_gap"] == pytest.approx(0.5)  # $3 over 6 tenths of the gap
    # the answers behind the data, not what this run sent or spent (by_teacher): a rerun shows the same page
    assert facts["teachers"] == [{"teacher": "a", "rows": 12, "requests": 12, "prompt_tokens": 300,
                                  "completion_tokens": 90, "answers_cost_usd": 3.0}]
    worse = cost(generate, {"student_before": 0.5, "student_after": 0.4, "gap_closed": -0.2})
    assert worse["usd_per_point"] is None and worse["usd_per_10pct_gap"] is None  # no gain: nothing to divide


def test_a_run_with_nothing_yet_still_renders(tmp_path: Path) -> None:
    page = render(gather(RunFiles(tmp_path)), tmp_path / "reports/index.html", "abc")
    text = text_of(page)
    assert "The evaluate stage has not run." in text and "No training rows." in text
    assert broken_links_in(page, tmp_path) == []


def broken_links_in(page: str, root: Path) -> list[str]:
    path = root / "reports/index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return broken_links(path)


@pytest.fixture(scope="module")
def page(tiny_run: Path) -> Path:
    return tiny_run / "reports/index.html"


def test_the_run_writes_the_page_with_every_section(page: Path, tiny_run: Path, metrics) -> None:
    text = text_of(page.read_text())
    evaluation, generate, select = metrics(tiny_run, "eval"), metrics(tiny_run, "generate"), metrics(tiny_run, "select")
    for heading in ("Funnel: what each stage kept and dropped", "Cost", "Eval", "Training",
                    "How much teacher data is enough", "Data-quality gates", "Lineage"):
        assert heading in text, heading
    for system in ("student_before", "student_after", "teacher"):
        assert f"{system} {evaluation[system]:.3f} greedy" in text  # score with its protocol beside it
    assert f"Teacher gap closed: {evaluation['gap_closed']:.1%}" in text
    assert f"selected (select) {select['selected']:,}" in text
    gain = (evaluation["student_after"] - evaluation["student_before"]) * 100
    per_point = usd(generate["answers_cost_usd"] / gain) if gain > 0 else "n/a"  # the tiny run may not gain
    assert f"{per_point} per point of eval gain" in text
    benchmark = metrics(tiny_run, "benchmark")["benchmarks"]["words-bench"]  # lm-eval, on in the tiny profile too
    assert (f"words-bench {benchmark['task']} {benchmark['metric']} {benchmark['n']} "
            f"{benchmark['student_before']:.3f} {benchmark['student_after']:.3f} {benchmark['teacher']:.3f}") in text
    matched = metrics(tiny_run, "dedupe")["decontamination"]["benchmarks"]["words-bench"]
    assert "Benchmark decontamination (13-grams, action drop)" in text
    assert f"words-bench {matched['items']} {matched['rows_matched']}" in text
    gates = sorted(path.stem for path in (tiny_run / "reports/gates").glob("*.json"))
    assert all(f"gate {stage}:" in text for stage in gates) and len(gates) >= 8
    kept = pl.read_parquet(tiny_run / "data/select/rows.parquet").filter(pl.col("keep"))
    traced = re.findall(r"seed [0-9a-f]+: (\S+) line (\d+)", text)
    assert traced and all(path == "data/seeds/tiny_train.jsonl" for path, _ in traced)
    assert set(re.findall(r"request ([0-9a-f]{32})", text)) <= set(kept["request_key"])


def test_the_page_works_in_headless_chromium(page: Path, chromium: str, tmp_path: Path) -> None:
    seen = loaded_images(page, chromium)
    assert len(seen["images"]) == 4, seen  # funnel, eval, training, sweep
    assert all(image["loaded"] and image["width"] > 100 for image in seen["images"]), seen
    assert broken_links(page) == []  # the Data Docs pages it links to among them
    stubs = re.findall(r'href="(gx/latest/[^"]+\.html)"', page.read_text())  # stable: the pages' paths hold a time
    assert len(stubs) >= 16 and all(broken_links(page.parent / stub) == [] for stub in stubs)  # two suites per gate
    shot = screenshot(page, tmp_path / "report.png", chromium, width=1280, height=1600)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_browser_check_catches_a_broken_chart_and_link(tmp_path: Path, chromium: str) -> None:
    page = tmp_path / "index.html"
    page.write_text('<html><body><img alt="x" src="data:image/png;base64,AAAA"><a href="#nowhere">a</a>'
                    '<a href="gx/missing.html">b</a><a href="https://example.com">c</a></body></html>')
    seen = loaded_images(page, chromium)
    assert [image["loaded"] for image in seen["images"]] == [False]
    assert len(broken_links(page)) == 3


def test_the_page_is_escaped(tmp_path: Path) -> None:
    """Teacher and seed text is data: a row holding markup shows as text, it does not run."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps({"task": "<script>alert(1)</script>", "student_after": 1}))
    page = render(gather(RunFiles(tmp_path)), tmp_path / "reports/index.html", "abc")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_figures_a_run_did_not_produce_show_as_n_a(tmp_path: Path) -> None:
    """A chat student without the teacher's log-probs has no held-out KL; a run may have no losses or probe."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps({
        "task": "chat", "metric": "rouge_l", "student_before": 0.1, "student_after": 0.3, "teacher": None,
        "gap_closed": None, "heldout_kl_to_teacher": {"student_after": None},
        "forgetting_probe": {"rows": 5, "general_eval": "g.jsonl", "loss": {"student_after": None},
                             "forgetting": None}}))
    (tmp_path / "metrics/train.json").write_text(json.dumps({"examples": 3, "steps": 2, "objective": "sft",
                                                             "first_loss": None, "final_loss": None}))
    text = text_of(render(gather(RunFiles(tmp_path)), tmp_path / "reports/index.html", "abc"))
    assert "Held-out KL to the teacher, student_after: n/a" in text and "loss n/a → n/a" in text
    assert "Teacher gap closed: n/a" in text
