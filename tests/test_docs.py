"""The generated man page and completions match the live CLI; every command is helped and documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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


# --- help text (issue 18) ----------------------------------------------------------------------------------


def _params():  # noqa: ANN202
    for path, command in ALL_COMMANDS:
        for param in command.params:
            if param.name != "help":
                yield " ".join(path), param


@pytest.mark.parametrize(("path", "param"), list(_params()), ids=lambda value: getattr(value, "name", value))
def test_every_value_has_a_placeholder_and_every_option_a_help_text(path, param):  # noqa: ANN001
    takes_value = param.param_type_name == "argument" or not (param.is_flag or param.count)
    if takes_value and not param.type_descriptor.is_choice:
        assert param.metavar, f"kmc {path} {param.opts[0]}: give it a metavar (NAME, SECONDS, ...)"
        assert not param.metavar.islower() or "|" in param.metavar, f"kmc {path} {param.opts[0]}: {param.metavar}"
    if param.param_type_name == "option":
        assert (param.help or "").strip(), f"kmc {path} {param.opts[0]} has no help text"


@pytest.mark.parametrize("path", [" ".join(path) for path, _ in ALL_COMMANDS] + [""])
def test_help_reads_like_a_unix_tool(path):  # noqa: ANN001
    from tests.helpers import kmc

    text = kmc(*path.split(), "--help").stdout
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: kmc {path}".rstrip() + " ") and "{" not in usage, usage
    for placeholder in ("<str", "<list", "<int", "<float", "<bool", "<path"):
        assert placeholder not in text, f"kmc {path} --help shows {placeholder}>"
    if path:  # global options may stand anywhere, so every command's help lists them
        assert "Global options" in text and "--timeout SECONDS" in text and "-o, --output" in text


# --- completion (issue 18) ---------------------------------------------------------------------------------


def complete(words: str, config: Path, shell: str = "bash") -> list[str]:
    """What the shell is offered for the last word of ``words`` (as the generated scripts ask kmc)."""
    import sys

    env = dict(os.environ, KMC_CONFIG=str(config), _KMC_COMPLETE=f"complete_{shell}", COMP_WORDS=words,
               XDG_DATA_HOME=str(config.parent / "no-sandboxes"),  # the session's sandboxes are profiles too
               COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
               _TYPER_COMPLETE_ARGS=words, _TYPER_COMPLETE_FISH_ACTION="get-args")
    proc = subprocess.run([sys.executable, "-m", "kmc"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture
def completion_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[clusters.dc1]\nbootstrap = ["h1:9092"]\n[clusters.dc2]\nbootstrap = ["h2:9092"]\n'
                    '[clusters.central]\nbootstrap = ["c:9092"]\n'
                    '[flows.aggregate]\nfrom = ["dc1", "dc2"]\nto = "central"\n'
                    '[flows.fanout]\nfrom = ["central"]\nto = "dc1"\nrename = "x.{topic}"\n')
    return path


@pytest.mark.parametrize(("words", "offered"), [
    ("kmc mirror ", ["central", "dc1", "dc2", "status"]),
    ("kmc groups d", ["dc1", "dc2"]),
    ("kmc groups ", ["central", "dc1", "dc2", "translate"]),
    ("kmc mirror --fro", ["--from"]),
    ("kmc mirror dc", ["dc1", "dc2"]),
    ("kmc diff dc1 c", ["central"]),
    ("kmc aggregate dc1 dc2 --into ", ["central", "dc1", "dc2"]),
    ("kmc topics d", ["dc1", "dc2"]),
    ("kmc inventory ", ["central", "dc1", "dc2"]),
    ("kmc profile show ", ["central", "dc1", "dc2"]),
    ("kmc profile remove dc", ["dc1", "dc2"]),
    ("kmc flow run ", ["aggregate", "fanout"]),
    ("kmc flow status f", ["fanout"]),
    ("kmc mirror dc1 central --compression ", ["keep", "none", "gzip", "snappy", "lz4", "zstd"]),
    ("kmc mirror dc1 central --compression z", ["zstd"]),
    ("kmc flow run aggregate --from ", ["earliest", "latest"]),
    ("kmc profile add x --security-protocol SASL", ["SASL_PLAINTEXT", "SASL_SSL"]),
])
def test_completion_offers_names_and_values(completion_config: Path, words: str, offered: list[str]) -> None:
    assert complete(words, completion_config) == offered


def test_completion_describes_clusters_and_flows_for_zsh_and_fish(completion_config: Path) -> None:
    assert complete("kmc flow run ", completion_config, "fish") == ["aggregate\tdc1,dc2 -> central",
                                                                    "fanout\tcentral -> dc1"]
    assert "dc1\th1:9092" in complete("kmc mirror ", completion_config, "fish")


def test_completion_with_a_broken_config_offers_nothing_and_says_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[clusters.dc1\n")
    assert complete("kmc mirror ", broken) == ["status"]  # the subcommand still; no cluster, no message
    assert complete("kmc topics ", broken) in ([], [""])


# --- man pages (issue 18) ----------------------------------------------------------------------------------

TOP_LEVEL = [path[0] for path, _ in ALL_COMMANDS if len(path) == 1]


def test_no_stale_man_pages() -> None:
    from kmc.cli.docs import stale_files

    assert stale_files(ROOT) == [], "a man page no command generates: run `make docs`"


@pytest.mark.parametrize("page", ["kmc", *(f"kmc-{name}" for name in TOP_LEVEL)])
def test_every_command_has_a_man_page_with_its_sections(page: str) -> None:
    text = (ROOT / "man" / f"{page}.1").read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"):
        assert f"\n.SH {section}\n" in text, f"{page}(1) has no {section}"
    assert "\\fBkmc\\fR(1)" in text or page == "kmc"


@pytest.mark.parametrize(("page", "usage", "option"), [
    ("kmc-mirror", "kmc mirror [OPTIONS] SRC DST", "\\-\\-exactly\\-once"),
    ("kmc-groups", "kmc groups [OPTIONS] [CLUSTER] [PATTERN]", "\\-b, \\-\\-bootstrap"),
])
def test_a_group_with_a_default_command_documents_that_command_first(page: str, usage: str, option: str) -> None:
    """`kmc mirror SRC DST` is the page's main command (its synopsis, options and JSON keys), though it is the
    group's hidden default subcommand; `kmc mirror status` follows."""
    text = (ROOT / "man" / f"{page}.1").read_text()
    synopsis = text.split("\n.SH SYNOPSIS\n", 1)[1].split("\n.SH ", 1)[0]
    assert synopsis.splitlines()[0] == usage.replace("-", "\\-")
    options = text.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
    assert f"\\fB{option}" in options
    assert "\n.SH JSON OUTPUT\n" in text and "\n.SH COMMANDS\n" in text


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man(1)")
@pytest.mark.parametrize("page", ["kmc", *(f"kmc-{name}" for name in TOP_LEVEL)])
def test_man_pages_fit_80_columns(page: str) -> None:
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="", LC_ALL="C.UTF-8")
    proc = subprocess.run(["man", "-l", str(ROOT / "man" / f"{page}.1")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    lines = [re.sub(r".\x08", "", line) for line in proc.stdout.splitlines()]  # overstrike bold and underline
    assert len(lines) > 20
    wide = [line for line in lines if len(line) > 80]
    assert not wide, f"{page}(1) is wider than 80 columns: {wide[:3]}"
