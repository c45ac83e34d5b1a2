"""Kill anywhere, lose nothing: the data stages (ingest, generate with each elicitation method, score with the judge,
dedupe, select), each killed by SIGKILL at random moments, then run again. Right after a kill every output is absent
or complete; the rerun's outputs equal an uninterrupted run's; the stand-in teacher billed no request twice.
DISTILL_KILL_SEEDS sets the kills per stage variant (StageKiller, tests/conftest.py); train, evaluate and sweep are
tests/test_kill_anywhere_train.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
PROFILE = {
    "generate.elicit": ["feature", "feedback"],  # the base run: the feature method and the feedback pairs
    "generate.top_logprobs": 5,
    "generate.feedback.max_inputs": 16,
    "generate.max_failed_fraction": 0.5,  # the stand-in's malformed answers and refusals are rejects, not a failure
    "generate.expansion.requests_per_round": 3,
    "generate.curation.subtopics_per_topic": 2,
    "generate.curation.tasks_per_subtopic": 4,
    "generate.self_knowledge.max_inputs": 16,
    "generate.self_knowledge.samples": 2,
    "score.judge": True,
    "select.diversity.clusters": 1,  # no embedding model: a second of select instead of twenty
}
CHAIN = ["ingest", "generate", "score", "dedupe", "select"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_repo, stage_killer) -> Path:
    """The tiny repo after one uninterrupted run of CHAIN; read only."""
    repo = tiny_repo(tmp_path_factory.mktemp("kill-data") / "repo", PROFILE | stage_killer.teacher_params)
    stage_killer.chain(repo, CHAIN)
    return repo


@pytest.mark.parametrize("stage", ["ingest", "score", "dedupe", "select"])
def test_stage_killed_anywhere_loses_nothing(base: Path, stage: str, stage_killer, tmp_path: Path) -> None:
    stage_killer.check(base, stage, tmp_path)


@pytest.mark.parametrize("elicit", [["feature", "feedback"], *(
    pytest.param([method], marks=pytest.mark.long) for method in ("labelling", "expansion", "curation",
                                                                    "self_knowledge"))],
    ids="+".join)  # long: the other methods, in benchmarks/reliability.py (make test keeps under 20 minutes)
def test_generate_killed_anywhere_pays_nothing_twice(base: Path, elicit: list[str], stage_killer,
                                                    tmp_path: Path) -> None:
    updates = None if elicit == PROFILE["generate.elicit"] else {"generate.elicit": elicit,
                                                                 "generate.top_logprobs": None}
    stage_killer.check(base, "generate", tmp_path, updates, per_call=True)
