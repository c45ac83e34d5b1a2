"""The local Hugging Face teacher (``teacher.provider: hf``) against plain batched ``model.generate``.

    python benchmarks/hf_teacher.py [--requests 256] [--max-tokens 24] [--repeats 3] [--cores 1]

Same model, prompts, batch size and greedy decoding on both sides, on the CPU:
- ``generate``: a hand-written loop: each prompt rendered with the chat template, the batch tokenised left-padded,
  ``model.generate``, ``batch_decode``;
- ``teacher``: the same prompts as requests through what the generate stage's shards run: the engine
  (``answer_all``) with the ``hf://`` transport from ``make_client``, each answer appended to a request store in a
  temporary folder. Requests in flight (DISTILL_TEACHER_CONCURRENCY) are twice the batch, the default 32 at batch
  16, so that the next batch is queued while one generates.
At batch 16 (the default ``teacher.hf.batch_size``: ``ratio_vs_generate``), 4 and 64. Also at batch 16: the
teacher asked for top-20 log-probs (the feature method and KD), against the same plain loop; and the whole plan
through ``flows.teacher.run_plan``, the Prefect flow the stage runs (4 shards), whose one-off start-up (a temporary
Prefect server) is measured apart (``flow``).

The model: the shape of the teacher assistant benchmarks/white_box.py trains (4 layers, 256 wide, 2.8M parameters)
on tiny-math's tokenizer and chat template, initialised from seed 0: the largest teacher this repo trains on a
2-core machine. A batch's forward pass takes milliseconds, so any per-request cost of the teacher path shows; a larger
model would hide it. Its weights do not change the speed, and a random model never emits the end token, so every
answer is ``--max-tokens`` long on both sides.

Both sides run on ``--cores`` cores with as many torch threads (1 by default; 0: every core, torch's default). On
this shared machine other jobs keep the 2 cores busy, and then torch's OpenMP threads spin at each op's barrier
waiting for one another: at 2 threads plain generate ran at 3-16 requests/s against 60 at 1, and one measurement
differed from the next by 2x. Pinned to one core, the teacher's event loop also shares the core its generate runs
on: nothing idle is left for the teacher to borrow. Every torch call, the plain loop's too, runs on the teacher's
torch thread (``hf_local.torch_thread``): torch gives each thread that calls it an OpenMP pool of its own, and two
pools slow every op (the reason is in hf_local), so the ratio compares the two paths, not the threads they ran on.

Each repeat measures every case once, each repeat starting one case further (benchmarks/repeats.py); the two sides
of a ratio run back to back, the first of them alternating, so a slow spell of the machine hits both alike. Figures
are medians over the repeats; a ratio is the median of its per-repeat values and ``spread`` their max / min - 1.
Writes benchmarks/results/hf_teacher.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.repeats import interleaved, median, spread  # noqa: E402
from demo import words  # noqa: E402
from distill.io import atomic_path  # noqa: E402
from distill.teacher import hf_local  # noqa: E402
from distill.teacher.engine import EngineSettings, TeacherRequest, answer_all, make_client  # noqa: E402
from distill.teacher.store import RequestStore  # noqa: E402

RESULT = ROOT / "benchmarks/results/hf_teacher.json"
TOKENIZER = ROOT / "data/students/tiny-math"  # a character tokenizer with a chat template, as chat teachers have
SEED = 0


def build_teacher(folder: Path, hidden: int, layers: int) -> str:
    """A config-only Llama (weights from ``SEED`` when loaded) on tiny-math's tokenizer and chat template."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / name, folder / name)
    config = LlamaConfig.from_pretrained(TOKENIZER)
    heads = max(1, hidden // 64)
    config.update({"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": hidden // heads})
    config.save_pretrained(folder)
    return str(folder)


def prompts(count: int) -> list[list[dict]]:
    rng = random.Random(SEED)
    return [[{"role": "system", "content": "Reply with the answer only."},
             {"role": "user", "content": words.random_instruction(rng)}] for _ in range(count)]


def requests(conversations: list[list[dict]], max_tokens: int, tag: str, top_logprobs: int = 0) -> list[TeacherRequest]:
    sampling = {"temperature": 0.0, "max_tokens": max_tokens, "n": 1, "seed": SEED}
    if top_logprobs:
        sampling |= {"logprobs": True, "top_logprobs": top_logprobs}
    return [TeacherRequest(key=f"{tag}-{i}", model="hf-teacher", messages=messages, sampling=sampling)
            for i, messages in enumerate(conversations)]


def teacher_url(model: str, batch: int) -> str:
    """The ``hf://`` base URL the generate stage builds (distill/teacher/endpoint.hf_url)."""
    return f"hf://{model}?{urlencode({'batch_size': batch, 'max_wait_ms': 20.0, 'seed': SEED, 'device': 'cpu'})}"


def plain_generate(model: str, conversations: list[list[dict]], batch: int, max_tokens: int) -> tuple[float, list]:
    """Requests/s and answers of the hand-written loop. Blocking: run it on the teacher's torch thread."""
    network, tokenizer, _ = hf_local.load(model, SEED, "cpu")  # left-padding
    answers = []
    started = time.perf_counter()
    for start in range(0, len(conversations), batch):
        texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                 for messages in conversations[start : start + batch]]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = network.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers += tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return len(conversations) / (time.perf_counter() - started), answers


async def through_engine(url: str, batch: list[TeacherRequest], concurrency: int, store: Path) -> tuple[float, list]:
    """Requests/s and answers of the engine with the hf:// transport, into a fresh request store."""
    settings = EngineSettings(concurrency=concurrency)
    with RequestStore(store) as answers:
        async with make_client(url, "unused", settings) as client:
            started = time.perf_counter()
            ledger = await answer_all(batch, client, answers, settings, asyncio.Semaphore(concurrency))
            elapsed = time.perf_counter() - started
        if ledger.failures or len(answers) != len(batch):
            raise SystemExit(f"{len(batch) - len(answers)} requests unanswered: {dict(ledger.failures)}")
        return len(batch) / elapsed, [answers.get(r.key)["choices"][0]["message"]["content"] for r in batch]


def through_flow(url: str, batch: list[TeacherRequest], scratch: Path) -> float:
    """Requests/s of the whole plan through the Prefect flow the generate stage runs."""
    from distill.teacher.plan import write_plan
    from flows.teacher import run_plan  # imports Prefect: only when the flow is measured

    scratch.mkdir(parents=True)
    write_plan(batch, scratch / "plan.jsonl")
    started = time.perf_counter()
    ledger = run_plan(scratch / "plan.jsonl", scratch / "store.jsonl", url, None, 4, settings=EngineSettings())
    elapsed = time.perf_counter() - started
    if ledger.failures or ledger.requests_sent != len(batch):
        raise SystemExit(f"the flow sent {ledger.requests_sent} of {len(batch)}: {dict(ledger.failures)}")
    return len(batch) / elapsed


class Bench:
    """The cases, each measured once per call: a fresh request store and fresh keys every time."""

    def __init__(self, model: str, conversations: list[list[dict]], max_tokens: int, flow_requests: int,
                 scratch: Path):
        self.model, self.conversations, self.max_tokens, self.scratch = model, conversations, max_tokens, scratch
        self.flow_plan = requests(prompts(flow_requests), max_tokens, "flow") if flow_requests else []
        self.runs = 0

    def plain(self, batch: int) -> tuple[float, list]:
        return hf_local.torch_thread().submit(plain_generate, self.model, self.conversations, batch,
                                              self.max_tokens).result()

    def teacher(self, batch: int, top_logprobs: int = 0) -> tuple[float, list]:
        self.runs += 1
        plan = requests(self.conversations, self.max_tokens, f"r{self.runs}", top_logprobs)
        url = teacher_url(self.model, batch)
        return asyncio.run(through_engine(url, plan, 2 * batch, self.scratch / f"store{self.runs}.jsonl"))

    def flow(self, batch: int) -> tuple[float, list]:
        self.runs += 1
        plan = [TeacherRequest(**(vars(r) | {"key": f"{r.key}-{self.runs}"})) for r in self.flow_plan]
        return through_flow(teacher_url(self.model, batch), plan, self.scratch / f"flow{self.runs}"), []

    def case(self, name: str, batch: int) -> tuple[float, list]:
        if name == "flow":
            return self.flow(batch)
        return self.teacher(batch, 20 if name == "logprobs" else 0)


def measure(bench: Bench, cases: list[tuple[int, str]], repeats: int) -> dict[str, list[dict]]:
    """Per case, one result per repeat: the case's and plain generate's requests/s, measured back to back (the
    first of the two alternating), their ratio, and for the teacher the share of its greedy answers equal to plain
    generate's."""

    def pair(size: int, name: str) -> Callable[[int], dict]:
        def run(repeat: int) -> dict:
            if repeat % 2 == 0:
                (base, expected), (rate, answers) = bench.plain(size), bench.case(name, size)
            else:
                (rate, answers), (base, expected) = bench.case(name, size), bench.plain(size)
            same = sum(map(str.__eq__, answers, expected)) / len(answers) if name == "teacher" else None
            return {"generate": base, "rps": rate, "ratio": rate / base, "same": same}

        return run

    def report(repeat: int, label: str, got: dict) -> None:
        print(f"repeat {repeat + 1}: batch {label:<12}{got['rps']:>8.1f} requests/s, plain generate "
              f"{got['generate']:>7.1f}: {got['ratio']:.2f}x", flush=True)

    return interleaved({f"{size} {name}": pair(size, name) for size, name in cases}, repeats, report)


def summary(runs: list[dict]) -> dict:
    """Medians over the repeats; the ratio is the median of the per-repeat ratios, whose two sides ran back to back."""
    values = [run["ratio"] for run in runs]
    found = {"generate_rps": round(median([run["generate"] for run in runs]), 1),
             "rps": round(median([run["rps"] for run in runs]), 1),
             "ratio_vs_generate": round(median(values), 3), "spread": spread(values),
             "ratios": [round(value, 3) for value in values]}
    if runs[0]["same"] is not None:
        found["same_answers"] = min(run["same"] for run in runs)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=256, help="requests per measurement")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per case; medians reported")
    parser.add_argument("--batches", default="16,4,64", help="batch sizes; the first is the headline")
    parser.add_argument("--hidden", type=int, default=256, help="the teacher's width")
    parser.add_argument("--layers", type=int, default=4, help="the teacher's depth")
    parser.add_argument("--flow-requests", type=int, default=512, help="requests per flow run; 0: no flow")
    parser.add_argument("--cores", type=int, default=1, help="cores and torch threads for both sides; 0: all")
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.batches.split(",")]
    head = sizes[0]
    if args.cores:  # before the teacher loads, which sets torch's threads from OMP_NUM_THREADS (use_all_cores)
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
        os.environ["OMP_NUM_THREADS"] = str(args.cores)
        torch.set_num_threads(args.cores)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model = build_teacher(scratch / "teacher", args.hidden, args.layers)
        network = hf_local.torch_thread().submit(hf_local.load, model, SEED, "cpu").result()[0]
        parameters = sum(p.numel() for p in network.parameters())
        threads = hf_local.torch_thread().submit(torch.get_num_threads).result()
        bench = Bench(model, prompts(args.requests), args.max_tokens, args.flow_requests, scratch)
        bench.plain(head)  # warm-up: first calls pay for lazy initialisation
        bench.teacher(head)
        startup = None
        if bench.flow_plan:
            started = time.perf_counter()
            through_flow(teacher_url(model, head), requests(prompts(head), args.max_tokens, "warm"), scratch / "warm")
            startup = round(time.perf_counter() - started, 2)  # Prefect's temporary server, once per process
        print(f"teacher: {args.layers} layers, {args.hidden} wide, {parameters / 1e6:.1f}M parameters; "
              f"{args.requests} requests of {args.max_tokens} tokens per measurement, {args.repeats} repeats, "
              f"{threads} torch threads on {len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs",
              flush=True)
        cases = [(size, "teacher") for size in sizes] + [(head, "logprobs")] + [(head, "flow")] * bool(bench.flow_plan)
        runs = measure(bench, cases, args.repeats)

    batches = {str(size): summary(runs[f"{size} teacher"]) for size in sizes}
    result = {
        "model": {"layers": args.layers, "hidden": args.hidden, "parameters": parameters,
                  "tokenizer": TOKENIZER.relative_to(ROOT).as_posix()},
        "requests": args.requests, "max_tokens": args.max_tokens, "repeats": args.repeats, "batch_size": head,
        "cpus": os.cpu_count(), "cores": len(os.sched_getaffinity(0)), "torch_threads": threads,
        "ratio_vs_generate": batches[str(head)]["ratio_vs_generate"],
        "spread": batches[str(head)]["spread"],
        "batches": batches,
        "logprobs_top20": summary(runs[f"{head} logprobs"]),
    }
    if bench.flow_plan:
        result["flow"] = summary(runs[f"{head} flow"]) | {"requests": args.flow_requests, "shards": 4,
                                                          "startup_s": startup}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o644)  # a results file like the others, not a private temp file

    print(f"\n{'batch':>9} {'generate':>9} {'teacher':>9} {'ratio':>7} {'spread':>7}   requests/s, medians of "
          f"{args.repeats}")
    rows = [(str(size), batches[str(size)]) for size in sizes] + [(f"{head} lp20", result["logprobs_top20"])]
    rows += [(f"{head} flow", result["flow"])] if bench.flow_plan else []
    for label, row in rows:
        print(f"{label:>9} {row['generate_rps']:>9.1f} {row['rps']:>9.1f} {row['ratio_vs_generate']:>6.2f}x "
              f"{row['spread']:>7.1%}")
    print(f"ratio_vs_generate at batch {head}: {result['ratio_vs_generate']:.3f} (spread {result['spread']:.1%}); "
          f"greedy answers equal to plain generate's: {batches[str(head)]['same_answers']:.0%}"
          + (f"; Prefect start-up {startup:.1f} s, once" if bench.flow_plan else ""))


if __name__ == "__main__":
    main()
