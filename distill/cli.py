"""The ``distill`` command.

    distill lineage <id> [--json]        trace a row back to its seed file and line
    distill lineage --model data/train/model [--json] [--all]  every row a checkpoint was trained on, its teacher
                                         calls and cost, selection, gates, dvc.lock hashes and git commit
    distill teacher serve [--port 8000]  run the offline stand-in teacher by hand
    distill run [--pull] [--push] [target ...]  run the pipeline (dvc repro) as a Prefect flow
    distill pull                         dvc pull that keeps local changes and merges request stores
    distill deploy [--cron C] [--teacher-rpm N]  register the Prefect deployments (PREFECT_API_URL)
    distill estimate                     what the generate stage would cost now; sends nothing
    distill example <params.yaml> [--dir D]  run a worked example (examples/) in a workspace of its own (runs/)
"""

# The two commands that start Prefect (run, deploy) are added by flows/cli.py, the `distill` script: the
# library never imports the orchestrator. `python -m distill.cli` runs the others.
from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The command line of the library's commands; flows/cli.py adds the two that start Prefect."""
    parser = argparse.ArgumentParser(prog="distill", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    lineage = commands.add_parser("lineage", help="trace a row back to its seed file and line, or a checkpoint "
                                  "(--model) to the rows it was trained on")
    lineage.add_argument("id", nargs="?", help="a row or seed id")
    lineage.add_argument("--model", help="a checkpoint folder the train stage wrote, e.g. data/train/model")
    lineage.add_argument("--all", action="store_true", help="--model: list every row (default: the first 20)")
    lineage.add_argument("--json", action="store_true", help="print everything as JSON")
    teacher = commands.add_parser("teacher", help="serve params.yaml's teacher provider (the stand-in)")
    teacher.add_argument("action", choices=["serve"])
    commands.add_parser("pull", help="dvc pull that never overwrites local changes; request stores are merged")
    commands.add_parser("estimate", help="print what the generate stage would send and cost; sends nothing")
    example = commands.add_parser("example", help="run a worked example's params file in runs/<its name>")
    example.add_argument("params_file", help="e.g. examples/math.yaml")
    example.add_argument("--dir", help="the workspace (default: runs/<file stem>)")
    batch = commands.add_parser("batch", help="the generate stage's requests as a Batch API file, and back "
                                "(e.g. through `vllm run-batch`)")
    batch.add_argument("action", choices=["export", "import"])
    batch.add_argument("file", help="export: the input file to write; import: the output file to read")
    batch.add_argument("--input", help="import: the input file the output answers (written by export)")
    return parser, commands


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> None:
    """Run one of the library's commands."""
    if args.command == "teacher":
        from distill.params import load
        from distill.teacher import providers

        provider = load().teacher.provider
        if not providers.is_plugin(provider) or not hasattr(providers.plugin(provider), "main"):
            sys.exit(f"distill teacher: teacher.provider {provider} is not a provider this command can serve")
        providers.plugin(provider).main(rest)
    elif rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    elif args.command == "lineage":
        sys.exit(lineage(parser, args))
    elif args.command == "estimate":
        sys.exit(estimate_generate())
    elif args.command == "example":
        from pathlib import Path

        from distill.params import ParamsError
        from distill.workspace import run_example

        try:
            sys.exit(run_example(Path(args.params_file), Path(args.dir) if args.dir else None))
        except ParamsError as error:
            sys.exit(f"distill example: {error}")
    elif args.command == "batch":
        sys.exit(batch_files(args.action, args.file, args.input))
    elif args.command == "pull":
        from distill import sharing
        from distill.entry import StageError

        try:
            sharing.pull()
        except StageError as error:
            sys.exit(f"distill pull: {error}")


def main(argv: list[str] | None = None) -> None:
    """``python -m distill.cli``: the library's commands only (the ``distill`` script is flows/cli.py)."""
    parser, _ = build_parser()
    args, rest = parser.parse_known_args(argv)
    dispatch(parser, args, rest)


def lineage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """``distill lineage <id>`` (a row back to its seed) or ``--model <folder>`` (a checkpoint to its rows)."""
    from pathlib import Path

    from distill.lineage import model_lineage, render, render_model, trace
    from distill.model_card import NotTrainedHere

    if (args.id is None) == (args.model is None):
        parser.error("distill lineage: give a row id or --model <checkpoint folder>, one of the two")
    try:
        found = model_lineage(Path(args.model)) if args.model else trace(args.id)
    except NotTrainedHere as error:
        return f"distill lineage: {error}"
    except KeyError as error:
        return f"distill lineage: {error.args[0]}"
    if args.json:
        print(json.dumps(found, indent=2, default=str))
    else:
        print(render_model(found, args.all) if args.model else render(found))
    return None


def estimate_generate() -> str | None:
    """Print what the generate stage would send and cost, per method and teacher, from params, the
    seeds and the store (read only)."""
    import polars as pl

    from distill import params as params_module
    from distill import paths
    from distill.elicit.forecast import forecast
    from distill.entry import StageError
    from distill.teacher.ask import counted, prompt_source
    from distill.teacher.estimate import chars_per_token, estimate, price_of
    from distill.teacher.store import RequestStore

    try:
        params = params_module.load()
    except params_module.ParamsError as error:
        return f"distill estimate: {error}"
    if not paths.INGEST_TRAIN.exists():
        return f"distill estimate: {paths.INGEST_TRAIN} is missing: run `dvc repro ingest` first"
    seeds = pl.read_parquet(paths.INGEST_TRAIN)
    try:
        plans = forecast(params, seeds)
    except StageError as error:
        return f"distill estimate: {error}"
    totals: dict[str, list[float]] = {}
    with RequestStore(paths.GENERATE_STORE, read_only=True) as store:
        for plan in plans:
            planned = estimate(counted(plan.requests, plan.teacher), store, price_of(plan.teacher),
                               chars_per_token(plan.teacher), params.budget.expected_completion_tokens,
                               prompt_source(plan.teacher, None))
            print(planned.table(f"{plan.label} ({plan.teacher.name})"))
            total = totals.setdefault(plan.teacher.name, [0, 0.0, 0.0])
            total[0] += planned.to_send
            total[1] += planned.cost_usd_expected
            total[2] += planned.cost_usd_max
    print(f"{'per teacher':<28}{'to send':>12}{'expected $':>12}{'upper $':>12}")
    for name, (to_send, expected, most) in totals.items():
        print(f"  {name:<26}{int(to_send):>12}{expected:>12.4f}{most:>12.4f}")
    caps = {"budget.usd": params.budget.usd, "budget.tokens": params.budget.tokens}
    print("  budget: " + (", ".join(f"{k}={v}" for k, v in caps.items() if v is not None) or "none"))
    return None


def batch_files(action: str, file: str, batch_input: str | None) -> str | None:
    """``export``: the requests the generate stage would send for its first round (what ``distill estimate`` prices)
    that the store lacks, as one Batch API input file; ``import``: an output file's answers into the store."""
    from pathlib import Path

    import polars as pl

    from distill import params as params_module
    from distill import paths
    from distill.elicit.forecast import forecast
    from distill.entry import StageError
    from distill.teacher.batch import export_requests, import_output
    from distill.teacher.store import RequestStore, open_store

    if action == "import":
        if batch_input is None:
            return "distill batch import: --input names the input file the output answers"
        try:
            with open_store(paths.GENERATE_STORE) as store:
                counts = import_output(Path(file), Path(batch_input), store)
        except (OSError, ValueError, StageError) as error:
            return f"distill batch import: {error}"
        print(f"{paths.GENERATE_STORE}: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
        return None
    try:
        plans = forecast(params_module.load(), pl.read_parquet(paths.INGEST_TRAIN))
    except (params_module.ParamsError, StageError, OSError) as error:
        return f"distill batch export: {error}"
    with RequestStore(paths.GENERATE_STORE, read_only=True) as store:
        missing = [request for plan in plans for request in plan.requests if request.key not in store]
    print(f"{file}: {export_requests(missing, Path(file))} requests the store lacks; run them, e.g. `vllm run-batch "
          f"-i {file} -o out.jsonl --model <model>`, then `distill batch import out.jsonl --input {file}`")
    return None


if __name__ == "__main__":
    main()
