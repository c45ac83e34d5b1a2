"""Wall time and peak memory of every stage of the default pipeline, and what Prefect adds.

    python benchmarks/pipeline.py          # writes benchmarks/results/pipeline.json

Runs in a fresh temporary copy of the committed repo (empty request store, no outputs),
each stage's command from dvc.yaml in pipeline order, one process at a time, and reads
the peak resident memory of each process tree from the kernel (``os.wait4``). Then it
measures Prefect's start-up cost: the generate stage again from an empty store, once
through the Prefect flow and once with the same shards run as plain functions (``WITHOUT_PREFECT``:
same requests, same engine; the product has no such switch, the benchmark builds it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks/results/pipeline.json"
ORDER = ["ingest", "generate", "score", "dedupe", "select", "train", "evaluate", "sweep"]
# The generate stage with the teacher flow's shards run as plain async functions: what Prefect adds is the
# difference. Benchmark-only: the stages always send through the Prefect flow.
WITHOUT_PREFECT = """
import asyncio
import flows.teacher as teacher
from distill.teacher.engine import EngineSettings
from stages import generate

def direct(plan_path, store_path, base_url, api_key_env, shards, budget=None, settings=None):
    settings = settings or EngineSettings.from_env()
    return asyncio.run(teacher.answer_plan(str(plan_path), str(store_path), base_url, api_key_env, shards, budget,
                                           settings.model_dump(), shard_runner=teacher.answer_shard.fn))

teacher.run_plan = direct
generate.main()
"""


def copy_repo(target: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def measure(command: list[str], cwd: Path, env: dict) -> dict:
    """Run a command; return its wall time and the peak RSS of it and its children."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-"),
    }
    results: dict = {"stages": {}, "gates": {}}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        repo = Path(tmp)
        copy_repo(repo)
        print(f"{'stage':<9} {'wall':>9} {'peak RSS':>9}")
        for stage in ORDER:
            results["stages"][stage] = run = measure([sys.executable, "-m", f"stages.{stage}"], repo, env)
            line = f"{stage:<9} {run['wall_s']:>7.1f} s {run['peak_rss_mb']:>6.0f} MB"
            results["gates"][stage] = gate = measure([sys.executable, "-m", f"stages.gates.{stage}"], repo, env)
            line += f"   gate {gate['wall_s']:>5.1f} s {gate['peak_rss_mb']:>5.0f} MB"
            print(line, flush=True)
        results["eval"] = json.loads((repo / "metrics/eval.json").read_text())
        results["generate"] = json.loads((repo / "metrics/generate.json").read_text())
        results["sweep"] = json.loads((repo / "metrics/sweep.json").read_text()).get("comparison")

        store = repo / "data/store/generate.jsonl"
        runs = {}
        commands = {"with_prefect": ["-m", "stages.generate"], "without_prefect": ["-c", WITHOUT_PREFECT]}
        for label, command in commands.items():
            store.unlink()
            runs[label] = measure([sys.executable, *command], repo, env)
        results["prefect"] = runs | {
            "startup_cost_s": round(runs["with_prefect"]["wall_s"] - runs["without_prefect"]["wall_s"], 2),
            "note": "generate from an empty store (all requests sent) through the Prefect flow vs the same "
            "shards without Prefect; the difference is what Prefect adds to a stage that uses it "
            "(a temporary API server when none is configured, plus flow/task bookkeeping). "
            "Only generate, and evaluate when it must ask the teacher, use Prefect.",
        }

    results["total_stage_s"] = round(sum(r["wall_s"] for r in results["stages"].values()), 1)
    results["total_gate_s"] = round(sum(r["wall_s"] for r in results["gates"].values()), 1)
    results["cpus"] = os.cpu_count()
    print(f"{'total':<9} {results['total_stage_s']:>7.1f} s   gates {results['total_gate_s']:.1f} s")
    prefect = results["prefect"]
    print(f"prefect start-up cost per stage: {prefect['startup_cost_s']} s "
          f"({prefect['with_prefect']['wall_s']} s with, {prefect['without_prefect']['wall_s']} s without)")
    print(f"eval: before {results['eval']['student_before']}, after {results['eval']['student_after']}, "
          f"teacher {results['eval']['teacher']}")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
