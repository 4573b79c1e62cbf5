"""The engine's shape rules (the developers' guide, issue 21): it never imports Dagster, and
no function of it is longer than 80 lines (``def`` line to last line, docstring included)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "personalize_pipeline"
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), filename=str(path))) for path in sorted(ENGINE.rglob("*.py"))]


def test_engine_functions_fit_the_line_limit():
    too_long = [
        f"{path.relative_to(ENGINE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not too_long, "engine functions longer than 80 lines:\n" + "\n".join(too_long)


def test_engine_never_imports_dagster():
    imports = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            imports += [
                f"{path.relative_to(ENGINE.parent)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("dagster", "dagster_celery")
            ]
    assert not imports, "the engine imports Dagster:\n" + "\n".join(imports)
