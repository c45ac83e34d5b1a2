"""Training speed and feature storage: our SFT against a plain PyTorch loop, our KD against our SFT,
and the bytes per token of stored top-k log-probs.

    python benchmarks/train.py [--steps 80] [--rows 2000] [--repeats 3]

All three trainings run in this process on the same rows (demo skill instructions and their right
answers), the same student (``data/students/tiny-char``, initialised from the same seed), batch size,
sequence length, learning rate and number of steps, on the CPU:
- ``plain``: a hand-written loop (AdamW, the same tokenisation as distill/transfer/kd.py: prompt masked, answer and
  end-of-sequence trained), timed from the first step to the last;
- ``sft``: ``distill.transfer.training.train`` (TRL's SFTTrainer), timed by the trainer (``train_runtime``);
- ``kd``: the same with ``train.objective: kd`` on k = 20 log-probs per answer token, built as the
  stand-in serves them (``demo.standin.token_logprobs``) and mapped to token ids.
Tokens per second count the non-padding tokens of the examples trained on (steps x batch x mean length).
Each method is measured ``--repeats`` times, interleaved (each repeat in another order, so that a slow spell of
the machine hits every method; benchmarks/repeats.py); the figures are medians, and ``spread`` is each ratio's
max / min - 1 over the repeats.

Bytes per token: ``features.parquet`` (distill/records.py FEATURES, written as the generate stage writes
it) at k = 20 for (a) the stand-in's lists, which repeat and compress unrealistically well, and (b)
synthetic lists shaped like a real LLM's: ids drawn from a Zipf law over a 32,000-token vocabulary and
log-probs from a sorted Dirichlet draw. (b) is the figure ``bytes_per_token_k20`` reports.
Writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from benchmarks.repeats import interleaved, median, ratios, spread  # noqa: E402
from demo import words  # noqa: E402
from demo.standin import token_logprobs  # noqa: E402
from distill import params as params_module  # noqa: E402
from distill.elicit.features import FeatureTokenizer, extract  # noqa: E402
from distill.io import write_parquet  # noqa: E402
from distill.records import FEATURES, conform  # noqa: E402
from distill.student import load_model, load_tokenizer  # noqa: E402
from distill.transfer import kd  # noqa: E402
from distill.transfer.data import TrainData, training_pairs  # noqa: E402
from distill.transfer.training import train  # noqa: E402

RESULT = ROOT / "benchmarks/results/train.json"
STUDENT = str(ROOT / "data/students/tiny-char")
TEMPLATE = (ROOT / "templates/student.txt").read_text(encoding="utf-8")
K = 20


def demo_rows(count: int) -> pl.DataFrame:
    rng = random.Random(0)
    instructions = [words.random_instruction(rng) for _ in range(count)]
    return pl.DataFrame({"id": [f"r{i}" for i in range(count)], "instruction": instructions, "input": [""] * count,
                         "response": [words.solve(text) for text in instructions], "keep": [True] * count})


def standin_features(rows: pl.DataFrame) -> pl.DataFrame:
    tokenizer = FeatureTokenizer(STUDENT)
    found = [{"id": row_id, "tokenizer": tokenizer.identity, "k": K} | extract(token_logprobs(text, K), K, tokenizer)
             for row_id, text in zip(rows["id"], rows["response"], strict=True)]
    return conform(pl.DataFrame(found, schema=FEATURES), FEATURES)


def realistic_features(tokens: int, vocab: int = 32_000, per_row: int = 50) -> pl.DataFrame:
    """Top-k lists shaped like a real LLM's: Zipf-distributed ids, Dirichlet-distributed sorted probabilities."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(tokens // per_row):
        top_ids, top_logprobs, chosen, tails = [], [], [], []
        for _ in range(per_row):
            ids = np.unique(np.minimum(rng.zipf(1.2, 4 * K), vocab) - 1)[:K]
            while len(ids) < K:  # pad with uniform ids when the Zipf draw repeats too much
                ids = np.unique(np.concatenate([ids, rng.integers(0, vocab, K)]))[:K]
            rng.shuffle(ids)
            probs = np.sort(rng.dirichlet(np.full(K + 1, 0.3)))[::-1]  # the last share is the tail
            top, tail = probs[:K], float(probs[K:].sum())
            top_ids += ids.tolist()
            top_logprobs += np.log(np.maximum(top, 1e-30)).tolist()
            chosen.append(int(ids[0]))
            tails.append(tail)
        rows.append({"id": f"s{index}", "tokenizer": "synthetic@0", "k": K, "token_ids": chosen, "top_ids": top_ids,
                     "top_logprobs": top_logprobs, "tail_mass": tails})
    return conform(pl.DataFrame(rows, schema=FEATURES), FEATURES)


def bytes_per_token(features: pl.DataFrame) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "features.parquet"
        write_parquet(features, path)  # as the generate stage writes it
        return round(path.stat().st_size / int(features["token_ids"].list.len().sum()), 2)


def plain_loop(examples: list[dict], params: params_module.TrainParams) -> float:
    """Seconds for params.max_steps steps of a hand-written loop on the same examples."""
    torch.manual_seed(params.seed)
    tokenizer = load_tokenizer(params.student)
    model = load_model(params.student, params.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
    order = random.Random(params.seed)

    def collate(batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.tensor([e["input_ids"] + [tokenizer.pad_token_id] * (width - len(e["input_ids"])) for e in batch])
        labels = torch.tensor([e["labels"] + [kd.IGNORE] * (width - len(e["labels"])) for e in batch])
        mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch])
        return ids, labels, mask

    started = time.perf_counter()
    for _ in range(params.max_steps):
        ids, labels, mask = collate(order.sample(examples, params.batch_size))
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:],
                                                 ignore_index=kd.IGNORE)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def trainer_seconds(history: list[dict]) -> float:
    return float(next(entry["train_runtime"] for entry in history if "train_runtime" in entry))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per method; medians reported")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    rows = demo_rows(args.rows)
    features = standin_features(rows)
    base = params_module.load(ROOT / "params.yaml").train.model_copy(
        update={"student": STUDENT, "objective": "sft", "max_steps": args.steps, "warmup_steps": 0,
                "lr_scheduler": "constant",
                "checkpoint_every": args.steps + 1})  # no checkpoint inside the timed steps
    tokenizer = load_tokenizer(STUDENT)
    kd_data = kd.examples(rows, features, TEMPLATE, tokenizer, base.max_length)
    tokens_per_example = sum(len(e["input_ids"]) for e in kd_data.examples) / len(kd_data.examples)
    tokens = args.steps * base.batch_size * tokens_per_example

    print(f"{args.steps} steps of {base.batch_size} on {args.rows} rows, {tokens_per_example:.1f} tokens/example, "
          f"{args.repeats} repeats")
    sft_pairs = training_pairs(rows, TEMPLATE, tokenizer)
    kd_params = base.model_copy(update={"objective": "kd"})
    with tempfile.TemporaryDirectory() as scratch:
        measure = {  # each run into a folder of its own: nothing carries over between repeats
            "plain": lambda repeat: plain_loop(kd_data.examples, base),
            "sft": lambda repeat: trainer_seconds(train(sft_pairs, base, Path(scratch) / f"sft{repeat}")),
            "kd": lambda repeat: trainer_seconds(train(TrainData([], kd=kd_data), kd_params,
                                                       Path(scratch) / f"kd{repeat}")),
        }
        seconds = interleaved(measure, args.repeats, lambda repeat, name, value: print(
            f"repeat {repeat + 1}: {name:<6}{tokens / value:>9,.0f} tokens/s", flush=True))

    storage = {"standin_k20": bytes_per_token(features), "realistic_k20": bytes_per_token(realistic_features(50_000))}
    medians = {name: median(values) for name, values in seconds.items()}
    per_repeat = {"sft_vs_plain_loop": ratios(seconds["plain"], seconds["sft"]),
                  "kd_vs_sft": ratios(seconds["sft"], seconds["kd"])}
    result = {
        "steps": args.steps, "rows": args.rows, "batch_size": base.batch_size, "repeats": args.repeats,
        "tokens_per_s": {name: round(tokens / value, 1) for name, value in medians.items()},
        "seconds": {name: [round(value, 3) for value in values] for name, values in seconds.items()},
        "sft_vs_plain_loop": round(medians["plain"] / medians["sft"], 3),
        "kd_vs_sft": round(medians["sft"] / medians["kd"], 3),
        # the spread of each ratio over the repeats (max / min - 1): how far one repeat's figure can be trusted
        "spread": {name: spread(values) for name, values in per_repeat.items()},
        "bytes_per_token_k20": storage["realistic_k20"],
        "bytes_per_token_k20_by_source": storage,
        "raw_bytes_per_token_k20": 4 + K * 4 + K * 2 + 4,  # token id, k ids (int32), k log-probs (float16), tail
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"medians of {args.repeats}: sft vs plain loop {result['sft_vs_plain_loop']:.3f}x (spread "
          f"{result['spread']['sft_vs_plain_loop']:.1%}); kd vs sft {result['kd_vs_sft']:.3f}x (spread "
          f"{result['spread']['kd_vs_sft']:.1%}); "
          f"stored log-probs at k=20: {storage['realistic_k20']} bytes/token (realistic), "
          f"{storage['standin_k20']} (stand-in); raw {result['raw_bytes_per_token_k20']}")
    if math.isnan(result["kd_vs_sft"]):
        raise SystemExit("no timing")


if __name__ == "__main__":
    main()
