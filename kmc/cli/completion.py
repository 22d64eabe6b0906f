"""`kmc completion SHELL`: print the shell completion script (also checked in under completions/), and
what the shells are offered for the values of arguments and options: profile names, flow names,
sandbox names, codecs."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import typer

from kmc.cli import _typer_internals, context

COMPLETE_VAR = "_KMC_COMPLETE"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion_script(shell: str) -> str:
    return _typer_internals.completion_script("kmc", COMPLETE_VAR, shell) + "\n"


def completion(ctx: typer.Context,
               shell: Shell = typer.Argument(..., metavar="SHELL", help="bash, zsh or fish.")) -> None:
    """Print a completion script. Install, e.g.: kmc completion bash > ~/.local/share/bash-completion/completions/kmc"""
    context.get(ctx).render.text(completion_script(shell.value))


def register(app: typer.Typer) -> None:
    _typer_internals.init_completion()  # typer registers its shell classes only with add_completion=True
    app.command("completion")(completion)


# --- values offered while completing ------------------------------------------------------------------------
# Each completer takes click's context and what has been typed, and returns (value, description) pairs. They
# never fail: a broken config file or no sandboxes offers nothing.


def _short(text: str, width: int = 50) -> str:
    """A description for zsh and fish: one line (typer folds longer ones over two, breaking the menu)."""
    return text if len(text) <= width else text[:width - 1] + "…"


def _config(ctx: Any) -> Any:
    from kmc.profiles import load_config

    try:
        return load_config(ctx.find_root().params.get("config"))
    except Exception:  # noqa: BLE001 - completion must never print an error into the shell
        return None


def complete_cluster(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """Profile names (sandboxes included), described by their bootstrap servers."""
    config = _config(ctx)
    if config is None:
        return []
    offered = {name: _short(",".join(cluster.bootstrap)) for name, cluster in config.clusters.items()}
    offered.update((name, "cannot be used now: see 'kmc profile show'") for name in config.unresolved)
    return sorted((name, text) for name, text in offered.items() if name.startswith(incomplete))


def complete_flow(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """Flow names, described as sources -> target."""
    config = _config(ctx)
    if config is None:
        return []
    return sorted((name, _short(f"{','.join(flow.sources)} -> {flow.target}")) for name, flow in config.flows.items()
                  if name.startswith(incomplete))


def complete_sandbox(ctx: Any, incomplete: str) -> list[tuple[str, str]]:  # noqa: ARG001 - click's signature
    """Sandbox names, described by their bootstrap servers."""
    from kmc.sandbox import list_sandboxes

    try:
        sandboxes = list_sandboxes()
    except Exception:  # noqa: BLE001 - completion must never print an error into the shell
        return []
    return [(cluster.name, _short(",".join(cluster.bootstrap))) for cluster in sandboxes
            if cluster.name.startswith(incomplete)]


def complete_from(choices: dict[str, str]) -> Callable[[Any, str], list[tuple[str, str]]]:
    """A completer offering fixed values (value -> description)."""

    def complete(ctx: Any, incomplete: str) -> list[tuple[str, str]]:  # noqa: ARG001 - click's signature
        return [(value, text) for value, text in choices.items() if value.startswith(incomplete)]

    return complete


CODECS = {"keep": "each batch as compressed at the source", "none": "uncompressed", "gzip": "", "snappy": "",
          "lz4": "", "zstd": ""}
