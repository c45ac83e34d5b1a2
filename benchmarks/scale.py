"""Scale: the score -> dedupe -> select path at 10^5 and 10^6 rows, and generation at 10^5 requests.

    python benchmarks/scale.py [--sizes 100000,1000000] [--requests 100000] [--repeats 3] [--embed standin]

Rows: synthetic GENERATED rows (distill/records.py), written like the generate stage's output. Instructions and
answers come from benchmarks/dedupe.py's ``Writer`` (14 task templates, word lists and a Zipf tail of made-up
words; some templates have a long fixed preamble), a quarter of the "<task>: <text>" ones with the text as
``input``, 2 % with an earlier chat turn as ``context``. Planted: 3 % exact duplicates (an earlier row's task,
another answer), 5 % edited copies of an earlier task (edit rates 0-20 % of the words, so on both sides of the
0.8 threshold), 0.05 % copies of a held-out eval task, and the faults the score stage drops: 2 % refusals, 1 %
truncated, 0.5 % repetition loops, 0.2 % bad characters; the demo task's own rows ("reverse <word>", "upper
<word>") are answered right but for 4 %. The template families also make many exact duplicates of their short
tasks ("Is 17 a prime number?"), as real seed sets do.

Stages: each stage's ``run()`` (stages/score.py, dedupe.py, select.py), with params.yaml's values, in a fresh
process of its own per stage and size (reading the previous stage's parquet and writing its own, as under DVC),
so that one stage's peak memory cannot hide another's. Two params differ from params.yaml: the judge stays off
(no teacher), and ``score.max_response_chars`` is 4096 (the demo's 64 fits its one-word answers, not these).
A stage's ``wall_s`` counts reading its input, ``run()`` and writing its output, not the interpreter's start;
``peak_rss_mb`` is the process's peak resident memory (``ru_maxrss``), imports and input included.

The select stage's diversity step embeds every eligible row with all-MiniLM-L6-v2, which on these 2 shared CPU
cores runs at about 100 rows a second: 10^6 rows would take hours, which is the model's cost, not the stage's.
With ``--embed standin`` (default) the stage runs as it is, k-means and all, on stand-in vectors of the same
shape (384-d, unit length, hashed bags of words, so alike texts are near); the child first embeds a sample of
``--embed-sample`` eligible rows with the real model (which then stays loaded, so its memory counts), and
``select_with_model_s`` is the stage's time with the stand-in's time replaced by the model's at that rate (the
model embeds in length-sorted batches: linear in rows). ``--embed model`` embeds every row with the model.

Generation: the generate stage's ``run()`` (stages/generate.py) with params.yaml's values (the stand-in
teacher with zero latency and its fault rates, the feature method's top-20 log-probs, the Prefect teacher
flow with a temporary server), on ``--requests`` distinct "reverse/upper <word>" seeds from an empty request
store. 10^5 requests, not 10^6: at about 400 requests a second on 2 cores (stand-in and client share them)
10^6 would take about 45 minutes a repeat, and the stage holds every answer in memory (the request store keeps
them parsed: about 6.5 GB at 10^5, so about 60 GB at 10^6, past this machine's 24 GB).

Every measurement is repeated (``--repeats``, interleaved: benchmarks/repeats.py); figures are medians,
``spread`` is max / min - 1 over the repeats. Writes benchmarks/results/scale.json; growth_1e5_to_1e6 is the
whole path's time at 10^6 over its time at 10^5 (10 is linear), peak_rss_gb_1e6 the largest stage's peak.
About 25 minutes with the defaults on 2 CPU cores, generation most of it (``--requests 0`` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from benchmarks.dedupe import EDIT_RATES, Writer  # noqa: E402
from benchmarks.repeats import interleaved, median, ratios, spread, summary  # noqa: E402
from demo import words  # noqa: E402
from distill import params as params_module  # noqa: E402
from distill.io import content_hash, write_parquet  # noqa: E402
from distill.records import GENERATED, SEED, conform, task_texts  # noqa: E402

RESULT = ROOT / "benchmarks/results/scale.json"
STAGES = ("score", "dedupe", "select")
INPUT = {"score": "generated.parquet", "dedupe": "score.parquet", "select": "dedupe.parquet"}
TARGETS = {"growth_1e5_to_1e6": 12, "peak_rss_gb_1e6": 8}
EVAL_ROWS = 200
DIM = 384  # all-MiniLM-L6-v2's width: the stand-in vectors are as large
CREATED_AT = "2026-01-01T00:00:00+00:00"


# --- synthetic rows --------------------------------------------------------------------------------------------

def answer(writer: Writer, instruction: str) -> tuple[str, str]:
    """A teacher's answer and finish reason, with the faults the score stage checks for at their rates."""
    rng, solved = writer.rng, words.solve(instruction)
    response = (solved if rng.random() > 0.04 else solved[:-1]) if solved else \
        " ".join(writer.sentence() for _ in range(rng.randint(1, 6)))
    fault = rng.random()
    if fault < 0.02:
        return "I'm sorry, but I can't help with that.", "stop"
    if fault < 0.03:
        return response[:max(1, len(response) // 2)], "length"
    if fault < 0.035:
        return " ".join([writer.clause(4)] * 8), "stop"
    if fault < 0.037:
        return response + " \ufffd", "stop"
    return response, "stop"


def tasks(n: int, writer: Writer, evals: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """n (instruction, input, context) with the planted duplicates, near-duplicates and eval copies."""
    rng, out = writer.rng, []
    for _ in range(n):
        draw = rng.random()
        if out and draw < 0.03:
            out.append(out[rng.randrange(len(out))])
        elif out and draw < 0.08:
            instruction, input_text, context = out[rng.randrange(len(out))]
            out.append((writer.edit(" ".join(instruction.split()), rng.choice(EDIT_RATES)), input_text, context))
        elif draw < 0.0805:
            out.append((*evals[rng.randrange(len(evals))], ""))
        else:
            instruction, _ = writer.row()
            head, colon, text = instruction.partition(": ")
            input_text = ""
            if colon and rng.random() < 0.25:
                instruction, input_text = head + ":", text
            context = json.dumps([{"role": "user", "content": writer.sentence()},
                                  {"role": "assistant", "content": writer.sentence()}]) if rng.random() < 0.02 else ""
            out.append((instruction, input_text, context))
    return out


def eval_tasks(seed: int) -> list[tuple[str, str]]:
    writer = Writer(seed + 1)
    return [(writer.row()[0], "") for _ in range(EVAL_ROWS)]


def synthetic_rows(n: int, seed: int = 0) -> pl.DataFrame:
    """n GENERATED rows (see the module docstring), deterministic for a seed."""
    writer = Writer(seed)
    found = tasks(n, writer, eval_tasks(seed))
    answers = [answer(writer, instruction) for instruction, _, _ in found]
    keys = [content_hash(["scale", seed, k]) for k in range(n)]
    prompt_chars = pl.Series([len(i) + len(t) + len(c) for i, t, c in found])
    responses = pl.Series([a for a, _ in answers], dtype=pl.String)
    return conform(pl.DataFrame({
        "id": [content_hash([key, 0]) for key in keys], "seed_id": [content_hash(["seed", k]) for k in keys],
        "source_file": "data/seeds/train.jsonl", "source_line": np.arange(1, n + 1), "method": "labelling",
        "teacher": "standin", "model_requested": "standin-skill-1", "model_answered": "standin-skill-1",
        "template_hash": "b88cc82803f7e374", "sampling_hash": content_hash({"temperature": 0.0}),
        "request_key": keys, "response_id": [f"r-{key}" for key in keys], "choice_index": 0,
        "created_at": CREATED_AT, "prompt_tokens": prompt_chars // 4 + 40,
        "completion_tokens": responses.str.len_chars() // 4 + 1, "finish_reason": [f for _, f in answers],
        "instruction": [i for i, _, _ in found], "input": [t for _, t, _ in found],
        "context": [c for _, _, c in found], "reference": None, "response": responses, "reasoning": None,
        "input_origin": "seed", "parent_key": None, "judge_score": None, "pass_rate": None,
    }), GENERATED)


def synthetic_evals(seed: int = 0) -> pl.DataFrame:
    """The held-out split (SEED), the tasks some rows copy."""
    found = eval_tasks(seed)
    return conform(pl.DataFrame({
        "id": [content_hash(["eval", k]) for k in range(len(found))], "instruction": [i for i, _ in found],
        "input": [t for _, t in found], "context": "", "reference": "", "split": "eval",
        "source_file": "data/seeds/eval.jsonl", "source_line": np.arange(1, len(found) + 1), "source_hash": "0",
    }), SEED)


def word_seeds(n: int) -> pl.DataFrame:
    """n distinct demo-task seeds ("reverse <word>", "upper <word>") for the generate stage."""
    rng, seen = random.Random(0), set()
    while len(seen) < n:
        seen.add(words.random_instruction(rng) + words.random_word(rng, 0, 4))  # longer words: 10^5 distinct
    instructions = sorted(seen)
    rng.shuffle(instructions)
    return conform(pl.DataFrame({
        "id": [content_hash(["seed", text]) for text in instructions], "instruction": instructions, "input": "",
        "context": "", "reference": None, "split": "train", "source_file": "data/seeds/train.jsonl",
        "source_line": np.arange(1, n + 1), "source_hash": "0"}), SEED)


# --- the children: one process per measurement ----------------------------------------------------------------

def stage_params() -> params_module.Params:
    params = params_module.load(ROOT / "params.yaml")
    return params.model_copy(update={"score": params.score.model_copy(update={"judge": False,
                                                                               "max_response_chars": 4096})})


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


STANDIN_SECONDS = [0.0]


def standin_embed(texts: list[str], model: str = "", batch_size: int = 0, max_length: int = 128) -> np.ndarray:
    """Unit vectors like semantic.embed's (len(texts), 384) float32, from hashed bags of words (alike texts are
    near): a stand-in for the model's cost, not its meaning."""
    started = time.perf_counter()
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for first in range(0, len(texts), 100_000):
        part = pl.Series(texts[first:first + 100_000], dtype=pl.String).str.to_lowercase().str.split(" ")
        lengths = part.list.len().to_numpy()
        hashes = part.explode().hash(seed=0).to_numpy()
        rows = np.repeat(np.arange(len(lengths)), lengths)
        signs = np.where(hashes >> np.uint64(63), 1.0, -1.0)
        cells = rows * DIM + (hashes % np.uint64(DIM)).astype(np.int64)
        block = np.bincount(cells, weights=signs, minlength=len(lengths) * DIM).reshape(len(lengths), DIM)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[first:first + len(lengths)] = block / np.where(norms > 0, norms, 1)
    STANDIN_SECONDS[0] += time.perf_counter() - started
    return out


def model_rate(rows: pl.DataFrame, params: params_module.SelectParams, sample_rows: int) -> float:
    """Rows a second the real embedding model embeds, on a seeded sample of the eligible rows."""
    from distill.curate import semantic

    eligible = rows.filter(pl.col("keep"))
    sample = task_texts(eligible.sample(min(sample_rows, eligible.height), seed=0))
    semantic.embed(sample[:64], params.diversity.model, params.diversity.batch_size)  # load, warm up
    started = time.perf_counter()
    semantic.embed(sample, params.diversity.model, params.diversity.batch_size)
    return len(sample) / (time.perf_counter() - started)


def child_stage(stage: str, folder: Path, embed: str) -> dict:
    from stages import dedupe, score, select

    params = stage_params()
    rows = pl.read_parquet(folder / INPUT[stage])  # not timed yet: the model's rate below reads it too
    extra: dict = {}
    if stage == "select" and embed != "model":
        from distill.curate import semantic

        if int(embed):  # the model stays loaded, as in the stage: its memory counts
            extra["model_rows_per_s"] = round(model_rate(rows, params.select, int(embed)), 1)
        semantic.embed = standin_embed
    started = time.perf_counter()
    rows = pl.read_parquet(folder / INPUT[stage])
    read_s = time.perf_counter() - started
    if stage == "score":
        out, metrics = score.run(params, rows, folder / "score_store.jsonl", send=None)
    elif stage == "dedupe":
        out, metrics = dedupe.run(params.dedupe, rows, pl.read_parquet(folder / "eval.parquet"))
    else:
        out, metrics = select.run(params.select, rows)
    run_s = time.perf_counter() - started - read_s
    write_parquet(out, folder / f"{stage}.parquet")
    wall_s = time.perf_counter() - started
    kept = {"score": "kept", "dedupe": "kept", "select": "selected"}[stage]
    result = {"wall_s": round(wall_s, 2), "run_s": round(run_s, 2), "peak_rss_mb": peak_rss_mb(),
              "rows_in": rows.height, "kept": metrics[kept]} | extra
    if stage == "dedupe":
        result["duplicates_by_kind"] = metrics["duplicates_by_kind"]
        result["contaminated_rows"] = metrics["contaminated_rows"]
    if stage == "select":
        result["eligible"] = metrics["eligible"]
    if "model_rows_per_s" in extra:
        result["standin_embed_s"] = round(STANDIN_SECONDS[0], 2)
        result["select_with_model_s"] = round(wall_s - STANDIN_SECONDS[0] + metrics["eligible"] /
                                              extra["model_rows_per_s"], 1)
    return result


def child_data(size: int, folder: Path, seed: int) -> dict:
    started = time.perf_counter()
    write_parquet(synthetic_rows(size, seed), folder / "generated.parquet")
    write_parquet(synthetic_evals(seed), folder / "eval.parquet")
    return {"wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": peak_rss_mb()}


def child_generate(requests: int, folder: Path) -> dict:
    from distill.teacher.engine import EngineSettings
    from distill.teacher.store import open_store
    from flows.teacher import run_plan
    from stages import generate

    params = params_module.load(ROOT / "params.yaml")
    seeds, evals = word_seeds(requests), synthetic_evals()
    settings = EngineSettings.from_env()
    started = time.perf_counter()
    with open_store(folder / "store.jsonl", settings.store_wait_s) as store:
        frames, metrics = generate.run(params, seeds, evals, store, run_plan, settings)
    wall_s = time.perf_counter() - started
    return {"wall_s": round(wall_s, 1), "requests_sent": metrics["requests_sent"], "rows": metrics["rows"],
            "requests_per_s": round(metrics["requests_sent"] / wall_s, 1),
            "store_mb": round((folder / "store.jsonl").stat().st_size / 2**20, 1), "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent ----------------------------------------------------------------------------------------------

def label(size: int) -> str:
    """1e5 for 100000; other sizes as they are."""
    exponent = len(str(size)) - 1
    return f"1e{exponent}" if size == 10**exponent and exponent > 2 else str(size)


def path_once(size: int, folder: Path, embed: str) -> dict:
    """score, dedupe and select at one size, each in its own process; the stage's figures."""
    return {stage: run_child("stage", stage, str(folder), embed) for stage in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="rows, comma-separated (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=100_000, help="generation's requests; 0 skips it")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements; medians reported")
    parser.add_argument("--embed", choices=("standin", "model"), default="standin",
                        help="select's diversity vectors: stand-in vectors and the model's measured rate, or the "
                             "model on every row (hours at 10^6 on a CPU)")
    parser.add_argument("--embed-sample", type=int, default=2000,
                        help="with --embed standin: eligible rows the model embeds to measure its rate (0: the "
                             "model is not loaded, and its memory not counted)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "stage":
            result = child_stage(rest[0], Path(rest[1]), rest[2])
        elif kind == "data":
            result = child_data(int(rest[0]), Path(rest[1]), int(rest[2]))
        else:
            result = child_generate(int(rest[0]), Path(rest[1]))
        print(json.dumps(result))
        return

    sizes = sorted(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        folders = {size: Path(scratch) / str(size) for size in sizes}
        data = {}
        for size, folder in folders.items():
            folder.mkdir()
            data[label(size)] = run_child("data", str(size), str(folder), str(args.seed))
            print(f"{size:,} synthetic rows written in {data[label(size)]['wall_s']} s", flush=True)
        embed = "model" if args.embed == "model" else str(args.embed_sample)  # the select child's switch
        measure = {label(size): (lambda repeat, size=size: path_once(size, folders[size], embed))
                   for size in sizes}
        if args.requests:
            env = os.environ | {"PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-", dir=scratch),
                                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

            def generation(repeat: int) -> dict:
                folder = Path(tempfile.mkdtemp(prefix=f"generate{repeat}-", dir=scratch))  # an empty store each time
                return run_child("generate", str(args.requests), str(folder), env=env)

            measure["generate"] = generation

        def report(repeat: int, name: str, result: dict) -> None:
            if name == "generate":
                line = f"{result['requests_per_s']:,.0f} requests/s, {result['peak_rss_mb']:,.0f} MB"
            else:
                line = "  ".join(f"{stage} {r['wall_s']:.1f} s {r['peak_rss_mb']:,.0f} MB"
                                 for stage, r in result.items())
            print(f"repeat {repeat + 1}: {name:<9} {line}", flush=True)

        runs = interleaved(measure, args.repeats, report)

    result = summarise(runs, sizes, args, data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key.startswith(("growth", "peak", "meets"))}))


def summarise(runs: dict[str, list[dict]], sizes: list[int], args: argparse.Namespace, data: dict) -> dict:
    result: dict = {"sizes": sizes, "repeats": args.repeats, "embed": args.embed,
                    "embed_sample": args.embed_sample if args.embed == "standin" else None, "cpus": os.cpu_count(),
                    "synthetic_data": data, "stages": {}}
    totals = {}
    for size in sizes:
        name, repeats = label(size), runs[label(size)]
        per_stage = {}
        for stage in STAGES:
            figures = [r[stage] for r in repeats]
            per_stage[stage] = {
                "wall_s": summary([f["wall_s"] for f in figures])["median"],
                "runs_s": [f["wall_s"] for f in figures],
                "spread": spread([f["wall_s"] for f in figures]),
                "peak_rss_mb": max(f["peak_rss_mb"] for f in figures),
                "rows_in": figures[0]["rows_in"], "kept": figures[0]["kept"],
            } | {key: figures[0][key] for key in ("duplicates_by_kind", "contaminated_rows", "eligible")
                 if key in figures[0]}
            if "model_rows_per_s" in figures[0]:
                per_stage[stage] |= {key: round(median([f[key] for f in figures]), 1)
                                     for key in ("model_rows_per_s", "standin_embed_s", "select_with_model_s")}
        totals[name] = [sum(r[stage]["wall_s"] for stage in STAGES) for r in repeats]
        result["stages"][name] = per_stage | {"path_s": round(median(totals[name]), 2),
                                              "path_runs_s": [round(t, 2) for t in totals[name]]}
    small, large = label(sizes[0]), label(sizes[-1])
    if len(sizes) > 1:
        growth = ratios(totals[large], totals[small])
        result[f"growth_{small}_to_{large}"] = round(median(totals[large]) / median(totals[small]), 2)
        result["growth_spread"] = spread(growth)
        result["growth_linear"] = sizes[-1] / sizes[0]
    result[f"peak_rss_gb_{large}"] = round(max(s["peak_rss_mb"] for s in result["stages"][large].values()
                                               if isinstance(s, dict)) / 1024, 2)
    if "generate" in runs:
        figures = runs["generate"]
        result["generate"] = {
            "requests": args.requests, "requests_per_s": round(median([f["requests_per_s"] for f in figures]), 1),
            "spread": spread([f["requests_per_s"] for f in figures]),
            "wall_s": round(median([f["wall_s"] for f in figures]), 1), "runs_s": [f["wall_s"] for f in figures],
            "rows": figures[0]["rows"], "store_mb": figures[0]["store_mb"],
            "peak_rss_mb": max(f["peak_rss_mb"] for f in figures)}
    if "growth_1e5_to_1e6" in result and "peak_rss_gb_1e6" in result:
        result["targets"] = TARGETS
        result["meets_targets"] = all(result[key] <= bound for key, bound in TARGETS.items())
    return result


if __name__ == "__main__":
    main()
