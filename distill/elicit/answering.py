"""The answer step shared by labelling, expansion and curation: teachers answer inputs.

Inputs are rows with ``id, instruction, input, source_file, source_line, input_origin,
parent_key``: seed inputs, or inputs a teacher wrote. Each is answered with the labelling
prompt (templates, k demonstrations, chain of thought) and routed across ``teacher`` plus
``teachers`` by ``generate.routing``:

- ``round_robin``: each input goes to one teacher, picked by a hash of its id (stable when
  inputs are added or removed);
- ``cheapest``: every input goes to the cheapest teacher first (expected dollars per request);
  inputs it fails on (an error, an empty or unparseable answer) go to the next cheapest;
- ``judge``: every teacher answers every input, the primary teacher grades each answer
  (``judge``) and the best one is kept; the others go to the rejects as ``not_best``.

Every row records the teacher that wrote it.
"""

from __future__ import annotations

import hashlib

import polars as pl

from distill.elicit.rejection import apply as keep_passing
from distill.elicit.session import Session
from distill.entry import StageError
from distill.io import content_hash
from distill.params import GenerateParams, TeacherParams
from distill.prompts import Prompt, parse_reasoned, split_final_answer
from distill.records import GENERATED, REJECT, conform
from distill.teacher import capabilities
from distill.teacher.ask import make_request, plan_requests
from distill.teacher.engine import TeacherRequest, cost_usd
from distill.teacher.estimate import chars_per_token
from distill.teacher.store import RequestStore

INPUT = {"id": pl.String, "instruction": pl.String, "input": pl.String, "context": pl.String, "reference": pl.String,
         "source_file": pl.String, "source_line": pl.Int64, "input_origin": pl.String, "parent_key": pl.String}
ANSWER_METHODS = ("labelling", "expansion", "curation")  # rows whose requests carry the answer sampling
# Reasons that mean the teacher failed an input; the rest (budget, near_duplicate, not_best, ...) are choices.
FAILURES = ("teacher_error", "empty_answer", "unparseable", "no_logprobs", "tokenizer_mismatch")


def plan_answers(inputs: list[dict], prompt: Prompt, gen: GenerateParams, teacher: TeacherParams
                 ) -> tuple[list[dict], list[TeacherRequest]]:
    """The requests that get ``generate.n`` answers per input, and the input each asks: one request with ``n``
    where the teacher honours it (``teacher.capabilities.n``), else n requests of one answer with the seeds
    ``seed``, ``seed + 1``, ... (their keys differ, so each is paid once and kept)."""
    sampling = sampling_of(gen)
    if gen.n == 1 or capabilities.of(teacher).n:
        return inputs, plan_requests(inputs, prompt, sampling, teacher)
    asked = [item for item in inputs for _ in range(gen.n)]
    samplings = [sampling | {"n": 1, "seed": gen.seed + i} for _ in inputs for i in range(gen.n)]
    requests = [make_request(prompt.messages(item["instruction"], item["input"], item.get("context") or ""),
                             one, teacher) for item, one in zip(asked, samplings, strict=True)]
    return asked, requests


def sampling_of(params: GenerateParams) -> dict:
    sampling = {"temperature": params.temperature, "max_tokens": params.max_tokens, "n": params.n,
                "seed": params.seed}
    if params.top_logprobs is not None:  # only then: keys of runs without log-probs stay as they were
        sampling |= {"logprobs": True, "top_logprobs": params.top_logprobs}
    return sampling


def prompt_of(params: GenerateParams) -> Prompt:
    """The labelling prompt: templates plus the k demonstrations and the chain-of-thought instruction, if on."""
    try:
        return Prompt(params.system, params.template, params.demonstrations,
                      params.demonstrations_file if params.demonstrations else None,
                      params.cot_template if params.chain_of_thought else None)
    except ValueError as error:
        raise StageError(f"generate.demonstrations: {error}") from None


def as_inputs(seeds: pl.DataFrame) -> pl.DataFrame:
    """Seed inputs in the answer step's shape."""
    return conform(seeds.with_columns(input_origin=pl.lit("seed"), parent_key=pl.lit(None, pl.String)), INPUT)


def reject(method: str, item: dict, request_key: str | None, reason: str, detail: str) -> dict:
    return {"method": method, "seed_id": item["id"], "request_key": request_key, "source_file": item["source_file"],
            "source_line": item["source_line"], "reason": reason, "detail": detail}


def build_rows(
    method: str,
    inputs: list[dict],
    requests: list[TeacherRequest],
    store: RequestStore,
    teacher: str,
    prompt_hash: str,
    errors: dict[str, str],
    skipped: dict[str, str],
    chain_of_thought: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Join each input with its stored answer, one row per choice (``inputs[i]`` was asked ``requests[i]``; an
    input asked several times appears once per request); inputs without a usable answer become rejects
    (``budget`` for requests the budget did not let out). A reasoning model's thinking goes to ``reasoning``;
    with ``chain_of_thought`` the response is the text after the last ``Answer:`` line and the text before it
    is reasoning too (no such line: ``unparseable``)."""
    rows, rejects = [], []
    for item, request in zip(inputs, requests, strict=True):
        entry = store.entry(request.key)
        if entry is None:
            reason = "budget" if request.key in skipped else "teacher_error"
            detail = skipped.get(request.key) or errors.get(request.key, "not answered")
            rejects.append(reject(method, item, request.key, reason, detail))
            continue
        answer = entry["response"]
        usage = answer.get("usage", {})
        for choice in answer.get("choices", []):
            reasoning, text = parse_reasoned(choice)
            if text is None:
                rejects.append(reject(method, item, request.key, "empty_answer", f"choice {choice.get('index')}"))
                continue
            if chain_of_thought:
                thought, text = split_final_answer(raw := text)
                if text is None:
                    rejects.append(reject(method, item, request.key, "unparseable", raw[:100]))
                    continue
                reasoning = "\n\n".join(part for part in (reasoning, thought) if part) or None
            rows.append({
                "id": content_hash({"request": request.key, "choice": choice.get("index", 0)}),
                "seed_id": item["id"], "source_file": item["source_file"], "source_line": item["source_line"],
                "method": method, "teacher": teacher, "model_requested": request.model,
                "model_answered": answer.get("model", ""), "template_hash": prompt_hash,
                "sampling_hash": content_hash(request.sampling), "request_key": request.key,
                "response_id": answer.get("id", ""), "choice_index": choice.get("index", 0),
                "created_at": entry["stored_at"], "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
                "finish_reason": choice.get("finish_reason") or "stop", "instruction": item["instruction"],
                "input": item["input"], "context": item.get("context") or "", "reference": item.get("reference"),
                "response": text, "reasoning": reasoning, "input_origin": item["input_origin"],
                "parent_key": item["parent_key"], "judge_score": None, "pass_rate": None,
            })
    return rows, rejects


def frames(rows: list[dict], rejects: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    return (conform(pl.DataFrame(rows, schema=GENERATED), GENERATED),
            conform(pl.DataFrame(rejects, schema=REJECT), REJECT))


def answer_with(session: Session, inputs: list[dict], teacher: TeacherParams, method: str
                ) -> tuple[list[dict], list[dict]]:
    """One teacher answers ``inputs``: ask through the store, then build rows and rejects."""
    if not inputs:
        return [], []
    gen = session.params.generate
    prompt = prompt_of(gen)
    asked, requests = plan_answers(inputs, prompt, gen, teacher)
    ledger = session.ask(requests, teacher, method)
    rows, rejects = build_rows(method, asked, requests, session.store, teacher.name, prompt.hash, ledger.errors,
                               ledger.skipped, gen.chain_of_thought)
    return keep_passing(session, rows, rejects, method)


def round_robin(inputs: list[dict], teachers: list[TeacherParams]) -> list[list[dict]]:
    """Inputs split across teachers by a hash of their id: adding an input never moves the others."""
    groups: list[list[dict]] = [[] for _ in teachers]
    for item in inputs:
        groups[int(hashlib.sha256(item["id"].encode()).hexdigest()[:8], 16) % len(teachers)].append(item)
    return groups


def by_price(teachers: list[TeacherParams], gen: GenerateParams, expected_completion_tokens: int | None = None
             ) -> list[TeacherParams]:
    """Cheapest first, by the dollars of a typical request (a 200-character prompt and the expected answer)."""
    completion = expected_completion_tokens or gen.max_tokens

    def typical(teacher: TeacherParams) -> float:
        return cost_usd(int(200 / chars_per_token(teacher)), completion * gen.n, teacher.price)

    return sorted(teachers, key=typical)  # stable: equal prices keep the params order


def answer_cheapest(session: Session, inputs: list[dict], method: str) -> tuple[list[dict], list[dict]]:
    rows, rejects, pending = [], [], inputs
    ordered = by_price(session.params.all_teachers, session.params.generate,
                       session.params.budget.expected_completion_tokens)
    for position, teacher in enumerate(ordered):
        got, failed = answer_with(session, pending, teacher, method)
        rows += got
        last = position == len(ordered) - 1
        retry_ids = {r["seed_id"] for r in failed if r["reason"] in FAILURES and not last}
        answered = {r["seed_id"] for r in got}
        retry_ids -= answered  # n > 1: one good choice is enough
        rejects += [r for r in failed if r["seed_id"] not in retry_ids]
        pending = [item for item in pending if item["id"] in retry_ids]
        if not pending:
            break
    return rows, rejects


def answer(session: Session, inputs: pl.DataFrame, method: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Route ``inputs`` across the teachers by ``generate.routing``; rows and rejects as frames."""
    items = list(conform(inputs, INPUT).iter_rows(named=True))
    teachers = session.params.all_teachers
    routing = session.params.generate.routing if len(teachers) > 1 else "round_robin"
    if routing == "cheapest":
        return frames(*answer_cheapest(session, items, method))
    if routing == "judge":
        from distill.elicit.judge import answer_judged  # the judge needs the answer step: imported late

        return frames(*answer_judged(session, items, method))
    rows, rejects = [], []
    for teacher, group in zip(teachers, round_robin(items, teachers), strict=True):
        got, failed = answer_with(session, group, teacher, method)
        rows, rejects = rows + got, rejects + failed
    return frames(rows, rejects)


def plan(seeds: pl.DataFrame, prompt: Prompt, params: GenerateParams, teacher: TeacherParams) -> list[TeacherRequest]:
    """The labelling requests: one per seed, keyed for the store; pure (no I/O)."""
    return plan_requests(seeds.iter_rows(named=True), prompt, sampling_of(params), teacher)
