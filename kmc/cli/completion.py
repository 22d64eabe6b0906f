"""`kmc completion SHELL`: print the shell completion script (also checked in under completions/)."""

from __future__ import annotations

from enum import Enum

import typer

from kmc.cli import _typer_internals, context

COMPLETE_VAR = "_KMC_COMPLETE"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion_script(shell: str) -> str:
    return _typer_internals.completion_script("kmc", COMPLETE_VAR, shell) + "\n"


def completion(ctx: typer.Context, shell: Shell = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    """Print a completion script. Install, e.g.: kmc completion bash > ~/.local/share/bash-completion/completions/kmc"""
    context.get(ctx).render.text(completion_script(shell.value))


def register(app: typer.Typer) -> None:
    _typer_internals.init_completion()  # typer registers its shell classes only with add_completion=True
    app.command("completion")(completion)
