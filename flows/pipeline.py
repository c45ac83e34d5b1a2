"""The whole pipeline as a Prefect flow: ``dvc repro`` (optionally pull before, push after).

    python -m flows.pipeline            # or: distill run [--pull] [--push] [target ...]

DVC owns the graph and the caching; this flow only runs it, so that Prefect can schedule it
(flows/deployments.py), retry it and show its runs. It does not re-declare the stages (one DAG,
not two). Every line dvc prints goes to the run's log as it comes; a failed stage or gate fails
the run with the stage's own message in the error.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from distill import sharing  # noqa: E402
from distill.dvc_cli import run_dvc  # noqa: E402


@task(name="dvc-pull", retries=0, cache_policy=NO_CACHE)
def dvc_pull(repo: str) -> dict[str, int]:
    """Pull what the remote has; outputs changed here are kept and request stores merged (distill/sharing.py)."""
    return sharing.pull(Path(repo), get_run_logger().info).merged


@task(name="dvc-repro", retries=0, cache_policy=NO_CACHE)
def dvc_repro(repo: str, targets: list[str]) -> str:
    """Reproduce ``targets`` (all stages when empty); re-runs only what changed."""
    return run_dvc(["repro", *targets], repo, get_run_logger().info)


@task(name="dvc-push", retries=0, cache_policy=NO_CACHE)
def dvc_push(repo: str) -> None:
    """Push every output dvc.lock records, the request stores included, to the default remote."""
    sharing.push(Path(repo), get_run_logger().info)


@flow(name="distill-pipeline")
def pipeline(repo: str = ".", pull: bool = False, push: bool = False, targets: list[str] | None = None) -> str:
    """Reproduce the pipeline in ``repo`` (only ``targets`` and what they depend on, when given); pull from
    the DVC remote before and push to it after when asked. Returns dvc repro's output."""
    if pull:
        dvc_pull(repo)
    output = dvc_repro(repo, targets or [])
    if push:
        dvc_push(repo)
    return output


if __name__ == "__main__":
    pipeline()
