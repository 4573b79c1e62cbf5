"""The user documentation says what the code does: README.md and docs/*.md are checked
against the recipe registry, the CLI parser and the configuration model, so that a new
recipe, flag or default cannot land without its documentation."""

import re
import sys
from pathlib import Path

import pytest

from personalize_pipeline.cli import build_parser
from personalize_pipeline.config import CONFIG_ENV, ENV_LOCATIONS
from personalize_pipeline.recipes import RECIPES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
sys.path.insert(0, str(ROOT / "tools"))

import recipe_table  # noqa: E402


def _subcommands() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return dict(action.choices)


def test_readme_is_short_and_starts_with_the_two_commands():
    assert len(README.splitlines()) <= 250
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_recipe_table_lists_every_registered_recipe_with_its_type():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z0-9-]+)` \| ([A-Z_]+) \|", README, re.M)}
    assert rows == {name: cls.recipe_type for name, cls in RECIPES.items()}


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_readme_shows_every_cli_subcommand_and_flag(command):
    sub = _subcommands()[command]
    flags = [s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    usage = [line for line in README.splitlines() if line.startswith("personalize-pipeline ")]
    assert any(line.split()[1] == command for line in usage)
    missing = [f for f in flags if not re.search(re.escape(f) + r"\b", README)]
    assert not missing, f"README.md does not show {command} {missing}"


def test_readme_names_every_configuration_variable():
    for name in (CONFIG_ENV, *ENV_LOCATIONS.values()):
        assert name in README


def test_generated_hyperparameter_table_is_current():
    documented = recipe_table.documented(recipe_table.DOC.read_text())
    assert documented == recipe_table.table(), "run: .venv/bin/python tools/recipe_table.py --write"


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))])
def test_relative_links_point_at_files(doc):
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{doc} links to {target}, which does not exist"
