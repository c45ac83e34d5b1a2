"""Expansion (Self-Instruct): the teacher writes new inputs from sampled examples, then answers them.

Each round sends ``requests_per_round`` requests, each showing ``examples_per_request`` examples
drawn (reproducibly) from the pool of seed inputs and inputs accepted in earlier rounds, and
asking for ``tasks_per_request`` new ones. New inputs that near-duplicate a seed, an eval input
or an input already accepted are dropped before they are answered (reject ``near_duplicate``):
no answer is paid for them, and none can leak the eval split. Accepted inputs are answered
by the answer step (labelling prompt, routing) and carry ``input_origin: expansion round <r>``.
"""

from __future__ import annotations

import random

import polars as pl

from distill.elicit.answering import INPUT, answer
from distill.elicit.novelty import NoveltyIndex
from distill.elicit.output import MethodOutput
from distill.elicit.session import Session
from distill.elicit.writing import accept_new
from distill.io import content_hash
from distill.prompts import Template
from distill.records import REJECT, conform
from distill.teacher.ask import make_request

METHOD = "expansion"


def examples_for(pool: list[str], k: int, seed: int, round_number: int, request_number: int) -> list[str]:
    """k examples from the pool, fixed by (seed, round, request): a re-run asks the same questions."""
    rng = random.Random(content_hash({"seed": seed, "round": round_number, "request": request_number}))
    return rng.sample(pool, min(k, len(pool)))


def run(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame) -> MethodOutput:
    gen = session.params.generate
    settings = gen.expansion
    template = Template(settings.system, settings.template)
    sampling = {"temperature": settings.temperature, "max_tokens": settings.max_tokens, "n": 1, "seed": gen.seed}
    index = NoveltyIndex(settings.near_duplicate_threshold)
    index.add_all(seeds["instruction"].to_list() + evals["instruction"].to_list())
    pool = seeds["instruction"].to_list()
    accepted, rejects, per_round = [], [], []
    for round_number in range(1, settings.rounds + 1):
        requests = []
        for request_number in range(settings.requests_per_round):
            examples = examples_for(pool, settings.examples_per_request, gen.seed, round_number, request_number)
            messages = template.messages(examples="\n".join(f"- {e}" for e in examples),
                                         count=settings.tasks_per_request)
            requests.append(make_request(messages, sampling, session.primary))
        origins = [f"expansion round {round_number}"] * len(requests)
        new, dropped = accept_new(session, METHOD, requests, origins, index, settings.tasks_per_request)
        accepted, rejects = accepted + new, rejects + dropped
        pool += [item["instruction"] for item in new]
        per_round.append({"round": round_number, "accepted": len(new),
                          "near_duplicates": sum(r["reason"] == "near_duplicate" for r in dropped)})
    rows, answer_rejects = answer(session, pl.DataFrame(accepted, schema=INPUT), METHOD)
    all_rejects = pl.concat([conform(pl.DataFrame(rejects, schema=REJECT), REJECT), answer_rejects])
    return MethodOutput(rows=rows, rejects=all_rejects, metrics={
        "inputs_written": len(accepted) + sum(r["reason"] == "near_duplicate" for r in rejects),
        "inputs_accepted": len(accepted), "rounds": per_round, "template_hash": template.hash})

