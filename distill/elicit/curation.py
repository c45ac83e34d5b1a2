"""Curation: the teacher writes inputs from meta-information, through a topic x subtopic tree.

``generate.curation.topics_file`` (YAML) holds a ``domain`` description and a list of ``topics``.
For each topic the teacher lists ``subtopics_per_topic`` subtopics; for each subtopic it writes
``tasks_per_subtopic`` tasks. Branching over subtopics is what gives the inputs their variety
(one flat "write 100 tasks about X" request repeats itself). Near duplicates of seeds, eval
inputs and inputs already accepted are dropped before they are answered; accepted inputs are
answered by the answer step and carry ``input_origin: curation: <topic> / <subtopic>``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from distill.elicit.answering import INPUT, answer
from distill.elicit.novelty import NoveltyIndex
from distill.elicit.output import MethodOutput
from distill.elicit.session import Session
from distill.elicit.writing import accept_new, reply_lines
from distill.entry import StageError
from distill.prompts import Template
from distill.records import REJECT, conform
from distill.teacher.ask import make_request

METHOD = "curation"


def load_topics(path: str) -> tuple[str, list[str]]:
    """``(domain, topics)`` from the topics file; a bad file is one error naming it and the key."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise StageError(f"generate.curation.topics_file: cannot read {path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("domain"), str) or not data["domain"].strip():
        raise StageError(f"{path}: expected a mapping with a non-empty string `domain`")
    topics = data.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t.strip() for t in topics):
        raise StageError(f"{path}: `topics` must be a non-empty list of non-empty strings")
    return data["domain"].strip(), [t.strip() for t in topics]


def run(session: Session, seeds: pl.DataFrame, evals: pl.DataFrame) -> MethodOutput:
    gen = session.params.generate
    settings = gen.curation
    domain, topics = load_topics(settings.topics_file)
    sampling = {"temperature": settings.temperature, "max_tokens": settings.max_tokens, "n": 1, "seed": gen.seed}
    subtopic_template = Template(settings.system, settings.subtopics_template)
    task_template = Template(settings.system, settings.tasks_template)

    # Level 1: subtopics per topic.
    requests = [make_request(subtopic_template.messages(domain=domain, topic=topic,
                                                        count=settings.subtopics_per_topic), sampling, session.primary)
                for topic in topics]
    ledger = session.ask(requests, session.primary, f"{METHOD} subtopics")
    rejects, branches = [], []
    for topic, request, (lines, reason, detail) in zip(
            topics, requests, reply_lines(session, requests, ledger.errors, ledger.skipped), strict=True):
        if lines is None:
            rejects.append({"method": METHOD, "seed_id": None, "request_key": request.key,
                            "source_file": settings.topics_file, "source_line": None, "reason": reason,
                            "detail": f"subtopics of {topic!r}: {detail}"})
            continue
        branches += [(topic, subtopic) for subtopic in lines[: settings.subtopics_per_topic]]

    # Level 2: tasks per (topic, subtopic), near duplicates dropped before answering.
    requests = [make_request(task_template.messages(domain=domain, topic=topic, subtopic=subtopic,
                                                    count=settings.tasks_per_subtopic), sampling, session.primary)
                for topic, subtopic in branches]
    index = NoveltyIndex(settings.near_duplicate_threshold)
    index.add_all(seeds["instruction"].to_list() + evals["instruction"].to_list())
    origins = [f"curation: {topic} / {subtopic}" for topic, subtopic in branches]
    accepted, dropped = accept_new(session, METHOD, requests, origins, index, settings.tasks_per_subtopic)
    rows, answer_rejects = answer(session, pl.DataFrame(accepted, schema=INPUT), METHOD)
    all_rejects = pl.concat([conform(pl.DataFrame(rejects + dropped, schema=REJECT), REJECT), answer_rejects])
    return MethodOutput(rows=rows, rejects=all_rejects, metrics={
        "topics": len(topics), "subtopics": len(branches), "inputs_accepted": len(accepted),
        "near_duplicates": sum(r["reason"] == "near_duplicate" for r in dropped),
        "template_hash": task_template.hash})
