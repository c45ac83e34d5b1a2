"""dvc.yaml agrees with the code: every stage lists the project modules it imports (a missing
one silently keeps stale outputs) and the paths in distill/paths.py that it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill import paths

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = ["ingest", "generate", "score", "dedupe", "select", "train", "evaluate"]  # a chain, each after its gate
REPORTS = ["sweep"]  # stages whose outputs are reports, not tables a later stage reads
UNGATED = ["benchmark"]  # report stages with no gate: lm-eval's scores (benchmark, after evaluate's gate)
SECTIONS = {"benchmark": "benchmarks"}  # a stage whose params section is named otherwise
FINAL = ["report"]  # the run on one page, from what every stage and gate wrote: no params, metrics or gate


def names(entries: list) -> set[str]:
    """Paths of a deps/outs list whose entries are strings or one-key dicts."""
    return {next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries}


def code_deps(stage: dict) -> set[str]:
    return {dep for dep in names(stage["deps"]) if dep.endswith(".py")}


# Plugins are imported by name, not by an import statement: the stages that use the task or the teacher
# provider that params.yaml names list that module (and what it imports) too.
TASK_USERS = {"generate", "score", "evaluate", "sweep"}  # verifier (score, self_knowledge), metric, groups
PROVIDER_USERS = {"generate", "score", "evaluate", "benchmark"}  # the stages that ask the teacher


def plugin_modules(stage: str) -> set[str]:
    from distill.params import load
    from distill.teacher import providers

    params = load(ROOT / "params.yaml")
    modules = set()
    if stage in TASK_USERS:  # the task's module and any module:function scorer it names
        modules |= {name.partition(":")[0] for name in (params.task.module, params.task.metric, params.task.verifier)
                    if name and (name == params.task.module or ":" in name)}
    if stage in PROVIDER_USERS:
        modules |= {providers.PLUGINS.get(teacher.provider, teacher.provider) for teacher in params.all_teachers
                    if providers.is_plugin(teacher.provider)}
    return modules


@pytest.mark.parametrize("stage", STAGES + REPORTS + UNGATED)
def test_stage_lists_exactly_the_modules_it_imports(stage: str, project_files) -> None:
    plugins = set().union(*(project_files(module) for module in plugin_modules(stage)))
    assert code_deps(PIPELINE[stage]) == project_files(f"stages.{stage}") | plugins
    assert ("task" in PIPELINE[stage]["params"]) == (stage in TASK_USERS)


@pytest.mark.parametrize("stage", STAGES + REPORTS)
def test_each_stage_has_a_gate_listing_the_modules_it_imports(stage: str, project_files) -> None:
    gate = PIPELINE["gate"]["do"]
    listed = {dep.replace("${key}", stage) for dep in code_deps(gate)}
    assert listed == project_files(f"stages.gates.{stage}")
    assert gate["cmd"].replace("${key}", stage) == f"python -m stages.gates.{stage}"
    assert set(PIPELINE["gate"]["foreach"]) == set(STAGES + REPORTS)


def test_stages_holds_only_entry_points_and_gates() -> None:
    entries = {path.stem for path in (ROOT / "stages").glob("*.py")}
    gates = {path.stem for path in (ROOT / "stages/gates").glob("*.py")}
    assert entries == set(STAGES + REPORTS + UNGATED + FINAL) and gates == set(STAGES + REPORTS)
    assert {path.name for path in (ROOT / "stages").iterdir() if path.name != "__pycache__"} == {
        f"{stage}.py" for stage in STAGES + REPORTS + UNGATED + FINAL} | {"gates"}


@pytest.mark.parametrize("stage", STAGES + REPORTS + UNGATED)
def test_stage_writes_its_metrics_file_and_reads_only_its_params(stage: str) -> None:
    entry = PIPELINE[stage]
    assert names(entry["metrics"]) == {str(paths.metrics(stage))}
    own = {param.split(".")[0] for param in entry["params"]}
    section = SECTIONS.get(stage, stage)
    assert section in own
    assert own - SHARED - {section} == CROSS_READS.get(stage, set()), own


SHARED = {"task", "student", "teacher", "teachers", "budget", "judge"}  # sections no stage owns
# The named reads of another stage's section: score sends the judge's requests as generate sends its own,
# evaluate asks the teacher as generate asks it (and reports train.objective), the sweep trains as train does,
# dedupe decontaminates against benchmarks.sets.
CROSS_READS = {"score": {"generate"}, "dedupe": {"benchmarks"}, "evaluate": {"generate", "train"},
               "sweep": {"train"}}


def test_every_path_in_paths_py_is_an_out_of_some_stage() -> None:
    outs = set()
    for stage in STAGES + REPORTS + UNGATED + FINAL:
        outs |= names(PIPELINE[stage]["outs"]) | names(PIPELINE[stage].get("plots", []))
    outs.add(str(paths.GATE_REPORTS))  # gate@<stage> writes reports/gates/<stage>.json
    for name, value in vars(paths).items():
        for path in value.values() if isinstance(value, dict) else [value]:
            if isinstance(path, Path):
                assert any(str(path) == out or str(path).startswith(out + "/") for out in outs), name


def test_each_stage_after_ingest_waits_for_the_previous_gate() -> None:
    for before, stage in zip(STAGES, STAGES[1:], strict=False):
        assert f"reports/gates/{before}.json" in names(PIPELINE[stage]["deps"]), stage
    assert "reports/gates/select.json" in names(PIPELINE["sweep"]["deps"])
    assert "reports/gates/evaluate.json" in names(PIPELINE["benchmark"]["deps"])


def test_the_report_reads_every_stages_metrics_and_every_gate(project_files) -> None:
    entry = PIPELINE["report"]
    deps = names(entry["deps"])
    assert code_deps(entry) == project_files("stages.report")
    assert "distill/report/index.html.j2" in deps  # the page's template
    assert {str(paths.metrics(stage)) for stage in STAGES + REPORTS + UNGATED} <= deps
    assert str(paths.GATE_REPORTS) in deps  # so it runs after every gate
    assert set(entry["params"]) <= SHARED and "metrics" not in entry  # the teachers' prices only
    assert names(entry["outs"]) == {str(paths.REPORT_PAGE), str(paths.MODEL_CARD)}
