"""The hyperparameter table of docs/recipes.md, generated from the recipes' declarations.

    .venv/bin/python tools/recipe_table.py            # print the table
    .venv/bin/python tools/recipe_table.py --write    # replace it in docs/recipes.md

The table sits between the ``recipe-table`` markers; tests/test_docs.py fails when it
differs from what the code declares, so the documented defaults cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from personalize_pipeline.recipes import RECIPES

DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
START, END = "<!-- recipe-table:start -->", "<!-- recipe-table:end -->"


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(hp) -> str:
    if hp.choices:
        return ", ".join(f"`{c}`" for c in hp.choices)
    if hp.low is None and hp.high is None:
        return ""
    return f"{_value(hp.low)} – {_value(hp.high)}"


def table() -> str:
    """One row per (recipe, hyperparameter), in registry order."""
    lines = [
        "| recipe | type | hyperparameter | default | allowed | HPO | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cls in RECIPES.items():
        hps = tuple(getattr(cls, "hyperparameters", ()))
        if not hps:
            lines.append(f"| `{name}` | {cls.recipe_type} | (none) | | | | |")
        for hp in hps:
            meaning = (hp.help or "").replace("|", "\\|")
            tunable = "yes" if hp.tunable else ""
            cells = [
                f"`{name}`",
                cls.recipe_type,
                f"`{hp.name}`",
                f"`{_value(hp.default)}`",
                _range(hp),
                tunable,
                meaning,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def documented(text: str) -> str:
    """The table between the markers of ``text``."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC}")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(table())
        return 0
    text = DOC.read_text()
    head, tail = text[: text.index(START) + len(START)], text[text.index(END) :]
    DOC.write_text(f"{head}\n{table()}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
