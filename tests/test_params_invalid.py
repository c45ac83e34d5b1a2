"""Every params field refuses an invalid value with one error naming its dotted key (issue 18, bad input).

The fields are walked from the schema (distill/params.py, and the plugin teacher's own settings, demo/standin.py's
Settings for the shipped params.yaml), so a field added later is tried too; each gets the invalid values its
annotation implies (a wrong type, a quoted number, a boolean for a number, an infinite or NaN float, a value past
its bound, a word outside its choices), written into a copy of the committed params.yaml and loaded the way a
user's run loads it.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from distill import params
from distill.teacher import providers

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.load((REPO / "params.yaml").read_text(encoding="utf-8"), Loader=params.YAMLLoader)
if not isinstance(BASE["task"], dict):  # the shorthand `task: demo.words`, spelled out to put values under it
    BASE["task"] = {"module": BASE["task"]}
PLUGIN_SETTINGS = {("teacher", "settings"): providers.plugin(BASE["teacher"]["provider"]).Settings}
# a dict field whose keys the plugin's own schema checks (only the primary teacher's: teachers[] share the schema)
ELEMENTS = {  # a valid element for each list of sections params.yaml leaves empty, to put an invalid value in
    ("teachers",): BASE["teacher"] | {"name": "second"},
    ("train", "kd", "teachers"): {"model": "data/students/tiny-char"},
}
MAPPING = {"not": "a scalar"}
pytestmark = pytest.mark.reliability


# --- the schema's leaves, and the invalid values each annotation implies -------------------------------------


def leaves(model: type[BaseModel], path: tuple = ()) -> Iterator[tuple[tuple, Any, list]]:
    """(path, annotation, constraints) of every leaf field under ``model``; a section contributes its fields, a list
    of sections its first element's fields, a plugin's settings the plugin's fields."""
    for name, info in model.model_fields.items():
        key = (*path, name)
        annotation = info.annotation
        section = _section(annotation)
        if key in PLUGIN_SETTINGS:
            yield key, annotation, info.metadata  # a list or a string for the whole settings...
            yield from leaves(PLUGIN_SETTINGS[key], key)  # ...and each knob
        elif section is not None:
            yield from leaves(section, key)
        elif typing.get_origin(annotation) is list and _section(typing.get_args(annotation)[0]) is not None:
            yield from leaves(_section(typing.get_args(annotation)[0]), (*key, 0))
        else:
            yield key, annotation, info.metadata


def sections(model: type[BaseModel], path: tuple = ()) -> Iterator[tuple]:
    """The path of every section (a field whose value is a mapping of fields), of every list of sections, and of
    its first element."""
    for name, info in model.model_fields.items():
        section, key = _section(info.annotation), (*path, name)
        if section is None and typing.get_origin(info.annotation) is list:
            section = _section(typing.get_args(info.annotation)[0])
            if section is not None:
                yield key
                key = (*key, 0)
        if section is not None:
            yield key
            yield from sections(section, key)


def _section(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def invalid(annotation: Any, constraints: list = ()) -> list:
    """Values a field of this annotation must refuse."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        extra = [item for arg in args[1:] for item in (arg.metadata if isinstance(arg, FieldInfo) else [arg])]
        return invalid(args[0], [*constraints, *extra])
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]  # None is valid where the field is optional
        refused = [invalid(member, constraints) for member in members]
        return [value for value in refused[0] if all(_contains(other, value) for other in refused[1:])]
    if origin is Literal:
        return [1, "bogus", MAPPING]
    if origin is tuple:
        return [["only one"], [1, 2], "ab", MAPPING]
    if origin is list:
        return ["x", MAPPING, *([value] for value in invalid(args[0]))]
    if origin is dict:
        key, value_type = args
        good_key = typing.get_args(key)[0] if typing.get_origin(key) is Literal else "k"
        bad_values = [] if value_type is Any else invalid(value_type)
        return [["x"], 5, {_bad_key(key): 1.0}, *({good_key: value} for value in bad_values)]
    if annotation is bool:
        return ["true", 1, MAPPING]
    if annotation is int:
        return [True, "16", 1.5, MAPPING, *_past_bounds(constraints, 1)]
    if annotation is float:
        return ["0.5", True, math.inf, math.nan, MAPPING, *_past_bounds(constraints, 0.5)]
    if annotation is str:
        return [5, True, MAPPING]
    raise AssertionError(f"no invalid values for {annotation!r}: teach invalid() this annotation")


def _bad_key(key: Any) -> object:
    return "bogus" if typing.get_origin(key) is Literal else 5


def _past_bounds(constraints: list, step: float) -> list:
    """A value just past each bound (an exclusive bound itself)."""
    values = []
    for item in constraints:
        if isinstance(item, annotated_types.Gt):
            values.append(item.gt)
        elif isinstance(item, annotated_types.Ge):
            values.append(item.ge - step)
        elif isinstance(item, annotated_types.Lt):
            values.append(item.lt)
        elif isinstance(item, annotated_types.Le):
            values.append(item.le + step)
    return values


def _contains(values: list, value: object) -> bool:
    """``value in values``, with NaN equal to itself."""
    return any(repr(value) == repr(other) and type(value) is type(other) for other in values)


# --- writing a value into params.yaml and loading it ---------------------------------------------------------


def with_value(path: tuple, value: object) -> dict:
    """params.yaml with ``value`` at ``path``; only the containers along the path are copied, so the other
    sections stay BASE's own (and keep their cached text, BASE_TEXT)."""
    raw = copy.copy(BASE)
    node = raw
    for depth, part in enumerate(path[:-1]):
        if isinstance(part, int) and not node:  # a list params.yaml leaves empty
            node.append(copy.deepcopy(ELEMENTS[path[:depth]]))
        child = node[part] if isinstance(part, int) else node.get(part)
        if child is None:  # a section or list params.yaml leaves to its default
            child = [] if isinstance(path[depth + 1], int) else {}
        node[part] = copy.copy(child)
        node = node[part]
    if isinstance(path[-1], int) and not node:  # the value is the empty list's one element
        node.append(None)
    node[path[-1]] = value
    return raw


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
BASE_TEXT = {key: yaml.dump({key: value}, Dumper=DUMPER, sort_keys=False) for key, value in BASE.items()}


def refusal(tmp_path: Path, raw: dict) -> str | None:
    """The ParamsError message of loading ``raw`` from a params.yaml, or None if it loads."""
    file = tmp_path / "params.yaml"
    file.write_text("".join(BASE_TEXT[key] if value is BASE.get(key) else yaml.dump({key: value}, Dumper=DUMPER)
                            for key, value in raw.items()))  # only the section that changed is dumped again
    try:
        params.load(file)
    except params.ParamsError as error:
        return str(error)
    return None


def dotted(path: tuple) -> str:
    return ".".join(map(str, path))


# --- the tests ---------------------------------------------------------------------------------------------------


def test_the_walk_reaches_every_kind_of_field() -> None:
    """Nested sections, lists of sections, dict-valued fields and the plugin's settings are all walked, and every
    list of sections has an element to hold an invalid value."""
    found = {dotted(path) for path, _, _ in leaves(params.Params)}
    assert {"train.learning_rate", "train.kd.teachers.0.weight", "teachers.0.hf.max_wait_ms", "select.min",
            "benchmarks.sets.0.fields", "teacher.settings", "teacher.settings.latency_ms",
            "student.think_tags"} <= found
    for path in sections(params.Params):
        if isinstance(path[-1], int):  # a list of sections
            listed = BASE
            for part in path[:-1]:
                listed = listed.get(part) or {}
            assert listed or path[:-1] in ELEMENTS, f"{dotted(path[:-1])}: add a valid element to ELEMENTS"


def test_every_field_refuses_invalid_values_naming_its_key(tmp_path: Path, reliability) -> None:
    assert refusal(tmp_path, BASE) is None  # the base itself loads
    tried = [(path, value) for path, annotation, constraints in leaves(params.Params)
             for value in invalid(annotation, constraints)]
    tried += [(path, 5) for path in sections(params.Params)]  # a number where a section (or a list) belongs
    fields = {path for path, _, _ in leaves(params.Params)}
    assert all(any(path == field for path, _ in tried) for field in fields), "a field got no invalid value"
    accepted, unnamed = [], []
    for path, value in tried:
        message = refusal(tmp_path, with_value(path, value))
        if message is None:
            accepted.append(f"{dotted(path)}: {value!r}")
        elif f"{tmp_path / 'params.yaml'}: {dotted(path)}" not in message:
            unnamed.append(f"{dotted(path)}: {value!r} -> {message}")
    reliability("bad input: params", fields=len(fields), values=len(tried),
                refused=len(tried) - len(accepted) - len(unnamed))
    assert not accepted, f"{len(accepted)} invalid values accepted:\n" + "\n".join(accepted)
    assert not unnamed, f"{len(unnamed)} refusals do not name the key:\n" + "\n".join(unnamed)


@pytest.mark.parametrize(("path", "value", "written", "expected"), [
    (("generate", "max_tokens"), True, "max_tokens: true",
     "Input should be a valid integer, not true/false (got True)"),
    (("generate", "max_tokens"), "16", "max_tokens: '16'",
     "Input should be a valid integer, written without quotes (got '16')"),
    (("train", "learning_rate"), math.inf, "learning_rate: .inf", "Input should be a finite number (got inf)"),
    (("train", "learning_rate"), math.nan, "learning_rate: .nan", "Input should be a finite number (got nan)"),
    (("generate", "temperature"), math.inf, "temperature: .inf", "Input should be a finite number (got inf)"),
    (("generate", "temperature"), math.nan, "temperature: .nan", "Input should be a finite number (got nan)"),
    (("teacher", "settings", "latency_ms"), math.inf, "latency_ms: .inf", "Input should be a finite number (got inf)"),
    (("teacher", "hf", "max_wait_ms"), math.nan, "max_wait_ms: .nan", "Input should be a finite number (got nan)"),
    (("select", "min"), {"quality": math.inf}, "quality: .inf", "Input should be a finite number (got inf)"),
    (("select", "max"), {"ifd": math.nan}, "ifd: .nan", "Input should be a finite number (got nan)"),
])
def test_reported_regressions_are_refused(tmp_path: Path, path: tuple, value: object, written: str,
                                         expected: str) -> None:
    """The values issue 18 found accepted: `max_tokens: true` as 1, "16" as 16, .inf and .nan for a learning rate,
    a temperature, a latency and a selection threshold."""
    raw = with_value(path, value)
    message = refusal(tmp_path, raw)
    assert written in (tmp_path / "params.yaml").read_text()
    key = dotted(path) + (f".{next(iter(value))}" if isinstance(value, dict) else "")
    assert message == f"{tmp_path / 'params.yaml'}: {key}: {expected}"


def test_numbers_load_as_dvc_reads_them(tmp_path: Path) -> None:
    """`2e-3` is a float for DVC (YAML 1.2) and for us, a quoted "2e-3" is refused, and a list is a pair."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    file = tmp_path / "params.yaml"
    file.write_text(text.replace("learning_rate: 0.002", "learning_rate: 2e-3")
                    .replace("max_length: 64", "max_length: 64\n  think_tags: [<a>, </a>]"))
    loaded = params.load(file)
    assert loaded.train.learning_rate == 0.002 and loaded.student.think_tags == ("<a>", "</a>")
    file.write_text(text.replace("learning_rate: 0.002", 'learning_rate: "2e-3"'))
    with pytest.raises(params.ParamsError) as refused:
        params.load(file)
    assert str(refused.value) == (f"{file}: train.learning_rate: Input should be a valid number, written without "
                                  "quotes (got '2e-3')")


def test_a_huge_value_is_shown_cut_short(tmp_path: Path) -> None:
    message = refusal(tmp_path, with_value(("generate", "max_tokens"), "9" * 5_000_000))
    assert message.startswith(f"{tmp_path / 'params.yaml'}: generate.max_tokens: Input should be a valid integer")
    assert len(message) < 500
