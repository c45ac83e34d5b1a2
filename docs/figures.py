"""Render the measured figures in README.md and docs/*.md from the results files.

Every measured figure in the docs comes from a JSON file: ``metrics/*.json`` (the pipeline's
metrics, tracked in git) or ``benchmarks/results/*.json`` (the benchmarks). Two kinds of markers:

- a block, a whole table or paragraph rendered by one function of ``BLOCKS`` below::

      <!-- figures:eval -->
      ...generated text...
      <!-- /figures:eval -->

- an inline figure: a file, a dotted key (list items by index) and an optional Python format spec::

      <!-- fig metrics/eval.json:heldout_kl_to_teacher.student_after .3f -->0.811<!-- /fig -->

  Without a spec, integers get thousands separators (8,203) and other values print as they are.

Run: ``python docs/figures.py`` rewrites the markers in place; ``python docs/figures.py --check``
changes nothing and exits 1 listing every block or figure that differs from the files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("metrics/*.json", "benchmarks/results/*.json", "examples/results/*.json")

Data = dict[str, dict]  # relative path of a results file -> its parsed JSON

BLOCK = re.compile(r"(?P<open><!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /figures:(?P=name) -->)",
                   re.S)
INLINE = re.compile(r"(?P<open><!--\s+fig\s+(?P<file>[\w./-]+\.json):(?P<key>[\w.-]+)(?:\s+(?P<spec>[^\s>]+))?\s+-->)"
                    r"(?P<body>[^<]*)(?P<close><!-- /fig -->)")
OPENINGS = {"block": (re.compile(r"<!-- figures:"), BLOCK), "inline figure": (re.compile(r"<!--\s+fig\s"), INLINE)}


class FigureError(KeyError):
    """A marker names a block, a file or a key that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


def load(root: Path = ROOT) -> Data:
    """Every results file, keyed by its path relative to the repo (``metrics/eval.json``)."""
    return {path.relative_to(root).as_posix(): json.loads(path.read_text(encoding="utf-8"))
            for pattern in SOURCES for path in sorted(root.glob(pattern))}


def pages(root: Path = ROOT) -> list[Path]:
    """The documents whose figures are rendered: the README and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def value(data: Data, file: str, key: str):
    """``data[file]`` followed along a dotted key; digits index lists."""
    if file not in data:
        raise FigureError(f"{file} not found (results files: {', '.join(sorted(data))})")
    node = data[file]
    for part in key.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise FigureError(f"{file} has no key {key!r}") from None
    return node


def fmt(item, spec: str | None = None) -> str:
    if item is None:
        return "n/a"
    if spec:
        return format(item, spec)
    if isinstance(item, int) and not isinstance(item, bool):
        return f"{item:,}"
    return str(item)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


# --- the blocks: each takes the results files and returns markdown ending in a newline --------------------------

def eval_block(data: Data) -> str:
    """The README's results table: the default run's held-out scores, KL and teacher requests."""
    ev, gen = data["metrics/eval.json"], data["metrics/generate.json"]
    kl = ev.get("heldout_kl_to_teacher") or {}
    rows = [
        ["teacher (the stand-in)", fmt(ev["teacher"], ".3f"), ""],
        ["student before training", fmt(ev["student_before"], ".3f"), ""],
        [f"**student after training** (`train.objective: {ev['objective']}`)", f"**{fmt(ev['student_after'], '.3f')}**",
         fmt(kl.get("student_after"), ".3f") if kl else ""],
        ["plain-SFT baseline (same rows, same steps)", fmt(ev["baseline_sft"], ".3f"),
         fmt(kl.get("baseline_sft"), ".3f") if kl else ""],
    ]
    out = table(["system", "held-out exact match", "held-out KL to the teacher (nats per answer token)"], rows)
    above = " (above 1: the student scored higher than its teacher)" if (ev["gap_closed"] or 0) > 1 else ""
    return out + (
        f"\nEval rows: {fmt(ev['rows'])}. Teacher gap closed: {fmt(ev['gap_closed'])}{above}. "
        f"Teacher requests in the last run: generate sent {fmt(gen['requests_sent'])} of "
        f"{fmt(gen['requests_planned'])} ({fmt(gen['cache_hits'])} answered from the request store).\n")


def math_block(data: Data) -> str:
    """The README's second example: the math word problems with a reasoning teacher (`distill example
    examples/math.yaml` writes examples/results/math.json)."""
    result = data["examples/results/math.json"]
    ev, gen, train = result["eval"], result["generate"], result["train"]
    protocol, rejection = ev["protocol"], gen["rejection"]
    metric = f"final number right (pass@1 over {protocol['samples']} samples, temperature {protocol['temperature']})"
    rows = [
        ["teacher (the stand-in, greedy)", fmt(ev["teacher"], ".3f")],
        ["student before training", fmt(ev["student_before"], ".3f")],
        [f"**student after training** ({fmt(train['steps'])} steps of SFT on reasoning + answer)",
         f"**{fmt(ev['student_after'], '.3f')}**"],
    ]
    best_k = max(ev["pass_at_k"], key=lambda name: int(name.split("@")[1]))
    return table(["system", metric], rows) + (
        f"\nTeacher gap closed: {fmt(ev['gap_closed'], '.3f')} ({best_k}: "
        f"{fmt(ev['pass_at_k'][best_k]['student_after'], '.3f')}). Rejection sampling: {fmt(rejection['answers'])} "
        f"answers to {fmt(rejection['questions'])} questions, {fmt(rejection['passed'])} passed (mean pass rate "
        f"{fmt(rejection['pass_rate_mean'], '.2f')}; {fmt(rejection['unsolved'])} questions unsolved, "
        f"{fmt(rejection['solved_by_all'])} solved by every answer), in {fmt(gen['requests_planned'])} requests.\n")


def funnel_block(data: Data) -> str:
    """Rows through the data stages of the default run, with the reasons rows were dropped."""
    ingest, gen, score = data["metrics/ingest.json"], data["metrics/generate.json"], data["metrics/score.json"]
    dedupe, select = data["metrics/dedupe.json"], data["metrics/select.json"]
    reasons = ", ".join(f"{name} {fmt(count)}" for name, count in sorted(score["dropped_by_reason"].items()))
    kinds = ", ".join(f"{name} {fmt(count)}" for name, count in sorted(dedupe["duplicates_by_kind"].items()))
    rows = [
        ["ingest", f"{fmt(ingest['train']['rows'])} seeds, {fmt(ingest['eval']['rows'])} eval rows", ""],
        ["generate", f"{fmt(gen['rows'])} rows", f"{fmt(gen['rejects'])} rejects"],
        ["score", f"{fmt(score['kept'])} kept", f"{fmt(score['dropped'])} dropped: {reasons or 'none'}"],
        ["dedupe", f"{fmt(dedupe['kept'])} kept", f"{fmt(dedupe['duplicates_dropped'])} duplicates ({kinds or 'none'})"
         f"; {fmt(dedupe['contaminated_rows'])} rows overlap the eval split"],
        ["select", f"{fmt(select['selected'])} selected of {fmt(select['eligible'])} eligible",
         f"{fmt(select['dropped_by_reason'].get('over_budget', 0))} over the budget of {fmt(select['budget_rows'])} "
         f"rows, in {fmt(select['clusters'])} clusters"],
    ]
    return table(["stage", "rows out", "dropped"], rows)


def sweep_block(data: Data) -> str:
    """The data sweep: one student per subset of the teacher's rows, scored on the held-out split."""
    sweep = data["metrics/sweep.json"]
    names = {"selected": "the selection", "all": "all generated rows", "random": "a random subset, same size"}
    rows = [[names.get(p["policy"], p["policy"]) + (" (reused from the train stage)" if p["reused_train_model"]
                                                   else ""),
             fmt(p["fraction"], ".0%"), fmt(p["rows"]), fmt(p["teacher_tokens"]), fmt(p["score"], ".3f")]
            for p in sweep["points"]]
    best = max(sweep["points"], key=lambda p: p["score"])
    return table(["trained on", "share of generated rows", "rows", "teacher tokens", "held-out exact match"], rows) + (
        f"\n{fmt(sweep['steps'])} steps of plain SFT each, {fmt(sweep['eval_rows'])} held-out rows. "
        f"Best: {names.get(best['policy'], best['policy'])}; selection minus all rows: "
        f"{fmt(sweep['comparison']['selected_minus_all'], '+.3f')}, selection minus random: "
        f"{fmt(sweep['comparison']['selected_minus_random'], '+.3f')}.\n")


def forgetting_block(data: Data) -> str:
    """The forgetting probe: loss on general held-out rows before and after training."""
    probe = data["metrics/eval.json"]["forgetting_probe"]
    names = {"student_before": "student before training", "student_after": "student after training",
             "baseline_sft": "plain-SFT baseline"}
    order = [*[name for name in names if name in probe["loss"]], *[n for n in probe["loss"] if n not in names]]
    rows = [[names.get(name, name), fmt(probe["loss"][name], ".2f")] for name in order]
    return table(["system", "loss per answer token on general rows"], rows) + (
        f"\n{fmt(probe['rows'])} general rows (`{probe['general_eval']}`); forgetting (after minus before): "
        f"{fmt(probe['forgetting'], '.2f')}.\n")


def throughput_block(data: Data) -> str:
    """Teacher requests per second: the engine against a sequential loop, stand-in at a fixed latency."""
    bench = data["benchmarks/results/teacher_throughput.json"]
    rows = [["sequential loop (official client)", fmt(bench["sequential_rps"], ".1f"), "", "1x",
             fmt(spread_of(bench.get("sequential_runs_rps")), ".1%")]]
    for name, run in bench["engine"].items():
        transport, concurrency = name.rsplit("_c", 1)
        rows.append([f"engine, `{transport}` transport, {concurrency} in flight", fmt(run["rps"], ",.1f"),
                     fmt(run["fraction_of_ideal"], ".1%"), fmt(run["speedup_vs_sequential"], ".1f") + "x",
                     fmt(run.get("spread"), ".1%")])
    faster = {}
    for name, run in bench["engine"].items():
        transport, concurrency = name.rsplit("_c", 1)
        if concurrency not in faster or run["rps"] > faster[concurrency][1]:
            faster[concurrency] = (transport, run["rps"])
    best = "; ".join(f"at {c} in flight, `{t}`" for c, (t, _) in faster.items())
    return table(["client", "requests/s", "of ideal (in flight / latency)", "vs sequential", "spread"], rows) + (
        f"\n{fmt(bench['requests'])} requests, {fmt(bench['latency_ms'], '.0f')} ms latency per request; medians of "
        f"{fmt(bench.get('repeats', 1))} interleaved repeats. Faster transport {best}.\n")


def spread_of(values: list[float] | None) -> float | None:
    """max / min - 1 of a results file's list of repeats (None without one)."""
    return max(values) / min(values) - 1 if values and min(values) > 0 else None


def dedupe_bench_block(data: Data) -> str:
    """Near-duplicate detection against exact ground truth, and against datasketch."""
    bench = data["benchmarks/results/dedupe.json"]
    ds, million, spreads = bench["datasketch"], bench["one_million"], bench.get("spread", {})
    rows = [
        ["ours (`distill/curate/near_duplicates.py`)", fmt(bench["pairs_found"]), fmt(bench["precision"], ".3f"),
         fmt(bench["recall"], ".3f"), fmt(bench["ours_s"], ".2f"), fmt(spreads.get("ours_s"), ".1%")],
        ["datasketch MinHashLSH, no check", fmt(ds["raw"]["pairs"]), fmt(ds["raw"]["precision"], ".3f"),
         fmt(ds["raw"]["recall"], ".3f"), fmt(ds["times"]["total_s"], ".2f"),
         fmt(spreads.get("datasketch_total_s"), ".1%")],
        ["datasketch, with an exact check", fmt(ds["verified"]["pairs"]), fmt(ds["verified"]["precision"], ".3f"),
         fmt(ds["verified"]["recall"], ".3f"), fmt(ds["times"]["total_s"] + ds["times"]["verify_s"], ".2f"), ""],
    ]
    return table(["", "pairs found", "precision", "recall", "seconds", "spread"], rows) + (
        f"\n{fmt(bench['rows'])} rows with {fmt(bench['planted_copies'])} planted edited copies; ground truth: "
        f"{fmt(bench['true_pairs'])} pairs with word-{bench['params']['ngram']}-gram Jaccard at least "
        f"{bench['params']['threshold']}. Seconds are medians of {fmt(bench.get('repeats', 1))} interleaved repeats. "
        f"Ours is {fmt(bench['speedup_vs_datasketch'])}x faster than datasketch without its check (spread "
        f"{fmt(spreads.get('speedup_vs_datasketch'), '.1%')}). 1,000,000 rows: {fmt(million['wall_s'], '.1f')} s "
        f"(spread {fmt(million.get('spread'), '.1%')}), {fmt(million['peak_rss_mb'] / 1024, '.1f')} GiB peak memory "
        "for the whole process.\n")


def train_bench_block(data: Data) -> str:
    """Training speed of the tiny student: our SFT and KD against a plain PyTorch loop."""
    bench = data["benchmarks/results/train.json"]
    speed = bench["tokens_per_s"]
    names = {"plain": "plain PyTorch loop", "sft": "our SFT (TRL SFTTrainer)", "kd": "our offline-logit KD, k = 20"}
    rows = [[names.get(name, name), fmt(tps, ",.0f")] for name, tps in speed.items()]
    return table(["trainer", "tokens/s"], rows) + (
        f"\n{fmt(bench['steps'])} steps of {fmt(bench['batch_size'])} on {fmt(bench['rows'])} rows, medians of "
        f"{fmt(bench.get('repeats', 1))} interleaved repeats. SFT runs at {fmt(bench['sft_vs_plain_loop'], '.2f')}x "
        f"the plain loop, KD at {fmt(bench['kd_vs_sft'], '.2f')}x SFT (spread over the repeats: "
        f"{fmt(bench.get('spread', {}).get('sft_vs_plain_loop', 0), '.1%')} and "
        f"{fmt(bench.get('spread', {}).get('kd_vs_sft', 0), '.1%')}). "
        f"Stored top-20 log-probs for lists shaped like a real LLM's: {fmt(bench['bytes_per_token_k20'], '.1f')} "
        f"bytes per token ({fmt(bench['raw_bytes_per_token_k20'])} raw).\n")


def white_box_block(data: Data) -> str:
    """Every white-box method, trained from a teacher assistant whose distributions are real."""
    bench = data["benchmarks/results/white_box.json"]
    methods = bench["methods"]

    def ranged(m: dict, key: str, spec: str) -> str:
        spread = m.get("range", {}).get(key)
        return fmt(m[key], spec) + (f" ± {fmt(spread / 2, spec)}" if spread else "")

    rows = [[f"`{name}`", ranged(m, "exact_match", ".3f"), ranged(m, "heldout_kl_to_teacher", ".4f"),
             fmt(m["seconds"], ".1f")] for name, m in methods.items()]
    closer = [name for name, m in methods.items()
              if name != "sft" and m["heldout_kl_to_teacher"] < methods["sft"]["heldout_kl_to_teacher"]]
    teacher = bench["teacher"]
    return table(["method", "held-out exact match", "KL to the assistant (per answer token)", "seconds"], rows) + (
        f"\nThe assistant: {teacher['layers']} layers, {teacher['hidden']} wide, {fmt(bench['teacher_steps'])} "
        f"steps, exact match {fmt(teacher['exact_match'], '.3f')}. Each student: {fmt(bench['steps'])} steps on "
        f"{fmt(bench['rows'])} rows; medians over {fmt(bench.get('repeats', 1))} student seeds, ± half the range "
        f"over them. Closer to the assistant than `sft` (medians): {', '.join(f'`{n}`' for n in closer) or 'none'}.\n")


def schedule_block(data: Data) -> str:
    """What a Prefect server and a worker add to a run of the pipeline."""
    bench = data["benchmarks/results/schedule.json"]
    nothing, spreads = bench["nothing_to_do"], bench.get("spread", {})

    def with_spread(seconds: float, key: str, more: str = "") -> str:
        notes = ([f"spread {fmt(spreads[key], '.0%')}"] if key in spreads else []) + ([more] if more else [])
        return fmt(seconds, ".1f") + (f" ({'; '.join(notes)})" if notes else "")

    rows = [
        ["whole pipeline from nothing", with_spread(bench["by_hand_s"], "by_hand_s"),
         with_spread(bench["nightly"]["completed_s"], "nightly_s",
                     f"picked up {fmt(bench['nightly']['picked_up_s'], '.1f')} s after the trigger")],
        ["nothing to do", with_spread(nothing["by_hand_s"], "nothing_to_do_by_hand_s"),
         with_spread(nothing["nightly"]["completed_s"], "nothing_to_do_nightly_s")],
    ]
    added = bench["added_per_run_s"]
    why = (" (less: by hand, each stage that runs a Prefect flow starts a temporary server of its own; on the "
           "worker they share the running one)") if added < 0 else ""
    return table(["run", "by hand, `dvc repro` (s)", "nightly deployment on a worker (s)"], rows) + (
        f"\nProfile `{bench['profile']}`; medians of {fmt(bench.get('repeats', 1))} interleaved repeats. Added per "
        f"run: {fmt(added, '+.1f')} s{why}; once: {fmt(bench['server_start_s'], '.1f')} s to start the server, "
        f"{fmt(bench['deploy_s'], '.1f')} s for `distill deploy`.\n")


def pipeline_bench_block(data: Data) -> str:
    """Each stage's wall time and peak memory, and what Prefect adds to the generate stage."""
    bench = data["benchmarks/results/pipeline.json"]
    rows = [[f"`{name}`", fmt(s["wall_s"], ".2f"), fmt(s.get("spread"), ".0%"), fmt(s["peak_rss_mb"], ",.0f"),
             fmt(bench["gates"].get(name, {}).get("wall_s"), ".2f")] for name, s in bench["stages"].items()]
    prefect = bench["prefect"]
    return table(["stage", "wall (s)", "spread", "peak memory (MB)", "its gate (s)"], rows) + (
        f"\n{fmt(bench['cpus'])} CPUs; medians of {fmt(bench.get('repeats', 1))} passes, each from an empty store "
        f"({fmt(bench['generate']['requests_sent'])} teacher requests sent). Prefect adds "
        f"{fmt(prefect['startup_cost_s'], '.1f')} s to a stage that uses it without a configured server "
        f"({fmt(prefect['with_prefect']['wall_s'], '.1f')} s against "
        f"{fmt(prefect['without_prefect']['wall_s'], '.1f')} s for the same shards without it).\n")


def scale_block(data: Data) -> str:
    """The score -> dedupe -> select path at two sizes, and generation at zero latency."""
    bench = data["benchmarks/results/scale.json"]
    sizes = list(bench["stages"])
    rows = []
    for stage in ("score", "dedupe", "select"):
        row = [f"`{stage}`"]
        for size in sizes:
            s = bench["stages"][size][stage]
            row += [f"{fmt(s['wall_s'], '.1f')} ({fmt(s['spread'], '.0%')})", fmt(s["peak_rss_mb"] / 1024, ".2f")]
        rows.append(row)
    rows.append(["whole path"] + [cell for size in sizes for cell in
                                  (f"**{fmt(bench['stages'][size]['path_s'], '.1f')}**", "")])
    header = ["stage"] + [h for size in sizes for h in (f"{size} rows: s (spread)", "peak GiB")]
    small, large = sizes[0], sizes[-1]
    growth = bench.get(f"growth_{small}_to_{large}")
    select = bench["stages"][large]["select"]
    out = table(header, rows) + (
        f"\nMedians of {fmt(bench['repeats'])} interleaved repeats, each stage in a process of its own on "
        f"{fmt(bench['cpus'])} CPUs. {small} to {large} rows: the path's time grew {fmt(growth, '.2f')}x "
        f"({fmt(bench['growth_linear'], '.0f')}x is linear; spread {fmt(bench['growth_spread'], '.0%')}); the "
        f"largest stage peaked at {fmt(bench[f'peak_rss_gb_{large}'], '.2f')} GiB.")
    if "model_rows_per_s" in select:
        out += (f" Select ran on stand-in vectors; the embedding model embeds {fmt(select['model_rows_per_s'], ',.0f')}"
                f" rows/s here, so with it select would take about {fmt(select['select_with_model_s'] / 60, ',.0f')} "
                f"minutes for its {fmt(select['eligible'])} eligible rows at {large}.")
    if "generate" in bench:
        gen = bench["generate"]
        out += (f" Generation (the generate stage, stand-in at zero latency, Prefect flow): {fmt(gen['requests'])} "
                f"requests at {fmt(gen['requests_per_s'], ',.0f')} requests/s (spread {fmt(gen['spread'], '.0%')}), "
                f"{fmt(gen['peak_rss_mb'] / 1024, '.1f')} GiB peak, a {fmt(gen['store_mb'], ',.0f')} MB request "
                "store.")
    return out + "\n"


def hf_teacher_block(data: Data) -> str:
    """The local Hugging Face teacher against plain batched ``model.generate``: same model, prompts and batch."""
    bench = data["benchmarks/results/hf_teacher.json"]
    head, model = bench["batch_size"], bench["model"]

    def row(label: str, found: dict) -> list[str]:
        return [label, fmt(found["generate_rps"], ",.1f"), fmt(found["rps"], ",.1f"),
                f"**{fmt(found['ratio_vs_generate'], '.2f')}x**" if label == str(head) else
                fmt(found["ratio_vs_generate"], ".2f") + "x", fmt(found["spread"], ".1%")]

    rows = [row(size, found) for size, found in bench["batches"].items()]
    rows.append(row(f"{head}, top-20 log-probs", bench["logprobs_top20"]))
    if "flow" in bench:
        rows.append(row(f"{head}, the Prefect flow ({bench['flow']['shards']} shards)", bench["flow"]))
    flow = (f" Prefect's start-up, once per stage: {fmt(bench['flow']['startup_s'], '.1f')} s (not in the flow's "
            "rate)." if "flow" in bench else "")
    return table(["batch", "plain `model.generate` (requests/s)", "`teacher.provider: hf` (requests/s)", "ratio",
                  "spread"], rows) + (
        f"\nA {model['layers']}-layer, {model['hidden']}-wide Llama ({fmt(model['parameters'] / 1e6, '.1f')}M "
        f"parameters, `{model['tokenizer']}`'s tokenizer and chat template); {fmt(bench['requests'])} greedy "
        f"requests of {fmt(bench['max_tokens'])} tokens per measurement, on {fmt(bench['cores'])} of "
        f"{fmt(bench['cpus'])} cores (torch threads: {fmt(bench['torch_threads'])}); medians of "
        f"{fmt(bench['repeats'])} interleaved repeats. Greedy answers equal to plain generate's: "
        f"{fmt(bench['batches'][str(head)]['same_answers'], '.0%')}.{flow}\n")


def reliability_block(data: Data) -> str:
    """The README's reliability table: what the reliability suite tried and what it found (benchmarks/reliability.py
    sums the counts its tests record), and the load benchmark (benchmarks/load.py)."""
    suite, load = data["benchmarks/results/reliability.json"], data["benchmarks/results/load.json"]
    rows = suite["rows"]

    def row(name: str) -> dict:
        return rows.get(name, {})

    kill, disk, seeds = row("kill anywhere"), row("disk and file faults"), row("bad input: seed files")
    params, answers = row("bad input: params"), row("bad input: teacher answers")
    secrets, security, same = row("secrets"), row("security"), row("byte-reproducible")
    faults = sum(load["faults_injected"].values())
    lines = [
        ["kill anywhere (SIGKILL at random moments, then a rerun)",
         f"{fmt(kill.get('stage_variants'))} stages and variants, {fmt(kill.get('kills'))} kills",
         f"{fmt(kill.get('partial_files'))} partial outputs seen, {fmt(kill.get('double_billed'))} requests paid "
         "twice; reruns equal uninterrupted runs"],
        ["disk and file faults (full disk, corrupt request store, a second run at once)",
         f"{fmt(disk.get('faults'))} scenarios ({fmt(disk.get('full_disk'))} on a full tmpfs)",
         "previous outputs intact, one message naming the path; bad store lines quarantined, none re-paid"],
        ["teacher faults under load (`benchmarks/load.py`)",
         f"{fmt(load['requests'])} requests at concurrency {fmt(load['concurrency'])}, {fmt(faults)} injected "
         f"faults ({fmt(load.get('faulty_attempts_share'), '.1%')} of attempts: 429, 500, hangs, cut bodies)",
         f"{fmt(load['lost'])} lost, client peak RSS {fmt(load['peak_rss_gb'], '.2f')} GB"],
        ["bad seed files (Hypothesis over JSONL, JSON, CSV, parquet, chat seeds)",
         f"{fmt(seeds.get('examples'))} generated files + {fmt(seeds.get('named_cases'))} named cases",
         f"{fmt(seeds.get('crashes'))} crashes: each refusal one error naming file, line and field; nothing written"],
        ["invalid params (every field of `params.yaml`)",
         f"{fmt(params.get('values'))} invalid values over {fmt(params.get('fields'))} fields",
         f"{fmt(params.get('refused'))} refused naming the dotted key"],
        ["malformed teacher answers (Hypothesis, over real HTTP)", f"{fmt(answers.get('examples'))} answers",
         f"{fmt(answers.get('crashes'))} crashes: each a classified reject or retry"],
        ["a sentinel API key through the whole pipeline", f"{fmt(secrets.get('files_scanned'))} files, "
         f"{fmt(secrets.get('log_lines_scanned'))} log lines, the Prefect database",
         f"{fmt(secrets.get('leaks'))} leaks"],
        ["other security checks", f"{fmt(security.get('checks'))} checks",
         "remote code and pickles refused by default, servers on loopback, no shell, seeds stay data"],
        ["byte-reproducible rerun (`dvc repro --force` from a kept store)", f"{fmt(same.get('outputs'))} outputs",
         f"{fmt(same.get('identical'))} identical to the first run"],
    ]
    return table(["what", "tried", "found"], lines) + (
        f"\n{fmt(suite['passed'])} of {fmt(suite['tests'])} tests passed, {fmt(suite['kill_seeds'])} kills per stage "
        f"variant, in {fmt(suite['wall_s'] / 60, '.0f')} minutes on 2 cores (`{suite['command']}`).\n")


BLOCKS: dict[str, Callable[[Data], str]] = {
    "eval": eval_block,
    "math": math_block,
    "funnel": funnel_block,
    "sweep": sweep_block,
    "forgetting": forgetting_block,
    "throughput": throughput_block,
    "dedupe-bench": dedupe_bench_block,
    "train-bench": train_bench_block,
    "white-box": white_box_block,
    "schedule": schedule_block,
    "pipeline-bench": pipeline_bench_block,
    "scale-bench": scale_block,
    "hf-teacher": hf_teacher_block,
    "reliability": reliability_block,
}


# --- rendering and checking -------------------------------------------------------------------------------------

def render_block(name: str, data: Data) -> str:
    if name not in BLOCKS:
        raise FigureError(f"no block named {name!r} in docs/figures.py (known: {', '.join(BLOCKS)})")
    try:
        return BLOCKS[name](data)
    except FigureError:
        raise
    except (KeyError, IndexError, TypeError) as error:
        raise FigureError(f"block {name!r} needs {error!r}, missing from the results files") from None


def render(text: str, data: Data) -> str:
    """``text`` with every block and inline figure rendered from ``data``; raises FigureError on a bad marker."""
    text = BLOCK.sub(lambda m: m["open"] + render_block(m["name"], data) + m["close"], text)
    return INLINE.sub(lambda m: m["open"] + fmt(value(data, m["file"], m["key"]), m["spec"]) + m["close"], text)


def problems(text: str, data: Data) -> list[str]:
    """Every block or inline figure in ``text`` that differs from what ``data`` renders, or cannot be rendered."""
    found = [f"a {kind} marker is malformed or not closed ({len(opening.findall(text))} opened, "
             f"{len(whole.findall(text))} well formed)"
             for kind, (opening, whole) in OPENINGS.items() if len(opening.findall(text)) != len(whole.findall(text))]
    for m in BLOCK.finditer(text):
        try:
            if render_block(m["name"], data) != m["body"]:
                found.append(f"figures:{m['name']} differs")
        except FigureError as error:
            found.append(f"figures:{m['name']}: {error}")
    for m in INLINE.finditer(text):
        where = f"fig {m['file']}:{m['key']}"
        try:
            expected = fmt(value(data, m["file"], m["key"]), m["spec"])
        except (FigureError, ValueError) as error:
            found.append(f"{where}: {error}")
            continue
        if expected != m["body"]:
            found.append(f"{where} reads {m['body']!r}, the file says {expected!r}")
    return found


def check(root: Path = ROOT, data: Data | None = None) -> list[str]:
    """``'<page>: <what differs>'`` for every stale figure in the README and docs/ pages; [] when all match."""
    data = load(root) if data is None else data
    return [f"{page.relative_to(root).as_posix()}: {problem}"
            for page in pages(root) for problem in problems(page.read_text(encoding="utf-8"), data)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 listing stale figures")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for line in stale:
            print(line)
        return 1 if stale else 0
    data = load()
    for page in pages():
        text = page.read_text(encoding="utf-8")
        try:
            new = render(text, data)
        except FigureError as error:
            print(f"{page.relative_to(ROOT).as_posix()}: {error}", file=sys.stderr)
            return 1
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {page.relative_to(ROOT).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
