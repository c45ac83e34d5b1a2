"""Is a new input a near duplicate of one we already have? Checked before paying for its answer.

Texts are normalised (lower case, single spaces) and compared as sets of character 3-grams.
Candidates come from a MinHash LSH index (``rensa``, Rust-backed), tuned to catch pairs well
below the threshold; each candidate is then confirmed with the exact Jaccard similarity, so
the decision (and the similarity reported with it) is exact, not a sketch's estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from rensa import RMinHash, RMinHashLSH

NUM_PERM = 128
NUM_BANDS = 32  # 4 rows per band: pairs at Jaccard 0.5 are candidates with probability ~0.88, at 0.7 ~1.0
NGRAM = 3


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def shingles(text: str) -> set[str]:
    text = normalise(text)
    return {text[i : i + NGRAM] for i in range(max(len(text) - NGRAM + 1, 1))}


def jaccard(left: set[str], right: set[str]) -> float:
    return len(left & right) / len(left | right) if left or right else 1.0


@dataclass(frozen=True)
class Match:
    text: str  # the existing text it near-duplicates
    similarity: float  # exact Jaccard of the 3-gram sets


class NoveltyIndex:
    """Texts seen so far; ``nearest`` finds one at or above ``threshold``, ``add`` remembers a text."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.lsh = RMinHashLSH(threshold=threshold, num_perm=NUM_PERM, num_bands=NUM_BANDS)
        self.texts: list[str] = []
        self.sets: list[set[str]] = []

    def _minhash(self, grams: set[str]) -> RMinHash:
        minhash = RMinHash(num_perm=NUM_PERM, seed=42)
        minhash.update(sorted(grams))
        return minhash

    def nearest(self, text: str) -> Match | None:
        grams = shingles(text)
        best: Match | None = None
        for index in self.lsh.query(self._minhash(grams)):
            similarity = jaccard(grams, self.sets[index])
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Match(self.texts[index], round(similarity, 4))
        return best

    def add(self, text: str) -> None:
        grams = shingles(text)
        self.lsh.insert(len(self.texts), self._minhash(grams))
        self.texts.append(text)
        self.sets.append(grams)

    def add_all(self, texts: list[str]) -> None:
        for text in texts:
            self.add(text)
