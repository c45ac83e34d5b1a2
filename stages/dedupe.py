"""Dedupe: exact duplicates on normalised text; each group keeps its best-scored row.

Reads:   data/score/rows.parquet
Writes:  data/dedupe/rows.parquet (DEDUPED: every row, marked), metrics/dedupe.json
Params:  dedupe
Run:     python -m stages.dedupe

Only rows still kept after scoring compete. In each group of equal normalised
(instruction, input) the row with the highest quality wins (ties: smallest id, so the
choice is deterministic); the others get ``drop_reason = "duplicate"`` and ``dup_of`` =
the winner's id, which ``distill lineage`` shows.
"""

from __future__ import annotations

import polars as pl

from stages import params as params_module
from stages import paths
from stages.entry import guarded
from stages.io import content_hash, write_json, write_parquet
from stages.records import DEDUPED, conform


def normalised(column: str, params: params_module.DedupeParams) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    if params.lowercase:
        text = text.str.to_lowercase()
    if params.collapse_whitespace:
        text = text.str.replace_all(r"\s+", " ")
    return text


def dedupe(scored: pl.DataFrame, params: params_module.DedupeParams) -> pl.DataFrame:
    keyed = scored.with_columns(
        # sha256 rather than polars' hash(): that one is not stable across polars versions
        norm_hash=pl.concat_str([normalised("instruction", params), normalised("input", params)], separator="\x1f")
        .map_elements(content_hash, return_dtype=pl.String)
    )
    winners = (
        keyed.filter(pl.col("keep"))
        .sort(["quality", "id"], descending=[True, False])
        .group_by("norm_hash", maintain_order=True)
        .agg(winner=pl.col("id").first())
    )
    marked = keyed.join(winners, on="norm_hash", how="left").with_columns(
        is_dup=pl.col("keep") & (pl.col("id") != pl.col("winner"))
    )
    result = marked.with_columns(
        keep=pl.col("keep") & ~pl.col("is_dup"),
        drop_reason=pl.when(pl.col("is_dup")).then(pl.lit("duplicate")).otherwise(pl.col("drop_reason")),
        dup_of=pl.when(pl.col("is_dup")).then(pl.col("winner")).otherwise(pl.lit(None, dtype=pl.String)),
    )
    return conform(result, DEDUPED)


def summarise(deduped: pl.DataFrame) -> dict:
    duplicates = deduped.filter(pl.col("drop_reason") == "duplicate")
    return {
        "rows_in": deduped.height,
        "kept": int(deduped["keep"].sum()),
        "duplicates_dropped": duplicates.height,
        "duplicate_groups": duplicates["dup_of"].n_unique(),
        "dropped_by_reason": dict(
            deduped.filter(~pl.col("keep"))["drop_reason"].value_counts().sort("drop_reason").iter_rows()
        ),
    }


def main() -> None:
    deduped = dedupe(pl.read_parquet(paths.SCORE_ROWS), params_module.load().dedupe)
    write_parquet(deduped, paths.DEDUPE_ROWS)
    metrics = summarise(deduped)
    write_json(metrics, paths.metrics("dedupe"))
    print(f"dedupe: {metrics['kept']} rows kept; {metrics['duplicates_dropped']} duplicates dropped")


if __name__ == "__main__":
    guarded("dedupe", main)
