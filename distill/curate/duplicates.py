"""Duplicates among teacher rows, and rows that overlap the held-out eval split (contamination).

Only rows still kept after scoring compete. They are ordered best first (highest quality,
then smallest id, so the choice is deterministic) and linked in three passes, each adding
to the clusters of the last: equal normalised (instruction, input) (``exact``); MinHash LSH
pairs whose exact Jaccard of word n-grams reaches ``dedupe.near.threshold`` (``near``,
distill/curate/near_duplicates.py); sentence embeddings whose cosine reaches
``dedupe.semantic.threshold`` (``semantic``, distill/curate/semantic.py, off by default). Every other
member of a cluster gets ``drop_reason = "duplicate"``, ``dup_of`` = the kept row's id,
``dup_kind`` = the pass that joined it to that row and, when the two were paired directly,
``dup_similarity``; ``distill lineage`` shows all of it.

Contamination: each kept row's instruction + input is checked against the eval split with
MinHash (``dedupe.contamination.threshold``); a match sets ``contaminated_by`` (the eval
row's id) and ``contamination_similarity``. With ``action: fail`` (default) the dedupe gate
then fails naming the ids; with ``action: drop`` those rows are dropped as ``eval_overlap``.

Benchmark contamination (an n-gram shared with a standard benchmark's item, distill/curate/decontaminate.py) is
found by the caller and passed in as row ids: those rows are dropped as ``contaminated`` before any pass.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl

from distill import params as params_module
from distill.curate import near_duplicates
from distill.io import content_hash
from distill.records import DEDUPED, conform, task_texts

Pairs = list[tuple[int, int, float]]


def normalised(column: str, params: params_module.DedupeParams) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    if params.lowercase:
        text = text.str.to_lowercase()
    if params.collapse_whitespace:
        text = text.str.replace_all(r"\s+", " ")
    return text


def near_params(params: params_module.DedupeParams, threshold: float) -> near_duplicates.NearDuplicateParams:
    return near_duplicates.NearDuplicateParams(ngram=params.near.ngram, num_perm=params.near.num_perm,
                                               threshold=threshold)


def exact_pairs(norm_hashes: list[str]) -> Pairs:
    first: dict[str, int] = {}
    pairs = []
    for index, key in enumerate(norm_hashes):
        if key in first:
            pairs.append((first[key], index, 1.0))
        else:
            first[key] = index
    return pairs


def linked_pairs(ranked: pl.DataFrame, params: params_module.DedupeParams) -> dict[str, Pairs]:
    """The pairs each pass links, over rows ranked best first."""
    hashes = ranked["norm_hash"].to_list()
    passes = {"exact": exact_pairs(hashes)}
    # Later passes see one row per exact group (its best): k exact twins would otherwise make k(k-1)/2 pairs.
    heads = ranked.with_row_index().unique("norm_hash", keep="first", maintain_order=True)["index"].to_list()
    texts = task_texts(ranked[heads]) if heads else []

    def original(found: Pairs) -> Pairs:
        return [(heads[i], heads[j], similarity) for i, j, similarity in found]

    if params.near.enabled:
        passes["near"] = original(near_duplicates.find_pairs(texts, near_params(params, params.near.threshold)))
    if params.semantic.enabled:
        from distill.curate import semantic  # loads torch and the embedding model only when asked for

        vectors = semantic.embed(texts, params.semantic.model, params.semantic.batch_size)
        passes["semantic"] = original(semantic.semantic_pairs(vectors, params.semantic.threshold,
                                                              params.semantic.neighbours))
    return passes


def mark_duplicates(ranked: pl.DataFrame, passes: dict[str, Pairs]) -> pl.DataFrame:
    """dup_of / dup_kind / dup_similarity for ranked rows: a cluster's label is its best (first) row."""
    n, pairs, labels = ranked.height, [], {}
    for kind, found in passes.items():
        pairs += found
        labels[kind] = near_duplicates.clusters(n, pairs)
    final = labels[list(passes)[-1]]
    similarity = {(i, j): s for found in passes.values() for i, j, s in found}
    ids = ranked["id"].to_list()
    dup_of, kinds, sims = [], [], []
    for index, winner in enumerate(final):
        joined = winner != index
        dup_of.append(ids[winner] if joined else None)
        kinds.append(next(k for k in passes if labels[k][index] == labels[k][winner]) if joined else None)
        sims.append(similarity.get((winner, index)) if joined else None)
    return ranked.with_columns(dup_of=pl.Series(dup_of, dtype=pl.String), dup_kind=pl.Series(kinds, dtype=pl.String),
                               dup_similarity=pl.Series(sims, dtype=pl.Float64))


def mark_contamination(kept: pl.DataFrame, evals: pl.DataFrame, params: params_module.DedupeParams) -> pl.DataFrame:
    found = near_duplicates.cross_pairs(task_texts(kept), task_texts(evals),
                                        near_params(params, params.contamination.threshold)) if evals.height else []
    best: dict[int, tuple[int, float]] = {}
    for i, j, similarity in found:
        if i not in best or similarity > best[i][1]:
            best[i] = (j, similarity)
    eval_ids = evals["id"].to_list() if evals.height else []
    return kept.with_columns(
        contaminated_by=pl.Series([eval_ids[best[i][0]] if i in best else None for i in range(kept.height)],
                                  dtype=pl.String),
        contamination_similarity=pl.Series([best[i][1] if i in best else None for i in range(kept.height)],
                                           dtype=pl.Float64))


def dedupe(scored: pl.DataFrame, params: params_module.DedupeParams, evals: pl.DataFrame | None = None,
           contaminated: Collection[str] = ()) -> pl.DataFrame:
    """Every row of ``scored``, marked (DEDUPED). ``contaminated``: ids of rows that share an n-gram with a benchmark
    item (distill/curate/decontaminate.py): kept rows among them are dropped as ``contaminated`` before the passes,
    so that such a row never stands for a cluster of clean ones."""
    benchmark_overlap = pl.col("keep") & pl.col("id").is_in(list(contaminated))
    scored = scored.with_columns(
        drop_reason=pl.when(benchmark_overlap).then(pl.lit("contaminated")).otherwise(pl.col("drop_reason")),
        keep=pl.col("keep") & ~benchmark_overlap)
    task = pl.concat_str([normalised("instruction", params), normalised("input", params)], separator="\x1f")
    keyed = scored.with_columns(
        # sha256 rather than polars' hash(): that one is not stable across polars versions; a chat seed's earlier
        # turns are part of its task (two chats ending "Spell it backwards." about two words are not duplicates)
        norm_hash=pl.when(pl.col("context").fill_null("") == "").then(task)
        .otherwise(pl.concat_str([normalised("context", params), task], separator="\x1f"))
        .map_elements(content_hash, return_dtype=pl.String)
    )
    ranked = keyed.filter(pl.col("keep")).sort(["quality", "id"], descending=[True, False])
    ranked = mark_duplicates(ranked, linked_pairs(ranked, params))
    ranked = mark_contamination(ranked, evals if evals is not None else pl.DataFrame(), params)
    marks = ranked.select("id", "dup_of", "dup_kind", "dup_similarity", "contaminated_by", "contamination_similarity")
    result = keyed.join(marks, on="id", how="left")
    is_dup = pl.col("dup_of").is_not_null()
    overlap = pl.col("contaminated_by").is_not_null() & (params.contamination.action == "drop")
    result = result.with_columns(
        keep=pl.col("keep") & ~is_dup & ~overlap,
        drop_reason=pl.when(is_dup).then(pl.lit("duplicate")).when(overlap).then(pl.lit("eval_overlap"))
        .otherwise(pl.col("drop_reason")),
    )
    return conform(result, DEDUPED)


def summarise(deduped: pl.DataFrame) -> dict:
    duplicates = deduped.filter(pl.col("drop_reason") == "duplicate")
    contaminated = deduped.filter(pl.col("contaminated_by").is_not_null())
    return {
        "rows_in": deduped.height,
        "kept": int(deduped["keep"].sum()),
        "duplicates_dropped": duplicates.height,
        "duplicates_by_kind": dict(duplicates["dup_kind"].value_counts().sort("dup_kind").iter_rows()),
        "duplicate_clusters": duplicates["dup_of"].n_unique(),
        "contaminated_rows": contaminated.height,
        "contaminated_ids": contaminated["id"].head(20).to_list(),
        "dropped_by_reason": dict(
            deduped.filter(~pl.col("keep"))["drop_reason"].value_counts().sort("drop_reason").iter_rows()
        ),
    }
