"""Load: the teacher engine against a faulty stand-in, 20,000 requests at concurrency 256, nothing lost.

    python benchmarks/load.py [--requests 20000] [--concurrency 256] [--fault-rate 0.2] [--timeout-s 1]

The stand-in teacher (its own process, 127.0.0.1) fails ``--fault-rate`` of the attempts, in four equal shares:
HTTP 429 with Retry-After, HTTP 500, a hang past the client's timeout, and an HTTP 200 whose JSON body is cut
mid-way. The client is what the generate stage runs (flows/teacher.py ``answer_plan``: a plan file, the request
store opened by ``open_store``, the shards sharing one client and one concurrency gate, the engine retrying),
with the shards run as plain functions instead of Prefect tasks (as benchmarks/pipeline.py measures them) and
the engine's knobs set as DISTILL_TEACHER_TIMEOUT_S / _MAX_ATTEMPTS / _CONCURRENCY would set them.

Checked and written to benchmarks/results/load.json:
- ``lost``: requests that ended neither answered in the store nor as a classified failure (``rejected``, with
  its error class in ``failures``); must be 0, and ``answered`` should be every request;
- ``rerun_sent``: requests a second run over the same store sent, from the stand-in's log; must be 0;
- ``peak_rss_gb``: this process's peak resident memory (``VmHWM``; the stand-in is another process), must be
  at most 1 GB;
- ``faults_injected`` by kind (from the stand-in's request log), ``retries`` by error class, ``wall_s``,
  ``requests_per_s``. One run, not repeated: the figures that matter are counts. About a minute on 2 cores.
Exits non-zero, after writing the file, when one of the three checks fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows.teacher as teacher  # noqa: E402
from demo.standin import Settings, running_standin  # noqa: E402
from distill.teacher.engine import EngineSettings, Ledger, TeacherRequest  # noqa: E402
from distill.teacher.plan import write_plan  # noqa: E402
from distill.teacher.store import RequestStore  # noqa: E402

RESULT = ROOT / "benchmarks/results/load.json"
FAULTS = ("rate_limit", "server_error", "timeout", "truncated_body")  # the stand-in's names in its request log
MAX_RSS_GB = 1.0


def requests(count: int) -> list[TeacherRequest]:
    """Distinct requests shaped like the demo's labelling calls."""
    return [TeacherRequest(key=f"load-{i}", model="standin-skill-1",
                           messages=[{"role": "system", "content": "Reply with the answer only."},
                                     {"role": "user", "content": f"reverse w{i}x"}],
                           sampling={"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0})
            for i in range(count)]


def send(plan: Path, store: Path, base_url: str, shards: int, settings: EngineSettings) -> Ledger:
    return asyncio.run(teacher.answer_plan(str(plan), str(store), base_url, None, shards, None, settings.model_dump(),
                                           shard_runner=teacher.answer_shard.fn))


def peak_rss_kib() -> int:
    """This process's peak resident memory, from /proc (Linux). Not ru_maxrss: that survives exec, so a child
    forked from a big process (a pytest worker with torch loaded) would report its parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4, help="as generate.shards in params.yaml")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of attempts that fail, in 4 kinds")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="the client's timeout: what a hang costs")
    parser.add_argument("--max-attempts", type=int, default=10,
                        help="attempts per request (at 20%% faults, all 10 fail for 1 request in 10 million)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the stand-in's time to answer")
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    args = parser.parse_args()
    # The stand-in draws each kind independently (the first hit wins): a share s per kind fails 1 - (1 - s)^4 of
    # attempts, so s is solved for that to equal --fault-rate (0.2 / 4 each would inject 18.5%).
    share = 1 - (1 - args.fault_rate) ** (1 / len(FAULTS))
    standin = Settings(latency_ms=args.latency_ms, rate_limit_rate=share, error_rate=share, timeout_rate=share,
                       truncated_body_rate=share)
    settings = EngineSettings(concurrency=args.concurrency, timeout_s=args.timeout_s, max_attempts=args.max_attempts)
    planned = requests(args.requests)

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        folder = Path(tmp)
        plan, store_path, log = folder / "plan.jsonl", folder / "store.jsonl", folder / "standin.jsonl"
        write_plan(planned, plan)
        with running_standin(standin, request_log=log) as base_url:
            started = time.perf_counter()
            ledger = send(plan, store_path, base_url, args.shards, settings)
            wall = time.perf_counter() - started
            rerun_started = time.time()
            rerun = send(plan, store_path, base_url, args.shards, settings)  # over the same store: pays nothing
        records = [json.loads(line) for line in log.read_text().splitlines()]
        rerun_sent = sum(record["time"] >= rerun_started for record in records)
        faults = Counter(record["fault"] for record in records if record["fault"] in FAULTS)
        with RequestStore(store_path, read_only=True) as store:
            answered = sum(request.key in store for request in planned)
            lost = sum(request.key not in store and request.key not in ledger.errors for request in planned)
    peak_rss_gb = peak_rss_kib() / 2**20

    result = {
        "requests": args.requests, "concurrency": args.concurrency, "shards": args.shards,
        "answered": answered, "rejected": len(ledger.errors), "lost": lost, "failures": dict(ledger.failures),
        "rerun_sent": rerun_sent, "rerun_cache_hits": rerun.cache_hits,
        "peak_rss_gb": round(peak_rss_gb, 3), "max_rss_gb": MAX_RSS_GB,
        "fault_rate": args.fault_rate, "faults_injected": {kind: faults[kind] for kind in FAULTS},
        "faulty_attempts_share": round(sum(faults[kind] for kind in FAULTS) / max(ledger.attempts, 1), 4),
        "attempts": ledger.attempts, "retries": dict(ledger.retries), "retries_total": sum(ledger.retries.values()),
        "wall_s": round(wall, 2), "requests_per_s": round(args.requests / wall, 1),
        "timeout_s": args.timeout_s, "max_attempts": args.max_attempts, "latency_ms": args.latency_ms,
        "note": "one run (the checks are counts); client and stand-in share this machine's cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'requests':<28} {args.requests:>10,}\n{'answered':<28} {answered:>10,}\n"
          f"{'rejected':<28} {len(ledger.errors):>10,}\n{'lost':<28} {lost:>10,}\n"
          f"{'rerun sent':<28} {rerun_sent:>10,}\n{'attempts':<28} {ledger.attempts:>10,}")
    for kind in FAULTS:
        print(f"{'fault ' + kind:<28} {faults[kind]:>10,}")
    for kind, count in sorted(ledger.retries.items()):
        print(f"{'retried ' + kind:<28} {count:>10,}")
    print(f"{'wall s':<28} {wall:>10.1f}\n{'requests/s':<28} {args.requests / wall:>10.1f}\n"
          f"{'peak RSS GB':<28} {peak_rss_gb:>10.3f}\nwrote {args.out}")
    checks = {f"{lost} requests lost": lost > 0, f"the rerun sent {rerun_sent} requests": rerun_sent > 0,
              f"peak RSS {peak_rss_gb:.2f} GB > {MAX_RSS_GB} GB": peak_rss_gb > MAX_RSS_GB}
    if problems := [problem for problem, failed in checks.items() if failed]:
        raise SystemExit("load check failed: " + "; ".join(problems))


if __name__ == "__main__":
    main()
