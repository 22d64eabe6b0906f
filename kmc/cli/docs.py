"""Generate the man page and completion scripts from the live command tree, so they never drift.

`python -m kmc.cli.docs` rewrites man/ and completions/; tests check the files match.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from kmc import __version__
from kmc.cli.completion import Shell, completion_script
from kmc.errors import EXIT_CODE_MEANINGS

SHELL_FILES = {Shell.bash: "kmc.bash", Shell.zsh: "_kmc", Shell.fish: "kmc.fish"}


def _walk(command, ctx, path: list[str]) -> Iterator[tuple[list[str], object, object]]:  # noqa: ANN001
    yield path, command, ctx
    for name in getattr(command, "list_commands", lambda _ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
        yield from _walk(sub, sub_ctx, [*path, name])


def _roff(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def man_page() -> str:
    from kmc.cli.main import app

    root = typer.main.get_command(app)
    # a fixed width, so the page does not depend on the terminal that generated it
    root_ctx = root.make_context("kmc", [], resilient_parsing=True, terminal_width=80, max_content_width=80)
    out = [
        f'.TH KMC 1 "" "kmc {__version__}" "User Commands"',
        ".SH NAME",
        "kmc \\- cross-cluster Apache Kafka data operations",
        ".SH SYNOPSIS",
        ".B kmc",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        "kmc inventories, compares, mirrors and aggregates topics across several Kafka clusters.",
        "Named clusters come from the config file ($KMC_CONFIG, else $XDG_CONFIG_HOME/kmc/config.toml);",
        "a host:port list works wherever a cluster name is accepted.",
        ".SH COMMANDS",
    ]
    for path, command, ctx in _walk(root, root_ctx, []):
        name = " ".join(["kmc", *path])
        out += [".SS " + name, ".nf", _roff(command.get_help(ctx)), ".fi"]
    out.append(".SH EXIT STATUS")
    for code, meaning in EXIT_CODE_MEANINGS.items():
        out += [".TP", f".B {int(code)}", meaning]
    out += [
        ".SH ENVIRONMENT",
        ".TP", ".B KMC_CONFIG", "Config file path.",
        ".TP", ".B NO_COLOR", "Disable colour.",
        ".TP", ".B KAFKA_HOME", "Unpacked Kafka distribution for the sandbox (else jars come from Maven Central).",
        ".TP", ".B XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_CACHE_HOME, XDG_STATE_HOME",
        "Where config, sandbox data, the jar cache and locks live.",
    ]
    return "\n".join(out) + "\n"


def generated_files() -> dict[str, str]:
    files = {f"completions/{name}": completion_script(shell.value) for shell, name in SHELL_FILES.items()}
    files["man/kmc.1"] = man_page()
    return files


def write(root: Path) -> list[str]:
    written = []
    for relative, text in generated_files().items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            written.append(relative)
    return written


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        sys.exit("usage: python -m kmc.cli.docs [REPO_DIR]   (rewrites man/ and completions/)")
    changed = write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
    print("\n".join(changed) or "up to date")
