"""The math demo task: its problems, reading them back out of prompts, its seed files and its tiny student."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from demo import math_problems
from demo.math_problems import group, problem, solve, worked
from demo.math_seeds import write
from distill.student import build_tiny_math_student, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "data" / "seeds" / "math"
TINY_MATH = REPO / "data" / "students" / "tiny-math"
CORPUS = REPO / "data" / "students" / "tiny-math-corpus.txt"
AVA = "Ava has 5 apples. Ava buys 7 more apples. Then Ava gives away 3 apples. How many apples does Ava have left?"


def test_a_problem_reads_back_to_its_answer_and_steps() -> None:
    solution = solve(AVA)
    assert solution is not None
    assert (solution.start, solution.moves) == (5, (("+", 7), ("-", 3)))
    assert (solution.answer, solution.steps, solution.lines) == (9, 2, ["5 + 7 = 12.", "12 - 3 = 9."])
    assert group(AVA) == "2 steps" and group(AVA.replace(" Then Ava gives away 3 apples.", "")) == "1 step"
    assert solve("reverse planet") is None and group("reverse planet") == "unknown"
    assert solve("Ava has 5 apples. How many apples does Ava have now?") is None  # no operation: not a problem
    assert solve("Ava has 5 apples. Ava buys 7 more apples.") is None  # no question


def test_the_generator_is_deterministic_and_keeps_numbers_small() -> None:
    first = [problem(random.Random(7), steps) for steps in (1, 2, 3)]
    assert first == [problem(random.Random(7), steps) for steps in (1, 2, 3)]
    rng = random.Random(0)
    for steps in (1, 2, 3):
        for _ in range(300):
            drawn = problem(rng, steps)
            solution = solve(drawn.instruction)
            assert solution is not None and solution.steps == drawn.steps == steps
            values = math_problems.results(solution.start, solution.moves)
            assert all(0 <= value <= 100 for value in values), drawn
            assert all(2 <= operand <= 20 for _, operand in solution.moves), drawn
    with pytest.raises(ValueError, match="steps=0"):
        problem(rng, 0)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_solve_recovers_a_thousand_problems(steps: int) -> None:
    rng = random.Random(steps)
    for _ in range(1000):
        drawn = problem(rng, steps)
        solution = solve(drawn.instruction)
        assert solution is not None, drawn.instruction
        assert (solution.answer, solution.steps, "\n".join(solution.lines)) == (drawn.answer, steps, drawn.reasoning)
        assert group(drawn.instruction) == f"{steps} step" + ("" if steps == 1 else "s")


def test_solve_finds_the_problem_inside_a_prompt() -> None:
    generic = (REPO / "templates" / "generic" / "labelling.txt").read_text()
    demo = (REPO / "templates" / "labelling.txt").read_text()
    prompts = [
        generic.format(instruction=AVA, input=""),
        generic.format(instruction="Solve this word problem.", input=AVA),
        demo.format(instruction=AVA),
        f"### Instruction:\n{AVA}\n\n### Response:\n",
        f"Answer in one number.\nBen has 2 coins. Ben finds 3 more coins. How many coins does Ben have now?\n\n{AVA}",
        f"{AVA}\nThink step by step, then give the final answer alone on the last line as `Answer: <result>`.",
    ]
    for prompt in prompts:
        solution = solve(prompt)
        assert solution is not None and solution.answer == 9, prompt


def test_a_slip_carries_through_the_later_steps() -> None:
    assert worked(5, (("+", 7), ("*", 2)), slip_at=0, slip_by=1) == (["5 + 7 = 13.", "13 * 2 = 26."], 26)
    assert worked(5, (("+", 7), ("*", 2))) == (["5 + 7 = 12.", "12 * 2 = 24."], 24)


def test_the_seed_files_are_what_math_seeds_writes(tmp_path: Path) -> None:
    write(tmp_path / "seeds", tmp_path / "corpus.txt")
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / "seeds" / name).read_bytes() == (SEEDS / name).read_bytes(), (
            f"data/seeds/math/{name} is stale: run python -m demo.math_seeds")
    assert (tmp_path / "corpus.txt").read_bytes() == CORPUS.read_bytes()
    rows = {split: [json.loads(line) for line in (SEEDS / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "eval")}
    assert (len(rows["train"]), len(rows["eval"])) == (400, 60)
    assert not {r["instruction"] for r in rows["train"]} & {r["instruction"] for r in rows["eval"]}
    for row in rows["train"] + rows["eval"]:
        assert str(solve(row["instruction"]).answer) == row["reference"]
    groups = [group(row["instruction"]) for row in rows["train"]]
    assert [groups.count(g) for g in ("1 step", "2 steps", "3 steps")] == [160, 140, 100]
    eval_text = {row["instruction"] for row in rows["eval"]}
    assert not any(line in eval_text for line in CORPUS.read_text().splitlines())  # the corpus never saw eval


def test_the_tiny_math_tokenizer_knows_think_tags_and_digits(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(TINY_MATH))
    for tag in ("<think>", "</think>"):
        assert tokenizer.convert_tokens_to_ids(tag) not in (None, tokenizer.unk_token_id)
        assert tokenizer(tag, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(tag)]
    text = "<think>\n5 + 17 = 22.\n</think>\n\nThe answer is 22."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # the tags survive decoding, like Qwen3's
    digits = [token for token in tokenizer.convert_ids_to_tokens(ids) if any(c.isdigit() for c in token)]
    assert digits == list("5172222")  # one digit a token
    assert 500 <= len(tokenizer) <= 1000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    build_tiny_math_student(tmp_path / "a", CORPUS)
    shipped = sorted(path.name for path in TINY_MATH.iterdir())
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == shipped
    for name in shipped:
        assert (tmp_path / "a" / name).read_bytes() == (TINY_MATH / name).read_bytes(), name
