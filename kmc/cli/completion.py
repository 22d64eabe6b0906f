"""`kmc completion SHELL`: print the shell completion script (also checked in under completions/)."""

from __future__ import annotations

from enum import Enum

import typer

from kmc.cli import context

COMPLETE_VAR = "_KMC_COMPLETE"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion_script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="kmc", complete_var=COMPLETE_VAR, shell=shell) + "\n"


def completion(ctx: typer.Context, shell: Shell = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    """Print a completion script. Install, e.g.: kmc completion bash > ~/.local/share/bash-completion/completions/kmc"""
    context.get(ctx).render.out.write(completion_script(shell.value))


def register(app: typer.Typer) -> None:
    from typer._completion_classes import completion_init

    completion_init()  # typer registers its shell classes only with add_completion=True
    app.command("completion")(completion)
