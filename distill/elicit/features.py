"""Feature knowledge: the teacher's token log-probabilities, stored compactly by token id.

The OpenAI API returns, per answer token, the chosen token and its ``top_logprobs``
alternatives as *strings*. A student learns from ids, so each string is mapped to an id of
``generate.feature_tokenizer`` (by default the student's, ``student.model``); a string with no
exact id makes the row a reject (``tokenizer_mismatch``). One row per generated row (same ``id``), see ``FEATURES`` in
distill/records.py: ``token_ids`` (chosen token per position), ``top_ids`` and ``top_logprobs``
(positions x k, flattened; padded with id -1 / -inf when the endpoint gave fewer than k) and
``tail_mass`` (per position, 1 - sum(exp(top logprobs)), clipped at 0: the probability outside
the top k). Pure except for reading the tokenizer file.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill.entry import StageError
from distill.records import FEATURES, REJECT, conform
from distill.teacher.store import RequestStore


class FeatureTokenizer:
    """Token string -> id in a Hugging Face ``tokenizers`` tokenizer (fast; no transformers import)."""

    def __init__(self, name_or_path: str) -> None:
        from tokenizers import Tokenizer

        local = Path(name_or_path)
        file = local / "tokenizer.json" if local.is_dir() else local
        if file.is_file():
            raw = file.read_bytes()
            self.tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        elif local.exists():
            raise StageError(f"generate.feature_tokenizer={name_or_path}: no tokenizer.json there")
        else:
            try:
                self.tokenizer = Tokenizer.from_pretrained(name_or_path)
            except Exception as error:  # noqa: BLE001 -- hub, network or format errors: one message
                raise StageError(f"generate.feature_tokenizer={name_or_path}: cannot load it: {error}") from None
            raw = self.tokenizer.to_str().encode("utf-8")
        self.identity = f"{name_or_path}@{hashlib.sha256(raw).hexdigest()[:16]}"
        self._ids: dict[str, int | None] = {}

    def id_of(self, token: str) -> int | None:
        """The id of exactly this token string, or None (also when it encodes to several ids)."""
        if token not in self._ids:
            found = self.tokenizer.token_to_id(token)
            if found is None:  # e.g. byte-level BPE spells " the" as "Ġthe": encode and check the round trip
                ids = self.tokenizer.encode(token, add_special_tokens=False).ids
                if len(ids) == 1 and self.tokenizer.decode(ids, skip_special_tokens=False) == token:
                    found = ids[0]
            self._ids[token] = found
        return self._ids[token]


def extract(content: list[dict], k: int, tokenizer: FeatureTokenizer) -> dict | str:
    """The feature columns of one answer from its ``logprobs.content``, or the first token the
    tokenizer cannot map (a string: the reject's detail)."""
    token_ids, top_ids, top_logprobs, tail_mass = [], [], [], []
    for position in content:
        chosen = tokenizer.id_of(position["token"])
        if chosen is None:
            return f"token {position['token']!r} has no id in the feature tokenizer"
        token_ids.append(chosen)
        alternatives = (position.get("top_logprobs") or [])[:k]
        mass = 0.0
        for alternative in alternatives:
            alt_id = tokenizer.id_of(alternative["token"])
            if alt_id is None:
                return f"top token {alternative['token']!r} has no id in the feature tokenizer"
            top_ids.append(alt_id)
            top_logprobs.append(alternative["logprob"])
            mass += math.exp(alternative["logprob"])
        missing = k - len(alternatives)  # fewer alternatives than asked: pad, they carry no mass
        top_ids.extend([-1] * missing)
        top_logprobs.extend([-math.inf] * missing)
        tail_mass.append(max(0.0, 1.0 - mass))
    return {"token_ids": token_ids, "top_ids": top_ids, "top_logprobs": top_logprobs, "tail_mass": tail_mass}


def build_features(rows: pl.DataFrame, store: RequestStore, k: int,
                   tokenizer: FeatureTokenizer) -> tuple[pl.DataFrame, dict[str, tuple[str, str]]]:
    """Features of every generated row, and the rows without usable ones: id -> (reason, detail)
    with reason ``no_logprobs`` (the endpoint sent none) or ``tokenizer_mismatch``."""
    features, dropped = [], {}
    for row in rows.select("id", "request_key", "choice_index").iter_rows(named=True):
        answer = store.get(row["request_key"]) or {}
        choice = next((c for c in answer.get("choices", []) if c.get("index", 0) == row["choice_index"]), {})
        content = (choice.get("logprobs") or {}).get("content")
        if not content:
            dropped[row["id"]] = ("no_logprobs", f"choice {row['choice_index']} has no logprobs.content")
            continue
        result = extract(content, k, tokenizer)
        if isinstance(result, str):
            dropped[row["id"]] = ("tokenizer_mismatch", result)
            continue
        features.append({"id": row["id"], "tokenizer": tokenizer.identity, "k": k} | result)
    return conform(pl.DataFrame(features, schema=FEATURES), FEATURES), dropped


def feature_tokenizer(params: params_module.Params) -> FeatureTokenizer | None:
    """The tokenizer features are stored in, when log-probs are asked for (loaded before sending)."""
    if params.generate.top_logprobs is None:
        return None
    return FeatureTokenizer(params.feature_tokenizer)


def split_features(rows: pl.DataFrame, rejects: pl.DataFrame, store: RequestStore, params: params_module.Params,
                   tokenizer: FeatureTokenizer) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Features of the rows; rows without usable ones move to the rejects. Fails when the
    endpoint ignored ``logprobs`` or the tokenizers clearly differ."""
    gen, teacher = params.generate, params.teacher.name
    features, dropped = build_features(rows, store, gen.top_logprobs, tokenizer)
    reasons = [reason for reason, _ in dropped.values()]
    if rows.height and reasons.count("no_logprobs") == rows.height:
        raise StageError(
            f"generate.top_logprobs={gen.top_logprobs} asked for log-probabilities, but none of the {rows.height} "
            f"answers of {teacher} has them: the endpoint ignored `logprobs` (as `transformers serve` does); use "
            "one that returns them (OpenAI, vLLM), or set teacher.capabilities.logprobs: false to be told before "
            "sending")
    mismatched = reasons.count("tokenizer_mismatch")
    if mismatched * 2 > rows.height:
        example = next(detail for reason, detail in dropped.values() if reason == "tokenizer_mismatch")
        raise StageError(
            f"{mismatched} of {rows.height} answers have tokens that generate.feature_tokenizer="
            f"{gen.feature_tokenizer} cannot map ({example}): teacher and student tokenizers differ; the feature "
            "method needs a teacher that shares the student's tokenizer")
    moved = (rows.filter(pl.col("id").is_in(list(dropped)))
             .with_columns(reason=pl.col("id").replace_strict({k: v[0] for k, v in dropped.items()}),
                           detail=pl.col("id").replace_strict({k: v[1] for k, v in dropped.items()})))
    rejects = pl.concat([rejects, conform(moved, REJECT)])
    return rows.filter(~pl.col("id").is_in(list(dropped))), rejects, features


def size_metrics(features: pl.DataFrame, path: Path) -> dict:
    """What the written features file holds and weighs: rows, bytes, bytes per stored token."""
    tokens = int(features["token_ids"].list.len().sum() or 0)
    size = path.stat().st_size
    return {"feature_rows": features.height, "feature_bytes": size,
            "feature_bytes_per_token": round(size / tokens, 3) if tokens else None}
