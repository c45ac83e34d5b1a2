"""distill/curate/near_duplicates.py on literal texts: exact similarities, thresholds, cross pairs, clusters."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from distill.curate import near_duplicates as nd
from distill.curate.near_duplicates import NearDuplicateParams, clusters, cross_pairs, find_pairs, jaccard, shingles

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("model data system network energy water market policy city river forest teacher student language "
         "history science theory method result problem solution process design budget health memory signal "
         "engine planet garden kitchen recipe journey window letter story customer product service").split()


def sentence(seed: int, words: int = 20) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def brute_force(texts: list[str], params: NearDuplicateParams) -> dict[tuple[int, int], float]:
    sets = [shingles(t, params.ngram, params.unit) for t in texts]
    return {(i, j): jaccard(sets[i], sets[j]) for i, j in itertools.combinations(range(len(texts)), 2)
            if jaccard(sets[i], sets[j]) >= params.threshold}


def test_normalise_and_shingles() -> None:
    assert nd.normalise("  The\tQuick\n\nﬁsh  ") == "the quick fish"  # NFKC folds the ligature
    assert shingles("a b c d", 2) == {"a b", "b c", "c d"}
    assert shingles("A  b", 5) == {"a b"}  # shorter than ngram: the whole normalised text
    assert shingles("", 5) == {""}
    assert shingles("Abcd", 3, "char") == {"abc", "bcd"}
    assert shingles("ab", 3, "char") == {"ab"}


def test_planted_near_duplicates_are_found_with_their_exact_similarity() -> None:
    base = sentence(1)  # 20 words: 16 word 5-grams
    texts = [base, base + " extra", "  " + base.upper() + "  ", sentence(2), sentence(3)]
    assert find_pairs(texts) == [(0, 1, 16 / 17), (0, 2, 1.0), (1, 2, 16 / 17)]


def test_distinct_texts_give_no_pairs() -> None:
    texts = [sentence(seed) for seed in range(200)]
    assert find_pairs(texts) == []
    assert find_pairs(texts, NearDuplicateParams(unit="char")) == []


def test_threshold_is_respected() -> None:
    base = sentence(4).split()
    edited = " ".join(base[:-1] + ["zebra"])  # last 5-gram replaced: 15 shared of 17
    texts = [" ".join(base), edited]
    assert find_pairs(texts, NearDuplicateParams(threshold=0.88)) == [(0, 1, 15 / 17)]
    assert find_pairs(texts, NearDuplicateParams(threshold=0.89)) == []


def test_pairs_match_brute_force_on_varied_edits() -> None:
    rng = random.Random(7)
    texts = []
    for seed in range(40):
        words = sentence(100 + seed, 30).split()
        texts.append(" ".join(words))
        for edits in (1, 2, 4):
            copy = list(words)
            for _ in range(edits):
                copy[rng.randrange(len(copy))] = rng.choice(WORDS)
            texts.append(" ".join(copy))
    for threshold in (0.5, 0.7, 0.8, 0.9):
        params = NearDuplicateParams(threshold=threshold)
        truth = brute_force(texts, params)
        found = {(i, j): s for i, j, s in find_pairs(texts, params)}
        assert all(truth[pair] == similarity for pair, similarity in found.items())  # exact, never below
        sure = {pair for pair, s in truth.items() if s >= threshold + 0.1}  # missed with p < 1e-4 each
        assert sure <= set(found), threshold
        assert len(found) >= 0.95 * len(truth)


def test_char_unit_pairs_what_word_unit_keeps_apart() -> None:
    texts = ["reverse planet", "reverse planets"]
    assert find_pairs(texts) == []
    assert find_pairs(texts, NearDuplicateParams(unit="char")) == [(0, 1, 10 / 11)]


def test_cross_pairs_index_the_right_and_query_the_left() -> None:
    a, b, c = sentence(11), sentence(12), sentence(13)
    left = [a, a + " again", sentence(14), b]
    right = [sentence(15), b + " too", a]
    assert cross_pairs(left, right) == [(0, 2, 1.0), (1, 2, 16 / 17), (3, 1, 16 / 17)]  # not (0, 1) within left
    assert cross_pairs(left, [c]) == []
    assert cross_pairs([], right) == [] and cross_pairs(left, []) == []


def test_clusters_are_transitive_and_labelled_by_the_smallest_index() -> None:
    assert clusters(7, [(5, 6, 0.9), (2, 5, 0.8), (1, 3, 1.0)]) == [0, 1, 2, 1, 4, 2, 2]
    start = sentence(21, 40).split()  # 36 word 5-grams
    middle = start[:-3] + ["alpha", "beta", "gamma"]  # 3 of them changed at the end
    end = ["delta", "epsilon", "zeta"] + middle[3:]  # and 3 more at the start
    texts = [" ".join(start), " ".join(middle), " ".join(end)]
    pairs = find_pairs(texts)
    assert pairs == [(0, 1, 33 / 39), (1, 2, 33 / 39)]  # start and end: 30 / 42 < 0.8, linked through middle
    assert clusters(3, pairs) == [0, 0, 0]


def test_same_input_same_output_across_processes() -> None:
    texts = [sentence(seed % 30) + (" x" if seed >= 30 else "") for seed in range(60)]
    here = find_pairs(texts)
    script = ("import json, sys; from distill.curate.near_duplicates import find_pairs; "
              "print(json.dumps(find_pairs(json.loads(sys.stdin.read()))))")
    env = os.environ | {"PYTHONHASHSEED": "12345"}  # word hashes must not depend on Python's salted hash()
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True,
                         check=True, cwd=ROOT, env=env)
    assert [tuple(p) for p in json.loads(out.stdout)] == here == find_pairs(texts)
    assert len(here) == 30


def test_chunked_path_gives_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [sentence(seed % 25, 12 + seed % 7) for seed in range(75)] + ["", "", "short one"]
    whole = find_pairs(texts)
    monkeypatch.setattr(nd, "CHUNK_ROWS", 7)
    monkeypatch.setattr(nd, "VERIFY_BLOCK", 5)
    assert find_pairs(texts) == whole
    assert (77, 78, 1.0) not in whole and (75, 76, 1.0) in whole  # the two empty texts are equal


def test_empty_and_single_inputs() -> None:
    assert find_pairs([]) == [] and find_pairs(["only one"]) == []
    assert clusters(0, []) == [] and clusters(2, []) == [0, 1]


def test_params_are_validated_and_the_layout_favours_recall() -> None:
    with pytest.raises(ValueError, match="threshold=1.3 is outside"):
        NearDuplicateParams(threshold=1.3)
    with pytest.raises(ValueError, match="ngram=0"):
        NearDuplicateParams(ngram=0)
    assert NearDuplicateParams().layout == (16, 6)  # P(candidate | J = 0.8) = 0.992
    assert NearDuplicateParams(bands=20).layout == (20, 6)


def test_a_crowded_band_key_gives_the_same_pairs_from_far_fewer_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instances of one template with a long fixed preamble share band keys by the hundred; pairing every row of
    such a bucket made the candidates grow with the square of the rows. Prefix filtering (buckets over
    BUCKET_PAIRS_UP_TO rows) must give exactly the pairs that pairing them all gives."""
    rng = random.Random(3)
    preamble = "you are a careful assistant so read the question below and answer it in one short sentence"
    texts = [f"{preamble} why does the {rng.choice(WORDS)} {rng.choice(WORDS)} the {rng.choice(WORDS)}"
             for _ in range(800)]
    texts += [text.replace("short", "brief") for text in texts[:40]]  # near copies: 1 word in 24 changed
    eval_rows = texts[100:110] + [sentence(seed) for seed in range(10)]
    candidates: list[int] = []
    verify = nd._verify
    monkeypatch.setattr(nd, "_verify", lambda codes, *rest: candidates.append(len(codes)) or verify(codes, *rest))
    found = {}
    for cap in (10**9, nd.BUCKET_PAIRS_UP_TO, 1):  # every pair of a bucket; the default; prefix filtering always
        monkeypatch.setattr(nd, "BUCKET_PAIRS_UP_TO", cap)
        found[cap] = (find_pairs(texts), cross_pairs(texts, eval_rows))
    assert found[10**9] == found[nd.BUCKET_PAIRS_UP_TO] == found[1]
    pairs, cross = found[1]
    assert len(pairs) >= 40 and len(cross) >= 10  # the copies and the eval rows copied from texts
    assert candidates[2] * 10 < candidates[0], candidates  # find_pairs' candidates: all pairs of a bucket vs prefix
