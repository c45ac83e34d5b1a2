"""The docs stay true: figures match the results files, links and paths exist, the README stays short.

Fast (no pipeline run): reads README.md, docs/*.md and the JSON results files only.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
IN_GIT = re.compile(r"(stages|distill|flows|demo|tests|benchmarks|templates|data/(seeds|students|general))/")
GATED_STAGES = ("ingest", "generate", "score", "dedupe", "select", "train", "evaluate", "sweep")


def _figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _figures()


def test_every_figure_matches_the_results_files() -> None:
    assert figures.check() == [], "stale figures: run `python docs/figures.py` and review the diff"


def test_a_changed_result_is_reported() -> None:
    data = copy.deepcopy(figures.load())
    data["metrics/eval.json"]["student_after"] = 0.5  # in the README's results table (a block)
    data["metrics/generate.json"]["feature_bytes_per_token"] = 99.9  # inline, in docs/teachers.md
    stale = figures.check(data=data)
    assert "README.md: figures:eval differs" in stale
    assert any(line.startswith("docs/teachers.md: fig metrics/generate.json:feature_bytes_per_token reads")
               for line in stale), stale
    rendered = figures.render(README.read_text(encoding="utf-8"), data)
    assert "**0.500**" in rendered and figures.problems(rendered, data) == []


def test_the_check_command_exits_1_naming_the_stale_block(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = copy.deepcopy(figures.load())
    data["benchmarks/results/white_box.json"]["methods"]["kd"]["exact_match"] = 0.1
    monkeypatch.setattr(figures, "load", lambda root=figures.ROOT: data)
    assert figures.main(["--check"]) == 1
    assert "docs/benchmarks.md: figures:white-box differs" in capsys.readouterr().out


def test_missing_keys_and_broken_markers_are_reported_not_ignored() -> None:
    data = figures.load()
    del data["metrics/eval.json"]["teacher"]
    assert any("figures:eval" in line and "teacher" in line for line in figures.check(data=data))
    assert figures.problems("<!-- fig metrics/eval.json:no_such_key -->1<!-- /fig -->", figures.load())
    assert figures.problems("<!-- fig metrics/eval.json:rows -->200 and no closing marker", figures.load())
    assert figures.problems("<!-- figures:no-such-block -->\n<!-- /figures:no-such-block -->", figures.load())


def test_readme_is_at_most_250_lines() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= 250, f"README.md has {lines} lines; move details to docs/"


def test_license_file_exists() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)}


@pytest.mark.parametrize("page", figures.pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files_that_exist(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: broken links {broken}"


def _paths(page: Path) -> list[str]:
    """Every code-quoted path of the repo's code, tests, templates and shipped data in ``page``; ``<stage>`` stands
    for each gated stage, other placeholders (``<name>``, ``<method>``) are skipped."""
    found = set()
    for token in re.findall(r"`([^`\s]+)`", page.read_text(encoding="utf-8")):
        token = token.rstrip(".,:;")
        if not IN_GIT.match(token):
            continue
        if "<stage>" in token:
            found |= {token.replace("<stage>", stage) for stage in GATED_STAGES}
        elif "<" not in token and "*" not in token:
            found.add(token)
    return sorted(found)


def test_the_readme_map_is_read() -> None:
    paths = _paths(README)
    for path in ("stages/gates/dedupe.py", "stages/train.py", "distill/teacher/", "flows/teacher.py",
                 "demo/standin.py"):
        assert path in paths


@pytest.mark.parametrize("page", figures.pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_named_exists(page: Path) -> None:
    missing = [p for p in _paths(page) if not (ROOT / p).exists()]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


# Messages the README's troubleshooting table quotes, as the code writes them.
QUOTED_MESSAGES = {
    "which is not set: export the key there": "distill/teacher/endpoint.py",
    "teacher and student tokenizers differ": "distill/elicit/features.py",
    "holds teacher log-probs by token ids of": "distill/transfer/kd.py",
    "stopped by the budget": "stages/generate.py",
    "got no usable answer": "stages/generate.py",
    "(report: ": "distill/gate.py",
}


def test_quoted_error_messages_are_the_code_s() -> None:
    readme = README.read_text(encoding="utf-8")
    for fragment, source in QUOTED_MESSAGES.items():
        assert fragment in readme, f"README.md no longer quotes {fragment!r}: update QUOTED_MESSAGES"
        assert fragment in (ROOT / source).read_text(encoding="utf-8"), f"{source} no longer says {fragment!r}"


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return out


def test_the_use_it_for_real_recipe_is_valid_params() -> None:
    from distill.params import parse

    section = README.read_text(encoding="utf-8").split("<!-- recipe -->", 1)[1].split("<!-- /recipe -->", 1)[0]
    recipe = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    shipped.pop("teacher")  # the recipe replaces the teacher block; every other section is edited in place
    params = parse(_deep_merge(shipped, recipe), "README.md recipe")
    assert params.teacher.base_url and params.teacher.provider == "openai"
    assert "feature" not in params.generate.elicit and params.generate.top_logprobs is None
    assert params.train.objective == "sft"  # kd needs the teacher's log-probs in the student's tokenizer
