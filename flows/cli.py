"""The ``distill`` script: the library's commands (distill/cli.py) and the two that start Prefect.

    distill run [--pull] [--push] [target ...]     run the pipeline (dvc repro) as a Prefect flow
    distill deploy [--cron C] [--teacher-rpm N]     register the Prefect deployments (PREFECT_API_URL)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill import cli
from distill.entry import StageError


def main(argv: list[str] | None = None) -> None:
    parser, commands = cli.build_parser()
    run = commands.add_parser("run", help="run the pipeline through the Prefect pipeline flow")
    run.add_argument("--pull", action="store_true", help="dvc pull before")
    run.add_argument("--push", action="store_true", help="dvc push after")
    run.add_argument("targets", nargs="*", help="stages to reproduce (default: all)")
    deploying = commands.add_parser("deploy", help="register the Prefect deployments against PREFECT_API_URL")
    deploying.add_argument("--pool", default="distill", help="the process work pool (created when missing)")
    deploying.add_argument("--cron", default="0 2 * * *", help="the nightly run's schedule (default: 02:00 daily)")
    deploying.add_argument("--timezone", help="the schedule's time zone, e.g. Europe/Paris (default: UTC)")
    deploying.add_argument("--teacher-rpm", type=float,
                           help="teacher requests per minute shared by every run and worker (a Prefect rate limit)")
    deploying.add_argument("--rate-limit", default="distill-teacher", help="that rate limit's name")
    args, rest = parser.parse_known_args(argv)
    if args.command == "run" and not rest:
        from flows.pipeline import pipeline

        try:
            pipeline(pull=args.pull, push=args.push, targets=args.targets)
        except StageError as error:
            sys.exit(f"distill run: {error}")
    elif args.command == "deploy" and not rest:
        sys.exit(register_deployments(args))
    else:
        cli.dispatch(parser, args, rest)


def register_deployments(args: argparse.Namespace) -> str | None:
    """Register the deployments of flows/deployments.py for this repo and say how to run them."""
    from flows.deployments import api_url, deploy

    try:
        deployed = deploy(Path("."), args.pool, args.cron, args.timezone, args.teacher_rpm, args.rate_limit)
    except StageError as error:
        return f"distill deploy: {error}"
    for d in deployed:
        print(f"distill-pipeline/{d.name}: {d.cron or 'on demand'}; {d.parameters}")
    if args.teacher_rpm:
        print(f"teacher requests of every run share the rate limit {args.rate_limit!r}: {args.teacher_rpm:g}/min")
    print(f"next: `prefect worker start --pool {args.pool}` in this repo; runs: {api_url().removesuffix('/api')}"
          f"/runs; now: `prefect deployment run distill-pipeline/nightly`")
    return None


if __name__ == "__main__":
    main()
