"""Benchmark decontamination: which training rows share a word n-gram with an item of a standard benchmark.

``load_benchmark`` reads one ``benchmarks.sets`` entry (JSONL or parquet); the rest is pure. stages/dedupe.py
drops the rows ``find_matches`` returns (``dedupe.decontaminate.action: drop``) or fails naming them (``fail``).
Benchmark (10^6 rows against 10^5 items, time and peak memory): ``python benchmarks/decontaminate.py``.

What is compared: each benchmark item's ``fields`` (benchmarks.sets[].fields), each on its own, against each of a
training row's texts (``ROW_TEXTS`` present in the frame: earlier chat turns, instruction, input, the answer and
the reasoning), each on its own, so no n-gram spans two fields or two columns. Both sides go through ``words``:
NFKC, lower case, and every run of characters that are not letters, digits or marks is one word break, so
spacing, case and punctuation do not matter ("X=5,  then" and "x = 5 then" are the same three words). That is
stricter than lm-evaluation-harness, which deletes punctuation ("x=5" -> "x5"): a question pasted with other
spacing around its symbols still matches; the price is that "don't" and "dont" differ. Text without spaces
between words (Chinese, Japanese) is one word per run of letters.

The rule: a row is contaminated when one of its texts contains ``ngram`` consecutive words that also occur
consecutively in a field of an item (13 as lm-evaluation-harness and GPT-3, 8 as open-r1). A field shorter than
``ngram`` words is one gram, the whole field, and matches a row text that contains all its words consecutively
(a two-word demo question "upper qphuw" matches "Upper  QPHUW, please" but neither "upper qphuwx" nor "upper
this qphuw"). A field of fewer than MIN_WORDS words is not checked: a one-word answer ("B", "4", "Paris") would
match every row that uses the word; it is counted in the summary as ``short_texts_skipped``. Short answers of a
few words still match every row that contains them: list in ``fields`` only text that identifies an item.

How, at 10^6 rows x 10^5 items (benchmarks/results/decontaminate.json): polars splits and hashes the words (Rust,
both cores); the hash of every window of k words is a polynomial in the words' 64-bit hashes, taken from prefix
sums in NumPy (4 array operations per window length, whatever k); a bit table of the items' gram hashes drops
almost every window with one lookup, and the few left are looked up exactly in the items' sorted hashes. Rows go
a chunk at a time, so memory does not grow with the rows. Only matched rows are split again in Python, to
recover the shared words. Two different grams share a 64-bit hash with probability about 2^-64 per pair: about
10^-5 for 10^8 windows against 10^7 grams.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from distill.entry import StageError
from distill.params import BenchmarkSet, DecontaminateParams

ROW_TEXTS = ("context", "instruction", "input", "response", "reasoning")  # a row's texts checked, where present
MIN_WORDS = 2  # an item field of fewer words is not checked (a one-word answer matches every row using the word)
CHUNK_ROWS = 50_000  # training rows per chunk: bounds the word arrays (about 110 words a row: 5.5M words)
SAMPLES = 5  # sample matches per benchmark in the summary
_NOT_WORD = r"[^\p{L}\p{N}\p{M}]+"  # a run of anything else is a word break

_U64 = np.uint64
_BASE = 0x9E3779B97F4A7C15  # odd, so invertible mod 2^64: a window's hash from prefix sums needs its inverse
_BASE_INV = pow(_BASE, -1, 2**64)
_MIX = 0xC4CEB9FE1A85EC53  # murmur3's constant: the salt that keeps windows of different lengths apart


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's items: ``item_ids`` (the items' ``id`` field, else their row number) and, per checked
    field, one text per item."""

    name: str
    path: str
    item_ids: list[str]
    fields: dict[str, list[str | None]]


def load_benchmark(entry: BenchmarkSet, root: Path = Path(".")) -> Benchmark:
    """A ``benchmarks.sets`` entry's items, read from its JSONL or parquet file (relative to ``root``)."""
    path = root / entry.path
    where = f"benchmarks.sets[{entry.name}].path"
    if not path.is_file():
        raise StageError(f"{where}: {entry.path} does not exist: its items cannot be decontaminated against; "
                         "put the file there (data/benchmarks is tracked by DVC) or fix the path in params.yaml")
    if path.suffix == ".parquet":
        items = pl.read_parquet(path)
    elif path.suffix in (".jsonl", ".json", ".ndjson"):
        items = pl.read_ndjson(path, infer_schema_length=None)
    else:
        raise StageError(f"{where}: {entry.path} is neither JSONL (.jsonl) nor parquet (.parquet)")
    missing = [field for field in entry.fields if field not in items.columns]
    if missing:
        raise StageError(f"{where}: {entry.path} has no field {missing[0]!r} (benchmarks.sets[{entry.name}].fields "
                         f"asks for {entry.fields}; its items have {items.columns}): name fields the file has")
    ids = (items["id"].cast(pl.String) if "id" in items.columns else pl.Series([str(i) for i in range(items.height)]))
    return Benchmark(entry.name, entry.path, ids.to_list(),
                     {field: _as_text(items[field]).to_list() for field in entry.fields})


def _as_text(column: pl.Series) -> pl.Series:
    """A field as text: strings as they are, a list of strings (answer choices) joined, anything else as written."""
    if column.dtype == pl.String:
        return column
    if column.dtype == pl.List(pl.String):
        return column.list.join("\n")
    return column.cast(pl.String, strict=False) if column.dtype.is_primitive() else column.map_elements(
        str, return_dtype=pl.String)


# --- text -> words -> window hashes ---------------------------------------------------------------------------

def words(texts: pl.Series) -> pl.Series:
    """Each text's words (list[str]): NFKC, lower case, split at every run of non-letters, non-digits, non-marks.
    The one definition of a word here: hashes and the recovered n-grams both come from it."""
    texts = texts.cast(pl.String).fill_null("")
    non_ascii = texts.str.contains(r"[^\x00-\x7F]").to_numpy()
    if non_ascii.any():  # NFKC in Python (polars has none), only where it can change anything
        at = np.flatnonzero(non_ascii)
        texts = texts.scatter(at, [unicodedata.normalize("NFKC", text) for text in texts.gather(at).to_list()])
    return texts.str.to_lowercase().str.extract_all(r"[\p{L}\p{N}\p{M}]+").fill_null([])


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(_MIX)
    return h ^ (h >> _U64(33))


@dataclass
class _Tokens:
    """Texts as one flat array of word hashes: text t's words are ``hashes[starts[t]:starts[t] + lengths[t]]``;
    ``prefix`` and ``powers`` give any window's hash (``window``)."""

    lengths: np.ndarray  # int64, words per text
    starts: np.ndarray  # int64
    prefix: np.ndarray  # uint64, len(words) + 1: sum of hash[j] * BASE^-j over j < i
    powers: np.ndarray  # uint64, BASE^j

    @classmethod
    def of(cls, texts: pl.Series) -> _Tokens:
        split = words(texts)
        lengths = split.list.len().to_numpy().astype(np.int64)
        hashes = _fmix(split.explode().drop_nulls().hash(seed=0).to_numpy().astype(_U64))
        if len(hashes) != int(lengths.sum()):
            raise RuntimeError(f"polars split {len(texts)} texts into {len(hashes)} words but counted {lengths.sum()}")
        powers, inverse = _powers(len(hashes) + 1)
        prefix = np.zeros(len(hashes) + 1, dtype=_U64)
        np.cumsum(hashes * inverse[:len(hashes)], out=prefix[1:])
        return cls(lengths, np.cumsum(lengths) - lengths, prefix, powers)

    def window(self, k: int) -> np.ndarray:
        """The hash of the k words starting at every flat position i (sum of hash[j] * BASE^(i + k - 1 - j));
        windows that run past their text's end are computed too and discarded by the caller."""
        return (self.prefix[k:] - self.prefix[:-k]) * self.powers[k - 1:len(self.prefix) - 1] + _salt(k)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE^j and BASE^-j mod 2^64 for j < n (NumPy's uint64 products wrap, which is the arithmetic wanted)."""
    if len(_POWERS[0]) < n:  # cumprod is sequential (0.1 s per 10^7 words) and every chunk needs about as many
        powers = np.full(1 << (n - 1).bit_length(), _BASE, dtype=_U64)
        inverse = np.full(len(powers), _BASE_INV, dtype=_U64)
        powers[0] = inverse[0] = 1
        _POWERS[:] = [np.cumprod(powers), np.cumprod(inverse)]
    return _POWERS[0][:n], _POWERS[1][:n]


_POWERS = [np.ones(1, dtype=_U64), np.ones(1, dtype=_U64)]  # kept, grown on demand: 16 bytes a word of the
# largest chunk, ~130 MB at CHUNK_ROWS rows of ~110 words


def _salt(k: int) -> np.uint64:
    return _fmix(np.array([k], dtype=_U64) * _U64(_MIX))[0]


# --- the items' index ----------------------------------------------------------------------------------------

@dataclass
class _Index:
    """Every checked item field's grams: their hashes in item order (``grams``, with each one's benchmark and
    item), the same sorted (``sorted``: the exact check) and a bit table of their top bits (``table``: the quick
    check that drops ~95 % of the windows with one lookup)."""

    grams: np.ndarray  # uint64, in order of benchmark, field, item
    benchmark: np.ndarray  # int32, per gram
    item: np.ndarray  # int64, per gram: the item's row in its benchmark
    sorted: np.ndarray  # uint64
    lengths: list[int]  # the gram lengths present: ngram, and the lengths of short fields
    table: np.ndarray  # bool, 2^bits
    shift: np.uint64  # 64 - bits

    @classmethod
    def of(cls, benchmarks: Sequence[Benchmark], ngram: int) -> _Index:
        grams, bench, item, lengths = [], [], [], {ngram}
        for b, benchmark in enumerate(benchmarks):
            for texts in benchmark.fields.values():
                tokens = _Tokens.of(pl.Series(texts, dtype=pl.String))
                n = tokens.lengths
                long = np.flatnonzero(n >= ngram)
                count = n[long] - ngram + 1
                at = np.repeat(tokens.starts[long] - np.cumsum(count) + count, count) + np.arange(count.sum())
                grams.append(tokens.window(ngram)[at] if len(at) else at.astype(_U64))  # every window of ngram words
                item.append(np.repeat(long, count))
                for k in np.unique(n[(n >= MIN_WORDS) & (n < ngram)]).tolist():  # a short field: itself, whole
                    short = np.flatnonzero(n == k)
                    grams.append(tokens.window(k)[tokens.starts[short]])
                    item.append(short)
                    lengths.add(k)
            bench.append(np.full(sum(map(len, item)) - sum(map(len, bench)), b, dtype=np.int32))
        flat = np.concatenate(grams) if grams else np.zeros(0, dtype=_U64)
        bits = int(min(31, max(16, np.ceil(np.log2(max(len(flat), 1) * 16)))))  # 1/16 full at most
        table, shift = np.zeros(2**bits, dtype=bool), _U64(64 - bits)
        table[flat >> shift] = True
        return cls(flat, np.concatenate(bench) if bench else np.zeros(0, np.int32),
                   np.concatenate(item) if item else np.zeros(0, np.int64), np.sort(flat), sorted(lengths), table,
                   shift)

    def lookup(self, tokens: _Tokens) -> tuple[np.ndarray, ...]:
        """Every window of the texts that is an item's gram: (text, start word, length, hash)."""
        found = [tuple(np.zeros(0, dtype=np.int64) for _ in range(3)) + (np.zeros(0, dtype=_U64),)]
        text_end = tokens.starts + tokens.lengths
        for k in self.lengths:
            if len(tokens.prefix) <= k:
                continue
            hashes = tokens.window(k)
            maybe = np.flatnonzero(self.table[hashes >> self.shift])
            maybe = maybe[np.argsort(hashes[maybe])]  # sorted needles: searchsorted walks the index once
            at = np.minimum(np.searchsorted(self.sorted, hashes[maybe]), len(self.sorted) - 1)
            start = maybe[self.sorted[at] == hashes[maybe]]
            text = np.searchsorted(tokens.starts, start, side="right") - 1
            inside = start + k <= text_end[text]  # windows across two texts are not grams of either
            start, text = start[inside], text[inside]
            found.append((text, start - tokens.starts[text], np.full(len(text), k), hashes[start]))
        return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))

    def first_gram(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash (of a gram in the index), the first gram with it: the first benchmark's first item."""
        wanted = np.unique(hashes)
        at = np.minimum(np.searchsorted(wanted, self.grams), len(wanted) - 1)
        gram = np.flatnonzero(wanted[at] == self.grams)
        _, first = np.unique(self.grams[gram], return_index=True)  # sorted like wanted; first in gram order
        return gram[first][np.searchsorted(wanted, hashes)]


# --- public --------------------------------------------------------------------------------------------------

MATCH_SCHEMA = {"row": pl.Int64, "id": pl.String, "benchmark": pl.String, "item_id": pl.String,
                "column": pl.String, "ngram": pl.String}


def row_texts(rows: pl.DataFrame) -> dict[str, pl.Series]:
    """The texts of each row that are checked (ROW_TEXTS present in ``rows``); chat turns as plain text."""
    texts = {}
    for column in ROW_TEXTS:
        if column not in rows.columns:
            continue
        if column == "context":  # a JSON list of {role, content}: its contents, one per line
            turns = rows["context"].fill_null("").replace("", "[]").str.json_decode(
                pl.List(pl.Struct({"role": pl.String, "content": pl.String})))
            texts[column] = turns.list.eval(pl.element().struct.field("content")).list.join("\n")
        else:
            texts[column] = rows[column]
    return texts


def find_matches(rows: pl.DataFrame, benchmarks: Sequence[Benchmark], ngram: int = 13) -> pl.DataFrame:
    """One row (MATCH_SCHEMA) per contaminated training row: its position ``row`` in ``rows`` and ``id`` (the row
    number when ``rows`` has no id), the benchmark, the item's id, the row's column and the shared words. A row
    matching several items gets its first match: first column in ROW_TEXTS order, then first word."""
    index = _Index.of(benchmarks, ngram)
    texts = row_texts(rows)
    if not len(index.sorted) or not texts or not rows.height:
        return pl.DataFrame(schema=MATCH_SCHEMA)
    columns, hits = list(texts), []
    for first in range(0, rows.height, CHUNK_ROWS):
        size = min(CHUNK_ROWS, rows.height - first)
        text, start, length, gram = index.lookup(_Tokens.of(pl.concat([texts[c].slice(first, size) for c in columns])))
        hits.append((first + text % size, text // size, start, length, gram))
    row, column, start, length, gram = (np.concatenate(part) for part in zip(*hits, strict=True))
    first = np.lexsort((start, column, row))  # by row, then column, then word: each row's first match
    first = first[np.r_[True, row[first][1:] != row[first][:-1]]] if len(first) else first
    row, column, start, length, entry = row[first], column[first], start[first], length[first], gram[first]
    entry = index.first_gram(entry) if len(entry) else entry.astype(np.int64)
    shared = np.empty(len(row), dtype=object)
    for c, name in enumerate(columns):  # only matched rows are split again, to recover the shared words
        at = np.flatnonzero(column == c)
        split = words(texts[name].gather(row[at])).to_list() if len(at) else []
        shared[at] = [" ".join(w[s:s + n]) for w, s, n in zip(split, start[at].tolist(), length[at].tolist(),
                                                                strict=True)]
    benchmark, item = index.benchmark[entry].tolist(), index.item[entry].tolist()
    return pl.DataFrame({
        "row": row,
        "id": rows["id"].cast(pl.String).gather(row) if "id" in rows.columns else [str(r) for r in row.tolist()],
        "benchmark": [benchmarks[b].name for b in benchmark],
        "item_id": [benchmarks[b].item_ids[i] for b, i in zip(benchmark, item, strict=True)],
        "column": [columns[c] for c in column.tolist()],
        "ngram": shared.tolist(),
    }, schema=MATCH_SCHEMA)


def check(rows: pl.DataFrame, benchmarks: Sequence[Benchmark], params: DecontaminateParams) -> pl.DataFrame:
    """``find_matches`` with ``params.ngram``; with ``action: fail`` a match is a StageError naming, per benchmark,
    the first rows, an item and the shared words."""
    found = find_matches(rows, benchmarks, params.ngram)
    if params.action == "fail" and found.height:
        lines = []
        for (name,), group in found.group_by("benchmark", maintain_order=True):
            first = group.row(0, named=True)
            lines.append(f"{name}: {group.height} rows ({', '.join(group['id'].head(5))}"
                         f"{', ...' if group.height > 5 else ''}); e.g. row {first['id']} shares "
                         f"\"{first['ngram']}\" with item {first['item_id']} (its {first['column']})")
        raise StageError(f"dedupe.decontaminate: {found.height} training rows share {params.ngram} consecutive words "
                         f"(or a shorter item field, whole) with a benchmark item, and action is fail: "
                         f"{'; '.join(lines)}. Remove those tasks from the seeds, or set "
                         "dedupe.decontaminate.action: drop in params.yaml to drop those rows")
    return found


def summary(found: pl.DataFrame, benchmarks: Sequence[Benchmark], params: DecontaminateParams) -> dict:
    """The metrics block: per benchmark its items, the rows matched and up to SAMPLES of them; and the item
    field texts too short to check (fewer than MIN_WORDS words)."""
    per = {}
    for benchmark in benchmarks:
        mine = found.filter(pl.col("benchmark") == benchmark.name)
        short = sum(int(words(pl.Series(texts, dtype=pl.String)).list.len().is_between(1, MIN_WORDS - 1).sum())
                    for texts in benchmark.fields.values())
        per[benchmark.name] = {"items": len(benchmark.item_ids), "rows_matched": mine.height,
                               "short_texts_skipped": short,
                               "samples": mine.head(SAMPLES).select("id", "item_id", "column", "ngram").to_dicts()}
    return {"ngram": params.ngram, "action": params.action, "benchmarks": per}
