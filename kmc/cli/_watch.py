"""``--watch`` for status commands (`kmc flow status --watch`; any status report of rows can use it): run the
report again every few seconds and show it with records/s (from the change of a position column between two
looks) and a sparkline of each row's lag history, until Ctrl-C (exit 0). On a terminal the view is redrawn in
place (rich Live); elsewhere each look is printed again after a time line (a log or a pipe gets plain text);
with -o json or ndjson each look is one NDJSON line per row, with ``time`` and ``records_per_second``."""

from __future__ import annotations

import datetime
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from kmc.cli import context
from kmc.output import Column, OutputFormat

HISTORY = 20  # looks kept for a row's sparkline
SPARKS = "▁▂▃▄▅▆▇█"
KEY = ("flow", "source", "target", "source_topic", "partition")  # partition: flow status --partitions


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled to the largest (all lowest when all are zero); unknown values blank."""
    known = [value for value in values if value is not None]
    top = max(known, default=0) or 1
    return "".join(" " if value is None else SPARKS[min(len(SPARKS) - 1, int(value / top * (len(SPARKS) - 1)))]
                   for value in values)


class _Rows:
    """Each row's previous position and lag history between looks."""

    def __init__(self, position: str, lag: str) -> None:
        self.position, self.lag = position, lag
        self.last: dict[tuple[Any, ...], tuple[float, int]] = {}
        self.history: dict[tuple[Any, ...], deque[float | None]] = {}

    def annotate(self, rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        shown = []
        for row in rows:
            key = tuple(row.get(name) for name in KEY)
            rate = None
            position = row.get(self.position)
            if position is not None:
                before = self.last.get(key)
                if before is not None and now > before[0]:
                    rate = max(0.0, (position - before[1]) / (now - before[0]))
                self.last[key] = (now, position)
            history = self.history.setdefault(key, deque(maxlen=HISTORY))
            history.append(row.get(self.lag))
            shown.append(dict(row, records_per_second=None if rate is None else round(rate, 1),
                              lag_history=sparkline(list(history))))
        return shown


def watch(app_ctx: context.AppContext, look: Callable[[], list[dict[str, Any]]], columns: Sequence[Column],
          interval: float, title: str, position: str = "position", lag: str = "records_behind") -> None:
    """Show ``look()``'s rows every ``interval`` seconds (see the module's docstring) until Ctrl-C. ``columns``
    are the table's; RECORDS/S and LAG HISTORY are added after the first two key columns' neighbours."""
    rows = _Rows(position, lag)
    table = [*columns, Column("records_per_second", "RECORDS/S", numeric=True), Column("lag_history", "LAG")]
    render = app_ctx.render
    try:
        if render.fmt in (OutputFormat.json, OutputFormat.ndjson):
            while True:
                stamp = _now()
                for row in rows.annotate(look(), time.monotonic()):
                    render.out.write(json.dumps({"time": stamp, **row}, default=str) + "\n")
                render.out.flush()
                time.sleep(interval)
        elif render.terminal and not app_ctx.messages.structured:
            _live(app_ctx, look, rows, table, interval, title)
        else:
            while True:
                render.out.write(f"{title} at {_now()}\n")
                render.rows(rows.annotate(look(), time.monotonic()), table)
                render.out.write("\n")
                render.out.flush()
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _live(app_ctx: context.AppContext, look: Callable[[], list[dict[str, Any]]], rows: _Rows,
          table: Sequence[Column], interval: float, title: str) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console(file=app_ctx.render.out, no_color=not app_ctx.color, highlight=False)

    def frame() -> Table:
        grid = Table(title=f"{title} at {_now()} (every {interval:g}s, Ctrl-C to stop)", title_justify="left",
                     box=None, pad_edge=False, header_style="bold" if app_ctx.color else "")
        for column in table:
            grid.add_column(column.title, justify="right" if column.numeric else "left")
        for row in rows.annotate(look(), time.monotonic()):
            grid.add_row(*(_cell(row.get(column.key)) for column in table))
        return grid

    with Live(frame(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(frame(), refresh=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
