"""Row lineage: from any row id back to the seed file and line, with DVC's recorded hashes.

    distill lineage <id> [--json]

The id may be a generated/scored/deduped/selected row id or a seed id. The chain printed is
selection (kept or why dropped: the selection rank and cluster, the twin it duplicated) -> score (each check) ->
generate (teacher requested and as answered, template and sampling hashes, response id,
request key, tokens) -> the request store entry -> ingest (seed id, source file, line and
the line's text), each with the md5 that ``dvc.lock`` recorded for the file it came from
and whether the file in the workspace still matches it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import yaml

from distill import paths
from distill.teacher.store import RequestStore

LOCK = Path("dvc.lock")


def read_lock(lock_path: Path = LOCK) -> dict[str, dict]:
    """The stages of dvc.lock, by name (none before a first run)."""
    if not lock_path.exists():
        return {}
    return (yaml.safe_load(lock_path.read_text()) or {}).get("stages") or {}


def lock_outputs(lock_path: Path = LOCK) -> dict[str, dict]:
    """path -> {stage, md5} for every out in dvc.lock."""
    return {out["path"]: {"stage": stage, "md5": out.get("md5")}
            for stage, entry in read_lock(lock_path).items() for out in entry.get("outs", [])}


def lock_hashes(lock_path: Path = LOCK) -> dict[str, dict]:
    """path -> {stage, md5} for every out, and every dep that is no out, in dvc.lock."""
    found = lock_outputs(lock_path)
    for stage, entry in read_lock(lock_path).items():  # seed files are only deps; an out wins
        for dep in entry.get("deps", []):
            found.setdefault(dep["path"], {"stage": stage, "md5": dep.get("md5")})
    return found


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def provenance(path: Path, locks: dict[str, dict]) -> dict:
    """How DVC recorded the file (or the directory out holding it) and whether it still matches."""
    for candidate in (path, *path.parents):
        record = locks.get(str(candidate))
        if record:
            info = {"file": str(path), "dvc_stage": record["stage"], "dvc_md5": record["md5"],
                    "dvc_out": str(candidate)}
            if candidate == path and path.is_file():
                info["matches_workspace"] = file_md5(path) == record["md5"]
            return info
    return {"file": str(path), "dvc_stage": None, "dvc_md5": None}


def _find(path: Path, column: str, value: str) -> dict | None:
    if not path.exists():
        return None
    hit = pl.scan_parquet(path).filter(pl.col(column) == value).head(1).collect()
    return hit.to_dicts()[0] if hit.height else None


def source_line(file: str, line: int) -> str | None:
    path = Path(file)
    if not path.exists() or path.suffix.lower() == ".parquet":
        return None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if number == line:
                return text.rstrip("\n")
    return None


def written_by(key: str) -> dict:
    """The stored request that wrote an input: when, by which model, and the end of its prompt."""
    if not paths.GENERATE_STORE.exists():
        return {"request_key": key, "answered": False}
    with RequestStore(paths.GENERATE_STORE, read_only=True) as store:
        entry = store.entry(key)
    if entry is None:
        return {"request_key": key, "answered": False}
    prompt = entry["request"].get("messages", [{}])[-1].get("content", "")
    return {"request_key": key, "stored_at": entry["stored_at"], "model_answered": entry["response"].get("model"),
            "prompt_end": prompt[-200:]}


def selection_of(row: dict, source: Path, locks: dict[str, dict]) -> dict:
    """Kept or why dropped: the checks, the selection rank and cluster, the twin, the eval row it overlaps."""
    selection = {
        key: row.get(key)
        for key in ("keep", "drop_reason", "select_rank", "select_cluster", "dup_of", "dup_kind", "dup_similarity",
                    "contaminated_by", "contamination_similarity", "quality", "length_ok", "truncated", "refusal",
                    "verified")
        if key in row
    } | {key: row[key] for key in ("judge_rating", "judge_critique", "ifd", "reward") if row.get(key) is not None
         } | {"provenance": provenance(source, locks)}
    if row.get("dup_of"):
        twin = _find(paths.DEDUPE_ROWS, "id", row["dup_of"])
        selection["duplicate_of"] = {"id": row["dup_of"], "instruction": twin and twin["instruction"]}
    if row.get("contaminated_by"):
        held_out = _find(paths.INGEST_EVAL, "id", row["contaminated_by"])
        selection["overlaps_eval_row"] = {"id": row["contaminated_by"],
                                          "instruction": held_out and held_out["instruction"]}
    return selection


def trace(row_id: str, lock_path: Path = LOCK) -> dict:
    """The lineage chain of ``row_id`` as a dict; raises KeyError if no stage output has it."""
    locks = lock_hashes(lock_path)
    chain: dict = {"id": row_id}
    row, source = None, None
    for source in (paths.SELECT_ROWS, paths.DEDUPE_ROWS, paths.SCORE_ROWS, paths.GENERATE_ROWS):
        row = _find(source, "id", row_id)
        if row is not None:
            break
    if row is not None:
        chain["selection"] = selection_of(row, source, locks)
        chain["generation"] = {
            key: row[key]
            for key in ("method", "teacher", "model_requested", "model_answered", "template_hash", "sampling_hash",
                        "response_id", "request_key", "choice_index", "created_at", "prompt_tokens",
                        "completion_tokens", "finish_reason", "instruction", "response")
        } | {key: row[key] for key in ("input_origin", "judge_score") if row.get(key) is not None} | {
            "provenance": provenance(paths.GENERATE_ROWS, locks)}
        if paths.GENERATE_STORE.exists():
            with RequestStore(paths.GENERATE_STORE, read_only=True) as store:
                entry = store.entry(row["request_key"])
            chain["teacher_store"] = {
                "file": str(paths.GENERATE_STORE),
                "stored_at": entry and entry["stored_at"],
                "answered": entry is not None,
            }
            if row.get("parent_key"):  # an input a teacher wrote (expansion, curation): the request that wrote it
                chain["input_written_by"] = written_by(row["parent_key"])
        seed_id = row["seed_id"]
    else:
        seed_id = row_id
    for split_path in (paths.INGEST_TRAIN, paths.INGEST_EVAL):
        seed = _find(split_path, "id", seed_id)
        if seed is not None:
            chain["seed"] = seed | {
                "source_text": source_line(seed["source_file"], seed["source_line"]),
                "provenance": provenance(split_path, locks),
                "source_provenance": provenance(Path(seed["source_file"]), locks),
            }
            break
    if row is None:
        rejected = _find(paths.GENERATE_REJECTS, "seed_id", seed_id)
        if rejected is not None:
            chain["rejected_in_generate"] = {k: v for k, v in rejected.items() if k != "seed_id"}
    if "seed" not in chain and row is None and "rejected_in_generate" not in chain:
        raise KeyError(f"no row or seed with id {row_id!r} in the stage outputs (has the pipeline run?)")
    return chain


def render(chain: dict) -> str:
    lines = [f"lineage of {chain['id']}"]
    for section in ("selection", "generation", "teacher_store", "input_written_by", "rejected_in_generate", "seed"):
        if section not in chain:
            continue
        lines.append(f"\n{section}:")
        for key, value in chain[section].items():
            if key.endswith("provenance"):
                md5 = value.get("dvc_md5")
                match = {True: "matches workspace", False: "WORKSPACE DIFFERS"}.get(value.get("matches_workspace"), "")
                lines.append(f"  from {value['file']} (dvc stage {value.get('dvc_stage')}, md5 {md5}) {match}".rstrip())
            else:
                lines.append(f"  {key}: {json.dumps(value, default=str) if isinstance(value, dict) else value}")
    return "\n".join(lines)
