"""The benchmark scripts run, at a tiny size, into a results file of the test's own: a signature change in the
library that breaks one (as issue 14's chat renderer broke train.py and white_box.py) fails here, not for the next
person who measures. (dedupe.py, pipeline.py and schedule.py have fixed costs too large for a tiny run: a 20k-row
unit study, the whole pipeline.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RUNS = {
    "train": ["--steps", "2", "--rows", "64", "--repeats", "2"],
    "white_box": ["--steps", "2", "--teacher-steps", "2", "--rows", "120", "--repeats", "1"],  # its evals dominate
    "teacher_throughput": ["--requests", "40", "--sequential-requests", "4", "--latency-ms", "1", "--repeats", "2"],
    "scale": ["--sizes", "200,2000", "--requests", "0", "--repeats", "1", "--embed-sample", "0"],
    "hf_teacher": ["--requests", "32", "--max-tokens", "4", "--batches", "16,4", "--hidden", "64", "--layers", "1",
                   "--flow-requests", "0", "--repeats", "1"],
    "decontaminate": ["--sizes", "3000", "--items", "500", "--repeats", "1"],
    "load": ["--requests", "300", "--concurrency", "32", "--latency-ms", "1"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.reliability) if name == "load" else name
                                  for name in sorted(TINY_RUNS)])  # load.py's figures go to the reliability table
def test_the_benchmark_runs_and_writes_its_results(name: str, tmp_path: Path, reliability) -> None:
    out = tmp_path / f"{name}.json"
    result = subprocess.run([sys.executable, f"benchmarks/{name}.py", *TINY_RUNS[name], "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    if name == "train":
        assert written["repeats"] == 2 and all(len(runs) == 2 for runs in written["seconds"].values())
        assert set(written["spread"]) == {"sft_vs_plain_loop", "kd_vs_sft"} and written["kd_vs_sft"] > 0
    elif name == "white_box":
        assert set(written["methods"]) >= {"sft", "kd"}
        assert all(len(m["runs"]["seconds"]) == 1 and "range" in m for m in written["methods"].values())
    elif name == "teacher_throughput":
        assert all(len(run["runs_rps"]) == 2 and run["failed"] == 0 for run in written["engine"].values())
    elif name == "hf_teacher":  # the engine with the hf:// transport against plain generate, same model
        assert set(written["batches"]) == {"16", "4"} and written["ratio_vs_generate"] > 0
        assert written["logprobs_top20"]["rps"] > 0 and written["torch_threads"] == 1
    elif name == "load":  # 20% faulty attempts: every request answered, a rerun pays nothing
        assert written["answered"] == written["requests"] == 300 and written["lost"] == 0
        assert written["rerun_sent"] == 0 and 0 < written["peak_rss_gb"] <= 1
        assert all(written["faults_injected"].values()) and written["retries_total"] >= sum(
            written["faults_injected"].values())
        reliability("teacher faults", requests=written["requests"], lost=written["lost"])
    elif name == "decontaminate":  # every planted pasted question found, nothing else
        assert written["planted"] == written["found"] == 3 and written["sizes"]["3000"]["unplanted_found"] == 0
        assert written["seconds_3000_vs_500"] > 0 and 0 < written["peak_rss_gb"] < 2
    else:  # the score -> dedupe -> select path at two sizes, each stage in a process of its own
        assert set(written["stages"]) == {"200", "2000"} and written["growth_200_to_2000"] > 0
        stages = written["stages"]["2000"]
        assert stages["dedupe"]["duplicates_by_kind"]["exact"] > 0 and stages["dedupe"]["contaminated_rows"] > 0
        assert stages["select"]["kept"] == 1000 and 0 < written["peak_rss_gb_2000"] < 2  # select.max_fraction 0.5
