"""The benchmark scripts run, at a tiny size, into a results file of the test's own: a signature change in the
library that breaks one (as issue 14's chat renderer broke train.py and white_box.py) fails here, not for the next
person who measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RUNS = {
    "train": ["--steps", "2", "--rows", "64", "--repeats", "2"],
    "white_box": ["--steps", "2", "--teacher-steps", "2", "--rows", "120"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY_RUNS))
def test_the_benchmark_runs_and_writes_its_results(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    result = subprocess.run([sys.executable, f"benchmarks/{name}.py", *TINY_RUNS[name], "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    if name == "train":
        assert written["repeats"] == 2 and all(len(runs) == 2 for runs in written["seconds"].values())
        assert set(written["spread"]) == {"sft_vs_plain_loop", "kd_vs_sft"} and written["kd_vs_sft"] > 0
    else:
        assert set(written["methods"]) >= {"sft", "kd"}
