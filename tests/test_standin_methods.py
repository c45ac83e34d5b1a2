"""The stand-in teacher answering the elicitation templates (judge, expansion, curation) over real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import openai
import pytest
import yaml

from demo import words
from demo.standin import PROJECT_ROOT, REFUSAL, judge_prompt, kind_of

MODEL = "standin-skill-1"
TEMPLATES = PROJECT_ROOT / "templates"
TOPICS = yaml.safe_load((PROJECT_ROOT / "data" / "seeds" / "topics.yaml").read_text(encoding="utf-8"))
EXAMPLES = ["reverse planet", "reverse garden", "reverse cat"]
SUBTOPIC = re.compile(r'^words starting with "([a-z])"$')


def render(path: str, **fields: object) -> str:
    return (TEMPLATES / path).read_text(encoding="utf-8").format(**fields)


def grade_prompt(instruction: str, answer: str) -> str:
    return render("judge/grade.txt", instruction=instruction, answer=answer)


def expansion_prompt(examples: list[str] = EXAMPLES, count: int = 12) -> str:
    return render("expansion/instructions.txt", examples="\n".join(f"- {e}" for e in examples), count=count)


def subtopics_prompt(topic: str = TOPICS["topics"][0], count: int = 6) -> str:
    return render("curation/subtopics.txt", domain=TOPICS["domain"], topic=topic, count=count)


def tasks_prompt(topic: str = TOPICS["topics"][0], subtopic: str = 'words starting with "k"', count: int = 7) -> str:
    return render("curation/tasks.txt", domain=TOPICS["domain"], topic=topic, subtopic=subtopic, count=count)


PROMPTS = {
    "judge": grade_prompt("reverse planet", "tenlap"),
    "expansion": expansion_prompt(),
    "subtopics": subtopics_prompt(),
    "tasks": tasks_prompt(),
}


def ask_all(url: str, prompt: str, **kwargs: object) -> openai.types.chat.ChatCompletion:
    teacher = openai.OpenAI(base_url=url, api_key="test", max_retries=0, timeout=5.0)
    messages = [{"role": "system", "content": "Follow the requested output format exactly."},
                {"role": "user", "content": prompt}]
    return teacher.chat.completions.create(model=MODEL, messages=messages, **kwargs)


def ask(url: str, prompt: str, **kwargs: object) -> str:
    content = ask_all(url, prompt, **kwargs).choices[0].message.content
    assert content is not None
    return content


def test_kind_of_each_template() -> None:
    for kind, prompt in PROMPTS.items():
        assert kind_of([{"role": "user", "content": prompt}]) == kind
    labelling = render("labelling.txt", instruction="reverse planet")
    assert kind_of([{"role": "user", "content": labelling}]) == "labelling"
    # The graded answer is a student's raw output: whatever it says, the prompt stays a judge prompt.
    tricky = grade_prompt("upper cat", "List 3 distinct subtopics\nWrite 2 new tasks of the same kind")
    assert kind_of([{"role": "user", "content": tricky}]) == "judge"


def test_judge_prompt_parsing_keeps_odd_answers() -> None:
    odd = ' "tenalp"\n\nAnswer to grade: {x}\n\nReply with a single JSON object '
    assert judge_prompt(grade_prompt("reverse planet", odd)) == ("reverse planet", odd)
    assert judge_prompt(grade_prompt("reverse planet", "")) == ("reverse planet", "")


def test_judge_grades_right_and_wrong_answers(serve: Callable[..., str]) -> None:
    right = json.loads(ask(serve(), grade_prompt("reverse planet", "tenalp")))
    assert right == {"score": 10, "critique": "Correct.", "correction": "tenalp"}
    assert json.loads(ask(serve(), grade_prompt("upper cat", " CAT\n")))["score"] == 10  # trimmed, like the metric
    for answer in ("tenlap", "", "PLANET", "tenal\n\n{odd} \"quotes\""):
        grade = json.loads(ask(serve(), grade_prompt("reverse planet", answer)))
        assert 0 <= grade["score"] < 10 and grade["correction"] == "tenalp"
        assert isinstance(grade["critique"], str) and grade["critique"].endswith(".")
    near = json.loads(ask(serve(), grade_prompt("reverse planet", "tenlap")))["score"]
    far = json.loads(ask(serve(), grade_prompt("reverse planet", "xyz")))["score"]
    assert near > far


def test_judge_refuses_off_skill_and_can_be_wrong(serve: Callable[..., str]) -> None:
    assert ask(serve(), grade_prompt("What is the capital of France?", "Paris")) == REFUSAL
    grade = json.loads(ask(serve(wrong_rate=1.0), grade_prompt("reverse planet", "tenalp")))
    # The grader believes a near miss is right, so it marks the right answer down.
    assert grade["correction"] != "tenalp" and sorted(grade["correction"]) == sorted("tenalp")
    assert grade["score"] < 10


def test_expansion_writes_new_tasks(serve: Callable[..., str]) -> None:
    lines = ask(serve(), expansion_prompt(count=12), temperature=0).splitlines()
    assert len(lines) == 12
    parsed = [words.parse(line) for line in lines]
    assert all(p is not None and p[0] == "reverse" for p in parsed)  # the examples' only operation
    assert sum(line in EXAMPLES for line in lines) <= 2
    mixed = ask(serve(), expansion_prompt(["upper sun", "reverse moon"], count=40)).splitlines()
    assert len(mixed) == 40 and {words.op_of(line) for line in mixed} == {"reverse", "upper"}
    # A few are case or spacing variants of an example, for dedupe to find; most are new.
    variants = [line for line in mixed if " ".join(line.lower().split()) in ("upper sun", "reverse moon")]
    assert 0 < len(variants) < 40 // 3 and not set(variants) & {"upper sun", "reverse moon"}


def test_subtopics_are_distinct_letters(serve: Callable[..., str]) -> None:
    lines = ask(serve(), subtopics_prompt(count=6)).splitlines()
    letters = [SUBTOPIC.match(line)[1] for line in lines]  # type: ignore[index]
    assert len(letters) == len(set(letters)) == 6


@pytest.mark.parametrize(("topic", "op"), [(TOPICS["topics"][0], "reverse"), (TOPICS["topics"][1], "upper")])
def test_tasks_follow_topic_and_subtopic(serve: Callable[..., str], topic: str, op: str) -> None:
    lines = ask(serve(), tasks_prompt(topic, 'words starting with "k"', count=7)).splitlines()
    parsed = [words.parse(line) for line in lines]
    assert len(parsed) == 7 and all(p is not None and p[0] == op and p[1].startswith("k") for p in parsed)
    assert len({p[1] for p in parsed if p is not None}) == 7
    assert all(3 <= len(p[1]) <= 8 for p in parsed if p is not None)


@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_same_request_same_text(serve: Callable[..., str], kind: str) -> None:
    url = serve(wrong_rate=0.5, malformed_rate=0.3)
    first = ask_all(url, PROMPTS[kind], temperature=0.7, n=4, seed=1)
    second = ask_all(url, PROMPTS[kind], temperature=0.7, n=4, seed=1)
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    assert first.usage is not None
    assert first.usage.completion_tokens == sum(len(c.message.content or "") for c in first.choices)
    greedy = ask_all(url, PROMPTS[kind], temperature=0, n=3)
    assert len({c.message.content for c in greedy.choices}) == 1


def test_malformed_replies_do_not_parse(serve: Callable[..., str]) -> None:
    url = serve(malformed_rate=1.0)
    graded = ask(url, PROMPTS["judge"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(graded)
    assert graded.startswith("Score: ")
    for kind, count in (("expansion", 12), ("subtopics", 6), ("tasks", 7)):
        preamble, *items = ask(url, PROMPTS[kind]).splitlines()
        assert preamble.startswith("Sure!") and len(items) == count
        assert all(item.startswith(f"{i}. ") for i, item in enumerate(items, 1))
    assert words.parse(ask(url, PROMPTS["tasks"]).splitlines()[1]) is None


@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_refusals_and_truncation(serve: Callable[..., str], kind: str) -> None:
    assert ask(serve(refusal_rate=1.0), PROMPTS[kind]) == REFUSAL
    cut = ask_all(serve(), PROMPTS[kind], max_tokens=5).choices[0]
    assert cut.finish_reason == "length" and cut.message.content is not None and len(cut.message.content) == 5
