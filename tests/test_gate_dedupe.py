"""Tests of the dedupe gate (``stages/gates/dedupe.py``): good deduplicated rows pass, broken or contaminated
ones fail naming the expectation and the failing ids, also through its command line on planted eval rows."""

from __future__ import annotations

import polars as pl

from demo import words
from distill.gate import validate
from distill.params import DedupeGate
from distill.records import DEDUPED, GENERATED, SEED

DEDUPE = DedupeGate(min_rows=3)


def test_dedupe_good_passes(suite, frame, good_deduped_rows, assert_passes) -> None:
    assert_passes(validate(suite("dedupe"), DEDUPE, {"rows": frame(good_deduped_rows(5), DEDUPED)}))


def test_dedupe_bad_rows_fail_with_ids(suite, frame, good_deduped_rows, failed) -> None:
    rows = good_deduped_rows(5)
    rows[2]["norm_hash"] = rows[1]["norm_hash"]  # two kept rows with the same normalised text
    rows[4]["dup_of"] = None  # a duplicate that does not name its twin
    fails = failed(validate(suite("dedupe"), DEDUPE, {"rows": frame(rows, DEDUPED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_be_unique(norm_hash) where keep == True": ["g1", "g2"],
        "rows: expect_column_values_to_not_be_null(dup_of) where drop_reason == 'duplicate'": ["g4"],
    }


def test_dedupe_contamination_fails_naming_the_kept_rows_that_copy_eval_rows(suite, frame, good_deduped_rows,
                                                                             failed) -> None:
    rows = good_deduped_rows(5)
    rows[1] |= {"contaminated_by": "eval-7", "contamination_similarity": 1.0}
    rows[3] |= {"contaminated_by": "eval-2", "contamination_similarity": 0.85}
    rows[4] |= {"contaminated_by": "eval-9", "contamination_similarity": 0.9}  # dropped anyway: not training data
    fails = failed(validate(suite("dedupe"), DEDUPE, {"rows": frame(rows, DEDUPED)}))
    assert {key: outcome.failing_ids for key, outcome in fails.items()} == {
        "rows: expect_column_values_to_be_null(contaminated_by) where keep == True": ["g1", "g3"],
    }


def test_dedupe_min_rows_counts_kept_rows(suite, frame, good_deduped_rows, failed) -> None:
    fails = failed(validate(suite("dedupe"), DedupeGate(min_rows=5), {"rows": frame(good_deduped_rows(5), DEDUPED)}))
    assert set(fails) == {"rows: expect_column_sum_to_be_between(keep)"}
    assert fails["rows: expect_column_sum_to_be_between(keep)"].observed == 4  # 5 rows, 4 kept


# --- the command line --------------------------------------------------------------------------

def test_planted_eval_rows_make_the_contamination_gate_fail_naming_them(gate_workdir, frame, good_seed_rows,
                                                                        good_generated_rows, write_ingest,
                                                                        run_gate) -> None:
    """The dedupe stage marks training rows that copy eval rows; its gate stops the pipeline."""
    from distill.params import DedupeParams, ScoreParams
    from stages import dedupe, score

    train, evals = good_seed_rows(150, "train"), good_seed_rows(50, "eval")
    for row in train:
        row["instruction"] = f"write {row['instruction']} in words"  # distinct from every eval row
    rows = good_generated_rows(150)
    for i, row in enumerate(rows):
        row["instruction"] = train[i]["instruction"]
    for i, j in ((10, 3), (20, 4), (30, 5)):  # plant three eval rows, one with other spacing and case
        rows[i]["instruction"] = evals[j]["instruction"] if i != 30 else evals[j]["instruction"].upper() + "  "
    write_ingest(gate_workdir, train, evals)
    scored = score.score(frame(rows, GENERATED), ScoreParams(min_response_chars=1, max_response_chars=50),
                         verify=words.verify)
    deduped = dedupe.dedupe(scored, DedupeParams(), frame(evals, SEED))
    (gate_workdir / "data/dedupe").mkdir(parents=True)
    deduped.write_parquet(gate_workdir / "data/dedupe/rows.parquet")
    proc = run_gate(gate_workdir, "dedupe")
    assert proc.returncode == 1
    assert "expect_column_values_to_be_null(contaminated_by) where keep == True" in proc.stderr
    assert "['g10', 'g20', 'g30']" in proc.stderr
    assert dict(deduped.filter(pl.col("contaminated_by").is_not_null()).select("id", "contaminated_by")
                .iter_rows()) == {"g10": "eval-3", "g20": "eval-4", "g30": "eval-5"}
