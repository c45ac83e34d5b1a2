"""What a Prefect server and a worker add to a run of the pipeline.

    python benchmarks/schedule.py [--tiny]   # writes benchmarks/results/schedule.json

Two fresh temporary copies of the committed repo (empty request stores, no outputs). In the first,
`dvc repro` as a user runs it by hand (no server configured: every stage that runs a Prefect flow
starts a temporary server of its own). In the second, the README's "Schedule it" steps: `prefect
server start`, `distill deploy`, `prefect worker start --pool distill` (default settings: the worker
polls every 10 s), then a run of the nightly deployment (dvc pull, dvc repro, dvc push to the
default remote), timed from the trigger to its Completed state. Then a run with nothing to do, both
ways. ``--tiny`` uses the tests' small profile (150 seeds, 30 training steps).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tests' small profile instead of the default")
    tiny = parser.parse_args().tiny
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-"),
    }
    env.pop("PREFECT_API_URL", None)
    results: dict = {"profile": "tiny" if tiny else "default"}
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-schedule-") as tmp:
        by_hand = copy_repo(Path(tmp) / "by-hand" / "repo", tiny)
        scheduled = copy_repo(Path(tmp) / "scheduled" / "repo", tiny)
        try:
            results["by_hand_s"] = timed(["dvc", "repro"], by_hand, env)
            print(f"dvc repro by hand (temporary Prefect servers): {results['by_hand_s']:.1f} s", flush=True)

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
            results["server_start_s"] = round(time.perf_counter() - began, 2)
            client_env = env | {"PREFECT_API_URL": api}
            results["deploy_s"] = timed(["distill", "deploy"], scheduled, client_env)
            processes.append(start(["prefect", "worker", "start", "--pool", "distill"], scheduled, client_env,
                                   Path(tmp) / "worker.log"))
            results["nightly"] = deployment_run(api, "nightly")
            print(f"prefect server start: {results['server_start_s']:.1f} s; "
                  f"distill deploy: {results['deploy_s']:.1f} s", flush=True)
            print(f"nightly deployment (pull, repro, push): picked up after {results['nightly']['picked_up_s']:.1f} s, "
                  f"completed after {results['nightly']['completed_s']:.1f} s", flush=True)
            results["nothing_to_do"] = {"by_hand_s": timed(["dvc", "repro"], by_hand, env),
                                        "nightly": deployment_run(api, "nightly")}
            print(f"nothing to do: by hand {results['nothing_to_do']['by_hand_s']:.1f} s, nightly deployment "
                  f"{results['nothing_to_do']['nightly']['completed_s']:.1f} s", flush=True)
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:  # a worker may wait for its poll loop; nothing of it is needed now
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    results["added_per_run_s"] = round(results["nightly"]["completed_s"] - results["by_hand_s"], 2)
    print(f"a scheduled run took {results['added_per_run_s']:+.1f} s vs by hand, besides the one-off server start")
    RESULT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
