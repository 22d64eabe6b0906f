"""The generated man page and completions match the live CLI; every command is helped and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from kmc.cli.docs import generated_files
from kmc.cli.main import app

ROOT = Path(__file__).resolve().parent.parent


def _commands(command, path=()):  # noqa: ANN001, ANN202 - click command tree
    ctx = command.make_context("kmc", [], resilient_parsing=True) if not path else None
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        yield (*path, name), sub
        yield from _commands(sub, (*path, name))


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("relative", sorted(generated_files()))
def test_generated_file_is_current(relative):
    expected = generated_files()[relative]
    actual = (ROOT / relative).read_text() if (ROOT / relative).exists() else None
    assert actual == expected, f"{relative} is stale: run `make docs`"


@pytest.mark.parametrize("path", [" ".join(path) for path, _ in ALL_COMMANDS])
def test_every_command_has_help(path):
    command = dict((" ".join(p), c) for p, c in ALL_COMMANDS)[path]
    assert (command.help or "").strip(), f"kmc {path} has no help text"


def test_readme_tours_every_top_level_command():
    readme = (ROOT / "README.md").read_text()
    for path, _ in ALL_COMMANDS:
        if len(path) == 1:
            assert f"kmc {path[0]}" in readme, f"README does not mention kmc {path[0]}"


def test_readme_links_exist():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"
