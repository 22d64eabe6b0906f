"""Generate the man pages and completion scripts from the live command tree, so they never drift.

`python -m kmc.cli.docs` (`make docs`) rewrites man/ and completions/; tests/test_docs.py checks the files
match. Pages: kmc(1), and one kmc-COMMAND(1) per command, a command group (flow, profile, sandbox) on one
page with a section per subcommand, as git-remote(1) is; each with EXIT STATUS, ENVIRONMENT, FILES and SEE
ALSO, filled by man to the reader's width (tests render them at 80 columns).
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


def _escape(text: str) -> str:
    """Text for roff: backslashes and minus signs escaped (options stay copyable), no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def _bold(text: str) -> str:
    return f"\\fB{_escape(text)}\\fR"


def _paragraphs(help_text: str) -> list[str]:
    """A docstring's paragraphs, each on one line (man fills them to the reader's width)."""
    return [" ".join(block.split()) for block in help_text.split("\n\n") if block.strip()]


# Paragraphs of a command's help that have a section of their own in its page.
_SECTIONS = {"Exit status:": "EXIT STATUS", "JSON": "JSON OUTPUT"}


def _split_help(help_text: str) -> tuple[list[str], dict[str, list[str]]]:
    description: list[str] = []
    sections: dict[str, list[str]] = {}
    for paragraph in _paragraphs(help_text):
        section = next((name for prefix, name in _SECTIONS.items() if paragraph.startswith(prefix)), None)
        if section is None:
            description.append(paragraph)
        else:
            sections.setdefault(section, []).append(paragraph.removeprefix("Exit status: "))
    return description, sections


def _definitions(records: list[tuple[str, str]]) -> list[str]:
    out = []
    for name, text in records:
        out += [".TP", _bold(name), _escape(" ".join(text.split()))]
    return out


def _params(command, ctx, kind: str) -> list[tuple[str, str]]:  # noqa: ANN001
    records = []
    for param in command.get_params(ctx):
        if param.param_type_name == kind and param.name != "help":
            record = param.get_help_record(ctx)
            if record is not None:
                records.append(record)
    return records


def _usage(command, ctx) -> str:  # noqa: ANN001
    return " ".join(["kmc", *ctx.command_path.split()[1:], *command.collect_usage_pieces(ctx)])


# What each page sends the reader on to (kmc(1) is always there).
_SEE_ALSO = {
    "inventory": ["kmc-topics", "kmc-diff", "kmc-profile"],
    "diff": ["kmc-mirror", "kmc-inventory"],
    "mirror": ["kmc-aggregate", "kmc-flow", "kmc-diff"],
    "aggregate": ["kmc-mirror", "kmc-flow", "kmc-diff"],
    "flow": ["kmc-mirror", "kmc-aggregate", "kmc-profile"],
    "topics": ["kmc-groups", "kmc-inventory"],
    "groups": ["kmc-topics", "kmc-inventory"],
    "profile": ["kmc-sandbox", "kmc-inventory"],
    "sandbox": ["kmc-profile"],
    "export": ["kmc-import", "kmc-diff"],
    "import": ["kmc-export", "kmc-diff", "kmc-groups"],
    "completion": [],
}
_FILES = [
    ("~/.config/kmc/config.toml", "The config file (clusters and flows), unless --config or $KMC_CONFIG names "
                                  "another; under $XDG_CONFIG_HOME when set."),
    ("~/.local/state/kmc/locks/", "One lock file per mirror, so that overlapping runs exit 75; under "
                                  "$XDG_STATE_HOME when set."),
    ("~/.local/share/kmc/sandbox/NAME/", "Each sandbox cluster's state, data and logs; under $XDG_DATA_HOME "
                                         "when set."),
    ("~/.cache/kmc/", "Kafka's jars for the sandbox, fetched once; under $XDG_CACHE_HOME when set."),
]
_ENVIRONMENT = [
    ("KMC_CONFIG", "The config file, unless --config names one."),
    ("NO_COLOR", "When set and not empty, no colour (as --no-color)."),
    ("KAFKA_HOME", "An unpacked Kafka distribution for the sandbox (else the jars come from Maven Central)."),
    ("XDG_CONFIG_HOME, XDG_STATE_HOME, XDG_DATA_HOME, XDG_CACHE_HOME",
     "Where the config file, locks, sandboxes and the jar cache live (see FILES)."),
]


def _common_sections(name: str) -> list[str]:
    """ENVIRONMENT, FILES and SEE ALSO of a page (kmc's own lists the other pages)."""
    out = [".SH ENVIRONMENT", *_definitions(_ENVIRONMENT), ".SH FILES", *_definitions(_FILES), ".SH SEE ALSO"]
    pages = [f"kmc-{command}" for command in _SEE_ALSO] if name == "kmc" else ["kmc", *_SEE_ALSO[name.removeprefix(
        "kmc-")]]
    out.append(",\n".join(f"\\fB{_escape(page)}\\fR(1)" for page in pages))
    return out


def _exit_status_table() -> list[str]:
    out = []
    for code, meaning in EXIT_CODE_MEANINGS.items():
        out += [".TP", f".B {int(code)}", _escape(meaning)]
    return out


def _header(name: str, summary: str) -> list[str]:
    # .nh .ad l: no hyphenation, ragged right (option names and JSON keys must stay whole to be copied)
    return [f'.TH {_escape(name.upper())} 1 "" "kmc {__version__}" "User Commands"', ".nh", ".ad l", ".SH NAME",
            f"{_escape(name)} \\- {_escape(summary.rstrip('.'))}"]


def _global_options_note() -> list[str]:
    return [".SH GLOBAL OPTIONS",
            "\\fB\\-\\-config\\fR, \\fB\\-o\\fR/\\fB\\-\\-output\\fR, \\fB\\-\\-timeout\\fR, \\fB\\-q\\fR, "
            "\\fB\\-v\\fR, \\fB\\-\\-debug\\fR and \\fB\\-\\-no\\-color\\fR may stand anywhere on the command "
            "line; see \\fBkmc\\fR(1)."]


def _options_sections(command, ctx, sections: dict[str, list[str]]) -> list[str]:  # noqa: ANN001
    """ARGUMENTS, OPTIONS and JSON OUTPUT of one command."""
    out = []
    for title, kind in (("ARGUMENTS", "argument"), ("OPTIONS", "option")):
        records = _params(command, ctx, kind)
        if records:
            out += [f".SH {title}", *_definitions(records)]
    if sections.get("JSON OUTPUT"):
        out += [".SH JSON OUTPUT"]
        for paragraph in sections["JSON OUTPUT"]:
            out += [".PP", _escape(paragraph)]
    return out


def _command_page(name: str, command, ctx) -> str:  # noqa: ANN001
    """kmc-NAME(1): one command, or a group with a section per subcommand (as git-remote(1) does). A group
    that runs a hidden default subcommand (`kmc mirror SRC DST` beside `kmc mirror status`) is that command's
    page first, its other subcommands after."""
    subcommands = [(path, sub, sub_ctx) for path, sub, sub_ctx in _walk(command, ctx, []) if path]
    out = _header(f"kmc-{name}", command.get_short_help_str(limit=200))
    default_name = getattr(command, "default_command", None)
    if default_name is not None:  # the default runs as the group itself: `kmc mirror [OPTIONS] SRC DST`
        command = command.commands[default_name]
        ctx = type(ctx)(command, info_name=ctx.info_name, parent=ctx.parent)
    out += [".SH SYNOPSIS"]
    usages = ([_usage(command, ctx)] if default_name is not None or not subcommands else []) + [
        _usage(sub, sub_ctx) for _, sub, sub_ctx in subcommands]
    out += "\n.br\n".join(_escape(usage) for usage in usages).splitlines()
    description, sections = _split_help(command.help or "")
    out += [".SH DESCRIPTION"]
    for paragraph in description:
        out += [".PP", _escape(paragraph)]
    if subcommands and default_name is not None:
        out += _options_sections(command, ctx, sections)
    if subcommands:
        out += [".SH COMMANDS"]
        for path, sub, sub_ctx in subcommands:
            sub_description, sub_sections = _split_help(sub.help or "")
            out += [".SS " + _escape(" ".join(["kmc", name, *path]))]
            for paragraph in sub_description:
                out += [".PP", _escape(paragraph)]
            records = _params(sub, sub_ctx, "argument") + _params(sub, sub_ctx, "option")
            if records:
                out += [".PP", "Arguments and options:", *_definitions(records)]
            for paragraph in sub_sections.get("JSON OUTPUT", []):
                out += [".PP", _escape(paragraph)]
            for paragraph in sub_sections.get("EXIT STATUS", []):
                sections.setdefault("EXIT STATUS", []).append(f"{' '.join(path)}: {paragraph}")
    else:
        out += _options_sections(command, ctx, sections)
    out += _global_options_note()
    out += [".SH EXIT STATUS"]
    for paragraph in sections.get("EXIT STATUS", []):
        out += [".PP", _escape(paragraph)]
    out += [".PP", "Every status kmc uses:", *_exit_status_table()]
    out += _common_sections(f"kmc-{name}")
    return "\n".join(out) + "\n"


def _main_page(root, root_ctx) -> str:  # noqa: ANN001
    out = _header("kmc", "cross-cluster Apache Kafka data operations")
    out += [".SH SYNOPSIS", ".B kmc", "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
            ".SH DESCRIPTION", ".PP",
            "kmc inventories, compares, mirrors and aggregates topics across several Kafka clusters. Named "
            "clusters come from the config file (see FILES); a host:port list works wherever a cluster name is "
            "accepted. Data goes to stdout, messages to stderr; every error is one line, "
            "\\fBkmc: error:\\fR what went wrong (what to do).",
            ".SH COMMANDS"]
    for name in root.list_commands(root_ctx):
        command = root.get_command(root_ctx, name)
        out += [".TP", f"\\fBkmc\\-{_escape(name)}\\fR(1)", _escape(command.get_short_help_str(limit=200))]
    records = [record for record in (param.get_help_record(root_ctx) for param in root.get_params(root_ctx))
               if record is not None]
    out += [".SH GLOBAL OPTIONS", ".PP", "They may stand anywhere on the command line: "
            "\\fBkmc topics dc1 \\-o json\\fR works as \\fBkmc \\-o json topics dc1\\fR.", *_definitions(records)]
    out += [".SH EXIT STATUS", *_exit_status_table()]
    out += _common_sections("kmc")
    return "\n".join(out) + "\n"


def man_pages() -> dict[str, str]:
    """man/kmc.1 and one man/kmc-COMMAND.1 per command (groups: one page with their subcommands)."""
    from kmc.cli.main import app

    root = typer.main.get_command(app)
    # a fixed width, so the pages do not depend on the terminal that generated them
    root_ctx = root.make_context("kmc", [], resilient_parsing=True, terminal_width=80, max_content_width=80)
    pages = {"man/kmc.1": _main_page(root, root_ctx)}
    for name in root.list_commands(root_ctx):
        command = root.get_command(root_ctx, name)
        ctx = type(root_ctx)(command, info_name=name, parent=root_ctx)
        pages[f"man/kmc-{name}.1"] = _command_page(name, command, ctx)
    return pages


def generated_files() -> dict[str, str]:
    files = {f"completions/{name}": completion_script(shell.value) for shell, name in SHELL_FILES.items()}
    files.update(man_pages())
    return files


def stale_files(root: Path) -> list[str]:
    """Man pages in ROOT that no command generates any more (a command was renamed or removed)."""
    generated = generated_files()
    return sorted(f"man/{path.name}" for path in (root / "man").glob("kmc*.1") if f"man/{path.name}" not in generated)


def write(root: Path) -> list[str]:
    written = []
    for relative in stale_files(root):
        (root / relative).unlink()
        written.append(f"{relative} (removed)")
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
