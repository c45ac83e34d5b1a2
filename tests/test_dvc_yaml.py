"""dvc.yaml agrees with the code: every stage lists the project modules it imports (a missing
one silently keeps stale outputs) and the paths in stages/paths.py that it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages import paths
from tests.project_imports import ROOT, project_files

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = ["ingest", "generate", "score", "dedupe", "select", "train", "evaluate"]  # each with a gate
REPORTS = ["sweep"]  # stages whose outputs are reports, not tables a later stage reads: no gate


def names(entries: list) -> set[str]:
    """Paths of a deps/outs list whose entries are strings or one-key dicts."""
    return {next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries}


def code_deps(stage: dict) -> set[str]:
    return {dep for dep in names(stage["deps"]) if dep.endswith(".py")}


@pytest.mark.parametrize("stage", STAGES + REPORTS)
def test_stage_lists_exactly_the_modules_it_imports(stage: str) -> None:
    assert code_deps(PIPELINE[stage]) == project_files(f"stages.{stage}")


@pytest.mark.parametrize("stage", STAGES)
def test_each_gate_lists_the_modules_it_imports(stage: str) -> None:
    gate = PIPELINE["validate"]["do"]
    listed = {dep.replace("${key}", stage) for dep in code_deps(gate)}
    assert listed == project_files("stages.validate") | project_files(f"stages.expectations.{stage}")
    assert set(PIPELINE["validate"]["foreach"]) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES + REPORTS)
def test_stage_writes_its_metrics_file_and_reads_only_its_params(stage: str) -> None:
    entry = PIPELINE[stage]
    assert names(entry["metrics"]) == {str(paths.metrics(stage))}
    own = {param.split(".")[0] for param in entry["params"]}
    assert stage in own
    assert own <= {stage, "teacher", "teachers", "generate", "train", "evaluate"}  # sections read besides its own


def test_every_path_in_paths_py_is_an_out_of_some_stage() -> None:
    outs = set()
    for stage in STAGES + REPORTS:
        outs |= names(PIPELINE[stage]["outs"]) | names(PIPELINE[stage].get("plots", []))
    outs.add(str(paths.GATE_REPORTS))  # validate@<stage> writes reports/gates/<stage>.json
    for name, value in vars(paths).items():
        for path in value.values() if isinstance(value, dict) else [value]:
            if isinstance(path, Path):
                assert any(str(path) == out or str(path).startswith(out + "/") for out in outs), name


def test_each_stage_after_ingest_waits_for_the_previous_gate() -> None:
    for before, stage in zip(STAGES, STAGES[1:], strict=False):
        assert f"reports/gates/{before}.json" in names(PIPELINE[stage]["deps"]), stage
    assert "reports/gates/select.json" in names(PIPELINE["sweep"]["deps"])
