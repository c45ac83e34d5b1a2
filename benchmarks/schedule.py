"""What a Prefect server and a worker add to a run of the pipeline.

    python benchmarks/schedule.py [--profile tiny] [--repeats 3]   # writes benchmarks/results/schedule.json

Two fresh temporary copies of the committed repo (empty request stores, no outputs). In the first,
`dvc repro` as a user runs it by hand (no server configured: every stage that runs a Prefect flow
starts a temporary server of its own). In the second, the README's "Schedule it" steps: `prefect
server start`, `distill deploy`, `prefect worker start --pool distill` (default settings: the worker
polls every 10 s), then a run of the nightly deployment (dvc pull, dvc repro, dvc push to the
default remote), timed from the trigger to its Completed state. Then a run with nothing to do, both
ways. One server and one worker serve every repeat; each repeat has two fresh copies (and remotes) and
deploys again, the by-hand run first in one repeat and the deployment first in the next
(benchmarks/repeats.py): times are medians of ``--repeats``, ``spread`` max / min - 1 over them.

``--profile tiny`` (default) is the tests' small profile (150 seeds, 30 training steps): what is measured is
what the server and worker add, which does not grow with the pipeline, and a repeat takes about 3 minutes
(about 10 with the defaults) where the default profile's takes over 10.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.repeats import interleaved, median, spread  # noqa: E402

RESULT = ROOT / "benchmarks/results/schedule.json"
TINY = {  # the tests' small profile (tests/repos.py), seeds cut to 150 train and 30 eval lines
    "ingest.train": "data/seeds/tiny_train.jsonl", "ingest.eval": "data/seeds/tiny_eval.jsonl",
    "train.max_steps": 30, "train.batch_size": 16, "train.warmup_steps": 0, "gates.ingest.min_rows": 50,
    "gates.ingest.min_eval_rows": 20, "gates.generate.min_rows": 50, "gates.score.min_rows": 50,
    "gates.dedupe.min_rows": 50, "gates.select.min_rows": 30, "gates.train.max_final_loss": 5.0,
    "gates.evaluate.min_rows": 20,
}


def copy_repo(target: Path, tiny: bool) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    (target / "dvc.lock").unlink(missing_ok=True)
    if tiny:
        for name, source, lines in (("tiny_train", "train", 150), ("tiny_eval", "eval", 30)):
            text = (ROOT / f"data/seeds/{source}.jsonl").read_text().splitlines()[:lines]
            (target / f"data/seeds/{name}.jsonl").write_text("\n".join(text) + "\n")
        params = yaml.safe_load((target / "params.yaml").read_text())
        for dotted, value in TINY.items():
            *parents, leaf = dotted.split(".")
            node = params
            for key in parents:
                node = node[key]
            node[leaf] = value
        (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return target


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return round(time.perf_counter() - started, 2)


def start(command: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def deployment_run(api: str, name: str) -> dict:
    """Trigger a run of the deployment; seconds until a worker picked it up and until it completed."""
    deployment = httpx.get(f"{api}/deployments/name/distill-pipeline/{name}").json()
    started = time.perf_counter()
    flow_run = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={}).json()
    picked = None
    while True:
        state = httpx.get(f"{api}/flow_runs/{flow_run['id']}").json()["state"]["type"]
        if picked is None and state not in ("SCHEDULED", "PENDING"):
            picked = time.perf_counter() - started
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(0.5)
    if state != "COMPLETED":
        raise SystemExit(f"the {name} run ended {state}")
    return {"picked_up_s": round(picked, 2), "completed_s": round(time.perf_counter() - started, 2)}


def one_repeat(repeat: int, root: Path, api: str, env: dict, profile: str) -> dict:
    """From nothing, then with nothing to do: by hand and as the nightly deployment, each in a fresh copy with a
    remote of its own (by hand first in even repeats, the deployment first in odd ones)."""
    by_hand = copy_repo(root / f"r{repeat}" / "by-hand" / "repo", profile == "tiny")
    scheduled = copy_repo(root / f"r{repeat}" / "scheduled" / "repo", profile == "tiny")
    client_env = env | {"PREFECT_API_URL": api}
    found = {"deploy_s": timed(["distill", "deploy"], scheduled, client_env)}  # points the deployments here
    ways = {"by_hand": lambda: timed(["dvc", "repro"], by_hand, env), "nightly": lambda: deployment_run(api, "nightly")}
    order = list(ways)[repeat % 2:] + list(ways)[:repeat % 2]
    for name in order:
        found[name] = ways[name]()
    found["nothing_to_do"] = {name: ways[name]() for name in order}
    idle = found["nothing_to_do"]
    print(f"repeat {repeat + 1}: by hand {found['by_hand']:.1f} s, nightly {found['nightly']['completed_s']:.1f} s "
          f"(picked up after {found['nightly']['picked_up_s']:.1f} s); nothing to do: by hand "
          f"{idle['by_hand']:.1f} s, nightly {idle['nightly']['completed_s']:.1f} s", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("tiny", "default"), default="tiny",
                        help="the tests' small profile (default), or params.yaml's (about 4x longer)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements; medians reported")
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    args = parser.parse_args()
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-"),
    }
    env.pop("PREFECT_API_URL", None)
    results: dict = {"profile": args.profile, "repeats": args.repeats}
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-schedule-") as tmp:
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            api = f"http://127.0.0.1:{port}/api"
            server_home = Path(tmp) / "server-home"
            server_home.mkdir()
            began = time.perf_counter()
            processes.append(start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                   Path(tmp), env | {"PREFECT_HOME": str(server_home)}, Path(tmp) / "server.log"))
            while True:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            results["server_start_s"] = round(time.perf_counter() - began, 2)  # once: a server serves every run
            print(f"prefect server start: {results['server_start_s']:.1f} s", flush=True)
            processes.append(start(["prefect", "worker", "start", "--pool", "distill"], Path(tmp),
                                   env | {"PREFECT_API_URL": api}, Path(tmp) / "worker.log"))
            runs = interleaved({"repeat": lambda repeat: one_repeat(repeat, Path(tmp), api, env, args.profile)},
                               args.repeats)["repeat"]
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:  # a worker may wait for its poll loop; nothing of it is needed now
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def medians(values: list[float]) -> float:
        return round(median(values), 2)

    by_hand, nightly = [r["by_hand"] for r in runs], [r["nightly"]["completed_s"] for r in runs]
    added = [n - b for n, b in zip(nightly, by_hand, strict=True)]
    idle_by_hand = [r["nothing_to_do"]["by_hand"] for r in runs]
    idle_nightly = [r["nothing_to_do"]["nightly"]["completed_s"] for r in runs]
    results |= {
        "deploy_s": medians([r["deploy_s"] for r in runs]),
        "by_hand_s": medians(by_hand),
        "nightly": {"picked_up_s": medians([r["nightly"]["picked_up_s"] for r in runs]),
                    "completed_s": medians(nightly)},
        "nothing_to_do": {"by_hand_s": medians(idle_by_hand),
                          "nightly": {"picked_up_s": medians([r["nothing_to_do"]["nightly"]["picked_up_s"]
                                                              for r in runs]),
                                      "completed_s": medians(idle_nightly)}},
        "added_per_run_s": medians(added),
        "runs": {"by_hand_s": by_hand, "nightly_s": nightly, "added_per_run_s": [round(a, 2) for a in added],
                 "nothing_to_do_by_hand_s": idle_by_hand, "nothing_to_do_nightly_s": idle_nightly},
        "spread": {"by_hand_s": spread(by_hand), "nightly_s": spread(nightly),
                   "nothing_to_do_by_hand_s": spread(idle_by_hand), "nothing_to_do_nightly_s": spread(idle_nightly)},
    }
    print(f"medians of {args.repeats}: by hand {results['by_hand_s']:.1f} s, nightly "
          f"{results['nightly']['completed_s']:.1f} s; a scheduled run took {results['added_per_run_s']:+.1f} s vs "
          f"by hand (runs {results['runs']['added_per_run_s']}), besides the one-off server start")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
