"""Labelling options: k hand-written demonstrations and a chain-of-thought instruction, against the stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from demo import words
from demo.standin import Settings as StandinSettings
from demo.standin import compose, question_of
from distill import params as params_module
from distill.elicit import answering
from distill.entry import StageError
from distill.io import content_hash, write_parquet
from distill.prompts import Prompt, TemplateError, fill, final_answer, render
from distill.teacher.store import RequestStore

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
DEMOS = str(TEMPLATES / "demonstrations.jsonl")
COT = str(TEMPLATES / "cot.txt")
CLEAN = {"error_rate": 0.0, "rate_limit_rate": 0.0, "wrong_rate": 0.0, "hard_wrong_rate": 0.0,
         "malformed_rate": 0.0, "refusal_rate": 0.0}


@pytest.fixture
def options(load_params):
    """``options(**updates)``: load_params with the shipped demonstrations file and CoT template, and the updates."""

    def with_options(**updates: object) -> params_module.Params:
        return load_params(**{"demonstrations_file": DEMOS, "cot_template": COT} | updates)

    return with_options


def plain_messages(instruction: str) -> list[dict]:
    """What labelling sent before the options existed."""
    system = (TEMPLATES / "system.txt").read_text(encoding="utf-8")
    user = (TEMPLATES / "labelling.txt").read_text(encoding="utf-8").format(instruction=instruction, input="")
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def test_shipped_params_leave_requests_and_hash_exactly_as_before(load_params, seeds) -> None:
    params = load_params()  # params.yaml: demonstrations 0, chain_of_thought false
    assert (params.generate.demonstrations, params.generate.chain_of_thought) == (0, False)
    frame = seeds(["reverse planet", "upper cat", "reverse falcon"])
    prompt = answering.prompt_of(params.generate)
    plain = Prompt(params.generate.system, params.generate.template)
    for instruction in frame["instruction"]:
        assert prompt.messages(instruction) == plain.messages(instruction) == plain_messages(instruction)
    assert prompt.hash == plain.hash == content_hash({"system": plain.system, "user": plain.user})
    keys = [r.key for r in answering.plan(frame, prompt, params.generate, params.teacher)]
    assert keys == [r.key for r in answering.plan(frame, plain, params.generate, params.teacher)]


def test_demonstrations_file_is_hand_written_and_disjoint_from_eval() -> None:
    demos = [json.loads(line) for line in Path(DEMOS).read_text().splitlines() if line.strip()]
    assert len(demos) >= 10
    assert {words.op_of(d["instruction"]) for d in demos} == {"reverse", "upper"}
    assert all(words.solve(d["instruction"]) == d["answer"] for d in demos)
    eval_words = {words.parse(json.loads(line)["instruction"])[1]
                  for line in (REPO / "data/seeds/eval.jsonl").read_text().splitlines() if line.strip()}
    assert not {words.parse(d["instruction"])[1] for d in demos} & eval_words


def test_k_demonstrations_are_prior_turns_deterministic_and_never_the_seed(options) -> None:
    params = options(demonstrations=3)
    prompt = answering.prompt_of(params.generate)
    plain = Prompt(params.generate.system, params.generate.template)
    for seed in ["reverse planet", "upper cat", "reverse falcon", "Upper  GARDEN"]:
        messages = prompt.messages(seed)
        assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
        assert messages[0] == plain.messages(seed)[0] and messages[-1] == plain.messages(seed)[-1]
        shown = [m["content"] for m in messages[1:-1:2]]
        instructions = [d["instruction"] for d in prompt.chosen(seed)]
        assert shown == [plain.messages(i)[-1]["content"] for i in instructions]  # same user template
        assert [m["content"] for m in messages[2:-1:2]] == [words.solve(i) for i in instructions]
        assert " ".join(seed.lower().split()) not in instructions
        assert answering.prompt_of(params.generate).messages(seed) == messages  # reproducible
    assert len({tuple(d["instruction"] for d in prompt.chosen(s)) for s in ["upper cat", "reverse dog", "upper owl",
                                                                             "reverse sky"]}) > 1  # varies by seed


def test_template_hash_changes_only_with_the_options_on(tmp_path: Path, options) -> None:
    base = answering.prompt_of(options().generate).hash
    hashes = {answering.prompt_of(options(demonstrations=k, chain_of_thought=c).generate).hash
              for k in (0, 3) for c in (False, True)}
    assert len(hashes) == 4 and base in hashes
    assert answering.prompt_of(options(demonstrations=2).generate).hash not in hashes
    other = tmp_path / "cot.txt"
    other.write_text("Reason first. End with `Answer: <result>`.\n")
    assert answering.prompt_of(options(cot_template=str(other)).generate).hash == base  # unused: not hashed
    assert answering.prompt_of(options(chain_of_thought=True, cot_template=str(other)).generate).hash not in hashes
    with pytest.raises(StageError, match="needs at least 13 demonstrations"):
        answering.prompt_of(options(demonstrations=12).generate)


def test_final_answer_is_the_text_after_the_last_answer_line() -> None:
    assert final_answer("planet backwards: t-e-n-a-l-p\nAnswer: tenalp") == "tenalp"
    assert final_answer("Answer: x\nhmm, no.\nanswer:  tenalp  \n") == "tenalp"
    assert final_answer("The answer: tenalp") is None  # not a line of its own
    assert final_answer("So it is tenalp.") is None
    assert final_answer("Answer:   ") is None


def test_standin_finds_the_instruction_before_the_cot_line_and_reasons(options) -> None:
    cot = Path(COT).read_text().strip()
    messages = answering.prompt_of(options(chain_of_thought=True).generate).messages("reverse planet")
    assert messages[-1]["content"].endswith(cot) and question_of(messages) == "reverse planet"
    reply = compose("reverse planet", StandinSettings(), "k", reasoning=True)
    assert reply.splitlines()[-1] == "Answer: tenalp" and len(reply.splitlines()) == 2
    malformed = [compose("reverse planet", StandinSettings(malformed_rate=1.0), f"k{i}", reasoning=True)
                 for i in range(20)]
    assert {final_answer(r) for r in malformed} == {None, "Sure! tenalp :)"}  # some drop the Answer: line


def test_unparseable_answer_is_rejected_with_its_start(tmp_path: Path, options, seeds, completion) -> None:
    params = options(chain_of_thought=True)
    frame = seeds(["reverse planet", "upper cat"])
    requests = answering.plan(frame, answering.prompt_of(params.generate), params.generate, params.teacher)
    rambling = "Let me think about the word cat letter by letter. " * 4
    with RequestStore(tmp_path / "s.jsonl") as store:
        store.put(requests[0].key, requests[0].payload(), completion("a", "Reversing planet.\nAnswer: tenalp"))
        store.put(requests[1].key, requests[1].payload(), completion("b", rambling))
        rows, rejects = answering.frames(*answering.build_rows(
            "labelling", list(answering.as_inputs(frame).iter_rows(named=True)), requests, store, "standin", "t", {},
            {}, chain_of_thought=True))
    assert rows.select("instruction", "response").rows() == [("reverse planet", "tenalp")]
    assert rejects.select("seed_id", "reason", "detail").rows() == [(frame["id"][1], "unparseable", rambling[:100])]


@pytest.fixture
def stage_seeds(tmp_path: Path, seeds) -> Path:
    path = tmp_path / "ingest" / "train.parquet"
    words = ["planet", "cat", "river", "stone", "maple", "orbit", "lemon", "tiger", "cloud", "amber"]
    write_parquet(seeds([f"{op} {word}" for word in words for op in ("reverse", "upper")] + ["reverse falcon"]), path)
    return path


def test_stage_with_demonstrations_and_cot_stores_bare_answers(
    tmp_path: Path,
    stage_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    options,
    load_params,
    with_standin,
    run_stage,
) -> None:
    params = with_standin(options(demonstrations=3, chain_of_thought=True, max_tokens=160), **CLEAN)
    metrics = run_stage(params, tmp_path, stage_seeds)
    assert (metrics["rows"], metrics["rejects"]) == (21, 0)
    assert metrics["template_hash"] == answering.prompt_of(params.generate).hash != answering.prompt_of(
        load_params().generate).hash
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    assert dict(rows.select("instruction", "response").rows())["reverse planet"] == "tenalp"
    assert all(words.solve(i) == r for i, r in rows.select("instruction", "response").rows())
    assert set(rows["template_hash"]) == {metrics["template_hash"]}
    with RequestStore(tmp_path / "store/generate.jsonl") as store:
        key = rows.filter(pl.col("instruction") == "reverse falcon")["request_key"][0]
        entry = store.entry(key)
    sent = entry["request"]["messages"]
    assert len(sent) == 8 and not any("falcon" in m["content"] for m in sent[1:-1])  # 3 demos, none the seed
    content = entry["response"]["choices"][0]["message"]["content"]
    assert content.endswith("\nAnswer: noclaf") and content != "noclaf"  # the reasoning stays in the store


def test_stage_rejects_cot_answers_without_an_answer_line(
    tmp_path: Path,
    stage_seeds: Path,
    monkeypatch: pytest.MonkeyPatch,
    options,
    with_standin,
    run_stage,
) -> None:
    params = with_standin(options(chain_of_thought=True, max_tokens=160, max_failed_fraction=1.0),
                          **CLEAN | {"malformed_rate": 1.0})
    metrics = run_stage(params, tmp_path, stage_seeds)
    assert metrics["rejects_by_reason"].keys() == {"unparseable"}
    assert 0 < metrics["rejects"] < 21 and metrics["rows"] + metrics["rejects"] == 21
    rejects = pl.read_parquet(tmp_path / "gen/rejects.parquet")
    assert all(d.startswith("Reading the letters") or d.startswith("Writing each letter") for d in rejects["detail"])
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    assert all(r.startswith("Sure! ") for r in rows["response"])


@pytest.mark.parametrize("template", ["{instruction.__class__.__mro__}", "{input[0]}", '{"score": 1}', "{nope}",
                                      "answer }"])
def test_a_template_fills_plain_names_only(template: str) -> None:
    """A template is user data: it cannot read attributes or items through a field (str.format would render
    `{instruction.__class__.__mro__}`), and literal JSON braces are one clear error, not a KeyError."""
    with pytest.raises(TemplateError, match="write a literal brace as"):
        fill(template, "reverse abc")


def test_doubled_braces_are_literal() -> None:
    assert render('{{"verdict": "{answer}"}}', answer="A") == '{"verdict": "A"}'
    assert fill("{instruction} {{x}}", "reverse abc") == "reverse abc {x}"
