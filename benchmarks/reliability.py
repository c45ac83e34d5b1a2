"""The reliability suite's figures: run every test marked ``reliability`` and sum what they recorded.

    python benchmarks/reliability.py [--kill-seeds 2] [--workers 2] [--out benchmarks/results/reliability.json]

The tests (kill anywhere, disk and file faults, bad seed files, params and teacher answers, secrets and the other
security checks, byte-reproducible reruns) assert on their own results in ``make test`` too; here they also write
what they tried to a log (``reliability(row, **counts)`` in tests/conftest.py), and this script sums the counts per
row. ``--kill-seeds`` is how many random SIGKILL moments each stage gets (``make test`` tries fewer).
The README's reliability table is rendered from the result (``python docs/figures.py``), with the load
benchmark's figures (benchmarks/results/load.json). About 10 minutes on 2 cores with the defaults.
Writes benchmarks/results/reliability.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks/results/reliability.json"


def summed(log: Path) -> dict[str, dict[str, int]]:
    """Each row's counts, summed over every line the tests wrote (rows and keys sorted: stable bytes)."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in log.read_text().splitlines() if log.exists() else []:
        record = json.loads(line)
        row = record.pop("row")
        for key, count in record.items():
            rows[row][key] += count
    return {row: dict(sorted(counts.items())) for row, counts in sorted(rows.items())}


def outcomes(junit: Path) -> dict[str, int]:
    """Tests passed, failed (errors included) and skipped, from pytest's JUnit XML."""
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return {"tests": total, "passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-seeds", type=int, default=2, help="random SIGKILL moments per stage and variant")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reliability-") as scratch:
        log, junit = Path(scratch) / "figures.jsonl", Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "reliability", "-p", "no:cacheprovider", "-q",
                   f"--junitxml={junit}"] + (["-n", str(args.workers), "--dist", "loadgroup"] if args.workers > 1
                                             else [])
        env = os.environ | {"DISTILL_RELIABILITY_LOG": str(log), "DISTILL_KILL_SEEDS": str(args.kill_seeds)}
        started = time.perf_counter()
        finished = subprocess.run(command, cwd=ROOT, env=env)
        result = {
            "command": f"python benchmarks/reliability.py --kill-seeds {args.kill_seeds}",
            "kill_seeds": args.kill_seeds,
            "wall_s": round(time.perf_counter() - started, 1),
            **outcomes(junit),
            "rows": summed(log),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['passed']} of {result['tests']} reliability tests passed in {result['wall_s']} s")
    for row, counts in result["rows"].items():
        print(f"  {row}: " + ", ".join(f"{key} {count:,}" for key, count in counts.items()))
    print(f"wrote {args.out}")
    return finished.returncode


if __name__ == "__main__":
    sys.exit(main())
