"""The one renderer every command uses: table | json | ndjson | csv.

Data goes to stdout, messages to stderr. ``table`` is a rich table on a terminal and plain aligned
columns in a pipe (no colour, no box, never wrapped), so scripts can still ``awk`` it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kmc.errors import OutputError


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


class LogFormat(str, Enum):
    """How messages and logs look on stderr (--log-format)."""

    text = "text"
    json = "json"


@dataclass(frozen=True)
class Column:
    key: str
    header: str = ""
    numeric: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key.upper().replace("_", " ")


def columns(*specs: str | Column) -> tuple[Column, ...]:
    return tuple(spec if isinstance(spec, Column) else Column(spec) for spec in specs)


def color_enabled(no_color_flag: bool, stream: IO[str]) -> bool:
    """Colour only on a terminal, and never with --no-color or a non-empty NO_COLOR (no-color.org)."""
    if no_color_flag or os.environ.get("NO_COLOR"):
        return False
    return _isatty(stream)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(item) for item in value)
    if isinstance(value, Mapping):
        return json.dumps(_jsonable(value), sort_keys=True)
    return str(value)


class Renderer:
    """Writes data to ``out`` in the chosen format; ``color`` only matters for tables."""

    def __init__(self, fmt: OutputFormat = OutputFormat.table, *, color: bool = False,
                 out: IO[str] | None = None) -> None:
        self.fmt = fmt
        self.out = out if out is not None else sys.stdout
        self.color = color
        self.terminal = _isatty(self.out)

    @property
    def machine(self) -> bool:
        return self.fmt is not OutputFormat.table

    def rows(self, rows: Iterable[Mapping[str, Any]], cols: Sequence[Column], *,
             title: str | None = None, styles: Mapping[str, str] | None = None) -> None:
        """Render rows (plain dicts with stable keys); ``cols`` picks and orders table columns.

        JSON, NDJSON and CSV carry every key of each row, not only the table's columns.
        """
        with self._writing():
            self._rows(list(rows), cols, title, styles)

    def text(self, text: str) -> None:
        """Raw text on stdout (a completion script)."""
        with self._writing():
            self.out.write(text)
            self.out.flush()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A closed or full stdout is the user's to fix: OutputError, not an internal error. A reader that
        went away (BrokenPipeError: `kmc ... | head`) is not an error; the CLI handles it."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output to stdout: {exc.strerror or exc}") from exc

    def _rows(self, rows: list[Mapping[str, Any]], cols: Sequence[Column], title: str | None,
              styles: Mapping[str, str] | None) -> None:
        if self.fmt is OutputFormat.json:
            self._write_json([_jsonable(row) for row in rows])
        elif self.fmt is OutputFormat.ndjson:
            for row in rows:
                self.out.write(json.dumps(_jsonable(row), sort_keys=False) + "\n")
        elif self.fmt is OutputFormat.csv:
            keys = [col.key for col in cols]
            for row in rows:
                keys.extend(key for key in row if key not in keys)
            writer = csv.writer(self.out, lineterminator="\n")
            writer.writerow(keys)
            for row in rows:
                writer.writerow([_csv_cell(row.get(key)) for key in keys])
        elif self.terminal:
            self._rich_table(rows, cols, title, styles or {})
        else:
            self._plain_table(rows, cols)
        self.out.flush()

    def document(self, data: Mapping[str, Any], *, title: str | None = None) -> None:
        """One object: JSON as is; a two-column KEY/VALUE table otherwise."""
        if self.fmt in (OutputFormat.json, OutputFormat.ndjson):
            with self._writing():
                if self.fmt is OutputFormat.json:
                    self._write_json(_jsonable(data))
                else:
                    self.out.write(json.dumps(_jsonable(data)) + "\n")
                self.out.flush()
            return
        pairs = [{"key": key, "value": value} for key, value in _flatten(data)]
        self.rows(pairs, columns(Column("key", "KEY"), Column("value", "VALUE")), title=title)

    def report(self, report: Any, cols: Sequence[Column], *,
               table: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
               styles: Mapping[str, str] | None = None) -> None:
        """A report object (``to_dict()`` and ``rows()``, e.g. kmc.mirror.runner.RunReport): its document with
        ``-o json``, else its rows, which ``table`` may reshape for a table (lists as text...)."""
        if self.fmt is OutputFormat.json:
            self.document(report.to_dict())
            return
        rows = report.rows()
        self.rows(rows if self.machine or table is None else table(rows), cols, styles=styles)

    def _write_json(self, data: Any) -> None:
        json.dump(data, self.out, indent=2 if self.terminal else None)
        self.out.write("\n")

    def _rich_table(self, rows: list[Mapping[str, Any]], cols: Sequence[Column], title: str | None,
                    styles: Mapping[str, str]) -> None:
        console = Console(file=self.out, no_color=not self.color, highlight=False,
                          force_terminal=True, color_system="auto" if self.color else None)
        table = Table(title=title, title_justify="left", header_style="bold" if self.color else "",
                      box=None, pad_edge=False)
        for col in cols:
            table.add_column(col.title, justify="right" if col.numeric else "left", overflow="fold")
        for row in rows:
            cells = []
            for col in cols:
                text = _cell(row.get(col.key))
                style = styles.get(text, "") if self.color else ""
                cells.append(Text(text, style=style))
            table.add_row(*cells)
        console.print(table)

    def _plain_table(self, rows: list[Mapping[str, Any]], cols: Sequence[Column]) -> None:
        grid = [[col.title for col in cols]]
        grid.extend([_cell(row.get(col.key)) for col in cols] for row in rows)
        widths = [max(len(line[index]) for line in grid) for index in range(len(cols))]
        for line in grid:
            cells = [
                cell.rjust(width) if col.numeric else cell.ljust(width)
                for cell, width, col in zip(line, widths, cols, strict=True)
            ]
            self.out.write("  ".join(cells).rstrip() + "\n")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(_jsonable(value))
    return value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


class Messages:
    """Human messages on stderr: info (silenced by -q), warnings and errors (always). With
    ``log_format="json"`` each is one JSON object per line (kmc.service.logs.json_line), and ``fields``
    (flow, source, target, event...) become its keys; as text they are left out."""

    def __init__(self, *, quiet: bool = False, verbose: int = 0, color: bool = False,
                 err: IO[str] | None = None, log_format: str = "text") -> None:
        self.err = err if err is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.color = color
        self.structured = log_format == "json"
        self.console = Console(file=self.err, no_color=not color, highlight=False,
                               force_terminal=_isatty(self.err) or None, soft_wrap=True)

    @property
    def interactive(self) -> bool:
        """Spinners and progress bars: only on a terminal, not with -q, not in JSON logs."""
        return not self.quiet and not self.structured and _isatty(self.err)

    def info(self, message: str, **fields: Any) -> None:
        if not self.quiet:
            self._line("info", message, "", fields)

    def detail(self, message: str, **fields: Any) -> None:
        if self.verbose and not self.quiet:
            self._line("debug", message, "dim", fields)

    def warn(self, message: str, **fields: Any) -> None:
        self._line("warn", message, "yellow", fields, "kmc: warning: ")

    def error(self, message: str, **fields: Any) -> None:
        self._line("error", message, "red", fields, "kmc: error: ")

    def _line(self, level: str, message: str, style: str, fields: Mapping[str, Any], prefix: str = "") -> None:
        if self.structured:
            from kmc.service.logs import json_line

            self.err.write(json_line(level, message, **fields) + "\n")
            self.err.flush()
        elif self.color and style:
            self.console.print(Text(prefix + message, style=style))
        else:
            self.err.write(prefix + message + "\n")
            self.err.flush()
