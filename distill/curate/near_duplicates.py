"""Near-duplicate texts: MinHash LSH (rensa) finds candidates, the exact Jaccard of the shingle sets decides.

Pure functions, no I/O; stages/dedupe.py calls them for the ``near`` pass and the contamination check.
Benchmark (precision, recall, speed against datasketch, 1M rows' memory): ``python benchmarks/dedupe.py``.

Similarity is the Jaccard of two texts' shingle sets after ``normalise`` (NFKC, lower case, whitespace
collapsed). Texts shorter than ``ngram`` units are one shingle, the whole normalised text, so they match
only texts equal to them after normalisation.

Shingles: word n-grams by default (``unit="word"``), character n-grams with ``unit="char"``. Measured at
threshold 0.8 on 20k synthetic instruction/response rows of about 50 words (``unit_study`` in
benchmarks/results/dedupe.json): a copy with one edited word is found 45-58 % of the time with word
5-grams, 86 % with char 9-grams, 96 % with char 5-grams; among 15k distinct instructions, word 5-grams
pair 241 (all from one template with a long fixed preamble), char 9-grams 258, char 5-grams 1,181; among
2.8k distinct short instructions ("reverse <word>", "add 3 and 4", "Is 17 a prime number?"), word n-grams
pair none, char 9-grams 2, char 5-grams 20. Words are the default because the dedupe stage judges the
instruction + input, often a short task where one changed word or character is a different task
("reverse planet" / "reverse planets": 0.91 with char 5-grams, no shingle shared with word 5-grams), and
dropping a distinct task as a "duplicate" is silent. The price is recall on long rows: at 0.8, word
5-grams miss about half of the copies that differ by a single word in 50. Where recall matters more than
keeping short tasks apart (long texts, a contamination check that a person reviews), ``unit="char",
ngram=9`` found more copies at about the same rate of false pairs on long rows.

How a pair is found (``find_pairs``; ``cross_pairs`` likewise across two lists):
1. each row's shingles are hashed to 64 bits (words split and hashed by polars, n-grams mixed from their
   words' hashes in NumPy), a chunk of rows at a time so the Python-side lists stay small;
2. rensa computes MinHash digests from the flat hash buffer (``digest_matrix_from_flat_token_hashes``)
   and flags every row that shares an LSH band with another row (``query_duplicate_flags_matrix_one_shot``;
   ``cross_pairs``: ``insert_matrix`` + ``query_duplicate_flags_matrix``);
3. only flagged rows' digests are read back into NumPy, where equal band keys give the candidate pairs; a key
   shared by more than BUCKET_PAIRS_UP_TO rows (instances of one template with a long fixed part) gives only
   the pairs that prefix filtering cannot rule out, so the candidates grow with the near-duplicates, not with
   the square of a template's rows (``_candidates``);
4. every candidate gets the exact Jaccard of its two shingle sets (the strings from ``shingles``), so no
   pair below the threshold is returned and every similarity returned is exact. Recall depends on the
   banding: with the default layout a pair at exactly the threshold is a candidate with probability
   >= 0.99, a more similar pair more often still.

Steps 3 and 4, and ``clusters``, are written here because rensa 0.5.0 has no LSH query that takes a digest
matrix and returns candidate keys (only flags), no NumPy view of a digest matrix, no exact verification
and no union-find.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import polars as pl
import rensa

Unit = Literal["word", "char"]
Pair = tuple[int, int, float]

LSH_RECALL_AT_THRESHOLD = 0.99  # the default banding makes a pair at exactly the threshold a candidate this often
CHUNK_ROWS = 50_000  # rows tokenised and sketched at a time: bounds the Python lists, so 1M rows fit in memory
VERIFY_BLOCK = 20_000  # candidate pairs verified per block; shingle sets are cached within a block only
BUCKET_PAIRS_UP_TO = 64  # rows sharing a band key: up to this many, every pair is a candidate; above, prefix filtering

_U64 = np.uint64
_MIX1, _MIX2 = _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53)  # murmur3's 64-bit finaliser
_STEP = _U64(0x9E3779B97F4A7C15)  # odd 64-bit constant: chains the hashes of an n-gram's units, in order


@dataclass(frozen=True)
class NearDuplicateParams:
    """How near-duplicates are found.

    ngram: shingle length in ``unit``s (>= 1); texts with fewer units are one shingle (the whole text).
    num_perm: the most MinHash permutations to use (>= 1). The LSH uses ``bands * rows`` of them; no more
        are computed because similarities are never estimated from the sketch (they are exact).
    threshold: the Jaccard similarity, in (0, 1], a pair must reach to count as near-duplicate.
    bands: LSH bands. ``None`` picks (bands, rows) with ``bands * rows <= num_perm`` that makes a pair at
        exactly ``threshold`` a candidate with probability >= LSH_RECALL_AT_THRESHOLD and, among those, the
        fewest candidates below the threshold (recall first: a false candidate only costs one exact check).
        For threshold 0.8 and 128 permutations that is 16 bands of 6 rows. Given, rows = num_perm // bands.
    seed: the MinHash permutations' seed. Output is deterministic for a given seed; another seed can change
        which pairs near the threshold are found, never the similarity reported.
    unit: "word" (default) or "char" n-grams; see the module docstring for why words.
    """

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    seed: int = 0
    unit: Unit = "word"

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ValueError(f"ngram={self.ngram} is below 1: it is the shingle length in {self.unit}s; use 1 or more")
        if self.num_perm < 1:
            raise ValueError(f"num_perm={self.num_perm} is below 1: MinHash needs permutations; 128 is usual")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold} is outside (0, 1]: it is a Jaccard similarity "
                             "(0 would pair every row with every other); 0.8 is usual")
        if self.bands is not None and not 1 <= self.bands <= self.num_perm:
            raise ValueError(f"bands={self.bands} is outside [1, num_perm={self.num_perm}]: each band needs at least "
                             "one permutation; leave it None to choose from the threshold")
        if self.unit not in ("word", "char"):
            raise ValueError(f"unit={self.unit!r} is neither 'word' nor 'char': the shingle unit")

    @property
    def layout(self) -> tuple[int, int]:
        """(bands, rows per band) of the LSH."""
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        return lsh_layout(self.threshold, self.num_perm)


@lru_cache(maxsize=64)
def lsh_layout(threshold: float, num_perm: int, recall: float = LSH_RECALL_AT_THRESHOLD) -> tuple[int, int]:
    """(bands, rows): P(candidate | J = threshold) >= recall, then the least false-candidate area below it.

    A pair of Jaccard s shares a band with probability 1 - (1 - s**r)**b. Like datasketch's
    ``_optimal_param`` this integrates that curve below the threshold (false candidates), but instead of
    trading it against misses it requires ``recall`` at the threshold; when no layout reaches it (very low
    thresholds), the layout with the highest probability there wins.
    """
    grid = np.linspace(0.0, threshold, 512)
    best: tuple[float, float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            at_threshold = 1 - (1 - threshold**rows) ** bands
            false_area = float(np.trapezoid(1 - (1 - grid**rows) ** bands, grid))
            key = (-min(at_threshold, recall), false_area, bands, rows)
            if best is None or key < best:
                best = key
    assert best is not None
    return best[2], best[3]


# --- text -> shingles (the definition; the hashed fast path below must agree with it) ---------------------

def _words(text: str) -> list[str]:
    return (text if text.isascii() else unicodedata.normalize("NFKC", text)).lower().split()  # ASCII is NFKC


def normalise(text: str) -> str:
    """NFKC, lower case, every run of whitespace one space, no leading or trailing space."""
    return " ".join(_words(text))


def shingles(text: str, ngram: int, unit: Unit = "word") -> set[str]:
    """The n-grams (of words or characters) of the normalised text; a shorter text is one shingle, itself."""
    if unit == "char":
        norm = normalise(text)
        if len(norm) <= ngram:
            return {norm}
        return {norm[i:i + ngram] for i in range(len(norm) - ngram + 1)}
    words = _words(text)
    if len(words) <= ngram:
        return {" ".join(words)}
    return {" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


# --- hashed shingles in NumPy ---------------------------------------------------------------------------

def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _MIX1
    h = h ^ (h >> _U64(33))
    h = h * _MIX2
    return h ^ (h >> _U64(33))


_SPACES = [chr(c) for c in range(0x3001) if chr(c).isspace()]  # what str.split() splits on (none above U+3000)


def _word_tokens(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every word's 64-bit hash, flat, and each row's word count: ``_words`` for a whole chunk at once.

    NFKC and lower case stay in Python (the Unicode tables ``shingles`` uses); polars splits (every
    ``isspace`` character to a space, split on spaces, empty strings out) and hashes in Rust, twice as fast
    as a Python split and word lookup. Its hash is fixed for a given seed (unlike Python's salted hash()); it
    may change between polars versions, which moves which pairs near the threshold the LSH proposes, never
    a similarity.
    """
    lowered = [(t if t.isascii() else unicodedata.normalize("NFKC", t)).lower() for t in texts]
    try:
        series = pl.Series(lowered, dtype=pl.String)
    except UnicodeEncodeError:  # lone surrogates cannot go to polars: hash a stand-in (the check is exact anyway)
        series = pl.Series([t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for t in lowered],
                           dtype=pl.String)
    pieces = series.str.replace_many(_SPACES, [" "] * len(_SPACES)).str.split(" ")
    lengths = (pieces.list.len() - pieces.list.count_matches("")).to_numpy().astype(np.int64)
    words = pieces.explode()
    hashes = words.filter(words != "").hash(seed=0).to_numpy().astype(_U64)
    if len(hashes) != int(lengths.sum()):
        raise RuntimeError(f"polars split {len(texts)} texts into {len(hashes)} words but counted {lengths.sum()}")
    return _fmix(hashes), lengths


def _char_tokens(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    norms = [normalise(text) for text in texts]
    lengths = np.fromiter((len(s) for s in norms), dtype=np.int64, count=len(norms))
    points = np.frombuffer("".join(norms).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(_U64)
    return _fmix(points + _STEP), lengths


def _shingle_hashes(tokens: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every shingle (the same sets as ``shingles``, hashed), flat, and each row's count."""
    counts = np.maximum(lengths - ngram + 1, 1)  # a short (or empty) row is one shingle: all its units
    row_first_token = np.cumsum(lengths) - lengths
    row_first_shingle = np.cumsum(counts) - counts
    out = np.empty(int(counts.sum()), dtype=_U64)
    long = lengths >= ngram
    if len(tokens) >= ngram:  # every window of `ngram` flat tokens, then the ones inside a row
        window = np.full(len(tokens) - ngram + 1, _fmix(np.full(1, ngram, dtype=_U64) + _STEP)[0], dtype=_U64)
        for k in range(ngram):
            window = (window ^ tokens[k:len(tokens) - ngram + 1 + k]) * _STEP
        shift = np.repeat((row_first_token - row_first_shingle)[long], counts[long])
        at = np.repeat(row_first_shingle[long], counts[long])
        at += np.arange(len(at), dtype=np.int64) - np.repeat(np.cumsum(counts[long]) - counts[long], counts[long])
        out[at] = window[at + shift]
    short = np.flatnonzero(~long)
    if len(short):  # the whole row: its length goes in, so the shingle is no n-gram's
        h = _fmix(lengths[short].astype(_U64) + _STEP)
        for k in range(ngram - 1):
            inside = lengths[short] > k
            h[inside] = (h[inside] ^ tokens[row_first_token[short][inside] + k]) * _STEP
        out[row_first_shingle[short]] = h
    return _fmix(out), counts


@dataclass
class _Shingled:
    """One list of texts as hashed shingles: ``hashes[offsets[k]:offsets[k + 1]]`` are row k's."""

    start: int  # global id of row 0 (cross_pairs numbers left then right)
    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # uint64, len(rows) + 1

    def matrix(self, perms: int, seed: int) -> rensa.RMinHashDigestMatrix:
        return rensa.RMinHash.digest_matrix_from_flat_token_hashes(self.hashes, self.offsets, perms, seed)

    def digests(self, rows: np.ndarray, perms: int, seed: int) -> tuple[np.ndarray, rensa.RMinHashDigestMatrix]:
        """Some rows' digests as a (len(rows), perms) uint32 array, and the same as a rensa matrix.

        Written by hand: a rensa digest matrix can be neither sliced nor viewed from NumPy, and ``to_rows``
        builds a Python int per value (about 30 us a row), so only these rows are recomputed (Rust, cheap)
        and read back.
        """
        picked, counts = self.tokens(rows)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(picked, _offsets(counts), perms, seed)
        if not len(rows):
            return np.zeros((0, perms), dtype=np.uint32), matrix
        return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(rows), perms), matrix

    def tokens(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Some rows' (local indices) shingle hashes, flat, and each one's count."""
        begin = self.offsets[rows].astype(np.int64)
        counts = self.offsets[rows + 1].astype(np.int64) - begin
        sub_first = np.cumsum(counts) - counts
        return self.hashes[np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(begin - sub_first, counts)], counts

    def row_set(self, row: int) -> set[int]:
        """Row ``row``'s (local index) shingle hashes as a set."""
        return set(self.hashes[int(self.offsets[row]):int(self.offsets[row + 1])].tolist())


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=_U64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _shingled(texts: Sequence[str], start: int, params: NearDuplicateParams) -> _Shingled:
    """Tokenised a chunk at a time (bounded Python lists), then copied into one array chunk by chunk."""
    parts, counts = [], []
    for first in range(0, len(texts), CHUNK_ROWS):
        part = texts[first:first + CHUNK_ROWS]
        tokens, lengths = _word_tokens(part) if params.unit == "word" else _char_tokens(part)
        hashes, part_counts = _shingle_hashes(tokens, lengths, params.ngram)
        parts.append(hashes)
        counts.append(part_counts)
    offsets = _offsets(np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64))
    flat = np.empty(int(offsets[-1]), dtype=_U64)
    at = 0
    parts.reverse()
    while parts:  # each part freed once copied, so the peak is one copy plus a part
        part = parts.pop()
        flat[at:at + len(part)] = part
        at += len(part)
        del part
    return _Shingled(start, flat, offsets)


# --- candidates -----------------------------------------------------------------------------------------

def _band_keys(digests: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's slice of the digest, the same contiguous slices as rensa's."""
    keys = np.empty((len(digests), bands), dtype=_U64)
    for b in range(bands):
        h = np.full(len(digests), _STEP, dtype=_U64)
        for col in digests[:, b * rows:(b + 1) * rows].T:
            h = (h ^ col.astype(_U64)) * _STEP
        keys[:, b] = _fmix(h)
    return keys


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position of sorted keys: its run's index, the run's first position and the position after its last."""
    new_run = np.ones(len(sorted_keys), dtype=bool)
    new_run[1:] = sorted_keys[1:] != sorted_keys[:-1]
    run = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    return run, starts[run], np.append(starts[1:], len(sorted_keys))[run]


def _spans(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) positions: each position a paired with positions first[a] .. first[a] + count[a] - 1."""
    a = np.repeat(np.arange(len(count)), count)
    return a, np.repeat(first - np.cumsum(count) + count, count) + np.arange(len(a))


def _codes(a: np.ndarray, b: np.ndarray, total: int) -> np.ndarray:
    a, b = a.astype(_U64), b.astype(_U64)
    return np.unique(np.minimum(a, b) * _U64(total) + np.maximum(a, b))


def _equal_key_pairs(keys: np.ndarray, ids: np.ndarray, total: int, boundary: int | None = None) -> np.ndarray:
    """Every pair of rows with equal keys, as sorted unique codes ``i * total + j`` (i < j). With ``boundary``,
    only the pairs of a row below it and a row at or above it (cross_pairs: left ids, then right ids)."""
    side = np.zeros(len(ids), dtype=np.int64) if boundary is None else (ids >= boundary).astype(np.int64)
    order = np.lexsort((side, keys))  # by key; within a key, the left side's rows first
    ids, side = ids[order], side[order]
    run, run_start, run_end = _runs(keys[order])
    if boundary is None:  # each row with every later row of its run
        a, b = _spans(np.arange(len(ids)) + 1, run_end - np.arange(len(ids)) - 1)
    else:  # each right row with every left row of its run
        lefts = np.bincount(run, weights=1 - side)[run].astype(np.int64) if len(run) else run
        a, b = _spans(run_start, np.where(side == 1, lefts, 0))
    return _codes(ids[a], ids[b], total)


def _prefix_pairs(hashes: np.ndarray, counts: np.ndarray, ids: np.ndarray, total: int, threshold: float,
                  boundary: int | None) -> np.ndarray:
    """Every pair of the rows ``ids`` (shingle hashes ``hashes``, ``counts`` a row) that can reach ``threshold``
    by the prefix filter, as codes like ``_equal_key_pairs`` (with ``boundary``, across it only).

    Prefix filtering (Chaudhuri et al. 2006; Bayardo et al. 2007; the shorter prefix of the smaller set from
    Xiao et al. 2008, PPJoin): with every row's distinct tokens in one global order, two sets x and y, |y| <= |x|,
    of Jaccard >= t share o >= t |x| >= 2t / (1 + t) |y| tokens, so their first common token is among x's first
    |x| - ceil(t |x|) + 1 and among y's first |y| - ceil(2t / (1 + t) |y|) + 1. The order is rarest first: a
    shingle that many rows share (a template's fixed preamble) comes last, out of the prefixes, and pairs no rows
    by itself.
    """
    row = np.repeat(np.arange(len(ids)), counts)
    order = np.lexsort((hashes, row))
    row, token = row[order], hashes[order]
    distinct = np.ones(len(token), dtype=bool)
    distinct[1:] = (token[1:] != token[:-1]) | (row[1:] != row[:-1])
    row, token = row[distinct], token[distinct]
    _, inverse, frequency = np.unique(token, return_inverse=True, return_counts=True)
    order = np.lexsort((token, frequency[inverse.ravel()], row))  # each row's tokens, rarest first
    row, token = row[order], token[order]
    size = np.bincount(row, minlength=len(ids))
    rank = np.arange(len(row)) - (np.cumsum(size) - size)[row]

    def prefix(overlap: float) -> np.ndarray:  # 1e-9: never one token short
        return size - np.ceil(overlap * size - 1e-9).astype(np.int64) + 1

    inside = rank < prefix(threshold)[row]
    smaller = (rank < prefix(2 * threshold / (1 + threshold))[row])[inside]
    token, row = token[inside], row[inside]
    order = np.lexsort((ids[row], size[row], token))  # by token; within one, smaller sets first
    token, row, smaller = token[order], row[order], smaller[order]
    _, _, run_end = _runs(token)
    # each row as the smaller set, on its shorter prefix, with every later row of the token's run
    a, b = _spans(np.arange(len(row)) + 1, np.where(smaller, run_end - np.arange(len(row)) - 1, 0))
    a, b = ids[row[a]], ids[row[b]]
    if boundary is not None:
        a, b = a[(a < boundary) != (b < boundary)], b[(a < boundary) != (b < boundary)]
    return _codes(a, b, total)


def _candidates(keys: np.ndarray, ids: np.ndarray, total: int, tokens: Callable[[np.ndarray], tuple],
                threshold: float, boundary: int | None = None) -> np.ndarray:
    """Codes (``_equal_key_pairs``) of every pair of rows that share a band key and could reach the threshold.

    A band key shared by up to BUCKET_PAIRS_UP_TO rows makes each pair of them a candidate. A larger bucket
    (a template whose instances share most shingles: k rows would make k(k - 1) / 2 candidates, most of them
    far below the threshold, so the time grew with the square of the rows) goes through ``_prefix_pairs``
    instead, and a pair it gives is kept when the two rows share a band key: the same pairs reach the exact
    check as from every pair of the bucket, less those that cannot reach the threshold. ``tokens(ids)`` gives
    rows' shingle hashes and counts; ``ids`` ascend.
    """
    codes, crowded = [np.zeros(0, dtype=_U64)], np.zeros(len(ids), dtype=bool)
    for b in range(keys.shape[1]):
        _, inverse, sizes = np.unique(keys[:, b], return_inverse=True, return_counts=True)
        size = sizes[inverse.ravel()]
        few = size <= BUCKET_PAIRS_UP_TO
        codes.append(_equal_key_pairs(keys[few, b], ids[few], total, boundary))
        crowded |= ~few
    if crowded.any():
        hashes, counts = tokens(ids[crowded])
        found = _prefix_pairs(hashes, counts, ids[crowded], total, threshold, boundary)
        i = np.searchsorted(ids, (found // _U64(total)).astype(np.int64))
        j = np.searchsorted(ids, (found % _U64(total)).astype(np.int64))
        codes.append(found[(keys[i] == keys[j]).any(axis=1)])  # proposed by the LSH: a band key in common
    return np.unique(np.concatenate(codes))


def _verify(codes: np.ndarray, total: int, hashed: Callable[[int], set[int]], text: Callable[[int], str],
            params: NearDuplicateParams) -> list[Pair]:
    """Exact Jaccard of each candidate's shingle sets (by hand: rensa only estimates it from digests).

    The sets of 64-bit shingle hashes go first, and only pairs that reach the threshold there are checked on
    the shingle strings, whose Jaccard is the one returned. Hashing can merge two shingles only on a 64-bit
    collision (p < 1e-15 for a pair of 100-shingle texts), the one way a pair above the threshold could be
    skipped; a pair below it is never returned.
    """
    pairs: list[Pair] = []
    threshold, ngram, unit = params.threshold, params.ngram, params.unit
    for block in range(0, len(codes), VERIFY_BLOCK):
        hashes: dict[int, set[int]] = {}
        strings: dict[int, set[str]] = {}
        for code in codes[block:block + VERIFY_BLOCK].tolist():
            i, j = divmod(code, total)
            a, b = hashes.get(i), hashes.get(j)
            if a is None:
                a = hashes[i] = hashed(i)
            if b is None:
                b = hashes[j] = hashed(j)
            if min(len(a), len(b)) < threshold * max(len(a), len(b)):
                continue  # J <= min/max size: below the threshold without intersecting
            inter = len(a & b)
            if inter < threshold * (len(a) + len(b) - inter):
                continue
            x, y = strings.get(i), strings.get(j)
            if x is None:
                x = strings[i] = shingles(text(i), ngram, unit)
            if y is None:
                y = strings[j] = shingles(text(j), ngram, unit)
            similarity = jaccard(x, y)
            if similarity >= threshold:
                pairs.append((i, j, similarity))
    return pairs


@dataclass
class _Flagged:
    """Rows rensa flagged as sharing an LSH band with another row: global ids, band keys, digest matrices."""

    ids: np.ndarray
    keys: np.ndarray
    matrices: list[rensa.RMinHashDigestMatrix]


def _flagged(side: _Shingled, flags: Sequence[bool], params: NearDuplicateParams) -> _Flagged:
    bands, rows = params.layout
    flagged = np.flatnonzero(np.asarray(flags, dtype=bool))
    keys, matrices = [np.zeros((0, bands), dtype=_U64)], []
    for first in range(0, len(flagged), CHUNK_ROWS):  # bounds to_rows' Python ints
        digests, matrix = side.digests(flagged[first:first + CHUNK_ROWS], bands * rows, params.seed)
        keys.append(_band_keys(digests, bands, rows))
        matrices.append(matrix)
    return _Flagged(flagged + side.start, np.concatenate(keys), matrices)


def _index(matrices: Sequence[rensa.RMinHashDigestMatrix], params: NearDuplicateParams, copies: int
           ) -> rensa.RMinHashLSH:
    """A rensa LSH over digest matrices, each row under ``copies`` distinct keys."""
    bands, rows = params.layout
    index = rensa.RMinHashLSH(params.threshold, bands * rows, bands)
    key = 0
    for _ in range(copies):
        for matrix in matrices:
            index.insert_matrix(matrix, start_key=key)
            key += matrix.len()
    return index


# --- public ---------------------------------------------------------------------------------------------

def find_pairs(texts: Sequence[str], params: NearDuplicateParams = NearDuplicateParams()) -> list[Pair]:
    """All (i, j, jaccard), i < j, sorted, whose exact shingle Jaccard reaches the threshold and that the LSH
    proposes. k identical texts give k * (k - 1) / 2 pairs: collapse exact twins first where k can be large."""
    total = len(texts)
    if total < 2:
        return []
    bands, rows = params.layout
    side = _shingled(texts, 0, params)
    # one pass in rensa over all rows, no index kept: flagged = shares a band with at least one other row
    flags = rensa.RMinHashLSH(params.threshold, bands * rows, bands).query_duplicate_flags_matrix_one_shot(
        side.matrix(bands * rows, params.seed))
    flagged = _flagged(side, flags, params)
    del flags
    codes = _candidates(flagged.keys, flagged.ids, total, side.tokens, params.threshold)
    return _verify(codes, total, side.row_set, texts.__getitem__, params)


def cross_pairs(left: Sequence[str], right: Sequence[str], params: NearDuplicateParams = NearDuplicateParams()
                ) -> list[Pair]:
    """All (i, j, jaccard), i indexing ``left`` and j ``right``, sorted, whose exact shingle Jaccard reaches the
    threshold and that the LSH proposes. ``right`` is indexed and ``left`` queried (contamination check:
    left = training rows, right = eval rows). Pairs within one side are not looked for."""
    if not left or not right:
        return []
    bands, rows = params.layout
    perms, total = bands * rows, len(left) + len(right)  # global ids: left 0..L-1, right L..L+R-1
    right_side = _shingled(right, len(left), params)
    right_matrix = right_side.matrix(perms, params.seed)
    # Every indexed row goes in under two keys, so that a single match on the other side is "more than one
    # candidate" for query_duplicate_flags_matrix: rensa 0.5.0 has no "any candidate" flag, and its one-shot
    # flags also count matches inside the queried matrix (left against left).
    left_side = _shingled(left, 0, params)
    queried = _flagged(left_side, _index([right_matrix], params, copies=2).query_duplicate_flags_matrix(
        left_side.matrix(perms, params.seed)), params)
    if not len(queried.ids):
        return []
    matched = _flagged(right_side, _index(queried.matrices, params, copies=2).query_duplicate_flags_matrix(
        right_matrix), params)
    del right_matrix

    def tokens(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # ids ascend: the left rows', then the right's
        on_left = ids < len(left)
        (a, a_counts), (b, b_counts) = left_side.tokens(ids[on_left]), right_side.tokens(ids[~on_left] - len(left))
        return np.concatenate([a, b]), np.concatenate([a_counts, b_counts])

    codes = _candidates(np.concatenate([queried.keys, matched.keys]), np.concatenate([queried.ids, matched.ids]),
                        total, tokens, params.threshold, boundary=len(left))

    def hashed(k: int) -> set[int]:
        return left_side.row_set(k) if k < len(left) else right_side.row_set(k - len(left))

    def text(k: int) -> str:
        return left[k] if k < len(left) else right[k - len(left)]

    return [(i, j - len(left), similarity) for i, j, similarity in _verify(codes, total, hashed, text, params)]


def clusters(n: int, pairs: Sequence[tuple[int, int, float]] | Sequence[tuple[int, int]]) -> list[int]:
    """Connected components of the pair graph over rows 0..n-1: each row's label is the smallest index in
    its component (a row in no pair is its own). Union-find by hand (rensa has none): the smaller root
    always wins, so a root is its component's minimum."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for pair in pairs:
        a, b = root(pair[0]), root(pair[1])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(x) for x in range(n)]
