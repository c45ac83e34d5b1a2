"""Every transfer method against a real white-box teacher: a teacher-assistant chain, on the CPU.

    python benchmarks/white_box.py [--steps 300] [--teacher-steps 400] [--rows 4000] [--repeats 3]

The stand-in teacher's log-probs are synthetic, so this benchmark builds a teacher whose distributions
are real: a *teacher assistant* (a 4-layer, 256-wide Llama on the demo's character tokenizer) that the
script first trains on the demo skill's right answers. A smaller student (2 layers, 128 wide, same
tokenizer) is then trained from it by each method, for the same number of steps, on the same rows:
- ``sft``: the answers only (the baseline);
- ``kd``: + the assistant's top-20 log-probs per answer token, stored once as the feature method stores
  them (features.parquet, by token id) and read back by distill/transfer/kd.py;
- ``on_policy``: TRL's DistillationTrainer with the assistant live (generalized JSD, beta 0.5), starting
  from the ``sft`` student (train.start_from_sft), so it has had twice the steps;
- ``similarity``: the assistant's final hidden states (L2, weight 0.01, through a learned 128 -> 256
  projection) beside the cross-entropy.
Each student is scored on the demo's 200 held-out rows: exact match (greedy) and the exact forward
KL(assistant || student) per answer token over the full vocabulary (teacher forcing on the references).
The assistant is trained once; every method is trained ``--repeats`` times, each repeat with another student
seed (initialisation and data order: on the CPU one seed gives the same student every time, so a repeat with
the same seed would measure nothing new), the methods in another order each repeat (benchmarks/repeats.py).
Figures are medians over the seeds; ``range`` is max - min of exact match and KL over them (how much a seed
moves the quality), ``spread`` max / min - 1 of the seconds. About 8 minutes with the defaults on 2 CPU
cores, the assistant's training (once) 2 of them.
Writes benchmarks/results/white_box.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
import torch  # noqa: E402

from benchmarks.repeats import interleaved, median, spread  # noqa: E402
from demo import words  # noqa: E402
from distill import params as params_module  # noqa: E402
from distill.measure.sampling import greedy_answers  # noqa: E402
from distill.prompts import student_prompt  # noqa: E402
from distill.records import FEATURES, conform  # noqa: E402
from distill.student import load_model, load_tokenizer  # noqa: E402
from distill.transfer import kd  # noqa: E402
from distill.transfer.data import TrainData, training_pairs  # noqa: E402
from distill.transfer.divergences import divergence  # noqa: E402
from distill.transfer.kd import tokenizer_identity  # noqa: E402
from distill.transfer.training import train  # noqa: E402

TINY_CHAR = ROOT / "data/students/tiny-char"
TEMPLATE = (ROOT / "templates/student.txt").read_text(encoding="utf-8")
RESULT = ROOT / "benchmarks/results/white_box.json"
K = 20


def llama(folder: Path, hidden: int, layers: int, heads: int) -> str:
    """A config-only Llama on the demo's character tokenizer."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((TINY_CHAR / name).read_bytes())
    config = LlamaConfig.from_pretrained(TINY_CHAR)
    config.update({"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": hidden // heads})
    config.save_pretrained(folder)
    return str(folder)


def skill_rows(count: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    seeds, evals = words.demo_seeds()
    texts = [row["instruction"] for row in seeds if words.solve(row["instruction"]) is not None][:count]
    rows = pl.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "instruction": texts, "input": [""] * len(texts),
                         "response": [words.solve(t) for t in texts], "keep": [True] * len(texts)})
    return rows, pl.DataFrame(evals)


def teacher_features(teacher: str, rows: pl.DataFrame) -> pl.DataFrame:
    """The assistant's top-k per answer token, in the feature method's format (ids of the shared tokenizer)."""
    tokenizer, model = load_tokenizer(teacher), load_model(teacher, 0).eval()
    found = []
    with torch.no_grad():
        for row in rows.iter_rows(named=True):
            prompt = tokenizer(student_prompt(TEMPLATE, row["instruction"]))["input_ids"]
            answer = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1].float()
            top = logits.log_softmax(-1).topk(K, dim=-1)
            found.append({"id": row["id"], "tokenizer": f"assistant@{tokenizer_identity(teacher)}", "k": K,
                          "token_ids": answer, "top_ids": top.indices.flatten().tolist(),
                          "top_logprobs": top.values.flatten().tolist(),
                          "tail_mass": (1 - top.values.exp().sum(-1)).clamp_min(0).tolist()})
    return conform(pl.DataFrame(found, schema=FEATURES), FEATURES)


def heldout_kl(teacher: str, student: str, evals: pl.DataFrame) -> float:
    """Exact forward KL(teacher || student) per answer token, full vocabulary, on the references."""
    tokenizer = load_tokenizer(student)
    models = [load_model(path, 0).eval() for path in (teacher, student)]
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in evals.iter_rows(named=True):
            prompt = tokenizer(student_prompt(TEMPLATE, row["instruction"]))["input_ids"]
            answer = tokenizer(row["reference"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([prompt + answer])
            p, q = (m(input_ids=ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1) for m in models)
            total += float(divergence("forward_kl", p, q).sum())
            tokens += len(answer)
    return round(total / tokens, 4)


def exact_match(model: str, evals: pl.DataFrame) -> float:
    prompts = [student_prompt(TEMPLATE, text) for text in evals["instruction"]]
    answers = greedy_answers(model, prompts, 0, 16, 100)
    return round(sum(words.exact_match(a, r) for a, r in zip(answers, evals["reference"], strict=True)) / evals.height,
                 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=RESULT, help="the results file (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3, help="student seeds per method; medians reported")
    args = parser.parse_args()
    rows, evals = skill_rows(args.rows)
    pairs = training_pairs(rows, TEMPLATE, load_tokenizer(str(TINY_CHAR)))  # every model here shares it
    base = params_module.load(ROOT / "params.yaml").train
    results: dict = {"steps": args.steps, "teacher_steps": args.teacher_steps, "rows": rows.height,
                     "repeats": args.repeats, "methods": {}}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        teacher_dir = work / "assistant"
        assistant = base.model_copy(update={"student": llama(work / "assistant-config", 256, 4, 4), "objective": "sft",
                                            "max_steps": args.teacher_steps})
        started = time.monotonic()
        train(pairs, assistant, teacher_dir)
        teacher = str(teacher_dir)
        results["teacher"] = {"exact_match": exact_match(teacher, evals), "layers": 4, "hidden": 256,
                              "seconds": round(time.monotonic() - started, 1)}
        print(f"assistant: exact match {results['teacher']['exact_match']:.3f}", flush=True)
        student = llama(work / "student-config", 128, 2, 4)
        common = {"student": student, "max_steps": args.steps, "local_teacher": teacher}
        features = teacher_features(teacher, rows)
        methods = {
            "sft": TrainData(pairs),
            "kd": TrainData(pairs, kd=kd.examples(rows, features, TEMPLATE, load_tokenizer(student), base.max_length)),
            "on_policy": TrainData(pairs, local_teacher=teacher),
            "similarity": TrainData(pairs, local_teacher=teacher),
        }

        def one_repeat(repeat: int) -> dict:
            """Every method once, the students seeded with ``repeat`` (another initialisation and data order each
            repeat); the methods in another order each repeat, on_policy right after the sft it starts from."""
            rotated = ["sft", "kd", "similarity"][repeat % 3:] + ["sft", "kd", "similarity"][:repeat % 3]
            order = [name for method in rotated for name in ([method, "on_policy"] if method == "sft" else [method])]
            found = {}
            for method in order:
                params = base.model_copy(update=common | {"objective": method, "seed": base.seed + repeat})
                folder = work / f"{method}{repeat}"
                started = time.monotonic()
                # on_policy starts from the SFT student, as the train stage does (train.start_from_sft)
                train(methods[method], params, folder, start=str(work / f"sft{repeat}") if method == "on_policy"
                      else None)
                seconds = round(time.monotonic() - started, 1)
                found[method] = {"exact_match": exact_match(str(folder), evals),
                                 "heldout_kl_to_teacher": heldout_kl(teacher, str(folder), evals), "seconds": seconds}
                print(f"repeat {repeat + 1}: {method:<11} exact match {found[method]['exact_match']:.3f}  KL to the "
                      f"assistant {found[method]['heldout_kl_to_teacher']:.4f}  ({seconds} s)", flush=True)
            return found

        runs = interleaved({"repeat": one_repeat}, args.repeats)["repeat"]
    for method in methods:
        measured = {key: [run[method][key] for run in runs] for key in ("exact_match", "heldout_kl_to_teacher",
                                                                         "seconds")}
        results["methods"][method] = {key: round(median(values), 4) for key, values in measured.items()} | {
            "runs": measured,
            # quality: max - min over the seeds (absolute); seconds: max / min - 1
            "range": {key: round(max(measured[key]) - min(measured[key]), 4)
                      for key in ("exact_match", "heldout_kl_to_teacher")},
            "spread": {"seconds": spread(measured["seconds"])},
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rows_out = [f"| {m} | {r['exact_match']:.3f} | {r['heldout_kl_to_teacher']:.4f} | {r['seconds']} |"
                for m, r in results["methods"].items()]
    print(f"medians of {args.repeats} seeds\n| method | exact match | KL to the assistant | seconds |\n"
          "|---|---|---|---|\n" + "\n".join(rows_out))


if __name__ == "__main__":
    main()
