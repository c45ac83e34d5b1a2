"""The selection policy: which of the clean rows the student is trained on.

Less teacher data is often better (AlpaGasus: 9k judge-selected rows of Alpaca's 52k beat all of
them; Cherry-LLM: 5-10% by IFD matched the full set). Rows still kept after dedupe go through:

1. thresholds: ``select.min.<signal>`` and ``select.max.<signal>`` on the score stage's signals
   (quality, judge_rating, ifd, reward, difficulty); a row without the signal fails it. Dropped as
   ``below_min_<signal>`` / ``above_max_<signal>``.
2. rank: by ``select.order_by``, higher first, each signal in turn (for ifd that is Cherry-LLM's pick:
   the answer the instruction helps least); ties, and ``order_by: []``, by a seeded hash of the id,
   so the order is reproducible and owes nothing to the file's.
3. diversity (``select.diversity.clusters`` > 1): the rows' instruction + input are embedded
   (all-MiniLM-L6-v2, bundled) and split into k-means clusters; the order then takes each cluster's
   best remaining row in turn (clusters in the order of their best rows), so a budget covers every
   kind of task before it takes a second row of any.
4. budget: the first min(``max_rows``, ``max_fraction`` x generated rows) rows of that order are kept,
   the rest dropped as ``over_budget``.

Every row that passed the thresholds gets ``select_rank`` (its place in the order, from 1) and
``select_cluster``; rows dropped earlier keep the reason of the stage that dropped them.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from distill import params as params_module
from distill.entry import StageError
from distill.records import SELECTED, conform, task_texts, tie_break

KMEANS_ITERATIONS = 20


def threshold_failures(params: params_module.SelectParams) -> list[tuple[str, pl.Expr]]:
    """(reason, failed) per threshold; a missing signal (null) fails."""
    return [(f"below_min_{signal}", pl.col(signal).is_null() | (pl.col(signal) < bound))
            for signal, bound in params.min.items()] + \
           [(f"above_max_{signal}", pl.col(signal).is_null() | (pl.col(signal) > bound))
            for signal, bound in params.max.items()]


def check_signals(rows: pl.DataFrame, params: params_module.SelectParams) -> None:
    """A threshold or an order on a signal the score stage did not compute is a params mistake."""
    eligible = rows.filter(pl.col("keep"))
    for signal in {*params.min, *params.max, *params.order_by}:
        if eligible.height and eligible[signal].null_count() == eligible.height:
            switch = {"judge_rating": "score.judge", "ifd": "score.ifd", "reward": "score.reward_model",
                      "difficulty": "generate.rejection.keep (with generate.n > 1)"}[signal]
            raise StageError(f"select uses {signal}, but no row has it: turn on {switch} (params.yaml) or remove "
                             f"{signal} from select.min / select.max / select.order_by")


def rank(eligible: pl.DataFrame, params: params_module.SelectParams) -> pl.DataFrame:
    """Rows best first: each order_by signal (higher first, nulls last), then the seeded hash."""
    keyed = eligible.with_columns(_tie=tie_break(params.seed))
    columns = [*params.order_by, "_tie"]
    return keyed.sort(columns, descending=[True] * len(params.order_by) + [False], nulls_last=True).drop("_tie")


def cluster_labels(vectors: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """k-means (faiss, spherical: the vectors are unit length) labels, one per row; seeded, so reproducible."""
    import faiss

    k = min(clusters, len(vectors))
    if k <= 1:
        return np.zeros(len(vectors), dtype=np.int64)
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, spherical=True,
                          max_points_per_centroid=max(256, math.ceil(len(vectors) / k)))
    kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
    _, labels = kmeans.index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return labels[:, 0].astype(np.int64)


def round_robin(ranked: pl.DataFrame, labels: np.ndarray) -> pl.DataFrame:
    """Each cluster's best remaining row in turn; clusters in the order of their best rows."""
    return (
        ranked.with_columns(select_cluster=pl.Series(labels, dtype=pl.Int64))
        .with_row_index("_order")
        .with_columns(_round=pl.col("_order").rank("ordinal").over("select_cluster"),
                      _cluster_first=pl.col("_order").min().over("select_cluster"))
        .sort(["_round", "_cluster_first"])
        .drop("_order", "_round", "_cluster_first")
    )


def budget_rows(params: params_module.SelectParams, generated: int) -> int:
    by_fraction = math.floor(params.max_fraction * generated) if params.max_fraction is not None else generated
    return min(by_fraction, params.max_rows if params.max_rows is not None else generated)


def select(rows: pl.DataFrame, params: params_module.SelectParams) -> pl.DataFrame:
    """Every row of ``rows`` (DEDUPED), with keep/drop_reason updated and select_rank/select_cluster set."""
    check_signals(rows, params)
    failures = threshold_failures(params)
    reason = pl.lit(None, dtype=pl.String)
    for name, failed in reversed(failures):  # the first failing threshold is the reason recorded
        reason = pl.when(failed).then(pl.lit(name)).otherwise(reason)
    marked = rows.with_columns(_threshold=pl.when(pl.col("keep")).then(reason).otherwise(None))
    eligible = rank(marked.filter(pl.col("keep") & pl.col("_threshold").is_null()), params)
    if params.diversity.clusters > 1 and eligible.height > 1:
        from distill.curate import semantic  # loads torch and the embedding model only when asked for

        vectors = semantic.embed(task_texts(eligible), params.diversity.model, params.diversity.batch_size)
        eligible = round_robin(eligible, cluster_labels(vectors, params.diversity.clusters, params.seed))
    else:
        eligible = eligible.with_columns(select_cluster=pl.lit(0, dtype=pl.Int64))
    chosen = budget_rows(params, rows.height)
    order = eligible.select("id", "select_cluster").with_columns(
        select_rank=pl.int_range(1, eligible.height + 1, dtype=pl.Int64))
    result = marked.join(order, on="id", how="left", maintain_order="left")
    over = pl.col("select_rank") > chosen
    result = result.with_columns(
        keep=pl.col("keep") & pl.col("_threshold").is_null() & ~over.fill_null(False),
        drop_reason=pl.when(pl.col("_threshold").is_not_null()).then(pl.col("_threshold"))
        .when(over.fill_null(False)).then(pl.lit("over_budget")).otherwise(pl.col("drop_reason")),
    )
    return conform(result, SELECTED)


def summarise(selected: pl.DataFrame, params: params_module.SelectParams) -> dict:
    kept = selected.filter(pl.col("keep"))
    tokens = pl.col("prompt_tokens") + pl.col("completion_tokens")
    per_cluster = kept["select_cluster"].value_counts()["count"] if kept.height else pl.Series([0])
    return {
        "rows_in": selected.height,
        "eligible": int(selected["select_rank"].is_not_null().sum()),
        "budget_rows": budget_rows(params, selected.height),
        "selected": kept.height,
        "selected_fraction": round(kept.height / selected.height, 4) if selected.height else 0.0,
        "teacher_tokens_selected": int(kept.select(tokens.sum()).item() or 0),
        "teacher_tokens_all": int(selected.select(tokens.sum()).item() or 0),
        "clusters": int(kept["select_cluster"].n_unique()),
        "rows_per_cluster": {"min": int(per_cluster.min()), "max": int(per_cluster.max())},
        "dropped_by_reason": dict(
            selected.filter(~pl.col("keep"))["drop_reason"].value_counts().sort("drop_reason").iter_rows()),
        "order_by": list(params.order_by) or ["random"],
    }
