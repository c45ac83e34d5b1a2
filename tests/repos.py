"""Temporary git+DVC copies of this repo with the tiny profile, for the end-to-end tests (a helper, not a
test module: the e2e tests share it instead of importing one another)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    full_env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"} | (env or {})
    result = subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env=full_env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def set_params(repo: Path, **updates: object) -> None:
    """Set dotted keys in the copy's params.yaml, e.g. set_params(repo, **{"train.max_steps": 30})."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


TINY = {
    "ingest.train": "data/seeds/tiny_train.jsonl",
    "ingest.eval": "data/seeds/tiny_eval.jsonl",
    "train.max_steps": 30,
    "train.batch_size": 16,
    "train.warmup_steps": 0,
    "gates.ingest.min_rows": 50,
    "gates.ingest.min_eval_rows": 20,
    "gates.generate.min_rows": 50,
    "gates.score.min_rows": 50,
    "gates.dedupe.min_rows": 50,
    "gates.select.min_rows": 30,
    "gates.train.max_final_loss": 5.0,
    "gates.evaluate.min_rows": 20,
}


def tiny_repo(repo: Path, extra: dict | None = None, setup=None) -> Path:
    """A git+DVC copy of the committed repo in ``repo`` with the tiny profile (plus ``extra`` params), committed;
    ``setup(repo)`` may add files before the commit."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files + [n for n in ("dvc.yaml", "params.yaml") if n not in files]:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "dvc.lock").unlink(missing_ok=True)  # the main repo's lock describes the full profile
    seeds = (ROOT / "data/seeds/train.jsonl").read_text().splitlines()
    (repo / TINY["ingest.train"]).write_text("\n".join(seeds[:150]) + "\n")
    evals = (ROOT / "data/seeds/eval.jsonl").read_text().splitlines()
    (repo / TINY["ingest.eval"]).write_text("\n".join(evals[:30]) + "\n")
    set_params(repo, **(TINY | (extra or {})))
    if setup:
        setup(repo)
    run(repo, "git", "init", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    return repo


def copy_run(source: Path, target: Path) -> Path:
    """A copy of a repo that has run (workspace, git history, DVC cache), to go on from without running it again;
    DVC's own state (``.dvc/tmp``) is left behind and rebuilt."""
    shutil.copytree(source, target, symlinks=True, ignore=lambda folder, names: ["tmp"] if folder.endswith(".dvc")
                    else [])
    return target


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
