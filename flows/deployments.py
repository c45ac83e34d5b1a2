"""The pipeline's Prefect deployments, declared here and registered by ``distill deploy``.

    distill deploy [--cron "0 2 * * *"] [--teacher-rpm 500]   # against PREFECT_API_URL
    prefect worker start --pool distill                         # in the repo; runs what is due

- ``distill-pipeline/nightly``: the whole pipeline on a cron schedule; pulls from the DVC remote
  before (paid answers from other machines are reused) and pushes after (this run's are shared).
- ``distill-pipeline/generate``: on demand, teacher generation and its gate only (``dvc repro
  gate@generate``), with the same pull and push, for when new seeds should be answered now.

Both run the repo they were deployed from, in place (a ``set_working_directory`` pull step), on a
*process* work pool, one run per deployment at a time (DVC would refuse a second ``dvc repro`` in
the same repo anyway). With ``--teacher-rpm`` a Prefect global rate limit is created on the server
and every run of either deployment, on any worker, paces its teacher requests by it
(flows/rate_limit.py), so the workers together stay within one RPM budget.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from prefect import deploy as register
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron
from prefect.settings import get_current_settings

from distill.entry import StageError
from flows.pipeline import pipeline
from flows.rate_limit import DEFAULT_NAME, ensure_rate_limit

POOL = "distill"
NIGHTLY_CRON = "0 2 * * *"  # 02:00 every day
ENTRYPOINT = "flows/pipeline.py:pipeline"


@dataclass(frozen=True)
class Deployment:
    name: str
    description: str
    parameters: dict = field(default_factory=dict)
    cron: str | None = None  # None: runs only when triggered


def declared(cron: str = NIGHTLY_CRON) -> list[Deployment]:
    """The deployments ``distill deploy`` registers."""
    return [
        Deployment("nightly", "The whole pipeline: dvc pull, dvc repro, dvc push.",
                   {"pull": True, "push": True}, cron),
        Deployment("generate", "Teacher generation and its gate, on demand: dvc pull, dvc repro gate@generate, "
                   "dvc push.", {"pull": True, "push": True, "targets": ["gate@generate"]}),
    ]


def api_url() -> str:
    """The Prefect API the deployments go to; a temporary server would forget them, so one must be configured."""
    url = get_current_settings().api.url
    if not url:
        raise StageError("no Prefect server is configured, and deployments on a temporary one would vanish: "
                         "start one (`prefect server start`) and `export PREFECT_API_URL=http://127.0.0.1:4200/api`, "
                         "or log in to Prefect Cloud (`prefect cloud login`)")
    return url


async def ensure_pool(name: str, rate: tuple[str, float] | None = None) -> None:
    """A process work pool named ``name`` (created when missing), and the shared rate limit ``rate``
    (name, requests per minute) when given."""
    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    if rate is not None:
        await ensure_rate_limit(*rate)


def deploy(repo: Path, pool: str = POOL, cron: str = NIGHTLY_CRON, timezone: str | None = None,
           teacher_rpm: float | None = None, rate_limit: str = DEFAULT_NAME) -> list[Deployment]:
    """Register ``declared(cron)`` for the repo at ``repo`` on ``pool``; with ``teacher_rpm``, create or update
    the shared teacher rate limit ``rate_limit`` and make every run use it. Returns what was registered."""
    api_url()
    if teacher_rpm is not None and teacher_rpm <= 0:
        raise StageError(f"--teacher-rpm {teacher_rpm}: must be > 0")
    asyncio.run(ensure_pool(pool, (rate_limit, teacher_rpm) if teacher_rpm is not None else None))
    env = {"DISTILL_TEACHER_RATE_LIMIT": rate_limit} if teacher_rpm is not None else {}
    source = pipeline.from_source(source=str(repo.resolve()), entrypoint=ENTRYPOINT)
    deployments = declared(cron)
    runners = [
        source.to_deployment(
            name=d.name, description=d.description, parameters=d.parameters, tags=["distill"],
            schedules=[Cron(d.cron, timezone=timezone)] if d.cron else None, concurrency_limit=1,
            job_variables={"env": env} if env else None,
        )
        for d in deployments
    ]
    register(*runners, work_pool_name=pool, build=False, push=False, print_next_steps_message=False,
             ignore_warnings=True)
    return deployments
