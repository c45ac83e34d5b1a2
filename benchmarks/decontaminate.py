"""Benchmark decontamination: distill/curate/decontaminate.py, 10^6 training rows against 10^5 benchmark items.

    python benchmarks/decontaminate.py [--sizes 100000,1000000] [--items 100000] [--repeats 3] [--ngram 13]

Synthetic but shaped like the real thing: a vocabulary of 50k made-up words drawn with Zipf frequencies (a few
words very common, most rare, as in text); training rows with an instruction of 20-40 words and a response of
60-100 (a tenth of them with an ``input`` of 5-15 words); benchmark items with a question of 40-80 words and an
answer of 15-40 (a worked solution), both checked (benchmarks.sets[].fields). Planted: one row in 1,000 has an
item's question, or a run of 20 or more of its words, pasted into its instruction (or an answer into its
response), with the case, spacing and punctuation changed. ``found`` counts the rows the check returns;
``planted_found`` those of them planted (it must equal ``planted``); ``unplanted_found`` the rest (random text
shares no 13-gram with the items, so 0 is expected).

Each measurement is a fresh child process that reads the rows and items from parquet (as the dedupe stage reads
its input) and calls ``find_matches`` once: ``seconds`` is that call's wall time (the index of the items
included), ``peak_rss_gb`` the child's peak resident memory (``ru_maxrss``), the rows read and the interpreter
included; ``rss_before_gb`` what it held before the call. Sizes are measured ``--repeats`` times, interleaved
(benchmarks/repeats.py); times are medians, ``spread`` is max / min - 1 over the repeats.
Writes benchmarks/results/decontaminate.json (``seconds_1e6_vs_1e5``, ``peak_rss_gb``: the largest size's).
About 4 minutes with the defaults on 2 shared CPU cores, a third of it writing the data.
"""

from __future__ import annotations

import argparse
import json
import os
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

from benchmarks.repeats import interleaved, median, spread  # noqa: E402
from benchmarks.scale import label  # noqa: E402
from distill.curate import decontaminate  # noqa: E402

RESULT = ROOT / "benchmarks/results/decontaminate.json"
TARGETS = {"seconds_1e6_vs_1e5": 120, "peak_rss_gb": 4}
VOCABULARY = 50_000
PLANT_EVERY = 1_000  # one planted row per this many rows
PUNCTUATION = np.array([",", ".", "?", "!", ";", ":", " -", " (", ")"])


# --- synthetic data --------------------------------------------------------------------------------------------

def vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    sizes = rng.integers(2, 11, VOCABULARY)
    return np.array(["".join(rng.choice(letters, size)) for size in sizes])


def texts(rng: np.random.Generator, vocab: pl.Series, count: int, low: int, high: int) -> pl.Series:
    """``count`` texts of ``low``-``high`` Zipf-drawn words, capitalised, with some punctuation."""
    rank = np.arange(1, VOCABULARY + 1)
    cdf = np.cumsum(1 / rank)
    picks = np.searchsorted(cdf, rng.random(count * high) * cdf[-1])
    lengths = rng.integers(low, high + 1, count)
    chosen = vocab.gather(picks)
    punct = rng.random(count * high) < 0.08
    chosen = chosen.scatter(np.flatnonzero(punct), (chosen.filter(pl.Series(punct)) + pl.Series(
        rng.choice(PUNCTUATION, int(punct.sum())))))
    frame = pl.DataFrame({"w": chosen.reshape((count, high)).arr.to_list(), "n": lengths})
    joined = frame.select(pl.col("w").list.head(pl.col("n")).list.join(" "))["w"]
    return joined.str.slice(0, 1).str.to_uppercase() + joined.str.slice(1)


def garble(rng: np.random.Generator, text: str) -> str:
    """The same words with other case, spacing and punctuation, as a copy-paste with light edits leaves them."""
    out = []
    for word in text.split():
        word = word.upper() if rng.random() < 0.2 else word.lower() if rng.random() < 0.5 else word.title()
        out.append(word + str(rng.choice(PUNCTUATION)) if rng.random() < 0.1 else word)
    return (" " * int(rng.integers(1, 3))).join(out)


def make_data(rows: int, items: int, seed: int, folder: Path) -> dict:
    """rows.parquet, items.parquet and the planted rows' positions in ``folder``."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    vocab = pl.Series(vocabulary(rng))
    bench = pl.DataFrame({"id": [f"item-{i}" for i in range(items)],
                          "question": texts(rng, vocab, items, 40, 80), "answer": texts(rng, vocab, items, 15, 40)})
    has_input = rng.random(rows) < 0.1
    frame = pl.DataFrame({
        "id": [f"row-{i}" for i in range(rows)],
        "instruction": texts(rng, vocab, rows, 20, 40),
        "input": pl.Series(np.where(has_input, texts(rng, vocab, rows, 5, 15).to_numpy(), "")),
        "response": texts(rng, vocab, rows, 60, 100),
    })
    planted = np.sort(rng.choice(rows, max(1, rows // PLANT_EVERY), replace=False))
    instructions, responses = frame["instruction"].to_list(), frame["response"].to_list()
    for row in planted.tolist():
        item = int(rng.integers(items))
        if rng.random() < 0.8:  # a question, whole or a run of 20+ of its words, into the instruction
            words = bench["question"][item].split()
            start = int(rng.integers(0, len(words) - 20)) if rng.random() < 0.5 else 0
            instructions[row] = f"{instructions[row]} {garble(rng, ' '.join(words[start:]))}"
        else:  # an answer, into the response
            responses[row] = f"{garble(rng, bench['answer'][item])} {responses[row]}"
    frame = frame.with_columns(instruction=pl.Series(instructions), response=pl.Series(responses))
    frame.write_parquet(folder / "rows.parquet")
    bench.write_parquet(folder / "items.parquet")
    np.save(folder / "planted.npy", planted)
    return {"rows": rows, "items": items, "planted": len(planted), "wall_s": round(time.perf_counter() - started, 1)}


# --- one measurement, in a child -------------------------------------------------------------------------------

def gigabytes(kib: float) -> float:
    return round(kib / 2**20, 2)


def child(folder: Path, ngram: int) -> dict:
    import psutil

    rows = pl.read_parquet(folder / "rows.parquet")
    items = pl.read_parquet(folder / "items.parquet")
    bench = decontaminate.Benchmark("synthetic", str(folder / "items.parquet"), items["id"].to_list(),
                                    {field: items[field].to_list() for field in ("question", "answer")})
    del items
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    found = decontaminate.find_matches(rows, [bench], ngram)
    seconds = time.perf_counter() - started
    planted = set(np.load(folder / "planted.npy").tolist())
    matched = set(found["row"].to_list())
    return {"seconds": round(seconds, 2), "peak_rss_gb": gigabytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
            "rss_before_gb": round(before / 2**30, 2), "found": len(matched), "planted_found": len(matched & planted),
            "unplanted_found": len(matched - planted), "sample": found.head(1).drop("row").to_dicts()}


def run_child(*args: str) -> dict:
    """A child process's result. Data are written in a child too: a child forked from a parent that holds
    gigabytes would report them in its own peak (Linux keeps ``ru_maxrss`` across fork and exec)."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent ------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="training rows, comma-separated (%(default)s)")
    parser.add_argument("--items", type=int, default=100_000, help="benchmark items (default: %(default)s)")
    parser.add_argument("--ngram", type=int, default=13, help="words per n-gram (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements; medians reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "data":
            print(json.dumps(make_data(int(rest[0]), int(rest[1]), int(rest[2]), Path(rest[3]))))
        else:
            print(json.dumps(child(Path(rest[0]), int(rest[1]))))
        return

    sizes = sorted(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-decontaminate-") as scratch:
        folders, data = {}, {}
        for size in sizes:
            folders[size] = Path(scratch) / str(size)
            folders[size].mkdir()
            data[label(size)] = run_child("data", str(size), str(args.items), str(args.seed), str(folders[size]))
            print(f"{size:,} rows, {args.items:,} items, {data[label(size)]['planted']} planted: written in "
                  f"{data[label(size)]['wall_s']} s", flush=True)
        measure = {label(size): (lambda repeat, size=size: run_child("measure", str(folders[size]), str(args.ngram)))
                   for size in sizes}
        runs = interleaved(measure, args.repeats,
                           lambda repeat, name, r: print(f"repeat {repeat + 1}: {name} {r['seconds']} s, "
                                                         f"{r['peak_rss_gb']} GB, found {r['found']}", flush=True))
    result: dict = {"items": args.items, "ngram": args.ngram, "repeats": args.repeats, "cpus": os.cpu_count(),
                    "sizes": {}}
    for size in sizes:
        figures = runs[label(size)]
        seconds = [f["seconds"] for f in figures]
        result["sizes"][label(size)] = {
            "rows": size, "seconds": round(median(seconds), 2), "runs_s": seconds, "spread": spread(seconds),
            "peak_rss_gb": max(f["peak_rss_gb"] for f in figures), "rss_before_gb": figures[0]["rss_before_gb"],
            "planted": data[label(size)]["planted"],
            **{key: figures[0][key] for key in ("found", "planted_found", "unplanted_found", "sample")},
            "data_wall_s": data[label(size)]["wall_s"]}
    largest = result["sizes"][label(sizes[-1])]
    result |= {"rows": sizes[-1], "planted": largest["planted"], "found": largest["found"],
               f"seconds_{label(sizes[-1])}_vs_{label(args.items)}": largest["seconds"],
               "peak_rss_gb": largest["peak_rss_gb"],
               "all_planted_found": all(s["planted_found"] == s["planted"] for s in result["sizes"].values())}
    if "seconds_1e6_vs_1e5" in result:
        result["targets"] = TARGETS
        result["meets_targets"] = all(result[key] <= bound for key, bound in TARGETS.items())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "sizes"}))
    if not result["all_planted_found"]:
        raise SystemExit("a planted row was not found: see " + str(args.out))


if __name__ == "__main__":
    main()
