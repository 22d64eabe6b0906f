"""The renderer and the message stream: plain columns in a pipe, a rich table on a terminal, the shapes
of json/ndjson/csv, and colour only on a terminal without NO_COLOR or --no-color.

Unit tests on in-memory streams, plus CLI runs on a pseudo-terminal (no Kafka needed: `profile list`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest

from kmc.output import Column, Messages, OutputFormat, Renderer, color_enabled, columns
from tests.helpers import on_terminal

ESC = "\x1b["
ROWS = [
    {"topic": "orders", "partitions": 12, "records": 1234567, "internal": False, "extra": None},
    {"topic": "payments.eu", "partitions": 3, "records": None, "internal": True, "extra": ["a", "b"]},
]
COLUMNS = columns("topic", Column("partitions", numeric=True), Column("records", numeric=True), "internal")
KEYS = ("topic", "partitions", "records", "internal", "extra")


class Terminal(io.StringIO):
    """An in-memory stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def render(fmt: OutputFormat, rows: list[dict] = ROWS, *, out: io.StringIO | None = None, color: bool = False,
           styles: dict[str, str] | None = None) -> str:
    out = io.StringIO() if out is None else out
    Renderer(fmt, color=color, out=out).rows(rows, COLUMNS, keys=KEYS, styles=styles)
    return out.getvalue()


# --- table ---------------------------------------------------------------------------------------


def test_table_in_a_pipe_is_plain_aligned_columns() -> None:
    assert render(OutputFormat.table) == (
        "TOPIC        PARTITIONS  RECORDS  INTERNAL\n"
        "orders               12  1234567  no\n"
        "payments.eu           3        -  yes\n"
    )


def test_plain_table_never_wraps_or_truncates() -> None:
    long_name = "t" * 300
    text = render(OutputFormat.table, [{"topic": long_name, "partitions": 1, "records": 5, "internal": False}])
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[1].split() == [long_name, "1", "5", "no"]


def test_plain_table_header_only_when_no_rows() -> None:
    assert render(OutputFormat.table, []) == "TOPIC  PARTITIONS  RECORDS  INTERNAL\n"


def test_plain_table_is_awkable() -> None:
    text = render(OutputFormat.table)
    assert [line.split()[2] for line in text.splitlines()[1:]] == ["1234567", "-"]
    assert ESC not in text and "│" not in text and "─" not in text


def test_table_cells() -> None:
    out = io.StringIO()
    rows = [{"a": 0.5, "b": 1234.5, "c": ["x", 1], "d": {"k": 1}, "e": True}]
    Renderer(OutputFormat.table, out=out).rows(rows, columns("a", "b", "c", "d", "e"))
    assert out.getvalue().splitlines()[1].split("  ") == ["0.50", "1,234.5", "x,1", '{"k": 1}', "yes"]


def test_table_on_a_terminal_without_colour_has_no_escape_codes() -> None:
    text = render(OutputFormat.table, out=Terminal(), color=False, styles={"yes": "red"})
    assert ESC not in text
    assert text.splitlines()[0].split() == ["TOPIC", "PARTITIONS", "RECORDS", "INTERNAL"]
    assert "payments.eu" in text


def test_table_on_a_terminal_with_colour_uses_styles() -> None:
    text = render(OutputFormat.table, out=Terminal(), color=True, styles={"yes": "red"})
    assert ESC in text
    assert "\x1b[31myes" in text  # the style given for that cell value


# --- json / ndjson / csv ----------------------------------------------------------------------------


def test_json_is_one_array_with_every_key() -> None:
    text = render(OutputFormat.json)
    assert text.count("\n") == 1  # compact in a pipe
    assert json.loads(text) == [
        {"topic": "orders", "partitions": 12, "records": 1234567, "internal": False, "extra": None},
        {"topic": "payments.eu", "partitions": 3, "records": None, "internal": True, "extra": ["a", "b"]},
    ]


def test_json_is_indented_on_a_terminal() -> None:
    text = render(OutputFormat.json, out=Terminal())
    assert text.startswith("[\n  {\n")
    assert json.loads(text) == json.loads(render(OutputFormat.json))
    assert ESC not in text


def test_json_empty() -> None:
    assert render(OutputFormat.json, []) == "[]\n"


def test_ndjson_one_object_per_line_keys_in_order() -> None:
    lines = render(OutputFormat.ndjson).splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert list(json.loads(lines[0])) == ["topic", "partitions", "records", "internal", "extra"]
    assert render(OutputFormat.ndjson, []) == ""


def test_csv_header_is_the_keys_then_one_line_per_row() -> None:
    text = render(OutputFormat.csv)
    records = list(csv.reader(io.StringIO(text)))
    assert records == [
        ["topic", "partitions", "records", "internal", "extra"],
        ["orders", "12", "1234567", "false", ""],
        ["payments.eu", "3", "", "true", "a b"],
    ]
    assert "\r" not in text


def test_csv_cells_of_every_kind() -> None:
    out = io.StringIO()
    row = {"none": None, "yes": True, "no": False, "names": ["h1:9092", "h2:9092"], "empty": [],
           "nested": [{"a": 1}], "object": {"b": [1, 2]}, "number": 1.5}
    Renderer(OutputFormat.csv, out=out).rows([row], columns("none"), keys=list(row))
    assert list(csv.reader(io.StringIO(out.getvalue())))[1] == [
        "", "true", "false", "h1:9092 h2:9092", "", '[{"a": 1}]', '{"b": [1, 2]}', "1.5"]


def test_a_row_key_outside_the_csv_header_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not in the CSV header"):
        Renderer(OutputFormat.csv, out=io.StringIO()).rows([{"topic": "t", "surprise": 1}], COLUMNS)


def test_csv_quotes_commas_and_quotes() -> None:
    out = io.StringIO()
    Renderer(OutputFormat.csv, out=out).rows([{"a": 'x,"y"'}], columns("a"))
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["a"], ['x,"y"']]


def test_csv_header_only_when_no_rows() -> None:
    assert render(OutputFormat.csv, []) == "topic,partitions,records,internal,extra\n"


class Color(Enum):
    red = "red"


def test_json_conversion_of_awkward_values() -> None:
    out = io.StringIO()
    row = {"nan": math.nan, "inf": math.inf, "bytes": b"k\xff", "enum": Color.red, "tuple": (1, 2),
           "nested": {1: (b"v",)}}
    Renderer(OutputFormat.json, out=out).rows([row], columns("nan"))
    assert json.loads(out.getvalue()) == [
        {"nan": None, "inf": None, "bytes": "k\\xff", "enum": "red", "tuple": [1, 2], "nested": {"1": ["v"]}}
    ]


# --- document ----------------------------------------------------------------------------------------

DOCUMENT = {"name": "dc1", "bootstrap": ["h:1", "h:2"], "client": {"request_timeout_ms": 5}, "sandbox": False}


def document(fmt: OutputFormat) -> str:
    out = io.StringIO()
    Renderer(fmt, out=out).document(DOCUMENT)
    return out.getvalue()


def test_document_json_and_ndjson_are_one_object() -> None:
    assert json.loads(document(OutputFormat.json)) == DOCUMENT
    ndjson = document(OutputFormat.ndjson)
    assert ndjson.count("\n") == 1 and json.loads(ndjson) == DOCUMENT


def test_document_table_is_key_value_with_nested_keys_flattened() -> None:
    assert document(OutputFormat.table) == (
        "KEY                        VALUE\n"
        "name                       dc1\n"
        "bootstrap                  h:1,h:2\n"
        "client.request_timeout_ms  5\n"
        "sandbox                    no\n"
    )


def test_document_csv() -> None:
    assert list(csv.reader(io.StringIO(document(OutputFormat.csv)))) == [
        ["key", "value"], ["name", "dc1"], ["bootstrap", "h:1 h:2"], ["client.request_timeout_ms", "5"],
        ["sandbox", "false"],
    ]


# --- colour and messages -----------------------------------------------------------------------------


def test_color_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert color_enabled(False, Terminal()) is True
    assert color_enabled(False, io.StringIO()) is False
    assert color_enabled(True, Terminal()) is False  # --no-color


@pytest.mark.parametrize("value", ["1", "0", "false", "yes"])
def test_no_color_with_any_value_turns_colour_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NO_COLOR", value)
    assert color_enabled(False, Terminal()) is False


def test_empty_no_color_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """no-color.org: NO_COLOR counts when present and not empty."""
    monkeypatch.setenv("NO_COLOR", "")
    assert color_enabled(False, Terminal()) is True


def test_messages_go_to_stderr_with_prefixes() -> None:
    err = io.StringIO()
    messages = Messages(err=err, verbose=1)
    messages.info("starting")
    messages.detail("more")
    messages.warn("careful")
    messages.error("broken")
    assert err.getvalue() == "starting\nmore\nkmc: warning: careful\nkmc: error: broken\n"
    assert messages.interactive is False  # not a terminal


def test_quiet_keeps_only_warnings_and_errors() -> None:
    err = io.StringIO()
    messages = Messages(err=err, quiet=True, verbose=2)
    messages.info("starting")
    messages.detail("more")
    messages.warn("careful")
    messages.error("broken")
    assert err.getvalue() == "kmc: warning: careful\nkmc: error: broken\n"


def test_detail_needs_verbose() -> None:
    err = io.StringIO()
    Messages(err=err).detail("more")
    assert err.getvalue() == ""


def test_interactive_only_on_a_terminal_without_quiet() -> None:
    assert Messages(err=Terminal()).interactive is True
    assert Messages(err=Terminal(), quiet=True).interactive is False


def test_coloured_messages_on_a_terminal() -> None:
    err = Terminal()
    Messages(err=err, color=True).error("broken")
    assert ESC in err.getvalue() and "kmc: error: broken" in err.getvalue()
    plain = Terminal()
    Messages(err=plain, color=False).error("broken")
    assert plain.getvalue() == "kmc: error: broken\n"


# --- through the CLI, on a pseudo-terminal and in a pipe ---------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """A child environment with its own config (one cluster) and no sandboxes."""
    config = tmp_path / "config.toml"
    config.write_text('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n')
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "KMC_CONFIG")}
    env.update(KMC_CONFIG=str(config), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), TERM="xterm-256color", COLUMNS="120")
    return env


def run_on_terminal(args: list[str], env: dict[str, str], expect: int = 0) -> str:
    """Run ``kmc ARGS`` with stdout on a pseudo-terminal; return what it printed there."""
    code, text, err = on_terminal([sys.executable, "-m", "kmc", *args], env)
    assert code == expect, err
    return text


def test_cli_table_on_a_terminal_is_coloured(cli_env: dict[str, str]) -> None:
    text = run_on_terminal(["profile", "list"], cli_env)
    assert ESC in text
    assert "dc1" in text and "localhost:19092" in text


@pytest.mark.parametrize(
    ("args", "no_color"),
    [(["profile", "list"], "1"), (["--no-color", "profile", "list"], None), (["profile", "list", "--no-color"], None)],
)
def test_cli_no_color_on_a_terminal(cli_env: dict[str, str], args: list[str], no_color: str | None) -> None:
    if no_color is not None:
        cli_env["NO_COLOR"] = no_color
    text = run_on_terminal(args, cli_env)
    assert ESC not in text
    assert "dc1" in text and "localhost:19092" in text


def test_cli_table_in_a_pipe_is_plain(cli_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "kmc", "profile", "list"], capture_output=True, text=True,
                          env=cli_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ESC not in proc.stdout
    assert proc.stdout.splitlines() == [
        "NAME  BOOTSTRAP        SECURITY PROTOCOL  SANDBOX  SOURCE",
        f"dc1   localhost:19092  PLAINTEXT          no       {cli_env['KMC_CONFIG']}",
    ]
    assert proc.stderr == ""


# --- tables on a terminal keep values whole (issue 18) ---------------------------------------------------

LONG = ["kafka-broker-number-one.example.com:9092", "kafka-broker-number-two.example.com:9092"]


def narrow_terminal(cli_env: dict[str, str], tmp_path: Path, width: int) -> dict[str, str]:
    """Three clusters, one with a long bootstrap list, two on closed ports; a terminal ``width`` wide."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    config = tmp_path / "wide.toml"
    config.write_text(f'[clusters.alpha]\nbootstrap = {json.dumps(LONG)}\n'
                      f'[clusters.beta]\nbootstrap = ["127.0.0.1:{ports[0]}"]\n'
                      f'[clusters.gamma-cluster]\nbootstrap = ["127.0.0.1:{ports[1]}"]\n')
    return dict(cli_env, KMC_CONFIG=str(config), COLUMNS=str(width), NO_COLOR="1")


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_a_list_breaks_after_its_commas_not_inside_an_address(cli_env: dict[str, str], tmp_path: Path) -> None:
    lines = lines_of(run_on_terminal(["profile", "list"], narrow_terminal(cli_env, tmp_path, 100)))
    assert all(len(line) <= 100 for line in lines), lines
    assert any(line.split()[1:2] == [LONG[0] + ","] for line in lines if line.startswith("alpha")), lines
    assert any(line.strip() == LONG[1] for line in lines), lines


def test_errors_wrap_between_words_or_go_below_the_table(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = narrow_terminal(cli_env, tmp_path, 80)
    lines = lines_of(run_on_terminal(["profile", "test", "--timeout", "1"], env, expect=4))
    assert lines[0].split() == ["NAME", "STATUS", "AUTHENTICATION", "CLUSTER", "ID", "BROKERS", "CONTROLLER", "RTT",
                                "MS"]
    assert all(len(line) <= 80 for line in lines[:4]), lines
    assert any(line.startswith("beta: connect: cannot reach 127.0.0.1:") and line.endswith("raise --timeout)")
               for line in lines), lines  # the whole error, on a line of its own below the table
    wide = lines_of(run_on_terminal(["profile", "test", "--timeout", "1"], dict(env, COLUMNS="140"), expect=4))
    assert wide[0].split()[-1] == "ERROR" and all(len(line) <= 140 for line in wide), wide
    continued = [line.strip() for line in wide[1:] if line.startswith(" ")]
    assert continued, wide
    # wrapped between words, never one short word per line (a long address list may fill a line alone)
    assert all(len(line.split()) > 1 or len(line) > 40 for line in continued), wide


def test_inventory_headers_stay_whole_at_120_columns(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = narrow_terminal(cli_env, tmp_path, 120)
    lines = lines_of(run_on_terminal(["inventory", "--timeout", "1"], env, expect=4))
    header = lines[0].split()
    assert {"UNDER-REPL", "UNDER-MIN-ISR", "RECORDS", "GROUPS"} <= set(header), lines
    table = [line for line in lines if not re.match(r"\S+: ", line)]  # errors may follow, one per line
    assert len(table) == 4 and all(len(line) <= 120 for line in table), lines
    assert any(line.startswith("beta: connect: cannot reach") for line in lines), lines


# --- CSV: one header per command, whatever the rows (issue 18, bug 7) ---------------------------------------


def test_csv_header_does_not_depend_on_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import kmc

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # no session sandboxes among the profiles

    config = tmp_path / "config.toml"
    config.write_text('[clusters.dc1]\nbootstrap = ["h:1", "h:2"]\n')
    empty = kmc("--config", str(config), "flow", "list", "-o", "csv").stdout
    config.write_text(config.read_text() + '[flows.f]\nfrom = ["dc1"]\nto = "dc1"\nrename = "x.{topic}"\n'
                                           'topics = ["a", "b"]\nsync_configs = true\n')
    one = list(csv.reader(io.StringIO(kmc("--config", str(config), "flow", "list", "-o", "csv").stdout)))
    assert empty == ("name,from,to,topics,exclude,rename,sync_configs,sync_groups,exactly_once,partitioner,"
                     "sync_acls,group\n")
    assert one == [empty.strip().split(","), ["f", "dc1", "dc1", "a b", "", "x.{topic}", "true", "", "false", "same",
                                              "false", ""]]
    profiles = list(csv.reader(io.StringIO(kmc("--config", str(config), "profile", "list", "-o", "csv").stdout)))
    assert profiles[0] == ["name", "bootstrap", "security_protocol", "sandbox", "source"]
    assert profiles[1][:4] == ["dc1", "h:1 h:2", "PLAINTEXT", "false"]


def test_numbers_are_never_shortened_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    out = Terminal()
    cols = columns("name", *(Column(f"n{index}", numeric=True) for index in range(5)))
    rows = [{"name": "a-rather-long-cluster-name", **{f"n{index}": 123456789 + index for index in range(5)}}]
    Renderer(OutputFormat.table, out=out).rows(rows, cols)
    text = out.getvalue()
    assert all(str(123456789 + index) in text for index in range(5)), text
    assert "a-rather-long-cluster-name" in text and "…" not in text  # shortening text would not have helped
