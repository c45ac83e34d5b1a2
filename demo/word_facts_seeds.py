"""Writes the shipped seed sets of ``demo.word_facts``: Alpaca-style and chat, train and eval.

Deterministic (one seeded RNG), so re-running rewrites the same files. The words are made up (syllables, so
they read like words but no teacher knows them by heart) and distinct: an eval word never appears in train.

Run: ``python -m demo.word_facts_seeds`` (from the repository root).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from demo.word_facts import ASKS, INSTRUCTIONS, NAMINGS, NOTED, reference

OUT = Path("data/seeds")
SIZES = {"train": 300, "eval": 60}
OPS = sorted(INSTRUCTIONS)
SYSTEMS = ["You are a helpful assistant.", "You are a careful assistant who answers in one short sentence."]
ONSETS, VOWELS, CODAS = "bdfghklmnprstvz", "aeiou", ["", "", "n", "l", "r", "s"]


def made_up_word(rng: random.Random) -> str:
    """2-3 syllables, e.g. "tavolin"; every fifth word starts with a vowel."""
    syllables = [rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(2, 3))]
    word = "".join(syllables)
    return word[1:] if rng.random() < 0.2 else word


def fresh_words(rng: random.Random, count: int, seen: set[str]) -> list[str]:
    drawn = []
    while len(drawn) < count:
        word = made_up_word(rng)
        if word not in seen and len(word) >= 3:
            seen.add(word)
            drawn.append(word)
    return drawn


def alpaca_row(rng: random.Random, op: str, word: str, with_output: bool) -> dict:
    row = {"instruction": rng.choice(INSTRUCTIONS[op]), "input": word}
    return row | {"output": reference(op, word)} if with_output else row


def chat_row(rng: random.Random, op: str, word: str, with_reference: bool) -> dict:
    """system (sometimes), the user names the word, the assistant notes it, the user asks; eval adds the answer."""
    messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.4 else []
    messages += [{"role": "user", "content": rng.choice(NAMINGS).format(word=word)},
                 {"role": "assistant", "content": NOTED.format(word=word)},
                 {"role": "user", "content": rng.choice(ASKS[op])}]
    if with_reference:
        messages.append({"role": "assistant", "content": reference(op, word)})
    return {"messages": messages}


def build(seed: int = 0) -> dict[str, list[dict]]:
    """Rows by file (relative to data/seeds/); operations take turns, so each is a quarter of every set."""
    rng, seen, files = random.Random(seed), set(), {}
    for split, size in SIZES.items():  # train first: its words are drawn before eval's, never reused
        alpaca, chat = fresh_words(rng, size, seen), fresh_words(rng, size, seen)
        files[f"alpaca/{split}.jsonl"] = [
            alpaca_row(rng, OPS[i % len(OPS)], word, split == "eval" or rng.random() < 0.5)
            for i, word in enumerate(alpaca)]
        files[f"chat/{split}.jsonl"] = [chat_row(rng, OPS[i % len(OPS)], word, split == "eval")
                                        for i, word in enumerate(chat)]
    return files


def write(out: Path = OUT, seed: int = 0) -> None:
    for name, rows in build(seed).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    write()
