"""Row lineage: from any row id back to the seed file and line, with DVC's recorded hashes; model lineage: from a
checkpoint to every row it was trained on.

    distill lineage <id> [--json]
    distill lineage --model data/train/model [--json] [--all]

The id may be a generated/scored/deduped/selected row id or a seed id. The chain printed is
selection (kept or why dropped: the selection rank and cluster, the twin it duplicated) -> score (each check) ->
generate (teacher requested and as answered, template and sampling hashes, response id,
request key, tokens) -> the request store entry -> ingest (seed id, source file, line and
the line's text), each with the md5 that ``dvc.lock`` recorded for the file it came from
and whether the file in the workspace still matches it.

With ``--model`` (``model_lineage``) it reads the checkpoint's manifest (distill/model_card.py) and lists each
training row by id and content hash, its teacher call (store key, tokens, cost at the teacher's price), its
selection and the gates it passed; the train stage's params and dependencies with the md5s of ``dvc.lock`` (and
whether the workspace still matches), and the git commit now and at training.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

from distill import params as params_module
from distill import paths
from distill.model_card import MANIFEST, SELECTED_GATES, file_md5, gate_result, git_state, read_facts
from distill.teacher.engine import cost_usd
from distill.teacher.estimate import price_of
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


# A row's selection: what the later stages decided, and the optional signals it was ranked on (when it has them).
SELECTION = ("keep", "drop_reason", "select_rank", "select_cluster", "dup_of", "dup_kind", "dup_similarity",
             "contaminated_by", "contamination_similarity", "quality", "length_ok", "truncated", "refusal", "verified")
SIGNALS = ("judge_rating", "judge_critique", "ifd", "reward")


def decided(row: dict, keys: tuple[str, ...] = SELECTION) -> dict:
    """The row's selection columns (those it has) and its signals that are set."""
    return ({key: row.get(key) for key in keys if key in row}
            | {key: row[key] for key in SIGNALS if row.get(key) is not None})


def selection_of(row: dict, source: Path, locks: dict[str, dict]) -> dict:
    """Kept or why dropped: the checks, the selection rank and cluster, the twin, the eval row it overlaps."""
    selection = decided(row) | {"provenance": provenance(source, locks)}
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


# --- model lineage: distill lineage --model <checkpoint folder> -------------------------------------------------

SHOWN = 20  # rows the human output lists without --all


def teacher_prices() -> dict:
    """Teacher name -> its price (distill.teacher.estimate.price_of), from params.yaml; {} when it does not load."""
    try:
        return {teacher.name: price_of(teacher) for teacher in params_module.load().all_teachers}
    except params_module.ParamsError:
        return {}


def teacher_calls(keys: list[str]) -> dict[str, dict]:
    """Store key -> the stored call's usage and answer count (keys the store lacks are left out)."""
    if not paths.GENERATE_STORE.exists():
        return {}
    with RequestStore(paths.GENERATE_STORE, read_only=True) as store:
        entries = {key: store.entry(key) for key in keys}
    return {key: {"stored_at": entry["stored_at"], "usage": entry["response"].get("usage") or {},
                  "answers": max(len(entry["response"].get("choices") or []), 1)}
            for key, entry in entries.items() if entry is not None}


def priced_rows(manifest: pl.DataFrame, prices: dict) -> list[dict]:
    """The manifest's rows with their teacher call: found in the store or not, its tokens (the store's usage, else
    the manifest's), its cost at the teacher's price (None unpriced), and the row's share of it (one answer of
    the call's ``answers``), so that the shares add up to no more than what the calls cost."""
    calls = teacher_calls(manifest.filter(pl.col("request_key").is_not_null())["request_key"].unique().to_list())
    rows = []
    for row in manifest.iter_rows(named=True):
        call = calls.get(row["request_key"])
        usage = call["usage"] if call else {}
        tokens = {name: usage.get(name, row[name]) for name in ("prompt_tokens", "completion_tokens")}
        price = prices.get(row["teacher"])
        cost = cost_usd(tokens["prompt_tokens"] or 0, tokens["completion_tokens"] or 0, price) if price else None
        rows.append(row | tokens | {"in_store": call is not None if row["request_key"] else None,
                                    "answers_in_call": call["answers"] if call else None, "call_cost_usd": cost,
                                    "cost_usd": cost / call["answers"] if cost is not None and call else cost})
    return rows


def with_selection(rows: list[dict]) -> None:
    """Each selected row's outcome in data/select/rows.parquet as it is now (None when no longer there) and the
    gates it passed on the way."""
    selected = {}
    if paths.SELECT_ROWS.exists():
        wanted = [row["id"] for row in rows if row["source"] == "select"]
        table = pl.read_parquet(paths.SELECT_ROWS).filter(pl.col("id").is_in(wanted))
        selected = {row["id"]: row for row in table.iter_rows(named=True)}
    for row in rows:
        found = selected.get(row["id"])
        row["selection"] = decided(found, ("keep", "select_rank", "select_cluster", "quality", "verified")) \
            if found else None
        row["gates_passed"] = list(SELECTED_GATES) if row["source"] == "select" else []


def priced_teachers(rows: list[dict], prices: dict) -> dict[str, dict]:
    """Per teacher: rows, distinct calls, their tokens and cost (each call counted once), and its price."""
    teachers: dict[str, dict] = {}
    seen: set[str] = set()
    for row in rows:
        if row["teacher"] is None:
            continue
        price = prices.get(row["teacher"])
        total = teachers.setdefault(row["teacher"], {
            "rows": 0, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0 if price else None,
            "price": price.model_dump() if price else None})
        total["rows"] += 1
        if row["request_key"] in seen:
            continue
        seen.add(row["request_key"])
        total["calls"] += 1
        total["prompt_tokens"] += row["prompt_tokens"] or 0
        total["completion_tokens"] += row["completion_tokens"] or 0
        if row["call_cost_usd"] is not None:
            total["cost_usd"] += row["call_cost_usd"]
    return teachers


def dotted(raw: dict, key: str) -> object:
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def stage_record(stage: str, lock_path: Path = LOCK) -> dict:
    """What dvc.lock recorded for ``stage``: its params (and whether params.yaml still has them), its deps and
    outs with their md5 (and whether each dependency file still matches; None for a folder)."""
    entry = read_lock(lock_path).get(stage)
    if entry is None:
        return {"stage": stage, "in_lock": False}
    params = entry.get("params") or {}
    current = {file: yaml.load(Path(file).read_text(), Loader=params_module.YAMLLoader) if Path(file).exists() else {}
               for file in params}  # read as DVC reads it (YAML 1.2: 2e-5 is a number), as dvc.lock recorded it
    deps = [{"path": dep["path"], "md5": dep.get("md5"),
             "matches_workspace": None if str(dep.get("md5", "")).endswith(".dir") or Path(dep["path"]).is_dir()
             else Path(dep["path"]).is_file() and file_md5(Path(dep["path"])) == dep.get("md5")}
            for dep in entry.get("deps", [])]
    return {"stage": stage, "in_lock": True, "cmd": entry.get("cmd"), "params": params,
            "params_match_workspace": all(dotted(current[file], key) == value
                                          for file, values in params.items() for key, value in values.items()),
            "code": [dep for dep in deps if dep["path"].endswith(".py")],
            "deps": [dep for dep in deps if not dep["path"].endswith(".py")],
            "outs": [{"path": out["path"], "md5": out.get("md5")} for out in entry.get("outs", [])]}


def model_lineage(folder: Path, lock_path: Path = LOCK) -> dict:
    """Everything ``distill lineage --model`` shows: the checkpoint's facts at training, every row it was trained
    on (manifest order) with its teacher call, cost and selection, the teachers' totals, the gates, the train
    stage's record in dvc.lock and the git commit. Raises distill.model_card.NotTrainedHere for a folder the train
    stage did not write."""
    facts = read_facts(folder)
    manifest = pl.read_parquet(folder / MANIFEST)
    prices = teacher_prices()
    rows = priced_rows(manifest, prices)
    with_selection(rows)
    teachers = priced_teachers(rows, prices)
    dvc = stage_record("train", lock_path)
    lock_deps = {dep["path"]: dep["md5"] for dep in dvc.get("deps", [])}
    dvc["manifest_inputs_match_lock"] = {file: lock_deps.get(file) == md5 if file in lock_deps else None
                                         for file, md5 in facts["rows"]["inputs"].items()}
    gates = {stage: gate_result(json.loads(file.read_text()) if file.is_file() else None, file)
             for stage in SELECTED_GATES for file in [paths.GATE_REPORTS / f"{stage}.json"]}
    head, trained_at = git_state(), facts.get("git") or {}
    return {
        "model": str(folder),
        "facts": facts | {"teachers": {name: facts["teachers"].get(name, {}) | {"cost_usd": total["cost_usd"]}
                                       for name, total in teachers.items()}},
        "rows": rows,
        "teachers": teachers,
        "cost_usd": sum(total["cost_usd"] or 0.0 for total in teachers.values()),
        "selection": facts.get("selection") or {},
        "gates": gates,
        "dvc": dvc,
        "git": {"head": head["commit"], "dirty": head["dirty"], "at_training": trained_at,
                "same_commit": head["commit"] is not None and head["commit"] == trained_at.get("commit")},
    }


def render_model(lineage: dict, show_all: bool = False) -> str:
    """A short header, then the rows as a table (the first SHOWN unless ``show_all``)."""
    facts, rows, dvc, git = lineage["facts"], lineage["rows"], lineage["dvc"], lineage["git"]
    counts = facts["rows"]
    match = {True: "matches dvc.lock", False: "DIFFERS FROM dvc.lock", None: "not in dvc.lock"}
    lines = [f"lineage of model {lineage['model']}: objective {facts['objective']}, student {facts['base_model']}",
             f"rows: {counts['count']} ({counts['selected']} selected, {counts['replayed']} replayed), table hash "
             f"{counts['data_hash']}"]
    lines += [f"  from {file} (md5 {md5}, {match[dvc.get('manifest_inputs_match_lock', {}).get(file)]})"
              for file, md5 in counts["inputs"].items()]
    for name, total in lineage["teachers"].items():
        cost = "unpriced" if total["cost_usd"] is None else f"${total['cost_usd']:.6f}"
        lines.append(f"teacher {name}: {total['rows']} rows from {total['calls']} calls, {total['prompt_tokens']} "
                     f"prompt + {total['completion_tokens']} completion tokens, {cost}")
    lines.append("gates: " + ", ".join(
        f"{stage} {({True: 'passed', False: 'FAILED', None: 'no report'})[gate['success']]}"
        + (f" ({gate['evaluated']} evaluated, {gate['failed']} failed)" if gate["success"] is not None else "")
        for stage, gate in lineage["gates"].items()))
    lines.append(dvc_line(dvc))
    lines.append(f"git: HEAD {git['head']}{' (dirty)' if git['dirty'] else ''}; trained at "
                 f"{git['at_training'].get('commit')}{' (dirty)' if git['at_training'].get('dirty') else ''}"
                 + (" (same commit)" if git["same_commit"] else ""))
    header = f"{'id':<18}{'content hash':<18}{'source':<8}{'teacher':<12}{'request key':<34}{'cost $':>11}" \
             f"{'rank':>7}{'cluster':>8}"
    lines += ["", header]
    for row in rows if show_all else rows[:SHOWN]:
        selection = row.get("selection") or {}
        cost = "" if row["cost_usd"] is None else f"{row['cost_usd']:.6f}"
        lines.append(f"{row['id'][:16]:<18}{row['content_hash']:<18}{row['source']:<8}{row['teacher'] or '-':<12}"
                     f"{row['request_key'] or '-':<34}{cost:>11}{selection.get('select_rank') or '-':>7}"
                     f"{'-' if selection.get('select_cluster') is None else selection['select_cluster']:>8}")
    if not show_all and len(rows) > SHOWN:
        lines.append(f"... {SHOWN} of {len(rows)} rows shown (--all lists every row, --json everything)")
    return "\n".join(lines)


def dvc_line(dvc: dict) -> str:
    if not dvc["in_lock"]:
        return "dvc.lock: no train stage recorded"
    files = dvc["code"] + dvc["deps"]
    differ = [dep["path"] for dep in files if dep["matches_workspace"] is False]
    return (f"dvc.lock train: params {', '.join(key for values in dvc['params'].values() for key in values)} "
            f"{'match' if dvc['params_match_workspace'] else 'DIFFER FROM'} params.yaml; {len(dvc['code'])} code and "
            f"{len(dvc['deps'])} data deps, " + (f"{len(differ)} differ from the workspace: {', '.join(differ)}"
                                                 if differ else "all files match the workspace"))
