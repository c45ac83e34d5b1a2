"""Tests of the sweep gate (``stages/gates/sweep.py``): good curves pass, broken points fail naming the
expectation and the failing subset, also through its command line on the CSV curves."""

from __future__ import annotations

import polars as pl

from distill.gate import validate
from distill.params import SweepGate
from distill.records import SWEEP_POINT

SWEEP_GOOD = [(1000, 40, 0.5, 0.95), (2000, 80, 1.0, 0.875)]


def sweep_frames(selected: list[tuple], random: list[tuple] | None = None) -> dict[str, pl.DataFrame]:
    """Curves of (teacher_tokens, rows, fraction, score) points, as the sweep stage writes them."""
    def curve(points: list[tuple]) -> pl.DataFrame:
        return pl.DataFrame(points, schema=SWEEP_POINT, orient="row")
    return {"selected": curve(selected), "random": curve(selected if random is None else random)}


def test_sweep_good_passes_and_a_missing_random_curve_is_allowed(suite, assert_passes) -> None:
    assert_passes(validate(suite("sweep"), SweepGate(min_points=2), sweep_frames(SWEEP_GOOD)))
    assert_passes(validate(suite("sweep"), SweepGate(min_points=2), sweep_frames(SWEEP_GOOD, [])))
    assert_passes(validate(suite("sweep"), SweepGate(min_points=2), sweep_frames([], [])))  # sweep.enabled: false


def test_sweep_bad_points_fail_naming_the_subset(suite, failed, never) -> None:
    bad = [(1000, 40, 0.5, 1.5), (2000, 80, 1.0, 0.875), (-1, 80, 0.0, 0.5)]
    fails = failed(validate(suite("sweep"), SweepGate(min_points=2), sweep_frames(bad, SWEEP_GOOD[:1])))
    assert fails["selected: expect_column_values_to_be_between(score)"].failing_ids == [40]
    assert fails["selected: expect_column_values_to_be_unique(rows)"].failing_ids == [80]
    assert fails["selected: expect_column_values_to_be_between(fraction)"].failing_ids == [80]
    assert fails["selected: expect_column_values_to_be_between(teacher_tokens)"].failing_ids == [80]
    assert "ends: expect_column_distinct_values_to_equal_set(rows)" in fails
    fails = failed(validate(suite("sweep"), SweepGate(min_points=never), sweep_frames(SWEEP_GOOD)))
    assert list(fails) == ["selected: expect_table_row_count_to_be_between()"]


# --- the command line --------------------------------------------------------------------------

def test_cli_reads_the_sweep_curves_from_csv(gate_workdir, run_gate) -> None:
    plots = gate_workdir / "reports/plots"
    plots.mkdir(parents=True)
    for name, frame_ in sweep_frames(SWEEP_GOOD).items():
        frame_.write_csv(plots / f"sweep_{name}.csv")
    proc = run_gate(gate_workdir, "sweep")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gate sweep OK:") and "selected (2 rows), random (2 rows)" in proc.stdout
    frame_ = sweep_frames(SWEEP_GOOD[:1])["selected"]  # params.yaml: gates.sweep.min_points = 2
    frame_.write_csv(plots / "sweep_selected.csv")
    proc = run_gate(gate_workdir, "sweep")
    assert proc.returncode == 1 and "gate sweep failed: selected: expect_table_row_count_to_be_between()" in proc.stderr
