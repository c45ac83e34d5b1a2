"""Great Expectations Data Docs of the gates (``distill/gate_docs.py``): a gate run stores its results in the
committed GX project ``gx/`` and rebuilds ``reports/gx/``; a failed gate's page names the failing expectation and
rows, the report links it, reruns keep one result per suite, two gates can publish at once, nothing is sent."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from distill.gate import main
from distill.gate_docs import current_page
from distill.records import DEDUPED

ROOT = Path(__file__).resolve().parents[1]
VALIDATIONS = Path("gx/uncommitted/validations")
PAGES = Path("reports/gx/validations")

# Runs a gate as `python -m stages.gates.<stage>` does, recording every network call Python makes.
AUDITED = """
import atexit, json, runpy, sys
calls = []
sys.addaudithook(lambda event, args: calls.append(f"{event} {args!r}"[:200]) if event in (
    "socket.connect", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg", "http.client.connect") else None)
atexit.register(lambda: print("network calls:", json.dumps(calls), file=sys.stderr))
sys.argv = [sys.argv[1]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def visible_text(page: Path) -> str:
    """The page as a reader sees it: no scripts, styles or tags, entities decoded, whitespace squeezed."""
    text = re.sub(r"<(script|style).*?</\1>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def write_deduped(workdir: Path, rows: list[dict], frame) -> None:
    (workdir / "data/dedupe").mkdir(parents=True, exist_ok=True)
    frame(rows, DEDUPED).write_parquet(workdir / "data/dedupe/rows.parquet")


def files(workdir: Path, folder: Path) -> list[str]:
    return sorted(path.relative_to(workdir / folder).as_posix() for path in (workdir / folder).rglob("*")
                  if path.is_file() and not path.name.startswith("."))


def test_a_failed_gate_s_page_names_the_expectation_and_the_failing_rows(gx_workdir, monkeypatch, capsys, suite,
                                                                         frame, good_deduped_rows) -> None:
    rows = good_deduped_rows(150)
    rows[2]["norm_hash"] = rows[1]["norm_hash"]  # two kept rows with the same normalised text
    rows[-1]["dup_of"] = None  # a duplicate that does not name its twin
    write_deduped(gx_workdir, rows, frame)
    config = (gx_workdir / "gx/great_expectations.yml").read_bytes()
    monkeypatch.chdir(gx_workdir)
    assert main(suite("dedupe"), []) == 1

    docs = json.loads((gx_workdir / "reports/gates/dedupe.json").read_text())["data_docs"]
    assert docs["index"] == "reports/gx/index.html" and (gx_workdir / docs["index"]).is_file()
    assert docs["suites"] == ["dedupe.rows", "dedupe.rows.dtypes"]
    page = current_page("dedupe.rows", gx_workdir)
    assert page.startswith("reports/gx/validations/dedupe/rows/gate-dedupe/") and page.endswith("/rows.html")
    assert capsys.readouterr().err.splitlines()[-1] == f"gate dedupe: Data Docs: {page}"

    text = visible_text(gx_workdir / page)
    assert "Status: Failed" in text
    unique = text.split("expect_column_values_to_be_unique(norm_hash) where keep == True", 1)[1]
    assert unique.split("To retrieve")[0].split() == [  # the unexpected value, its count and the failing ids
        "2", "unexpected", "values", "found.", "≈1.342%", "of", "149", "total", "rows.",
        "Unexpected", "Value", "Count", "id", "n1", "2", "g1,", "g2"]
    named = text.split("expect_column_values_to_not_be_null(dup_of) where drop_reason == 'duplicate'", 1)[1]
    assert "1 unexpected values found" in named and "g149" in named.split("To retrieve")[0]
    assert page.removeprefix("reports/gx/") in (gx_workdir / docs["index"]).read_text()  # the index links it
    assert (gx_workdir / "gx/great_expectations.yml").read_bytes() == config  # a run never rewrites it


def test_reruns_keep_one_result_and_one_page_per_suite(gx_workdir, monkeypatch, capsys, suite, frame,
                                                       good_deduped_rows) -> None:
    write_deduped(gx_workdir, good_deduped_rows(150), frame)
    monkeypatch.chdir(gx_workdir)
    pages, reports = [], []
    for _ in range(3):
        assert main(suite("dedupe"), []) == 0
        assert capsys.readouterr().out.rstrip().endswith(
            "(report: reports/gates/dedupe.json; Data Docs: reports/gx/index.html)")
        pages.append([current_page(name, gx_workdir) for name in ("dedupe.rows", "dedupe.rows.dtypes")])
        reports.append(Path("reports/gates/dedupe.json").read_bytes())
    assert reports[0] == reports[-1]  # the same data, the same report: the stages after the gate stay cached
    assert pages[0] != pages[-1] and all((gx_workdir / page).is_file() for page in pages[-1])
    assert not any((gx_workdir / page).exists() for page in pages[0])
    results, shown = files(gx_workdir, VALIDATIONS), files(gx_workdir, PAGES)
    for found in (results, shown):  # suite a.b is kept in folders a/b/<run name>/<run time>/
        assert sorted(name.split("/gate-dedupe/")[0] for name in found) == ["dedupe/rows", "dedupe/rows/dtypes"]
    for folder in (VALIDATIONS, PAGES):  # earlier runs leave no empty folders behind
        assert all(any(path.iterdir()) for path in (gx_workdir / folder).rglob("*") if path.is_dir())


def test_two_gates_publish_at_once_in_one_repo_and_send_nothing(gx_workdir, frame, good_deduped_rows,
                                                                good_seed_rows, write_ingest) -> None:
    write_deduped(gx_workdir, good_deduped_rows(150), frame)
    write_ingest(gx_workdir, good_seed_rows(150, "train"), good_seed_rows(60, "eval"))
    env = os.environ | {"PYTHONPATH": str(ROOT), "GX_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", AUDITED, f"stages.gates.{stage}"], cwd=gx_workdir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for stage in ("dedupe", "ingest")]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert "Data Docs: reports/gx/index.html" in out
        assert err.splitlines()[-1] == "network calls: []", err
    suites = {"dedupe.rows", "dedupe.rows.dtypes", "ingest.train", "ingest.train.dtypes", "ingest.eval",
              "ingest.eval.dtypes"}
    assert {name.rsplit("/", 3)[0].replace("/", ".") for name in files(gx_workdir, VALIDATIONS)} == suites
    index = (gx_workdir / "reports/gx/index.html").read_text()
    for stage in ("dedupe", "ingest"):
        docs = json.loads((gx_workdir / f"reports/gates/{stage}.json").read_text())["data_docs"]
        for page in (current_page(name, gx_workdir) for name in docs["suites"]):
            assert (gx_workdir / page).is_file() and page.removeprefix("reports/gx/") in index
