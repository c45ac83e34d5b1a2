"""Test-session environment (no analytics, no hub, a private Prefect home), and everything the test modules share:
their fixtures, and the helpers they hand out as fixtures. Test modules never import one another."""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test's two workers share the cores: one thread each (and their
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # stages'), not two each spinning against the other's

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
TINY_CHAR = REPO / "data" / "students" / "tiny-char"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
WORDS = ["planet", "cat", "river", "stone", "maple", "orbit", "lemon", "tiger", "cloud", "amber",
         "delta", "quartz", "piano", "cedar", "fjord", "globe", "harbor", "ivory", "jungle", "kayak"]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``make test`` runs on two workers (pytest-xdist, ``--dist loadgroup``): each module stays on one worker, so
    its module fixtures (a whole `dvc repro`, often) are built once, and the modules that share the session's
    ``tiny_run`` stay together, so that run is made once too."""
    shares_tiny_run = {item.module.__name__ for item in items if "tiny_run" in getattr(item, "fixturenames", ())}
    for item in items:
        name = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("tiny_run" if name in shares_tiny_run else name))


# --- the reliability suite's figures (benchmarks/reliability.py sums them into the README's table) -------------


def record_reliability(row: str, **figures: int) -> None:
    """Add ``figures`` (counts: tried, survived, refused, leaks, ...) to the reliability table's ``row``. They go
    to the JSON-lines file named by DISTILL_RELIABILITY_LOG when benchmarks/reliability.py runs the suite, and
    nowhere otherwise (the tests assert on their own results either way)."""
    log = os.environ.get("DISTILL_RELIABILITY_LOG")
    if log:
        with open(log, "a") as out:  # one short line per call: appends from two workers do not interleave
            out.write(json.dumps({"row": row, **figures}) + "\n")


@pytest.fixture(scope="session")
def reliability() -> Callable[..., None]:
    """``reliability(row, **counts)``: record figures for the README's reliability table, e.g.
    ``reliability("kill anywhere", stage="train", kills=3)``; numbers are summed per row and key."""
    return record_reliability


# --- real servers and workers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process, what: str, log: Path, timeout_s: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{what} did not start; its log:\n{log.read_text()[-3000:]}")


def start_background(command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Start ``command`` with its output in ``log``; a process group of its own, so that stopping it stops its
    children too."""
    bin_dir = str(Path(sys.executable).parent)
    full_env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"} | (env or {})
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                start_new_session=True)


def stop(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def background() -> Callable[..., subprocess.Popen]:
    """``background(command, log, env=None, cwd=None)``: start a process (group) with its output in ``log``."""
    return start_background


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (``prefect server start``) on loopback with its own PREFECT_HOME and SQLite
    database, started once per test session; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server = start_background(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              home / "server.log", env={"PREFECT_HOME": str(home), "PREFECT_API_URL": ""})
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(f"{api}/health", server, "prefect server", home / "server.log")
        yield api
    finally:
        stop(server)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode) on loopback, with a bucket ``distill-remote``;
    yields the environment a DVC or boto3 client needs to reach it (``endpoint`` is its URL)."""
    import boto3

    log = tmp_path_factory.mktemp("s3") / "moto.log"
    port = free_port()
    server = start_background(["moto_server", "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        wait_for(f"{endpoint}/moto-api/", server, "moto server", log, timeout_s=60)
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="distill-remote")
        yield env | {"endpoint": endpoint}
    finally:
        stop(server)


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real process worker (``prefect worker start --pool distill``) polling the test server every second;
    yields its log file."""
    log = tmp_path_factory.mktemp("prefect-worker") / "worker.log"
    worker = start_background(["prefect", "worker", "start", "--pool", "distill", "--type", "process"], log,
                              env={"PREFECT_API_URL": prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        yield log
    finally:
        stop(worker)


# --- temporary git+DVC copies of this repo with the tiny profile (the end-to-end tests) --------------------------

TINY_PROFILE = {
    "ingest.train": "data/seeds/tiny_train.jsonl",
    "ingest.eval": "data/seeds/tiny_eval.jsonl",
    "train.max_steps": 30,
    "train.batch_size": 16,
    "train.warmup_steps": 0,
    "gates.ingest.min_rows": 50,
    "gates.ingest.min_eval_rows": 20,
    "gates.generate.min_rows": 50,
    "gates.score.min_rows": 50,
    "gates.dedupe.min_rows": 50,
    "gates.select.min_rows": 30,
    "gates.train.max_final_loss": 5.0,
    "gates.evaluate.min_rows": 20,
    "benchmarks.lm_eval": False,  # lm-eval costs a repro 15-30 s: on in tiny_run only (LM_EVAL_ON)
    "benchmarks.limit": 20,  # lm-eval's items per benchmark task (the benchmark stage)
}


def run_in(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    full_env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"} | (env or {})
    result = subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env=full_env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def set_repo_params(repo: Path, **updates: object) -> None:
    """Set dotted keys in the copy's params.yaml, e.g. set_params(repo, **{"train.max_steps": 30})."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_tiny_repo(repo: Path, extra: dict | None = None, setup=None) -> Path:
    """A git+DVC copy of the committed repo in ``repo`` with the tiny profile (plus ``extra`` params), committed;
    ``setup(repo)`` may add files before the commit."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files + [n for n in ("dvc.yaml", "params.yaml") if n not in files]:
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    (repo / "dvc.lock").unlink(missing_ok=True)  # the main repo's lock describes the full profile
    seeds = (REPO / "data/seeds/train.jsonl").read_text().splitlines()
    (repo / TINY_PROFILE["ingest.train"]).write_text("\n".join(seeds[:150]) + "\n")
    evals = (REPO / "data/seeds/eval.jsonl").read_text().splitlines()
    (repo / TINY_PROFILE["ingest.eval"]).write_text("\n".join(evals[:30]) + "\n")
    set_repo_params(repo, **(TINY_PROFILE | (extra or {})))
    if setup:
        setup(repo)
    run_in(repo, "git", "init", "-q")
    run_in(repo, "git", "add", "-A")
    run_in(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    return repo


def copy_repo_run(source: Path, target: Path) -> Path:
    """A copy of a repo that has run (workspace, git history, DVC cache), to go on from without running it again;
    DVC's own state (``.dvc/tmp``) is left behind and rebuilt."""
    shutil.copytree(source, target, symlinks=True, ignore=lambda folder, names: ["tmp"] if folder.endswith(".dvc")
                    else [])
    return target


def repo_metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def stages_in(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture(scope="session")
def run() -> Callable[..., subprocess.CompletedProcess]:
    """``run(repo, *args, check=True, env=None)``: a command in ``repo`` with this venv's tools on PATH; raises
    with its output when it fails (unless ``check=False``)."""
    return run_in


@pytest.fixture(scope="session")
def set_params() -> Callable[..., None]:
    """``set_params(repo, **{"train.max_steps": 30})``: set dotted keys in a repo copy's params.yaml."""
    return set_repo_params


@pytest.fixture(scope="session")
def tiny_profile() -> dict:
    """The params of the tiny profile, by dotted key (a copy: change it freely)."""
    return dict(TINY_PROFILE)


@pytest.fixture(scope="session")
def tiny_repo() -> Callable[..., Path]:
    """``tiny_repo(folder, extra=None, setup=None)``: a committed git+DVC copy of the repo with the tiny profile."""
    return make_tiny_repo


@pytest.fixture(scope="session")
def copy_run() -> Callable[[Path, Path], Path]:
    """``copy_run(source, target)``: a copy of a repo that has run, to go on from without running it again."""
    return copy_repo_run


@pytest.fixture(scope="session")
def metrics() -> Callable[[Path, str], dict]:
    """``metrics(repo, "eval")``: a repo's metrics/<name>.json."""
    return repo_metrics


@pytest.fixture(scope="session")
def run_log() -> Callable[[Path, str], dict]:
    """``run_log(repo, "evaluate")``: what the last run of a stage did (wall time, requests sent and served this
    run), its logs/<stage>.json (distill/run_log.py)."""
    return lambda repo, stage: json.loads((repo / "logs" / f"{stage}.json").read_text())


@pytest.fixture(scope="session")
def stages_run() -> Callable[[str], list[str]]:
    """``stages_run(dvc_output)``: the stages a dvc command ran, in order."""
    return stages_in


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser that opens reports/index.html; skipped, saying how to get it, where there is none."""
    from distill.report.browser import find_chromium

    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium on PATH: `make test` installs Debian's chromium package when run as root; "
                    "otherwise `apt-get install chromium`, or set CHROMIUM=/path/to/chrome")
    return path


LM_EVAL_ON = {"benchmarks.lm_eval": True}  # the shared run scores on the benchmarks as the default does


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC copy of the repo with the tiny profile after one `dvc repro`. Read only: a test that goes on
    from it works on its own copy (the ``copy_run`` fixture)."""
    repo = make_tiny_repo(tmp_path_factory.mktemp("tiny-run") / "repo", LM_EVAL_ON)
    run_in(repo, "dvc", "repro")
    return repo


# --- which project modules a module imports (read from the source with ast) -----------------------------------

PACKAGES = ("distill", "stages", "flows", "demo")


def module_path(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def direct_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def imported_project_files(module: str) -> set[str]:
    """Relative paths of the module and every project module it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_path(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(direct_imports(path))
    return {str(path.relative_to(REPO)) for path in seen if path.name != "__init__.py" or path.stat().st_size}


@pytest.fixture(scope="session")
def project_files() -> Callable[[str], set[str]]:
    """``project_files("stages.train")``: relative paths of the module and every project module it imports,
    transitively."""
    return imported_project_files


# --- the generate stage against the stand-in ------------------------------------------------------------------


def generate_params(**generate_updates: object):
    """params.yaml with the shipped templates by absolute path, and ``generate_updates`` in its generate section."""
    from distill import params as params_module

    params = params_module.load(REPO / "params.yaml")
    updates = {"template": str(TEMPLATES / "labelling.txt"), "system": str(TEMPLATES / "system.txt")}
    return params.model_copy(update={"generate": params.generate.model_copy(update=updates | generate_updates)})


def standin_with(params, **rates: float):
    teacher = params.teacher.model_copy(update={"settings": params.teacher.settings | rates})
    return params.model_copy(update={"teacher": teacher})


def seed_frame(instructions: list[str]):
    import polars as pl

    from distill.io import content_hash
    from distill.records import SEED

    return pl.DataFrame(
        [{"id": content_hash({"instruction": text, "input": ""}), "instruction": text, "input": "", "context": "",
          "reference": None,
          "split": "train", "source_file": "seeds/train.jsonl", "source_line": line, "source_hash": "h" * 16}
         for line, text in enumerate(instructions, start=1)],
        schema=SEED,
    )


def prompt_of(params):
    from distill.prompts import Prompt

    return Prompt(params.generate.system, params.generate.template)


def fake_completion(response_id: str, *contents: str | None, finish: str = "stop") -> dict:
    return {
        "id": response_id,
        "model": "standin-skill-1-2026-11-01",
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                    for i, text in enumerate(contents)],
        "usage": {"prompt_tokens": 100, "completion_tokens": 6},
    }


def run_generate(params, tmp_path: Path, seeds_path: Path) -> dict:
    """The generate stage as its main runs it, with outputs under ``tmp_path/gen`` and the store in
    ``tmp_path/store``; eval inputs from eval.parquet beside the seeds when there is one."""
    import polars as pl

    from distill.elicit import check_capabilities
    from distill.elicit.features import size_metrics
    from distill.records import SEED, empty
    from distill.teacher.engine import EngineSettings
    from distill.teacher.store import open_store
    from flows.teacher import run_plan
    from stages import generate

    evals_path = seeds_path.with_name("eval.parquet")
    evals = pl.read_parquet(evals_path) if evals_path.exists() else empty(SEED)
    settings = EngineSettings.from_env()
    check_capabilities(params)  # as main does: before the store is opened
    with open_store(tmp_path / "store/generate.jsonl", settings.store_wait_s) as store:
        frames, metrics = generate.run(params, pl.read_parquet(seeds_path), evals, store, run_plan, settings)
        for name, frame in frames.items():
            frame.write_parquet(tmp_path / "gen" / f"{name}.parquet", mkdir=True)
    return metrics | size_metrics(frames["features"], tmp_path / "gen/features.parquet")


@pytest.fixture(scope="session")
def seed_words() -> list[str]:
    """Twenty demo words (a copy: change it freely)."""
    return list(WORDS)


@pytest.fixture(scope="session")
def load_params() -> Callable[..., object]:
    """``load_params(**generate_updates)``: params.yaml, the shipped templates by absolute path, and the updates in
    its generate section."""
    return generate_params


@pytest.fixture(scope="session")
def with_standin() -> Callable[..., object]:
    """``with_standin(params, **rates)``: the params with those stand-in teacher settings."""
    return standin_with


@pytest.fixture(scope="session")
def seeds() -> Callable[[list[str]], object]:
    """``seeds(instructions)``: a SEED frame of those instructions (split train, lines 1..n)."""
    return seed_frame


@pytest.fixture(scope="session")
def prompt() -> Callable[[object], object]:
    """``prompt(params)``: the Prompt of params.generate's system and template."""
    return prompt_of


@pytest.fixture(scope="session")
def completion() -> Callable[..., dict]:
    """``completion(response_id, *contents, finish="stop")``: an OpenAI-shaped chat completion."""
    return fake_completion


@pytest.fixture(scope="session")
def run_stage() -> Callable[[object, Path, Path], dict]:
    """``run_stage(params, tmp_path, seeds_path)``: the generate stage (through flows.teacher.run_plan) with its
    outputs under ``tmp_path`` (gen/, store/); its metrics."""
    return run_generate


@pytest.fixture
def forty_seeds(tmp_path: Path) -> Path:
    """Forty demo seeds (reverse and upper of twenty words) as an ingest parquet file."""
    from distill.io import write_parquet

    path = tmp_path / "ingest" / "train.parquet"
    write_parquet(seed_frame([f"{op} {word}" for word in WORDS for op in ("reverse", "upper")]), path)
    return path


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[..., str]]:
    """``serve(**rates)`` -> base URL of a stand-in with those settings, started once per test module."""
    from demo.standin import Settings as StandinSettings
    from demo.standin import running_standin

    with ExitStack() as stack:
        urls: dict[tuple, str] = {}

        def url_for(**rates: float) -> str:
            key = tuple(sorted(rates.items()))
            if key not in urls:
                urls[key] = stack.enter_context(running_standin(StandinSettings(**rates)))
            return urls[key]

        yield url_for


def billed_requests(request_log: Path, probes: bool = False) -> Counter:
    """Requests a stand-in answered and billed, by request hash, from its ``--request-log`` (replays of an
    Idempotency-Key and faults are not billed); the probe's two tiny requests per run (distill/teacher/probe.py,
    labelled ``user: distill-probe-N``) only with ``probes``."""
    records = [json.loads(line) for line in request_log.read_text().splitlines()]
    return Counter(r["request_hash"] for r in records if r["status"] == 200 and r["fault"] is None
                   and (probes or not str(r.get("user", "")).startswith("distill-probe")))


@pytest.fixture
def billed() -> Callable[[Path], Counter]:
    """``billed(request_log, probes=False)``: the stand-in's billed requests by request hash (see
    billed_requests)."""
    return billed_requests


def standin_endpoint_logging_to(request_log: Path) -> Callable:
    """A teacher endpoint as distill.teacher.endpoint.teacher_endpoint is one (``endpoint(teacher)`` yields
    ``(base_url, api_key_env)``) that starts the stand-in with the teacher's settings on 127.0.0.1, every request it
    receives appended to ``request_log``."""
    from contextlib import contextmanager

    @contextmanager
    def endpoint(teacher) -> Iterator[tuple[str, None]]:
        from demo.standin import Settings as StandinSettings
        from demo.standin import running_standin

        with running_standin(StandinSettings.model_validate(teacher.settings), request_log) as url:
            yield url, None

    return endpoint


@pytest.fixture(scope="session")
def logged_standin() -> Callable[[Path], Callable]:
    """``logged_standin(request_log)``: a teacher endpoint (stages.benchmark.run's ``endpoint``) that serves the
    stand-in on loopback and logs every request it receives to ``request_log`` (read it with ``billed``)."""
    return standin_endpoint_logging_to


# --- the elicitation methods and the feature method ---------------------------------------------------------

QUIET = {"error_rate": 0.0, "rate_limit_rate": 0.0, "wrong_rate": 0.0, "hard_wrong_rate": 0.0,
         "malformed_rate": 0.0, "refusal_rate": 0.0}


def methods_params(methods: list[str], **sections: dict):
    """Params with ``generate.elicit`` and small per-method settings (``expansion={...}``, ...)."""
    params = generate_params(elicit=methods, max_failed_fraction=0.5)
    gen = params.generate
    updates = {name: getattr(gen, name).model_copy(update=values) for name, values in sections.items()}
    return params.model_copy(update={"generate": gen.model_copy(update=updates)})


def generate_outputs(tmp_path: Path):
    import polars as pl

    from distill.records import GENERATED, REJECT

    gen = tmp_path / "gen"
    rows, rejects = pl.read_parquet(gen / "rows.parquet"), pl.read_parquet(gen / "rejects.parquet")
    assert rows.schema == pl.Schema(GENERATED) and rejects.schema == pl.Schema(REJECT)
    return rows, rejects, pl.read_parquet(gen / "preferences.parquet")


def features_params(top_logprobs: int | None = 5, **standin: object):
    params = generate_params(top_logprobs=top_logprobs, feature_tokenizer=str(TINY_CHAR))
    return standin_with(params, **({"error_rate": 0.0, "rate_limit_rate": 0.0} | standin))  # no retries: fast


@pytest.fixture
def quiet() -> dict:
    """Stand-in settings with no faults and no wrong answers."""
    return dict(QUIET)


@pytest.fixture(scope="session")
def params_for() -> Callable[..., object]:
    """``params_for(methods, **sections)``: params with ``generate.elicit`` and small per-method settings
    (``expansion={...}``, ...)."""
    return methods_params


@pytest.fixture(scope="session")
def outputs() -> Callable[[Path], tuple]:
    """``outputs(tmp_path)``: the rows, rejects and preference pairs run_stage wrote there (schemas checked)."""
    return generate_outputs


@pytest.fixture(scope="session")
def feature_params() -> Callable[..., object]:
    """``feature_params(top_logprobs=5, **standin)``: params for the feature method with tiny-char's tokenizer,
    a stand-in without retries (plus ``standin`` settings)."""
    return features_params


# --- score, dedupe, select on literal rows ----------------------------------------------------------------------


def generated_frame(*rows: tuple):
    """Rows of (id, instruction, response[, finish_reason]) with every other GENERATED column filled."""
    import polars as pl

    from distill.records import GENERATED

    records = []
    for row in rows:
        row_id, instruction, response, finish = (*row, "stop")[:4]
        records.append({
            "id": row_id, "seed_id": f"seed-{row_id}", "source_file": "data/seeds/train.jsonl", "source_line": 1,
            "method": "labelling", "teacher": "standin", "model_requested": "standin-skill-1",
            "model_answered": "standin-skill-1-2026-11-01", "template_hash": "t" * 16, "sampling_hash": "s" * 16,
            "request_key": f"key-{row_id}", "response_id": f"chatcmpl-{row_id}", "choice_index": 0,
            "created_at": "2026-01-01T00:00:00.000+00:00", "prompt_tokens": 10,
            "completion_tokens": len(response), "finish_reason": finish, "instruction": instruction, "input": "",
            "context": "",
            "response": response,
        })
    return pl.DataFrame(records, schema=GENERATED)


def deduped_frame(count: int, signals: dict[str, list] | None = None, **bad: str):
    """``count`` clean rows r00.. (reverse <word>), plus rows named in ``bad`` with a wrong answer."""
    import polars as pl

    from demo import words as demo_words
    from distill.params import DedupeParams, ScoreParams
    from stages import dedupe, score

    words = [f"{chr(97 + i % 26)}{chr(97 + i // 26)}xyz" for i in range(count)]
    rows = [(f"r{i:02d}", f"reverse {word}", word[::-1]) for i, word in enumerate(words)]
    rows += [(name, instruction, "nope") for name, instruction in bad.items()]
    scored = score.score(generated_frame(*rows), ScoreParams(min_response_chars=1, max_response_chars=20),
                         verify=demo_words.verify)
    for name, values in (signals or {}).items():
        scored = scored.with_columns(pl.Series(name, values + [None] * (scored.height - len(values)),
                                               dtype=pl.Float64))
    return dedupe.dedupe(scored, DedupeParams())


@pytest.fixture(scope="session")
def generated() -> Callable[..., object]:
    """``generated(*rows)``: a GENERATED frame of (id, instruction, response[, finish_reason]) rows, every other
    column filled."""
    return generated_frame


@pytest.fixture(scope="session")
def deduped_rows() -> Callable[..., object]:
    """``deduped_rows(count, signals=None, **bad)``: scored and deduped rows, ``count`` clean ones r00..
    (reverse <word>) plus the rows named in ``bad`` with a wrong answer; ``signals`` adds Float64 columns."""
    return deduped_frame


# --- students, teachers and training ---------------------------------------------------------------------------

STUDENT_TEMPLATE = (TEMPLATES / "student.txt").read_text(encoding="utf-8")


def make_tiny_llama(folder: Path, hidden_size: int, layers: int, heads: int, vocab_size: int | None = None,
                    tokenizer: bool = True) -> Path:
    """A config-only Llama in ``folder`` shaped like tiny-char (with its tokenizer files unless told not to)."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES if tokenizer else ():
        shutil.copy(TINY_CHAR / name, folder / name)
    config = LlamaConfig.from_pretrained(TINY_CHAR)
    config.update({"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": hidden_size // heads,
                   "vocab_size": vocab_size or config.vocab_size})
    config.save_pretrained(folder)
    return folder


def state_of(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def weights_equal(left: dict, right: dict) -> bool:
    import torch

    return left.keys() == right.keys() and all(torch.equal(left[name], right[name]) for name in left)


def params_of_train(student_dir: Path, **updates: object):
    from distill import params as params_module

    base = params_module.load(REPO / "params.yaml").train
    return base.model_copy(
        update={"student": str(student_dir), "prompt_template": str(TEMPLATES / "student.txt"),
                "objective": "sft", "max_steps": 8, "batch_size": 8, "warmup_steps": 0, **updates}
    )


def corrupt(answer: str, rng: random.Random) -> str:
    """A wrong answer of the kind a weak student gives: a letter lost, changed or the word left as is."""
    kind = rng.choice(["drop", "change", "reverse"])
    if kind == "drop" and len(answer) > 1:
        return answer[:-1]
    if kind == "reverse" and answer[::-1] != answer:
        return answer[::-1]
    position = rng.randrange(len(answer))
    letter = "z" if answer[position].lower() != "z" else "a"
    return answer[:position] + (letter.upper() if answer.isupper() else letter) + answer[position + 1:]


def preference_rows(count: int = 16, seed: int = 0) -> list[dict]:
    """Feedback-style pairs from the demo skill: chosen = the right answer, rejected = a corrupted one."""
    from demo import words
    from distill.prompts import student_prompt

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        instruction = words.random_instruction(rng)
        right = words.solve(instruction)
        rows.append({"prompt": student_prompt(STUDENT_TEMPLATE, instruction), "chosen": right,
                     "rejected": corrupt(right, rng)})
    assert all(row["chosen"] != row["rejected"] for row in rows)
    return rows


def tiny_config(folder: Path, **extra):
    """tiny-char's config shrunk to 1 layer, 32 wide, with its tokenizer files copied beside it."""
    from transformers import LlamaConfig

    for name in TOKENIZER_FILES:
        shutil.copy(TINY_CHAR / name, folder / name)
    config = LlamaConfig.from_pretrained(TINY_CHAR, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, head_dim=16, **extra)
    config.save_pretrained(folder)
    return config


@pytest.fixture(scope="session")
def tiny_char() -> Path:
    """The shipped tiny-char student (config and character tokenizer). Read only."""
    return TINY_CHAR


@pytest.fixture(scope="session")
def tiny_chat() -> Path:
    """The shipped tiny-chat student (config, byte-level BPE tokenizer, ChatML chat template, eos <|im_end|>, no pad
    token). Read only."""
    return REPO / "data" / "students" / "tiny-chat"


@pytest.fixture(scope="session")
def tokenizer_files() -> tuple[str, ...]:
    """The tokenizer files a student folder holds."""
    return TOKENIZER_FILES


@pytest.fixture(scope="session")
def student_template() -> str:
    """templates/student.txt, the student's prompt template."""
    return STUDENT_TEMPLATE


@pytest.fixture(scope="session")
def tiny_llama() -> Callable[..., Path]:
    """``tiny_llama(folder, hidden_size, layers, heads, vocab_size=None, tokenizer=True)``: a config-only Llama
    shaped like tiny-char, with its tokenizer files unless told not to."""
    return make_tiny_llama


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config-only student even smaller than tiny-char: 1 layer, 32 wide, same tokenizer. Read only: every test
    of the session shares it (a test that changes it works on a copy)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-student"), hidden_size=32, layers=1, heads=2)


@pytest.fixture(scope="session")
def _skill_pairs() -> list[dict]:
    from demo import words
    from distill.prompts import student_prompt

    rng = random.Random(0)
    instructions = [words.random_instruction(rng) for _ in range(64)]
    return [{"prompt": student_prompt(STUDENT_TEMPLATE, text), "completion": words.solve(text)}
            for text in instructions]


@pytest.fixture
def skill_pairs(_skill_pairs: list[dict]) -> list[dict]:
    """64 seeded (prompt, completion) pairs of the demo skill (a fresh copy for each test)."""
    return [dict(pair) for pair in _skill_pairs]


@pytest.fixture(scope="session")
def train_params() -> Callable[..., object]:
    """``train_params(student_dir, **updates)``: params.yaml's train section for a short SFT run of that student
    (8 steps of 8, no warmup) with the updates."""
    return params_of_train


@pytest.fixture
def base_params():
    """params.yaml as it is."""
    from distill import params as params_module

    return params_module.load(REPO / "params.yaml")


@pytest.fixture(scope="session")
def state() -> Callable[[object], dict]:
    """``state(model)``: a detached copy of the model's state dict."""
    return state_of


@pytest.fixture(scope="session")
def same_weights() -> Callable[[dict, dict], bool]:
    """``same_weights(left, right)``: two state dicts with the same names and equal tensors."""
    return weights_equal


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path: the train stage keeps its resumable checkpoints under ./.distill."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_preferences() -> Callable[..., list[dict]]:
    """``synthetic_preferences(count=16, seed=0)``: feedback-style pairs from the demo skill (chosen = the right
    answer, rejected = a corrupted one)."""
    return preference_rows


@pytest.fixture(scope="session")
def tiny_reward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 1-label LlamaForSequenceClassification saved with weights, as TRL's RewardTrainer would. Read
    only."""
    import torch
    from transformers import LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-reward")
    config = tiny_config(folder, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    return folder


# --- the gates (tests/test_gate_<stage>.py) -----------------------------------------------------------------------
# Good rows are lists of dicts, one per table: a test breaks a field, then builds the frame. The builders chain
# generated -> scored -> deduped (the select module adds its selection on top).


def gate_seed_rows(n: int, split: str) -> list[dict]:
    return [{
        "id": f"{split}-{i}", "instruction": f"add {i} and 1", "input": "", "context": "",
        "reference": f"{i + 1}" if split == "eval" else None, "split": split,
        "source_file": f"data/seeds/{split}.jsonl", "source_line": i + 1, "source_hash": "abc",
    } for i in range(n)]


def gate_generated_rows(n: int) -> list[dict]:
    return [{
        "id": f"g{i}", "seed_id": f"train-{i}", "source_file": "data/seeds/train.jsonl", "source_line": i + 1,
        "method": "labelling", "teacher": "standin", "model_requested": "m", "model_answered": "m",
        "template_hash": "t", "sampling_hash": "s", "request_key": f"k{i}", "response_id": f"r{i}",
        "choice_index": 0, "created_at": "2024-01-01T00:00:00Z", "prompt_tokens": 12, "completion_tokens": 3,
        "finish_reason": "stop", "instruction": f"add {i} and 1", "input": "", "context": "",
        "response": f"{i + 1}",
    } for i in range(n)]


def gate_scored_rows(n: int) -> list[dict]:
    rows = [row | {"length_ok": True, "truncated": False, "refusal": False, "verified": True,
                   "repetition": 0.0, "charset_ok": True, "quality": 0.9, "keep": True, "drop_reason": None}
            for row in gate_generated_rows(n)]
    rows[-1] |= {"refusal": True, "quality": 0.1, "keep": False, "drop_reason": "refusal"}
    return rows


def gate_deduped_rows(n: int) -> list[dict]:
    rows = [row | {"norm_hash": f"n{i}", "dup_of": None} for i, row in enumerate(gate_scored_rows(n))]
    # the last row repeats the first one's instruction and is dropped as its duplicate
    rows[-1] |= {"norm_hash": "n0", "keep": False, "drop_reason": "duplicate", "dup_of": "g0",
                 "refusal": False}
    return rows


def gate_frame(rows: list[dict], schema: dict):
    import polars as pl

    return pl.DataFrame(rows, schema=schema, orient="row")


def gate_failures(result) -> dict:
    """Failed outcomes keyed by ``table: type(column)[ where ...]``."""
    return {f"{outcome.table}: {outcome.label()}": outcome for outcome in result.failures}


def gate_passes(result) -> None:
    assert result.success, result.message(Path("report.json"))
    assert result.outcomes and all(outcome.error is None for outcome in result.outcomes)


def gate_suite(stage: str):
    import importlib

    return importlib.import_module(f"stages.gates.{stage}")


def run_gate_cli(workdir: Path, stage: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", f"stages.gates.{stage}"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def write_ingest_tables(workdir: Path, train: list[dict], eval_: list[dict]) -> None:
    from distill.records import SEED

    gate_frame(train, SEED).write_parquet(workdir / "data/ingest/train.parquet")
    gate_frame(eval_, SEED).write_parquet(workdir / "data/ingest/eval.parquet")


@pytest.fixture(scope="session")
def suite() -> Callable[[str], object]:
    """``suite("ingest")``: the gate module ``stages.gates.<stage>`` (its checks, tables and schemas), the suite
    ``distill.gate.validate`` runs."""
    return gate_suite


@pytest.fixture(scope="session")
def never() -> int:
    """A row threshold no test data can meet."""
    return 10**9


@pytest.fixture(scope="session")
def frame() -> Callable[[list[dict], dict], object]:
    """``frame(rows, schema)``: a polars frame of those dict rows with that schema."""
    return gate_frame


@pytest.fixture(scope="session")
def failed() -> Callable[[object], dict]:
    """``failed(result)``: a GateResult's failed outcomes keyed by ``table: type(column)[ where ...]``."""
    return gate_failures


@pytest.fixture(scope="session")
def assert_passes() -> Callable[[object], None]:
    """``assert_passes(result)``: assert a GateResult passed, every expectation ran without an error."""
    return gate_passes


@pytest.fixture(scope="session")
def good_seed_rows() -> Callable[[int, str], list[dict]]:
    """``good_seed_rows(n, split)``: n SEED rows ``<split>-<i>`` ("add i and 1"; eval rows have a reference)."""
    return gate_seed_rows


@pytest.fixture(scope="session")
def good_generated_rows() -> Callable[[int], list[dict]]:
    """``good_generated_rows(n)``: n GENERATED rows g0.. answering seeds train-0.. ("add i and 1" -> i + 1)."""
    return gate_generated_rows


@pytest.fixture(scope="session")
def good_scored_rows() -> Callable[[int], list[dict]]:
    """``good_scored_rows(n)``: good_generated_rows(n) scored; all kept but the last (a refusal)."""
    return gate_scored_rows


@pytest.fixture(scope="session")
def good_deduped_rows() -> Callable[[int], list[dict]]:
    """``good_deduped_rows(n)``: good_scored_rows(n) deduplicated; the last row is dropped as a duplicate of g0
    (n - 1 kept)."""
    return gate_deduped_rows


@pytest.fixture
def gate_workdir(tmp_path: Path) -> Path:
    """A folder to run a gate's command line in: a copy of params.yaml and an empty data/ingest/."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data/ingest").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def gx_workdir(gate_workdir: Path) -> Path:
    """gate_workdir with the committed GX project file as a clone has it (gx/great_expectations.yml and
    gx/.gitignore): no stores and no Data Docs yet."""
    (gate_workdir / "gx").mkdir()
    for name in ("great_expectations.yml", ".gitignore"):
        shutil.copy(REPO / "gx" / name, gate_workdir / "gx" / name)
    return gate_workdir


@pytest.fixture(scope="session")
def run_gate() -> Callable[[Path, str], subprocess.CompletedProcess]:
    """``run_gate(workdir, stage)``: ``python -m stages.gates.<stage>`` in workdir (not checked)."""
    return run_gate_cli


@pytest.fixture(scope="session")
def write_ingest() -> Callable[[Path, list[dict], list[dict]], None]:
    """``write_ingest(workdir, train, eval_)``: those seed rows as workdir's data/ingest/{train,eval}.parquet."""
    return write_ingest_tables


# --- benchmark decontamination ----------------------------------------------------------------------------------


@pytest.fixture
def write_items(tmp_path: Path) -> Callable[..., Path]:
    """``write_items(items, suffix=".jsonl")``: benchmark items (dicts) as a JSONL or parquet file in tmp_path."""
    import polars as pl

    def write(items: list[dict], suffix: str = ".jsonl") -> Path:
        path = tmp_path / f"bench{suffix}"
        frame = pl.DataFrame(items)
        frame.write_parquet(path) if suffix == ".parquet" else frame.write_ndjson(path)
        return path

    return write


# --- kill anywhere: a stage killed by SIGKILL at a random moment, then run again (tests/test_kill_anywhere*.py) ----

KILL_SEEDS = int(os.environ.get("DISTILL_KILL_SEEDS", "1"))  # kills per stage variant (benchmarks/reliability.py: more)
KILL_KEY_ENV = "DISTILL_KILL_KEY"  # holds the stand-in's (dummy) API key
PER_CALL = ("created_at", "response_id")  # facts of one HTTP call, not of the answer: new when asked afresh


def stage_outputs(repo: Path, stage: str) -> tuple[dict[str, bool], list[str]]:
    """A stage's outputs in ``repo``'s dvc.yaml: its outs and plots (path -> whether it is a request store, a
    ``persist: true`` out), and its metrics files."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]

    def entries(key: str) -> list[tuple[str, dict]]:
        return [next(iter(entry.items())) if isinstance(entry, dict) else (entry, {}) for entry in spec.get(key, [])]

    outs = {path: bool((options or {}).get("persist")) for path, options in entries("outs") + entries("plots")}
    return outs, [path for path, _ in entries("metrics")]


def read_output(path: Path) -> bytes | dict[str, bytes] | None:
    """A file's bytes, a folder's files (relative path -> bytes, hidden ones included), or None when absent."""
    if path.is_dir():
        return {str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()}
    return path.read_bytes() if path.exists() else None


def store_keys(data: bytes | None) -> set[str] | None:
    """The request keys in a store's bytes; None when a line is torn or not JSON (a partial file)."""
    try:
        return {json.loads(line)["key"] for line in (data or b"").splitlines()}
    except (ValueError, KeyError):
        return None


def same_output(name: str, got, want, per_call: bool) -> bool:
    """``got`` equals ``want`` byte for byte; for a parquet file of teacher rows asked afresh (``per_call``), equal
    as a table without the PER_CALL columns."""
    if isinstance(want, dict):
        return (isinstance(got, dict) and got.keys() == want.keys()
                and all(same_output(key, got[key], want[key], per_call) for key in want))
    if got == want or not (per_call and name.endswith(".parquet") and isinstance(got, bytes)):
        return got == want
    import io

    import polars as pl

    return pl.read_parquet(io.BytesIO(got)).drop(PER_CALL, strict=False).equals(
        pl.read_parquet(io.BytesIO(want)).drop(PER_CALL, strict=False))


class StageKiller:
    """Runs stages as DVC does (``python -m stages.<name>`` in a repo's workspace) against an external stand-in
    teacher with a request log, kills them with SIGKILL at a random moment, runs them again and compares their
    outputs with an uninterrupted run's. The stand-in keeps one port, so the request keys (which hold its URL) are
    the same in every copy of the repo."""

    def __init__(self, folder: Path, prefect_api: str) -> None:
        self.folder, self.port = folder, free_port()
        self.env = {"PREFECT_API_URL": prefect_api, KILL_KEY_ENV: "kill-anywhere"}
        self.teacher_params = {"teacher.provider": "openai", "teacher.base_url": f"http://127.0.0.1:{self.port}/v1",
                               "teacher.api_key_env": KILL_KEY_ENV}
        self.durations: dict[str, float] = {}  # of the base run's stages
        self.teacher = None

    def fresh_teacher(self, request_log: Path) -> None:
        """A new stand-in on the same port, logging to ``request_log``: it has replayed no Idempotency-Key yet, so
        every answer it gives is billed there."""
        self.close()
        ready = request_log.with_suffix(".url")
        self.teacher = start_background(
            [sys.executable, "-m", "demo.standin", "--port", str(self.port), "--params", str(REPO / "params.yaml"),
             "--request-log", str(request_log), "--ready-file", str(ready)], request_log.with_suffix(".log"), cwd=REPO)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert self.teacher.poll() is None and time.monotonic() < deadline, \
                request_log.with_suffix(".log").read_text()
            time.sleep(0.05)

    def close(self) -> None:
        if self.teacher is not None:
            stop(self.teacher)

    def run(self, repo: Path, stage: str) -> float:
        """Run ``stage`` to the end in ``repo``; its duration in seconds."""
        started = time.monotonic()
        run_in(repo, sys.executable, "-m", f"stages.{stage}", env=self.env)
        return time.monotonic() - started

    def chain(self, repo: Path, stages: list[str]) -> None:
        """The base run: ``stages`` in order, each one's duration kept for drawing kill moments."""
        self.fresh_teacher(self.folder / "base.requests.jsonl")
        for stage in stages:
            self.durations[stage] = self.run(repo, stage)

    def kill(self, repo: Path, stage: str, after_s: float, log: Path) -> bool:
        """Start ``stage`` and SIGKILL it after ``after_s`` seconds; False if it had finished by then."""
        bin_dir = str(Path(sys.executable).parent)
        with log.open("wb") as out:  # a file, not a pipe: a chatty stage never blocks on it
            process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=repo, stdout=out,
                                       stderr=subprocess.STDOUT,
                                       env=os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"} | self.env)
        try:
            code = process.wait(timeout=after_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return True
        assert code == 0, log.read_text()[-3000:]
        return False

    def check(self, base: Path, stage: str, work: Path, updates: dict | None = None, per_call: bool = False
              ) -> dict[str, int]:
        """Kill ``stage`` KILL_SEEDS times in copies of ``base`` (its outputs removed, ``updates`` set in params),
        each at a moment drawn uniformly over an uninterrupted run's duration, then run it again. Asserts that
        right after each kill every output is absent or complete (equal to the uninterrupted run's; a request
        store has no torn line; a metrics file parses), that the rerun's outputs equal the uninterrupted run's (a
        store: the same request keys) and that the stand-in billed no request twice; records and returns the
        figures (``kills``: those that landed while the stage ran; a draw past the end of a faster run is none).
        ``per_call``: the stage's rows are teacher answers asked afresh, compared without PER_CALL."""
        outs, metrics = stage_outputs(base, stage)
        pays = any(outs.values())  # a stage with a request store asks the teacher

        def prepared(name: str) -> Path:
            repo = copy_repo_run(base, work / name)
            for path in outs:
                shutil.rmtree(repo / path) if (repo / path).is_dir() else (repo / path).unlink(missing_ok=True)
            set_repo_params(repo, **(updates or {}))
            return repo

        if updates:  # a variant the base run did not run: an uninterrupted run of its own first
            reference = prepared("uninterrupted")
            if pays:
                self.fresh_teacher(work / "uninterrupted.requests.jsonl")
            duration = self.run(reference, stage)
        else:
            reference, duration = base, self.durations[stage]
        want = {path: read_output(reference / path) for path in outs}
        figures, problems = Counter(kills=0, partial_files=0, double_billed=0), []
        draw = random.Random(f"{stage} {sorted((updates or {}).items())}")
        for seed in range(KILL_SEEDS):
            repo, at = prepared(f"killed-{seed}"), draw.uniform(0.0, duration)
            request_log = work / f"killed-{seed}.requests.jsonl"
            if pays:
                self.fresh_teacher(request_log)
            figures["kills"] += self.kill(repo, stage, at, work / f"killed-{seed}.log")
            partial = [path for path, store in outs.items()
                       if (got := read_output(repo / path)) is not None
                       and not (store_keys(got) is not None if store else same_output(path, got, want[path], per_call))]
            partial += [path for path in metrics if (repo / path).exists() and not parses_as_json(repo / path)]
            figures["partial_files"] += len(partial)
            self.run(repo, stage)
            differ = [path for path, store in outs.items()
                      if not (store_keys(read_output(repo / path)) == store_keys(want[path]) if store
                              else same_output(path, read_output(repo / path), want[path], per_call))]
            twice = sum(count - 1 for count in billed_requests(request_log).values()) if pays else 0
            figures["double_billed"] += twice
            if partial or differ or twice:
                problems.append(f"kill {seed} at {at:.2f} s of {duration:.2f} s: partial right after the kill "
                                f"{partial}, different after the rerun {differ}, billed twice {twice} ({repo})")
        record_reliability("kill anywhere", stage_variants=1, **figures)
        assert not problems, f"{stage} {updates or ''}:\n" + "\n".join(problems)
        return dict(figures)


def parses_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


@pytest.fixture(scope="module")
def stage_killer(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[StageKiller]:
    """A StageKiller for the module: ``.teacher_params`` point a tiny repo at its stand-in, ``.chain(repo, stages)``
    is the base run, ``.check(base, stage, tmp_path, updates=None, per_call=False)`` kills a stage and checks."""
    killer = StageKiller(tmp_path_factory.mktemp("kill-anywhere"), prefect_server)
    try:
        yield killer
    finally:
        killer.close()
