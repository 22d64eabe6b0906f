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
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any

from rich.cells import cell_len
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
    free: bool = False  # free text (an error, a detail): may wrap between words on a terminal

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

    def rows(self, rows: Iterable[Mapping[str, Any]], cols: Sequence[Column], *, keys: Sequence[str] | None = None,
             title: str | None = None, styles: Mapping[str, str] | None = None) -> None:
        """Render rows (plain dicts with stable keys); ``cols`` picks and orders table columns.

        JSON, NDJSON and CSV carry every key of each row, not only the table's columns. ``keys`` are the
        command's row keys, in order (default: the columns' keys): the CSV header, the same whatever the
        rows hold, even none. Scripts rely on it; each command documents it.
        """
        with self._writing():
            self._rows(list(rows), cols, keys or [col.key for col in cols], title, styles)

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

    def _rows(self, rows: list[Mapping[str, Any]], cols: Sequence[Column], keys: Sequence[str], title: str | None,
              styles: Mapping[str, str] | None) -> None:
        if self.fmt is OutputFormat.json:
            self._write_json([_jsonable(row) for row in rows])
        elif self.fmt is OutputFormat.ndjson:
            for row in rows:
                self.out.write(json.dumps(_jsonable(row), sort_keys=False) + "\n")
        elif self.fmt is OutputFormat.csv:
            for row in rows:
                unknown = [key for key in row if key not in keys]
                if unknown:  # a row key that is not in the documented header: a bug in the command
                    raise ValueError(f"row keys {unknown} are not in the CSV header {list(keys)}")
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
        self.rows(pairs, columns(Column("key", "KEY"), Column("value", "VALUE", free=True)), title=title)

    def report(self, report: Any, cols: Sequence[Column], *, keys: Sequence[str],
               table: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
               styles: Mapping[str, str] | None = None) -> None:
        """A report object (``to_dict()`` and ``rows()``, e.g. kmc.mirror.runner.RunReport): its document with
        ``-o json``, else its rows (``keys``: their keys, the CSV header), which ``table`` may reshape for a
        table (lists as text...)."""
        if self.fmt is OutputFormat.json:
            self.document(report.to_dict())
            return
        rows = report.rows()
        self.rows(rows if self.machine or table is None else table(rows), cols, keys=keys, styles=styles)

    def _write_json(self, data: Any) -> None:
        json.dump(data, self.out, indent=2 if self.terminal else None)
        self.out.write("\n")

    def _rich_table(self, rows: list[Mapping[str, Any]], cols: Sequence[Column], title: str | None,
                    styles: Mapping[str, str]) -> None:
        console = Console(file=self.out, no_color=not self.color, highlight=False,
                          force_terminal=True, color_system="auto" if self.color else None)
        grid = [[_cell(row.get(col.key)) for col in cols] for row in rows]
        lists = [[isinstance(row.get(col.key), (list, tuple)) for col in cols] for row in rows]
        layout = _TerminalLayout(cols, grid, lists, console.width)
        if layout.excess() > 0:  # numbers only left to shorten: whole lines, which the terminal wraps
            console.width = console.width + layout.excess()
        table = Table(title=title, title_justify="left", header_style="bold" if self.color else "",
                      box=None, pad_edge=False, padding=(0, 1) if layout.gap == 2 else (0, 1, 0, 0))
        for index in layout.shown:
            table.add_column(layout.headers[index], justify="right" if cols[index].numeric else "left",
                             width=layout.widths[index], no_wrap=True, overflow="crop")
        for row_index, line in enumerate(grid):
            cells = []
            for index in layout.shown:
                style = styles.get(line[index], "") if self.color else ""
                cells.append(Text(layout.cell(line[index], index, lists[row_index][index]), style=style))
            table.add_row(*cells)
        console.print(table)
        for line in grid:  # free text that had no room in the table: below it, one line per row
            for index in layout.below:
                if line[index] not in ("", "-"):  # named by the row's first cell, unless it names itself
                    named = line[index].startswith(f"{line[0]}:")
                    console.print(Text(line[index] if named else f"{line[0]}: {line[index]}"), soft_wrap=True)

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


class _TerminalLayout:
    """Column widths for a table on a terminal of ``width`` characters, keeping values whole.

    Whole means: numbers and names are never split. When the natural widths do not fit, in this order:
    columns are separated by one space instead of two; free text (errors) wraps between words, down to
    FREE_TEXT_MIN characters, and below that leaves the table for lines of its own under it; headers wider
    than their values break at '-' or ' ' (UNDER-/REPL); lists break after their commas; and only then are
    the widest text cells shortened with an ellipsis (paths keep their end). Numbers are never shortened.
    """

    FREE_TEXT_MIN = 30
    TEXT_MIN = 8

    def __init__(self, cols: Sequence[Column], grid: list[list[str]], lists: list[list[bool]], width: int) -> None:
        self.cols = cols
        self.limit = width
        count = len(cols)
        self.headers = [col.title for col in cols]
        values = [max([0, *(cell_len(line[index]) for line in grid)]) for index in range(count)]
        # the narrowest a list column can be: its longest element, and the comma after it
        elements = [max([0, *(cell_len(part) + 1 for row, line in enumerate(grid) if lists[row][index]
                              for part in line[index].split(","))]) for index in range(count)]
        self.below: list[int] = []
        self.widths = [max(cell_len(header), value) for header, value in zip(self.headers, values, strict=True)]
        self.gap = 2
        if self.excess() > 0:
            self.gap = 1
        for index in range(count):  # free text wraps, or leaves the table
            if cols[index].free and self.excess() > 0:
                room = self.widths[index] - self.excess()
                if room >= min(self.FREE_TEXT_MIN, values[index]):
                    self.widths[index] = room
                else:
                    self.below.append(index)
        for index in range(count):  # headers break at '-' or ' '
            if self.excess() > 0 and cell_len(self.headers[index]) > values[index]:
                broken = re.sub(r"([- ])", lambda match: "-\n" if match.group(1) == "-" else "\n", self.headers[index])
                if "\n" in broken:
                    self.headers[index] = broken
                    self.widths[index] = max(values[index], *(cell_len(part) for part in broken.split("\n")))
        for index in range(count):  # lists break after commas
            if self.excess() > 0 and elements[index]:
                self.widths[index] = max(elements[index], cell_len(self.headers[index].split("\n")[0]),
                                         self.widths[index] - self.excess())
        # Last: the widest text column loses its end (a path its start); the first column (what the row is)
        # and lists (already broken at commas) only after the others. Not when numbers alone are too wide:
        # shortening text would lose it for nothing, so whole lines go out, for the terminal to wrap.
        whole = list(self.widths)
        for last_resort in (False, True):
            while self.excess() > 0:
                candidates = [index for index in self.shown if not cols[index].numeric and not cols[index].free
                              and self.widths[index] > self.TEXT_MIN
                              and (last_resort or (index > 0 and not elements[index]))]
                if not candidates:
                    break  # numbers only: the terminal wraps the lines
                widest = max(candidates, key=lambda index: self.widths[index])
                self.widths[widest] = max(self.TEXT_MIN, self.widths[widest] - self.excess())
        if self.excess() > 0:
            self.widths = whole

    @property
    def shown(self) -> list[int]:
        return [index for index in range(len(self.cols)) if index not in self.below]

    def excess(self) -> int:
        """How many characters the shown columns are too wide for the terminal (<= 0: they fit)."""
        shown = self.shown
        return sum(self.widths[index] for index in shown) + self.gap * (len(shown) - 1) - self.limit

    def cell(self, text: str, index: int, is_list: bool) -> str:
        """The cell's text, wrapped or shortened to its column's width."""
        width = self.widths[index]
        if cell_len(text) <= width:
            return text
        if self.cols[index].free:
            return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False))
        if is_list:
            lines: list[str] = []
            for part in text.split(","):
                if lines and cell_len(lines[-1]) + 1 + cell_len(part) <= width:
                    lines[-1] += "," + part
                else:
                    if lines:
                        lines[-1] += ","
                    lines.append(part)
            if all(cell_len(line) <= width for line in lines):
                return "\n".join(lines)
        if text.startswith(("/", "~")):  # a path: its end says most
            return "…" + text[-(width - 1):]
        return text[:width - 1] + "…"


def _csv_cell(value: Any) -> Any:
    """A CSV cell: empty for null, true/false, a list of names space-separated (Kafka names and addresses
    hold no spaces), and anything nested (objects, lists of objects) as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) and not any(isinstance(item, (Mapping, list, tuple)) for item in value):
        return " ".join(str(_csv_cell(item)) for item in value)
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
