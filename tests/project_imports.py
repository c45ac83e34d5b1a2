"""Which project modules a stage imports, transitively (read from the source with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "flows")


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
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


def project_files(module: str) -> set[str]:
    """Relative paths of the module and every project module it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_path(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(direct_imports(path))
    return {str(path.relative_to(ROOT)) for path in seen if path.name != "__init__.py" or path.stat().st_size}


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(name, sorted(project_files(name)))
