"""Each params field is documented once, in the schema (distill/params.py), and docs/params.md is its rendering.

Fast (no pipeline run): reads distill/params.py, demo/standin.py, params.yaml and docs/params.md only.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, create_model

from distill.params import Params, TrainParams

ROOT = Path(__file__).resolve().parent.parent
PARAMS_YAML = ROOT / "params.yaml"
MAX_COMMENT = 60  # a short section label; a field's description belongs in distill/params.py


def _reference():
    spec = importlib.util.spec_from_file_location("docs_params_reference", ROOT / "docs" / "params_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


reference = _reference()


def _raw() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))


def _documented_keys(text: str) -> set[str]:
    return {match for match in re.findall(r"^\| `([^`]+)` \|", text, re.M)}


def test_every_field_and_section_has_a_description() -> None:
    descriptions, docstrings = reference.all_descriptions()
    missing: list[str] = []
    tables = reference.walk(Params, descriptions, docstrings, _raw(), missing)
    assert not missing, f"distill/params.py: no description (a trailing # comment) or docstring for {missing}"
    assert len(tables) > 20 and sum(len(table.rows) for table in tables) > 200  # the walk reached every section


def test_a_missing_description_is_named_by_its_dotted_key() -> None:
    descriptions, docstrings = reference.all_descriptions()
    descriptions = {key: text for key, text in descriptions.items() if key != ("KDParams", "tail")}
    docstrings = {name: text for name, text in docstrings.items() if name != "DPOParams"}
    missing: list[str] = []
    reference.walk(Params, descriptions, docstrings, _raw(), missing)
    assert "train.kd.tail" in missing
    assert any(item.startswith("train.dpo (class DPOParams") for item in missing), missing


def test_docs_params_md_is_the_rendering_of_the_schema() -> None:
    assert reference.check() == [], "docs/params.md is stale: run `python docs/params_reference.py`"


def test_a_changed_description_is_reported() -> None:
    current = reference.OUTPUT.read_text(encoding="utf-8")
    descriptions, docstrings = reference.all_descriptions()
    descriptions[("ScoreParams", "ifd")] = "something else entirely"
    expected = reference.render(reference.intro_of(current), descriptions, docstrings)
    assert reference.check(current, expected) == ["docs/params.md: `score.ifd` differs from the schema"]


def test_a_new_field_is_reported() -> None:
    current = reference.OUTPUT.read_text(encoding="utf-8")
    descriptions, docstrings = reference.all_descriptions()
    extended = create_model("Params", __base__=Params, new_knob=(int, 3))
    descriptions[("Params", "new_knob")] = "a knob the docs do not list yet"
    expected = reference.render(reference.intro_of(current), descriptions, docstrings, root=extended)
    problems = reference.check(current, expected)
    assert "docs/params.md: `new_knob` differs from the schema" in problems, problems


def test_the_check_command_exits_1_naming_the_key(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    descriptions, docstrings = reference.all_descriptions()
    descriptions[("TrainGate", "min_steps")] = "changed"
    monkeypatch.setattr(reference, "all_descriptions", lambda path=reference.SCHEMA: (descriptions, docstrings))
    assert reference.main(["--check"]) == 1
    assert "`gates.train.min_steps` differs" in capsys.readouterr().out


def test_the_description_is_the_trailing_comment_and_its_continuation() -> None:
    source = (
        "class A(Base):\n"
        '    """An A."""\n'
        "\n"
        "    one: int = 1  # the first\n"
        "    # and more about it\n"
        "    two: str\n"
        "    # a comment above three\n"
        "    three: bool = False\n"
        "    four: Literal['x', 'y'] = 'x'\n"
        "    # ^ placed below: the line was too long\n"
    )
    descriptions, docstrings = reference.read_source(source)
    assert docstrings == {"A": "An A."}
    assert descriptions == {("A", "one"): "the first and more about it", ("A", "three"): "a comment above three",
                            ("A", "four"): "placed below: the line was too long"}  # two: none, reported as missing


def _yaml_keys(raw: dict, model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """Every dotted key params.yaml sets, with the schema model it belongs to (fails on an unknown key)."""
    keys = []
    for name, value in raw.items():
        key = f"{prefix}{name}"
        assert name in model.model_fields, f"params.yaml: {key} is not a field of {model.__name__}"
        keys.append((key, value))
        annotation = model.model_fields[name].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
            keys += _yaml_keys(value, annotation, f"{key}.")
    return keys


def test_every_key_params_yaml_sets_is_documented() -> None:
    documented = _documented_keys(reference.OUTPUT.read_text(encoding="utf-8"))
    keys = _yaml_keys(_raw(), Params)
    settings = _raw()["teacher"]["settings"]  # the stand-in's own schema, listed from demo/standin.py
    keys += [(f"teacher.settings.{name}", value) for name, value in settings.items()]
    undocumented = [key for key, _ in keys if key not in documented]
    assert not undocumented, f"docs/params.md does not list {undocumented}"
    assert {"train.kd.divergence", "teachers", "train.kd.teachers[].weight", "gates.sweep.min_points"} <= documented


def test_the_train_section_s_student_fields_point_to_student() -> None:
    text = reference.OUTPUT.read_text(encoding="utf-8")
    for name in ("student", "prompt_template", "seed", "max_length"):
        assert name in TrainParams.model_fields
        assert re.search(rf"^\| `train\.{name}` \|[^|]*\| from `student\.", text, re.M), name


def test_params_yaml_comments_are_short_labels_not_descriptions() -> None:
    lines = PARAMS_YAML.read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert "distill/params.py" in "\n".join(lines[:header]) and "docs/params.md" in "\n".join(lines[:header])
    long = []
    for number, line in enumerate(lines[header:], header + 1):
        match = re.search(r"(?:^|\s)#(.*)$", line)
        if match and len(match.group(1).strip()) > MAX_COMMENT:
            long.append(f"params.yaml:{number}: {match.group(1).strip()[:40]}...")
    assert not long, f"describe fields in distill/params.py, not in params.yaml: {long}"
