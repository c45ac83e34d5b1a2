"""Wall time and peak memory of every stage of the default pipeline, and what Prefect adds.

    python benchmarks/pipeline.py [--repeats 3]    # writes benchmarks/results/pipeline.json

Runs in a fresh temporary copy of the committed repo (empty request store, no outputs),
each stage's command from dvc.yaml in pipeline order, one process at a time, and reads
the peak resident memory of each process tree from the kernel (``os.wait4``). Then it
measures Prefect's start-up cost: the generate stage again from an empty store, once
through the Prefect flow and once with the same shards run as plain functions (``WITHOUT_PREFECT``:
same requests, same engine; the product has no such switch, the benchmark builds it).
All of it ``--repeats`` times, each pass in a fresh copy (benchmarks/repeats.py): times are medians,
``runs_s`` every pass's, ``spread`` max / min - 1 over them; peak memory is the largest of the passes.
About 7 minutes a pass on 2 idle CPU cores (train and sweep take most of it), so about 21 with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.repeats import interleaved, median, spread  # noqa: E402

RESULT = ROOT / "benchmarks/results/pipeline.json"
ORDER = ["ingest", "generate", "score", "dedupe", "select", "train", "evaluate", "sweep"]
# The generate stage with the teacher flow's shards run as plain async functions: what Prefect adds is the
# difference. Benchmark-only: the stages always send through the Prefect flow.
WITHOUT_PREFECT = """
import asyncio
import flows.teacher as teacher
from distill.teacher.engine import EngineSettings
from stages import generate

def direct(plan_path, store_path, base_url, api_key_env, shards, budget=None, settings=None, **routing):
    # the default params send through the local shards: no Batch API (batch), no Dask cluster (cluster.runner)
    assert routing.get("batch") is None and (routing.get("cluster") or {}).get("runner") != "dask", routing
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


def one_pass(repeat: int, env: dict) -> dict:
    """Every stage and gate of a fresh copy of the repo, in pipeline order; then generate again from an empty
    store with and without Prefect (in another order each repeat)."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        repo = Path(tmp)
        copy_repo(repo)
        found: dict = {"stages": {}, "gates": {}}
        for stage in ORDER:
            found["stages"][stage] = run = measure([sys.executable, "-m", f"stages.{stage}"], repo, env)
            found["gates"][stage] = gate = measure([sys.executable, "-m", f"stages.gates.{stage}"], repo, env)
            print(f"repeat {repeat + 1}: {stage:<9} {run['wall_s']:>7.1f} s {run['peak_rss_mb']:>6.0f} MB   gate "
                  f"{gate['wall_s']:>5.1f} s {gate['peak_rss_mb']:>5.0f} MB", flush=True)
        found["eval"] = json.loads((repo / "metrics/eval.json").read_text())
        found["generate"] = json.loads((repo / "metrics/generate.json").read_text())
        found["sweep"] = json.loads((repo / "metrics/sweep.json").read_text()).get("comparison")

        store = repo / "data/store/generate.jsonl"
        commands = {"with_prefect": ["-m", "stages.generate"], "without_prefect": ["-c", WITHOUT_PREFECT]}
        found["prefect"] = {}
        for label in list(commands)[repeat % 2:] + list(commands)[:repeat % 2]:
            store.unlink()
            found["prefect"][label] = measure([sys.executable, *commands[label]], repo, env)
    return found


def figures(runs: list[dict]) -> dict:
    """Median wall time, the largest peak memory, every repeat's wall time and their spread."""
    walls = [run["wall_s"] for run in runs]
    return {"wall_s": round(median(walls), 2), "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
            "runs_s": walls, "spread": spread(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes over the pipeline; medians reported")
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    args = parser.parse_args()
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-"),
    }
    # One measurement: a whole pass (a stage needs the outputs of those before it, so passes are what repeat).
    passes = interleaved({"pass": lambda repeat: one_pass(repeat, env)}, args.repeats)["pass"]
    last = passes[-1]
    results: dict = {
        "repeats": args.repeats,
        "stages": {stage: figures([p["stages"][stage] for p in passes]) for stage in ORDER},
        "gates": {stage: figures([p["gates"][stage] for p in passes]) for stage in ORDER},
        "eval": last["eval"], "generate": last["generate"], "sweep": last["sweep"],
    }
    runs = {label: figures([p["prefect"][label] for p in passes]) for label in ("with_prefect", "without_prefect")}
    costs = [p["prefect"]["with_prefect"]["wall_s"] - p["prefect"]["without_prefect"]["wall_s"] for p in passes]
    results["prefect"] = runs | {
        "startup_cost_s": round(median(costs), 2),
        "startup_cost_runs_s": [round(cost, 2) for cost in costs],
        "note": "generate from an empty store (all requests sent) through the Prefect flow vs the same "
        "shards without Prefect; the difference is what Prefect adds to a stage that uses it "
        "(a temporary API server when none is configured, plus flow/task bookkeeping). "
        "Only generate, and evaluate when it must ask the teacher, use Prefect.",
    }
    totals = [sum(p["stages"][stage]["wall_s"] for stage in ORDER) for p in passes]
    results["total_stage_s"] = round(median(totals), 1)
    results["total_stage_runs_s"] = [round(total, 1) for total in totals]
    results["total_gate_s"] = round(median([sum(p["gates"][stage]["wall_s"] for stage in ORDER) for p in passes]), 1)
    results["spread"] = {"total_stage_s": spread(totals), "startup_cost_s": spread(costs) if min(costs) > 0 else None}
    results["cpus"] = os.cpu_count()
    print(f"medians of {args.repeats}:\n{'stage':<9} {'wall':>9} {'peak RSS':>9} {'spread':>7}")
    for stage, run in results["stages"].items():
        print(f"{stage:<9} {run['wall_s']:>7.1f} s {run['peak_rss_mb']:>6.0f} MB {run['spread']:>7.1%}   gate "
              f"{results['gates'][stage]['wall_s']:>5.1f} s")
    print(f"{'total':<9} {results['total_stage_s']:>7.1f} s   gates {results['total_gate_s']:.1f} s")
    prefect = results["prefect"]
    print(f"prefect start-up cost per stage: {prefect['startup_cost_s']} s "
          f"({prefect['with_prefect']['wall_s']} s with, {prefect['without_prefect']['wall_s']} s without)")
    print(f"eval: before {results['eval']['student_before']}, after {results['eval']['student_after']}, "
          f"teacher {results['eval']['teacher']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
