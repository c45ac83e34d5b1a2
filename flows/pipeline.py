"""The whole pipeline as a Prefect flow: ``dvc repro`` (optionally pull before, push after).

    python -m flows.pipeline            # or: distill run [--pull] [--push]

DVC owns the graph and the caching; this flow only runs it, so that Prefect can schedule
it, retry it and show its runs. It does not re-declare the stages (one DAG, not two).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


def dvc_command(*args: str) -> list[str]:
    """dvc from the same environment as this Python, so the flow works without activation."""
    local = Path(sys.executable).with_name("dvc")
    return [str(local) if local.exists() else "dvc", *args]


@task(name="dvc", retries=0, cache_policy=NO_CACHE)
def dvc(*args: str, cwd: str = ".") -> str:
    """Run one dvc command; its output goes to the flow log, a failure fails the task."""
    result = subprocess.run(dvc_command(*args), cwd=cwd, capture_output=True, text=True)
    logger = get_run_logger()
    logger.info("dvc %s\n%s", " ".join(args), result.stdout[-4000:])
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


@flow(name="distill-pipeline")
def pipeline(repo: str = ".", pull: bool = False, push: bool = False) -> str:
    """Reproduce the pipeline in ``repo``; returns dvc repro's output."""
    if pull:
        dvc("pull", cwd=repo)
    output = dvc("repro", cwd=repo)
    if push:
        dvc("push", cwd=repo)
    return output


if __name__ == "__main__":
    pipeline()
