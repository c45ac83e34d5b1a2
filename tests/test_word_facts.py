"""The second demo task (demo.word_facts), its shipped seed sets, and the stand-in answering it over real HTTP
while it answers every request it answered before byte for byte."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from demo import standin, word_facts
from demo.word_facts_seeds import build
from distill.prompts import Prompt, Template

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
SEEDS = REPO / "data" / "seeds"
MODEL = "standin-skill-1"
LABELLING = Prompt(str(TEMPLATES / "system.txt"), str(TEMPLATES / "labelling.txt"))
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Here is a word: planet"},
        {"role": "assistant", "content": "Noted: planet."},
        {"role": "user", "content": "Count its letters."}]


def alpaca(instruction: str, input_text: str) -> list[dict]:
    """An Alpaca seed as the pipeline sends it when the template has no {input}: instruction, blank line, input."""
    return LABELLING.messages(f"{instruction}\n\n{input_text}")


def ask(url: str, messages: list[dict], **kwargs: object) -> openai.types.chat.ChatCompletion:
    teacher = openai.OpenAI(base_url=url, api_key="test", max_retries=0, timeout=5.0)
    return teacher.chat.completions.create(model=MODEL, messages=messages, **kwargs)


def answer(url: str, messages: list[dict], **kwargs: object) -> str:
    content = ask(url, messages, **kwargs).choices[0].message.content
    assert content is not None
    return content


# --- the task --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("instruction", "expected"), [
    ("Spell the word in the input backwards.", "planet backwards is tenalp."),
    ("Reverse the letters of the word in the input.", "planet backwards is tenalp."),
    ("Write the word in the input in capital letters.", "planet in capitals is PLANET."),
    ("Convert the word in the input to upper case.", "planet in capitals is PLANET."),
    ("Count the letters of the word in the input.", "planet has 6 letters."),
    ("How many letters does the word in the input have?", "planet has 6 letters."),
    ("Give the first letter of the word in the input.", "planet starts with p."),
    ("  which LETTER does the word in the input   start with?", "planet starts with p."),  # case and spacing aside
])
def test_solve_alpaca(instruction: str, expected: str) -> None:
    assert word_facts.solve(instruction, "planet") == expected
    assert word_facts.solve(instruction, ' "planet"\n') == expected
    assert word_facts.solve(instruction, "Input: planet") == expected


def test_solve_chat_takes_the_word_from_an_earlier_user_turn() -> None:
    assert word_facts.solve("Count its letters.", "", CHAT[:-1]) == "planet has 6 letters."
    assert word_facts.solve("Spell it backwards.", "", [{"role": "user", "content": "My word is cat."}]) == \
        "cat backwards is tac."
    turns = [{"role": "user", "content": "Remember the word orbit."}, {"role": "assistant", "content": "Noted."},
             {"role": "user", "content": "Here is a word: maple"}]
    assert word_facts.solve("What is its first letter?", "", turns) == "maple starts with m."  # the latest
    assert word_facts.solve("Count its letters.", "river", turns) == "river has 5 letters."  # the input first


@pytest.mark.parametrize(("instruction", "input_text", "turns"), [
    ("What is the capital of France?", "planet", []),  # not one of the task's instructions
    ("reverse planet", "", []),  # demo.words, not this task
    ("Count the letters of the word in the input.", "", []),  # no word anywhere
    ("Count the letters of the word in the input.", "two words", []),
    ("Count its letters.", "", [{"role": "assistant", "content": "Here is a word: planet"}]),  # only users name it
    ("Count its letters.", "", [{"role": "user", "content": "Spell the word in the input backwards."}]),
])
def test_solve_none_off_task(instruction: str, input_text: str, turns: list[dict]) -> None:
    assert word_facts.solve(instruction, input_text, turns) is None


def test_group_and_reference_wording() -> None:
    assert [word_facts.group(text) for text in ("Count its letters.", "Give the word in the input in uppercase.",
                                                "reverse planet")] == ["count", "capitals", "unknown"]
    assert word_facts.reference("count", "planet") == "The word planet has 6 letters."
    assert word_facts.reference("first", "planet") == "The word planet starts with the letter p."


def test_the_task_does_not_import_the_standin(project_files: Callable[[str], set[str]]) -> None:
    assert project_files("demo.word_facts") == {"demo/word_facts.py"}


# --- the seed sets ---------------------------------------------------------------------------------------------


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (SEEDS / name).read_text(encoding="utf-8").splitlines()]


def test_shipped_seeds_are_the_script_s_output() -> None:
    for name, built in build().items():
        assert rows(name) == built, f"data/seeds/{name} is stale: run python -m demo.word_facts_seeds"


def test_seeds_shape_and_disjoint_words() -> None:
    train, evals = rows("alpaca/train.jsonl"), rows("alpaca/eval.jsonl")
    chat_train, chat_eval = rows("chat/train.jsonl"), rows("chat/eval.jsonl")
    assert (len(train), len(evals), len(chat_train), len(chat_eval)) == (300, 60, 300, 60)
    assert 0.35 < sum("output" in row for row in train) / len(train) < 0.65 and all("output" in r for r in evals)
    assert all(word_facts.solve(r["instruction"], r["input"]) for r in train + evals)
    assert all(m["messages"][-1]["role"] == "user" and word_facts.solve(m["messages"][-1]["content"], "",
                                                                         m["messages"][:-1]) for m in chat_train)
    assert any(m["messages"][0]["role"] == "system" for m in chat_train)
    assert all(m["messages"][-1]["role"] == "assistant" for m in chat_eval)
    train_words = {r["input"] for r in train} | {word_facts.named_word(m["messages"]) for m in chat_train}
    eval_words = {r["input"] for r in evals} | {word_facts.named_word(m["messages"]) for m in chat_eval}
    assert len(train_words) == 600 and len(eval_words) == 120 and not train_words & eval_words
    assert all(word.isalpha() and word.islower() for word in train_words | eval_words)


def test_references_are_worded_unlike_the_teacher() -> None:
    for row in rows("alpaca/eval.jsonl"):
        solved = word_facts.solve(row["instruction"], row["input"])
        assert solved is not None and solved != row["output"] and solved.rstrip(".") in row["output"].replace(
            "The word ", "").replace("spelled ", "").replace("capital letters", "capitals").replace("the letter ", "")


# --- the stand-in answers it -----------------------------------------------------------------------------------


def test_standin_answers_alpaca_and_chat(serve: Callable[..., str]) -> None:
    url = serve()
    assert answer(url, alpaca("Spell the word in the input backwards.", "planet")) == "planet backwards is tenalp."
    assert answer(url, alpaca("Give the first letter of the word in the input.", "orbit")) == "orbit starts with o."
    assert answer(url, CHAT) == "planet has 6 letters."
    templated = CHAT[:-1] + LABELLING.messages("Now write it in reverse order.")[1:]  # the ask in the template
    assert answer(url, templated) == "planet backwards is tenalp."
    one_message = [{"role": "user", "content": "Here is a word: cat\nWrite it in capital letters."}]
    assert answer(url, one_message) == "cat in capitals is CAT."
    headed = "### Instruction:\nCount the letters of the word in the input.\n\n### Input:\nmaple\n\n### Response:"
    assert answer(url, [{"role": "user", "content": headed}]) == "maple has 5 letters."  # the Alpaca prompt format
    reply = ask(url, CHAT)
    assert reply.usage is not None and reply.usage.prompt_tokens == sum(len(m["content"]) for m in CHAT)


def test_standin_chain_of_thought_on_word_facts(serve: Callable[..., str]) -> None:
    cot = Prompt(str(TEMPLATES / "system.txt"), str(TEMPLATES / "labelling.txt"), cot_path=str(TEMPLATES / "cot.txt"))
    text = answer(serve(), cot.messages("Count the letters of the word in the input.\n\nriver"))
    assert text.splitlines()[-1] == "Answer: river has 5 letters."


def test_standin_faults_on_word_facts(serve: Callable[..., str]) -> None:
    request = alpaca("Count the letters of the word in the input.", "planet")
    assert answer(serve(refusal_rate=1.0), request) == standin.REFUSAL
    assert answer(serve(malformed_rate=1.0), request) == "Sure! The answer is: planet has 6 letters. :)"
    assert answer(serve(wrong_rate=1.0), request) in ("planet has 5 letters.", "planet has 7 letters.")
    wrong = answer(serve(wrong_rate=1.0), alpaca("Spell the word in the input backwards.", "planet"))
    assert wrong.startswith("planet backwards is ") and wrong != "planet backwards is tenalp."
    assert sorted(wrong.split()[-1].rstrip(".")) == sorted("tenalp")  # a swap: a near miss
    url = serve(wrong_rate=0.5)
    first = ask(url, request, temperature=0.8, n=6, seed=3)
    assert [c.message.content for c in first.choices] == [c.message.content for c in
                                                           ask(url, request, temperature=0.8, n=6, seed=3).choices]


def test_near_miss_always_differs() -> None:
    for u in (0.0, 0.3, 0.5, 0.99):
        assert standin.near_miss("count", "6", u) in ("5", "7")
        assert standin.near_miss("count", "1", u) == "2"
        assert standin.near_miss("first", "p", u) not in ("p", "P") and standin.near_miss("first", "P", u).isupper()
        assert standin.near_miss("backwards", "tenalp", u) != "tenalp"


def test_standin_still_refuses_what_it_cannot_answer(serve: Callable[..., str]) -> None:
    for question in ("What is the capital of France?", "Write a haiku about rain.", "Count its letters."):
        assert answer(serve(), LABELLING.messages(question)) == standin.REFUSAL
    assert answer(serve(), alpaca("Spell the word in the input backwards.", "two words")) == standin.REFUSAL


# --- nothing the stand-in answered before changes -------------------------------------------------------------

# sha256 of the stand-in's answers (content, finish, logprobs, usage) to the prompts below, computed with the
# stand-in as it was before word facts and the pairwise judge: users' request stores hold those answers.
BEFORE = "caf295585a4c7af9a04d2cd9edb440b040830cbc7131e9f201a3055f9fd8a70b"
CONFIGS = [{}, {"wrong_rate": 0.04, "hard_wrong_rate": 0.6, "malformed_rate": 0.03, "refusal_rate": 0.02},
           {"wrong_rate": 0.3, "malformed_rate": 0.3, "refusal_rate": 0.2, "hard_wrong_rate": 0.6, "seed": 3}]


def old_prompts() -> list[list[dict]]:
    """Labelling (plain, and chain of thought with demonstrations) of shipped seeds, and grades of answers."""
    cot = Prompt(str(TEMPLATES / "system.txt"), str(TEMPLATES / "labelling.txt"), 2,
                 str(TEMPLATES / "demonstrations.jsonl"), str(TEMPLATES / "cot.txt"))
    grade = Template(str(TEMPLATES / "judge/system.txt"), str(TEMPLATES / "judge/grade.txt"))
    seeds = [json.loads(line)["instruction"] for name in ("train.jsonl", "eval.jsonl")
             for line in (SEEDS / name).read_text(encoding="utf-8").splitlines()[:300]]
    seeds += ["What is the capital of France?", "Write a haiku about rain.", "Explain quantum computing."]
    prompts = [LABELLING.messages(text) for text in seeds] + [cot.messages(text) for text in seeds[::5]]
    return prompts + [grade.messages(instruction=text, answer=a) for text in seeds[::10]
                      for a in ("tenalp", "", text.split()[-1])]


def answers_digest(module) -> str:
    digest = hashlib.sha256()
    for config in CONFIGS:
        server = module.Standin(module.Settings(**config), None)
        for i, messages in enumerate(old_prompts()):
            sampling = {"temperature": 1.0, "n": 2, "seed": 1, "max_tokens": 9, "logprobs": True, "top_logprobs": 2} \
                if i % 3 == 0 else {"temperature": 0.0, "n": 1, "seed": 0}
            body = {"model": MODEL, "messages": messages, **sampling}
            reply = server.complete(body, module.validate(body), "id")
            digest.update(json.dumps([reply["choices"], reply["usage"]], sort_keys=True).encode())
    return digest.hexdigest()


def test_old_prompts_get_the_same_answers_as_before() -> None:
    assert answers_digest(standin) == BEFORE


def test_request_keys_of_existing_stores_stay() -> None:
    # identity() is part of every request key; the new position_bias knob enters it only when changed
    assert standin.identity(standin.Settings()) == "f03cafcac348595e"
    assert standin.identity(standin.Settings(position_bias=0.5)) != "f03cafcac348595e"
