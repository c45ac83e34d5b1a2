"""distill/curate/semantic.py: embeddings of the bundled all-MiniLM-L6-v2, and index pairs against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from distill.curate import semantic

REVERSE = "How do I reverse a string in Python?"
REVERSE_TOO = "What's the way to reverse a Python string?"
UNRELATED = [
    "The cat slept on the warm windowsill all afternoon.",
    "Quarterly revenue grew by twelve percent in Europe.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return semantic.embed([REVERSE, REVERSE_TOO, *UNRELATED])


def random_set(rng: np.random.Generator, n: int, copies: int, dim: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """n random unit vectors, the last ``copies`` of them near copies (cosine ~0.95) of the first ones."""
    x = rng.standard_normal((n, dim))
    x[n - copies:] = x[:copies] + 0.33 * rng.standard_normal((copies, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), x


def exact_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def brute_force(left: np.ndarray, right: np.ndarray, threshold: float, upper: bool) -> list[tuple[int, int]]:
    cosine = left.astype(np.float64) @ right.astype(np.float64).T
    i, j = np.nonzero(cosine >= threshold)
    keep = i < j if upper else np.ones(len(i), dtype=bool)
    return list(zip(i[keep].tolist(), j[keep].tolist(), strict=True))


def test_paraphrases_pair_and_unrelated_sentences_do_not(vectors: np.ndarray) -> None:
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.9
    assert np.max(cosine[np.triu_indices(len(vectors), 1)][1:]) < 0.3  # every pair but (0, 1)
    pairs = semantic.semantic_pairs(vectors, 0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(float(cosine[0, 1]), abs=1e-6)


def test_embeddings_are_unit_norm_and_deterministic(vectors: np.ndarray) -> None:
    texts = [REVERSE, REVERSE_TOO, *UNRELATED]
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(semantic.embed(texts), vectors)
    # other batches and order: the same vectors up to float noise from padding
    np.testing.assert_allclose(semantic.embed(texts[::-1], batch_size=2)[::-1], vectors, atol=1e-5)


@pytest.mark.parametrize("exact_up_to", [semantic.EXACT_UP_TO, 0], ids=["flat", "ivf"])
def test_index_pairs_equal_brute_force(monkeypatch: pytest.MonkeyPatch, exact_up_to: int) -> None:
    monkeypatch.setattr(semantic, "EXACT_UP_TO", exact_up_to)  # 0: IVF, every list probed (550 rows -> 8 lists)
    x, _ = random_set(np.random.default_rng(0), 550, copies=50)
    pairs = semantic.semantic_pairs(x, 0.8)
    assert [(i, j) for i, j, _ in pairs] == brute_force(x, x, 0.8, upper=True)
    assert len(pairs) == 50
    assert all(cosine == pytest.approx(exact_cosine(x[i], x[j]), abs=1e-12) for i, j, cosine in pairs)


def test_unnormalised_input_is_compared_by_cosine() -> None:
    x, raw = random_set(np.random.default_rng(1), 100, copies=10)
    pairs = semantic.semantic_pairs(raw * np.arange(1, 101)[:, None], 0.8)  # rows of very different lengths
    assert [(i, j) for i, j, _ in pairs] == brute_force(x, x, 0.8, upper=True)


def test_cross_pairs_find_eval_rows_in_training_rows(vectors: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    right, _ = random_set(rng, 40, copies=0)
    left, _ = random_set(rng, 300, copies=0)
    left[[7, 8, 200]] = right[[3, 3, 39]] + 0.02 * rng.standard_normal((3, 384)).astype(np.float32)
    left /= np.linalg.norm(left, axis=1, keepdims=True)
    pairs = semantic.cross_pairs(left, right, 0.8)
    assert [(i, j) for i, j, _ in pairs] == brute_force(left, right, 0.8, upper=False) == [(7, 3), (8, 3), (200, 39)]
    eval_rows, train_rows = vectors[[1]], vectors[[2, 0, 3]]  # REVERSE_TOO held out; REVERSE in training
    assert [(i, j) for i, j, _ in semantic.cross_pairs(train_rows, eval_rows, 0.8)] == [(1, 0)]


def test_empty_and_single_inputs() -> None:
    empty = np.zeros((0, 384), dtype=np.float32)
    assert semantic.embed([]).shape == (0, 384)
    assert semantic.semantic_pairs(empty, 0.8) == []
    assert semantic.semantic_pairs(np.ones((1, 384), dtype=np.float32), 0.8) == []
    assert semantic.cross_pairs(empty, np.ones((3, 384), dtype=np.float32), 0.8) == []
    assert semantic.cross_pairs(np.ones((3, 384), dtype=np.float32), empty, 0.8) == []


def test_bad_arguments_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="threshold=1.5 is outside"):
        semantic.semantic_pairs(np.ones((2, 4), dtype=np.float32), 1.5)
    with pytest.raises(ValueError, match="neighbours=0"):
        semantic.cross_pairs(np.ones((2, 4)), np.ones((2, 4)), 0.8, neighbours=0)
    with pytest.raises(ValueError, match="4-d rows, right 5-d"):
        semantic.cross_pairs(np.ones((2, 4)), np.ones((2, 5)), 0.8)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        semantic.embed(["fine", None])  # type: ignore[list-item]
