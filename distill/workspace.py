"""A worked example in a workspace of its own: the project's tracked files, another params file, `dvc repro`.

The project's `params.yaml` is the default run's; an example (`examples/<name>.yaml`: the math word problems, the
three configurations for real teachers) is a whole params file. Copying the tracked files into `runs/<name>/`
(ignored by git) and making it a repository of its own lets DVC cache, lock and report the example without
touching the default run's `dvc.lock`, outputs or request store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from distill.io import write_json
from distill.params import load

RUNS = Path("runs")
RESULTS = Path("examples/results")  # each example's last metrics, tracked: the README's figures come from them


def tracked_files(project: Path) -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True, check=True).stdout.split()


def make_workspace(params_file: Path, target: Path, project: Path = Path(".")) -> Path:
    """``target`` as a committed git repository holding the project's tracked files with ``params_file`` as its
    params.yaml, every default written out (dvc.yaml's paths read params keys the file may leave to their defaults;
    a bad file is one error naming its key). Outputs, caches and the request store of an earlier run in ``target``
    are kept, so running it again pays for nothing twice."""
    params = load(params_file)
    for name in tracked_files(project):
        source = project / name
        if source.is_file() and name != "dvc.lock":  # the default run's lock describes other params
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    header = f"# {params_file}, with every default written out by `distill example` (edit that file, not this)\n"
    (target / "params.yaml").write_text(header + yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    if not (target / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    subprocess.run(["git", "-c", "user.name=distill", "-c", "user.email=distill@localhost", "commit", "-qm",
                    f"example {params_file}", "--allow-empty"], cwd=target, check=True)
    return target


def run_example(params_file: Path, target: Path | None = None) -> int:
    """Make the example's workspace (``runs/<file stem>`` by default) and `dvc repro` it; the exit code."""
    target = target or RUNS / params_file.stem
    target.mkdir(parents=True, exist_ok=True)
    make_workspace(params_file, target)
    print(f"example {params_file}: workspace {target}; dvc repro")
    code = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=target).returncode
    report = target / "reports/eval.md"
    if code == 0 and report.exists():
        print(report.read_text(encoding="utf-8"))
        keep_results(target, RESULTS / f"{params_file.stem}.json")
    return code


def keep_results(workspace: Path, path: Path) -> None:
    """The example's metrics (generate, train, eval) in one file of the project, which the README's figures are
    rendered from (docs/figures.py): the workspace itself is not in git."""
    metrics = {name: json.loads((workspace / "metrics" / f"{name}.json").read_text(encoding="utf-8"))
               for name in ("generate", "train", "eval") if (workspace / "metrics" / f"{name}.json").exists()}
    write_json(metrics, path)
    print(f"results: {path}")
