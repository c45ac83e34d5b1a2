"""dvc commands run for the flows: lines streamed as they come, progress bars thinned, a failure raised
with the failing stage's own message (a real dvc in a temporary repo)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from distill.dvc_cli import DvcFailed, run_dvc

PROGRESS = """import sys, time
for i in range(60):  # a progress bar: 60 in-place updates in about 1.2 s
    sys.stderr.write(f"\\r{i}%")
    time.sleep(0.02)
sys.stderr.write("\\n")  # as tqdm ends a bar it leaves on screen
print("done")
"""
GATE = "import sys\nsys.exit('gate bar failed: rows: observed 0, expected >= 1')\n"


@pytest.fixture
def repo(tmp_path: Path, run) -> Path:
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    (tmp_path / "progress.py").write_text(PROGRESS)
    (tmp_path / "gate.py").write_text(GATE)
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          bar:
            cmd: python progress.py > out.txt
            deps: [progress.py]
            outs: [out.txt]
          gate:
            cmd: python gate.py
            deps: [out.txt, gate.py]
        """))
    return tmp_path


def test_lines_stream_and_progress_updates_are_thinned(repo: Path) -> None:
    lines: list[str] = []
    output = run_dvc(["repro", "bar"], repo, lines.append)
    assert "Running stage 'bar':" in lines
    progress = [line for line in lines if line.endswith("%")]
    assert progress == ["0%", "59%"]  # of 60 in-place updates within 5 s, the first is shown, and the last one left
    assert [line for line in output.splitlines() if line.endswith("%")] == ["59%"]  # lasting lines only
    assert (repo / "out.txt").read_text() == "done\n"


def test_a_failed_stage_raises_with_its_message(repo: Path) -> None:
    with pytest.raises(DvcFailed) as failure:
        run_dvc(["repro"], repo, lambda line: None)
    message = str(failure.value)
    assert message.startswith("dvc repro failed (exit 255); its last lines:")
    assert "gate bar failed: rows: observed 0, expected >= 1" in message
