"""What a generate run will ask each teacher, before anything is sent (``distill estimate``).

Requests whose prompts are known in advance are planned exactly (labelling, the first round of
expansion, curation's subtopic requests), so the store can tell which are already answered.
Requests that depend on earlier answers (inputs a teacher will write, grades of answers the
student has not given yet) are stand-ins of the same shape, counted as an upper bound: every
written input accepted, every input graded.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from distill.elicit.answering import as_inputs, by_price, plan_answers, prompt_of, round_robin
from distill.elicit.expansion import examples_for
from distill.elicit.judge import task_text
from distill.params import Params, TeacherParams
from distill.prompts import Template
from distill.teacher.ask import make_request
from distill.teacher.engine import TeacherRequest


@dataclass(frozen=True)
class Forecast:
    teacher: TeacherParams
    label: str  # what the requests are for, e.g. "labelling", "expansion: answers (upper bound)"
    requests: list[TeacherRequest]


def placeholder_inputs(seeds: pl.DataFrame, count: int) -> list[dict]:
    """``count`` inputs shaped like the seeds (their texts, numbered so that no key is in the store)."""
    rows = list(as_inputs(seeds).iter_rows(named=True)) or [{"instruction": "task", "input": ""}]
    return [{"instruction": f"{rows[i % len(rows)]['instruction']} #{i}", "input": rows[i % len(rows)]["input"]}
            for i in range(count)]


def answers(params: Params, inputs: list[dict], label: str) -> list[Forecast]:
    """The answer step's requests for ``inputs``, per teacher, as ``generate.routing`` sends them."""
    gen, teachers = params.generate, params.all_teachers
    prompt = prompt_of(gen)

    def plan(group: list[dict], teacher) -> list:
        return plan_answers(group, prompt, gen, teacher)[1]  # n requests per input where n is not honoured

    routing = gen.routing if len(teachers) > 1 else "round_robin"
    if routing == "cheapest":  # failures would go on to the next teacher: not forecast
        cheapest = by_price(teachers, gen, params.budget.expected_completion_tokens)[0]
        return [Forecast(cheapest, label, plan(inputs, cheapest))]
    if routing == "judge":
        forecasts = [Forecast(t, label, plan(inputs, t)) for t in teachers]
        graded = [(i["instruction"], i["input"], "a typical answer") for i in inputs] * len(teachers)
        return forecasts + [judge_forecast(params, graded, f"{label}: judge (routing)")]
    groups = round_robin([i | {"id": i.get("id") or i["instruction"]} for i in inputs], teachers)
    return [Forecast(t, label, plan(group, t)) for t, group in zip(teachers, groups, strict=True) if group]


def judge_forecast(params: Params, items: list[tuple[str, str, str]], label: str) -> Forecast:
    judge = params.judge
    template = Template(judge.system, judge.template)
    sampling = {"temperature": 0.0, "max_tokens": judge.max_tokens, "n": 1, "seed": params.generate.seed}
    return Forecast(params.teacher, label, [
        make_request(template.messages(instruction=task_text(i, x), answer=a), sampling, params.teacher)
        for i, x, a in items])


def expansion(params: Params, seeds: pl.DataFrame) -> list[Forecast]:
    gen, settings = params.generate, params.generate.expansion
    template = Template(settings.system, settings.template)
    sampling = {"temperature": settings.temperature, "max_tokens": settings.max_tokens, "n": 1, "seed": gen.seed}
    pool = seeds["instruction"].to_list()
    writing = [make_request(template.messages(
        examples="\n".join(f"- {e}" for e in examples_for(pool, settings.examples_per_request, gen.seed, r, j)),
        count=settings.tasks_per_request), sampling, params.teacher)
        for r in range(1, settings.rounds + 1) for j in range(settings.requests_per_round)]
    written = settings.rounds * settings.requests_per_round * settings.tasks_per_request
    return [Forecast(params.teacher, "expansion: writing inputs", writing),
            *answers(params, placeholder_inputs(seeds, written), "expansion: answers (upper bound)")]


def curation(params: Params, seeds: pl.DataFrame) -> list[Forecast]:
    from distill.elicit.curation import load_topics

    gen, settings = params.generate, params.generate.curation
    domain, topics = load_topics(settings.topics_file)
    sampling = {"temperature": settings.temperature, "max_tokens": settings.max_tokens, "n": 1, "seed": gen.seed}
    subtopics = Template(settings.system, settings.subtopics_template)
    tasks = Template(settings.system, settings.tasks_template)
    level1 = [make_request(subtopics.messages(domain=domain, topic=t, count=settings.subtopics_per_topic), sampling,
                           params.teacher) for t in topics]
    level2 = [make_request(tasks.messages(domain=domain, topic=t, subtopic=f"subtopic {k}",
                                          count=settings.tasks_per_subtopic), sampling, params.teacher)
              for t in topics for k in range(settings.subtopics_per_topic)]
    written = len(level2) * settings.tasks_per_subtopic
    return [Forecast(params.teacher, "curation: subtopics", level1),
            Forecast(params.teacher, "curation: writing inputs (upper bound)", level2),
            *answers(params, placeholder_inputs(seeds, written), "curation: answers (upper bound)")]


def student_graded(params: Params, seeds: pl.DataFrame, method: str) -> list[Forecast]:
    gen = params.generate
    if method == "feedback":
        count = round(min(gen.feedback.max_inputs or seeds.height, seeds.height) * gen.feedback.focus_fraction)
    elif gen.self_knowledge.filter == "judge":
        count = min(gen.self_knowledge.max_inputs or seeds.height, seeds.height) * gen.self_knowledge.samples
    else:
        return []  # verifier and consistency ask no teacher
    items = [(i["instruction"], i["input"], "a typical student answer") for i in placeholder_inputs(seeds, count)]
    return [judge_forecast(params, items, f"{method}: grading (upper bound)")]


def forecast(params: Params, seeds: pl.DataFrame) -> list[Forecast]:
    from distill.elicit import to_run

    plans: list[Forecast] = []
    for method in to_run(params.generate.elicit):
        if method == "labelling":
            plans += answers(params, list(as_inputs(seeds).iter_rows(named=True)), "labelling")
        elif method in ("expansion", "curation"):
            plans += {"expansion": expansion, "curation": curation}[method](params, seeds)
        else:
            plans += student_graded(params, seeds, method)
    return plans
