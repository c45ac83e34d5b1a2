"""Teacher-request throughput: our engine against a sequential loop, side by side in one run.

    python benchmarks/teacher_throughput.py [--requests 2000] [--latency-ms 100] [--repeats 3]

The stand-in teacher (its own process, 127.0.0.1) answers every request after a fixed
latency, so the ideal rate at concurrency c is c / latency. Measured here:
- a sequential loop: the official sync ``openai`` client, one request after another
  (on 100 requests: at 100 ms each, 2,000 would take over 3 minutes);
- our engine (``distill.teacher.engine.answer_all`` with a fresh request store, exactly
  what the generate stage runs) at concurrency 64 and 256, with each transport.
Each client is measured ``--repeats`` times, interleaved (benchmarks/repeats.py); rates are medians, ``spread``
is max / min - 1 over the repeats. About a minute with the defaults.
Writes benchmarks/results/teacher_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.repeats import interleaved, median, spread  # noqa: E402
from demo.standin import Settings, running_standin  # noqa: E402
from distill.teacher.engine import EngineSettings, TeacherRequest, answer_all, make_client  # noqa: E402
from distill.teacher.store import RequestStore  # noqa: E402

RESULT = ROOT / "benchmarks/results/teacher_throughput.json"


def requests(count: int, tag: str) -> list[TeacherRequest]:
    """Distinct requests (distinct keys and bodies), shaped like the demo's labelling calls."""
    return [
        TeacherRequest(
            key=f"{tag}-{i}",
            model="standin-skill-1",
            messages=[{"role": "system", "content": "Reply with the answer only."},
                      {"role": "user", "content": f"reverse w{tag}x{i}"}],
            sampling={"temperature": 0.0, "max_tokens": 16, "n": 1, "seed": 0},
        )
        for i in range(count)
    ]


def sequential(base_url: str, count: int) -> float:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)  # the stand-in needs no key
    started = time.perf_counter()
    for request in requests(count, "seq"):
        client.chat.completions.create(**request.payload())
    return count / (time.perf_counter() - started)


async def engine(base_url: str, count: int, concurrency: int, transport: str, repeat: int = 0) -> tuple[float, int]:
    settings = EngineSettings(concurrency=concurrency, timeout_s=60, transport=transport)
    with tempfile.TemporaryDirectory() as tmp, RequestStore(Path(tmp) / "store.jsonl") as store:
        batch = requests(count, f"{transport}{concurrency}r{repeat}")  # the caller's work (the stage reads a plan)
        async with make_client(base_url, "benchmark", settings) as client:
            started = time.perf_counter()
            ledger = await answer_all(batch, client, store, settings, asyncio.Semaphore(concurrency))
            elapsed = time.perf_counter() - started
        assert len(store) == count, f"{count - len(store)} requests unanswered: {dict(ledger.failures)}"
    return count / elapsed, sum(ledger.failures.values())


CONFIGS = [(transport, concurrency) for transport in ("openai", "aiohttp") for concurrency in (64, 256)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--sequential-requests", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per client; medians reported")
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    args = parser.parse_args()
    latency_s = args.latency_ms / 1000

    results: dict = {"requests": args.requests, "latency_ms": args.latency_ms, "repeats": args.repeats, "engine": {}}
    with running_standin(Settings(latency_ms=args.latency_ms)) as base_url:
        measure = {"sequential": lambda repeat: (sequential(base_url, args.sequential_requests), 0)}
        for transport, concurrency in CONFIGS:
            measure[f"{transport}_c{concurrency}"] = (
                lambda repeat, t=transport, c=concurrency: asyncio.run(engine(base_url, args.requests, c, t, repeat)))
        runs = interleaved(measure, args.repeats, lambda repeat, name, found: print(
            f"repeat {repeat + 1}: {name:<14} {found[0]:>8.1f} req/s", flush=True))

    rates = {name: [rate for rate, _ in found] for name, found in runs.items()}
    sequential_rate = median(rates["sequential"])
    results["sequential_rps"] = round(sequential_rate, 2)
    results["sequential_runs_rps"] = [round(rate, 2) for rate in rates["sequential"]]
    print(f"medians of {args.repeats}:\n{'run':<22} {'req/s':>8} {'ideal':>7} {'of ideal':>9} {'vs sequential':>14} "
          f"{'spread':>7}")
    print(f"{'sequential loop':<22} {sequential_rate:>8.1f} {1 / latency_s:>7.0f} "
          f"{sequential_rate * latency_s:>9.1%} {1:>13.1f}x {spread(rates['sequential']):>7.1%}")
    for transport, concurrency in CONFIGS:
        name = f"{transport}_c{concurrency}"
        rate, ideal = median(rates[name]), concurrency / latency_s
        results["engine"][name] = {
            "rps": round(rate, 1), "fraction_of_ideal": round(rate / ideal, 3),
            "speedup_vs_sequential": round(rate / sequential_rate, 1), "failed": sum(f for _, f in runs[name]),
            "runs_rps": [round(r, 1) for r in rates[name]], "spread": spread(rates[name]),
        }
        print(f"{transport + ' c' + str(concurrency):<22} {rate:>8.1f} {ideal:>7.0f} {rate / ideal:>9.1%} "
              f"{rate / sequential_rate:>13.1f}x {spread(rates[name]):>7.1%}")

    best = {c: max((v for k, v in results["engine"].items() if k.endswith(f"_c{c}")),
                   key=lambda v: v["fraction_of_ideal"]) for c in (64, 256)}
    results["c64_fraction_of_ideal"] = best[64]["fraction_of_ideal"]
    results["c256_fraction_of_ideal"] = best[256]["fraction_of_ideal"]
    results["speedup_vs_sequential"] = best[64]["speedup_vs_sequential"]
    results["note"] = ("medians of the repeats; headline keys: the better transport at each concurrency; client and "
                       "stand-in share this machine's cores, so at high rates the two processes compete for CPU")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"c64 {results['c64_fraction_of_ideal']:.1%} of ideal, c256 {results['c256_fraction_of_ideal']:.1%}, "
          f"{results['speedup_vs_sequential']}x sequential; wrote {args.out}")


if __name__ == "__main__":
    main()
