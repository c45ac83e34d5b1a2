"""The ``distill`` command.

    distill lineage <id> [--json]        trace a row back to its seed file and line
    distill teacher serve [--port 8000]  run the offline stand-in teacher by hand
    distill run [--pull] [--push]        run the pipeline (dvc repro) as a Prefect flow
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    lineage = commands.add_parser("lineage", help="trace a row back to its seed file and line")
    lineage.add_argument("id")
    lineage.add_argument("--json", action="store_true", help="print the chain as JSON")
    teacher = commands.add_parser("teacher", help="the offline stand-in teacher")
    teacher.add_argument("action", choices=["serve"])
    run = commands.add_parser("run", help="run the pipeline through the Prefect pipeline flow")
    run.add_argument("--pull", action="store_true", help="dvc pull before")
    run.add_argument("--push", action="store_true", help="dvc push after")
    args, rest = parser.parse_known_args(argv)

    if args.command == "teacher":
        from stages.teachers import standin

        standin.main(rest)
    elif rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    elif args.command == "lineage":
        from stages.lineage import render, trace

        try:
            chain = trace(args.id)
        except KeyError as error:
            sys.exit(f"distill lineage: {error.args[0]}")
        print(json.dumps(chain, indent=2, default=str) if args.json else render(chain))
    elif args.command == "run":
        from flows.pipeline import pipeline

        pipeline(pull=args.pull, push=args.push)


if __name__ == "__main__":
    main()
