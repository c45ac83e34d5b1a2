"""Benchmark decontamination: literal benchmark items and training rows, the n-gram rule at 13 and 8 words, the
short-item rule, benchmark files, the dedupe stage's marks and metrics, and the demo's planted seeds."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from distill import params as params_module
from distill.curate import decontaminate
from distill.entry import StageError
from distill.params import BenchmarkSet, DecontaminateParams, DedupeParams, ScoreParams
from stages import dedupe, score

REPO = Path(__file__).resolve().parents[1]
SCORE = ScoreParams(min_response_chars=1, max_response_chars=20)

BAKERY = ("A bakery sells muffins for 3 dollars each and cookies for 1 dollar each. On Monday it sold 42 muffins and "
          "twice as many cookies as muffins. How much money did the bakery make on Monday?")
BAKERY_ANSWER = "It sold 42 * 2 = 84 cookies, so it made 42 * 3 + 84 * 1 = 126 + 84 = 210 dollars. #### 210"
SKY = ("Explain why the sky appears blue during the day but red and orange at sunset, referring to how sunlight is "
       "scattered by molecules in the atmosphere.")
SKY_ANSWER = ("Shorter blue wavelengths are scattered far more strongly by air molecules, so blue light reaches us "
              "from every part of the sky; at sunset the light crosses much more air and the blue is scattered away.")
TRAINS = ("A train leaves Paris at 9 am travelling at 120 km per hour, and a second train leaves Lyon, 450 km away, "
          "at 10 am travelling towards Paris at 150 km per hour. At what time do the two trains meet?")
ITEMS = [{"id": "gsm-1", "question": BAKERY, "answer": BAKERY_ANSWER},
         {"id": "open-2", "question": SKY, "answer": SKY_ANSWER},
         {"id": "gsm-3", "question": TRAINS, "answer": "They meet at 11:40 am. #### 11:40"}]
# the bakery question pasted into a seed: other spacing, case and punctuation, and words around it
PASTED = ("Please solve this one:\n a  BAKERY sells muffins for 3 dollars each,and cookies for 1 dollar each.On "
          "monday it sold 42 muffins -- and twice as many cookies as muffins!  How much money did the bakery make "
          "on Monday ??")
CLEAN = ["Write a haiku about autumn leaves drifting on a quiet river at dusk.",
         "Summarise the causes of the French Revolution in three short bullet points for a student.",
         "A farmer has 17 sheep and buys 5 more each week. How many sheep does the farmer have after 4 weeks?"]


def bench(items: list[dict] = ITEMS, name: str = "math") -> decontaminate.Benchmark:
    return decontaminate.Benchmark(name, f"data/benchmarks/{name}.jsonl", [item["id"] for item in items],
                                   {field: [item.get(field) for item in items] for field in ("question", "answer")})


def rows(*instructions: str, **columns: list[str]) -> pl.DataFrame:
    ids = [f"r{i}" for i in range(len(instructions))]
    return pl.DataFrame({"id": ids, "instruction": list(instructions)} | columns)


def matched(found: pl.DataFrame) -> dict[str, tuple]:
    return {row["id"]: (row["benchmark"], row["item_id"], row["column"], row["ngram"]) for row in found.to_dicts()}


@pytest.mark.parametrize("ngram", [13, 8])
def test_a_pasted_eval_question_is_caught_at_13_and_8_words(ngram: int) -> None:
    found = decontaminate.find_matches(rows(CLEAN[0], PASTED, CLEAN[1], CLEAN[2]), [bench()], ngram)
    expected = " ".join("a bakery sells muffins for 3 dollars each and cookies for 1 dollar".split()[:ngram])
    assert matched(found) == {"r1": ("math", "gsm-1", "instruction", expected)}
    assert found["row"].to_list() == [1]


def test_twelve_shared_words_are_caught_at_8_words_not_at_13() -> None:
    twelve = "EXPLAIN why the sky appears blue, during the day but red and yellow petals fall in spring gardens"
    frame = rows(twelve, *CLEAN)
    assert decontaminate.find_matches(frame, [bench()], 13).height == 0
    assert matched(decontaminate.find_matches(frame, [bench()], 8)) == {
        "r0": ("math", "open-2", "instruction", "explain why the sky appears blue during the")}


def test_input_answer_and_reasoning_are_checked_against_questions_and_answers() -> None:
    frame = rows("Solve the problem below.", CLEAN[0], CLEAN[1], CLEAN[2],
                 input=[TRAINS.upper(), "", "", ""],
                 response=["", "It sold 42*2=84 cookies so it made 42*3 + 84*1 = 126+84 = 210 dollars", "", ""],
                 reasoning=[None, None, SKY_ANSWER.replace(" ", "  "), None])
    found = matched(decontaminate.find_matches(frame, [bench()], 13))
    assert {row_id: values[:3] for row_id, values in found.items()} == {
        "r0": ("math", "gsm-3", "input"), "r1": ("math", "gsm-1", "response"), "r2": ("math", "open-2", "reasoning")}
    assert found["r1"][3] == "it sold 42 2 84 cookies so it made 42 3 84 1"


def test_short_items_match_only_whole_and_in_order() -> None:
    demo = [{"id": "w1", "question": "Upper  qphuw", "answer": "QPHUW"}]
    frame = rows("upper qphuw", "UPPER QPHUW, please", "upper qphuwx", "upper this qphuw", "qphuw upper",
                 "reverse qphuw", "upper")
    found = decontaminate.find_matches(frame, [bench(demo, "words")], 13)
    assert matched(found) == {"r0": ("words", "w1", "instruction", "upper qphuw"),
                              "r1": ("words", "w1", "instruction", "upper qphuw")}
    # the one-word answer is not checked ("reverse qphuw" would match it), and the summary says so
    summary = decontaminate.summary(found, [bench(demo, "words")], DecontaminateParams())
    assert summary["benchmarks"]["words"]["short_texts_skipped"] == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_benchmark_files_jsonl_and_parquet(write_items, suffix: str) -> None:
    path = write_items(ITEMS, suffix)
    loaded = decontaminate.load_benchmark(BenchmarkSet(name="math", path=str(path)))
    assert loaded.item_ids == ["gsm-1", "open-2", "gsm-3"]
    assert loaded.fields == {"question": [BAKERY, SKY, TRAINS], "answer": [item["answer"] for item in ITEMS]}
    no_ids = write_items([{"problem": BAKERY, "choices": ["210", "200"]}], suffix)  # items numbered by row
    loaded = decontaminate.load_benchmark(BenchmarkSet(name="mc", path=str(no_ids), fields=["problem", "choices"]))
    assert (loaded.item_ids, loaded.fields["choices"]) == (["0"], ["210\n200"])
    assert matched(decontaminate.find_matches(rows(PASTED), [loaded], 13))["r0"][:2] == ("mc", "0")


def test_a_missing_file_or_field_is_an_error_naming_the_file(write_items, tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"benchmarks.sets\[gone\].path: .*nowhere.jsonl does not exist"):
        decontaminate.load_benchmark(BenchmarkSet(name="gone", path=str(tmp_path / "nowhere.jsonl")))
    path = write_items([{"id": "1", "question": BAKERY}])
    with pytest.raises(StageError, match=rf"{path}.* has no field 'answer'"):
        decontaminate.load_benchmark(BenchmarkSet(name="math", path=str(path)))


def test_action_fail_names_the_benchmark_the_rows_and_the_ngram() -> None:
    frame = rows(CLEAN[0], PASTED, PASTED.lower())
    with pytest.raises(StageError) as error:
        decontaminate.check(frame, [bench()], DecontaminateParams(action="fail"))
    message = str(error.value)
    assert "2 training rows share 13 consecutive words" in message and "math: 2 rows (r1, r2)" in message
    assert '"a bakery sells muffins for 3 dollars each and cookies for 1 dollar" with item gsm-1' in message
    assert "dedupe.decontaminate.action: drop" in message
    assert decontaminate.check(rows(*CLEAN), [bench()], DecontaminateParams(action="fail")).height == 0


def test_the_dedupe_stage_drops_contaminated_rows_and_reports_them(generated) -> None:
    scored = score.score(generated(("a", CLEAN[0], "ok"), ("b", PASTED, "ok"), ("c", PASTED.upper(), "ok"),
                                   ("d", CLEAN[0].upper(), "ok"), ("e", SKY, "ok")), SCORE)
    deduped, metrics = dedupe.run(DedupeParams(), scored, None, [bench(), bench(ITEMS[2:], "trains")])
    # contaminated rows leave before the duplicate passes: b and c are not each other's duplicates
    assert dict(deduped.select("id", "drop_reason").iter_rows()) == {
        "a": None, "b": "contaminated", "c": "contaminated", "d": "duplicate", "e": "contaminated"}
    assert metrics["dropped_by_reason"] == {"contaminated": 3, "duplicate": 1}
    assert metrics["contaminated_by_benchmark"] == {"math": 3, "trains": 0}
    assert metrics["decontamination"] == {"ngram": 13, "action": "drop", "benchmarks": {
        "math": {"items": 3, "rows_matched": 3, "short_texts_skipped": 0, "samples": [
            {"id": "b", "item_id": "gsm-1", "column": "instruction",
             "ngram": "a bakery sells muffins for 3 dollars each and cookies for 1 dollar"},
            {"id": "c", "item_id": "gsm-1", "column": "instruction",
             "ngram": "a bakery sells muffins for 3 dollars each and cookies for 1 dollar"},
            {"id": "e", "item_id": "open-2", "column": "instruction",
             "ngram": "explain why the sky appears blue during the day but red and orange"}]},
        "trains": {"items": 1, "rows_matched": 0, "short_texts_skipped": 0, "samples": []}}}
    assert {"kept", "duplicates_by_kind", "contaminated_rows"} <= set(metrics) and "wall_s" not in metrics  # logs/
    with pytest.raises(StageError, match="math: 3 rows"):
        dedupe.run(DedupeParams(decontaminate={"action": "fail"}), scored, None, [bench()])


@pytest.mark.parametrize("ngram", [13, 8])
def test_the_demo_benchmark_matches_exactly_the_three_planted_seeds(ngram: int) -> None:
    params = params_module.load(REPO / "params.yaml")
    benchmarks = [decontaminate.load_benchmark(entry, REPO) for entry in params.benchmarks.sets]
    seeds = pl.read_ndjson(REPO / params.ingest.train)
    found = decontaminate.find_matches(seeds, benchmarks, ngram)
    assert sorted(zip(found["item_id"], found["ngram"], strict=True)) == [
        ("words-bench-010", "upper qphuw"), ("words-bench-050", "upper lnilmyyw"), ("words-bench-090", "upper pjd")]
    assert sorted(seeds["instruction"].gather(found["row"])) == ["upper lnilmyyw", "upper pjd", "upper qphuw"]
