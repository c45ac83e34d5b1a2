"""The house: the library (distill/) never imports the orchestrator (flows/), the demo (demo/) or a stage
(stages/); the demo is reached only by name, through the two registries; stages stay thin."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "distill").rglob("*.py"))
STAGE_FILES = sorted((ROOT / "stages").rglob("*.py"))
MAX_STAGE_LINES = 150


def imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_library_imports_no_orchestrator_demo_or_stage(path: Path) -> None:
    outside = {name for name in imported(path) if name.split(".")[0] in ("flows", "demo", "stages")}
    assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


def test_only_the_registries_name_the_demo() -> None:
    naming = {str(path.relative_to(ROOT)) for path in LIBRARY if re.search(r"[\"']demo\.", path.read_text())}
    assert naming == {"distill/teacher/providers.py"}, naming  # distill/task.py loads the task params name


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_stage_is_thin_and_has_its_shape(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_STAGE_LINES, f"{path.relative_to(ROOT)}: move library code to distill/"
    if path.parent.name == "gates":
        assert 'if __name__ == "__main__":\n    sys.exit(main(sys.modules[__name__]))' in text
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    for part in ("Reads:", "Writes:", "Params:"):
        assert part in doc, f"{path.name}: the docstring lacks {part}"
    functions = {node.name for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)}
    assert {"run", "main"} <= functions
    assert f'guarded("{path.stem}", main)' in text


def test_the_sweep_does_not_import_the_train_stage() -> None:
    assert not {name for name in imported(ROOT / "stages/sweep.py") if name.startswith("stages")}
