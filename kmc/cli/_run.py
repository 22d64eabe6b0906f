"""Running mirror jobs from the command line, for `kmc mirror`, `kmc aggregate` and `kmc flow run`: one call
to :func:`kmc.mirror.runner.run` with signal handling, progress and notices on stderr, then the report on
stdout and the exit status."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kmc.cli import context
from kmc.cli._options import RunOptions
from kmc.errors import Interrupted
from kmc.mirror import MirrorProgress, MirrorResult, Plan, runner
from kmc.mirror.jobs import MirrorJob
from kmc.output import Column, OutputFormat, columns

LOG_INTERVAL = 10.0  # seconds between progress lines when stderr is not a terminal

_NUMBERS = (Column("records", numeric=True), Column("bytes", numeric=True), Column("skipped", numeric=True),
            Column("redelivered", numeric=True), Column("lag", numeric=True), Column("gaps", numeric=True))
RESULT_COLUMNS = columns("source_topic", "target_topic", *_NUMBERS)
AGGREGATE_COLUMNS = columns("source", "source_topic", "target_topic", *_NUMBERS)
FLOW_COLUMNS = columns("flow", "source", "target", "source_topic", "target_topic", *_NUMBERS)
PLAN_COLUMNS = columns("source_topic", "target_topic", Column("partitions", numeric=True),
                       Column("target_partitions", "TARGET PARTS", numeric=True),
                       Column("replication_factor", "RF", numeric=True), "actions", "config_drift")
JOBS_PLAN_COLUMNS = columns("flow", "source", "source_topic", "target_topic", Column("partitions", numeric=True),
                            Column("target_partitions", "TARGET PARTS", numeric=True), "actions")


def execute(app_ctx: context.AppContext, jobs: Sequence[MirrorJob], options: RunOptions, *,
            title: str | None = None, by_flow: bool = False) -> None:
    """Run (or plan) ``jobs``, render the report, and raise what the exit status should say.

    Without ``title``, the one job is `kmc mirror`: its own JSON document (a mirror result or a plan), its
    error as it is, and a cluster that cannot be reached is exit 4 at once. With ``title`` (it names the
    run in the summary line) the jobs are `kmc aggregate` / `kmc flow run`: one document for all, a
    failure of some is exit 6, and with --follow a job whose cluster cannot be reached is tried again;
    ``by_flow`` adds the flow and target columns.
    """
    single = title is None
    printer = notice_printer(app_ctx)

    def notice(job: MirrorJob, level: str, text: str) -> None:
        printer(level, text if single else f"{job.label}: {text}")

    stop = threading.Event()
    with stop_on_signals(stop) as received, progress_display(app_ctx, label_sources=not single) as progress:
        report = runner.run(jobs, mode=options.mode, dry_run=options.dry_run, stop_event=stop,
                            progress_callback=progress, notice_callback=notice, timeout=app_ctx.timeout,
                            retry=not single)
    failure = report.failure()
    if single:
        outcome = report.outcomes[0]
        if outcome.error is not None:
            raise outcome.error
        if outcome.plan is not None:
            _render_plan(app_ctx, outcome.plan)
        elif outcome.result is not None:
            _render_result(app_ctx, outcome.result)
        else:
            raise Interrupted("stopped before the mirror started")
    elif options.dry_run:
        _render_plans(app_ctx, report)
    else:
        _render_runs(app_ctx, report, title, by_flow)
    if received and received[-1] == signal.SIGINT:
        if failure is not None:
            app_ctx.messages.error(failure.one_line())
        raise Interrupted("interrupted; progress up to the interruption is checkpointed")
    if failure is not None:
        raise failure


# ------------------------------------------------------------------------------------------ rendering


def _table(*keys: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """For a table: the lists under ``keys`` as comma-separated text ("-" when empty)."""

    def shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(row, **{key: ",".join(row[key]) or "-" for key in keys}) for row in rows]

    return shown


def _render_plan(app_ctx: context.AppContext, plan: Plan) -> None:
    app_ctx.render.report(plan, PLAN_COLUMNS, table=_table("actions", "config_drift"))
    if app_ctx.render.fmt is OutputFormat.json:
        return
    for warning in plan.warnings:
        app_ctx.messages.warn(warning)
    app_ctx.messages.info(f"copy mode: {plan.copy[0]}: {plan.copy[1]}")
    count = len(plan.topics)
    app_ctx.messages.info(f"dry run: nothing changed ({count} topic{'' if count == 1 else 's'} planned)")


def _render_result(app_ctx: context.AppContext, result: MirrorResult) -> None:
    """The summary: the JSON document, or one row per topic, and a line on stderr."""
    app_ctx.render.report(result, RESULT_COLUMNS)
    if app_ctx.render.fmt is OutputFormat.json:
        return
    megabytes = result.bytes / 1e6
    rate = result.records / result.elapsed if result.elapsed > 0 else 0.0
    extra = f", {result.redelivered:,} redelivered" if result.redelivered else ""
    app_ctx.messages.info(f"mirror {result.source} -> {result.target}: {result.records:,} records "
                          f"({megabytes:.1f} MB) in {result.elapsed:.1f}s ({rate:,.0f}/s){extra}")


def _render_plans(app_ctx: context.AppContext, report: runner.RunReport) -> None:
    """Each job's plan; a job that could not be planned is reported like a failed run."""
    app_ctx.render.report(report, JOBS_PLAN_COLUMNS, table=_table("actions"))
    if app_ctx.render.fmt is OutputFormat.json:
        return
    for outcome in report.outcomes:
        for warning in outcome.plan.warnings if outcome.plan is not None else ():
            app_ctx.messages.warn(f"{outcome.job.label}: {warning}")
        if outcome.plan is not None:
            app_ctx.messages.info(f"{outcome.job.label}: copy mode {outcome.plan.copy[0]}: {outcome.plan.copy[1]}")
    app_ctx.messages.info(f"dry run: nothing changed ({sum(len(plan.topics) for plan in report.plans)} topics "
                          f"planned)")


def _render_runs(app_ctx: context.AppContext, report: runner.RunReport, title: str, by_flow: bool) -> None:
    app_ctx.render.report(report, FLOW_COLUMNS if by_flow else AGGREGATE_COLUMNS)
    if app_ctx.render.fmt is OutputFormat.json:
        return
    rate = report.records / report.elapsed if report.elapsed > 0 else 0.0
    app_ctx.messages.info(f"{title}: {report.records:,} records ({report.bytes / 1e6:.1f} MB) in "
                          f"{report.elapsed:.1f}s ({rate:,.0f}/s); {len(report.results)} of {len(report.outcomes)} "
                          "mirrors succeeded")


# ------------------------------------------------------------------------------------------ while it runs


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGTERM and SIGINT set ``stop`` (the engine then stops cleanly); a second SIGINT gives up waiting
    (KeyboardInterrupt). Yields the signals received, in order. Only the main thread can do this."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
        if signum == signal.SIGINT and received and received[-1] == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def notice_printer(app_ctx: context.AppContext) -> Callable[[str, str], None]:
    """A notice_callback for run_mirror: warnings always, information unless -q."""
    messages = app_ctx.messages

    def notice(level: str, text: str) -> None:
        if level == "warn":
            messages.warn(text)
        else:
            messages.info(text)

    return notice


@contextlib.contextmanager
def progress_display(app_ctx: context.AppContext, label_sources: bool = False) -> Iterator[Any]:
    """A progress_callback for run_mirror: per-topic progress bars on a terminal, a line every LOG_INTERVAL
    elsewhere (per mirror), None with -q. ``label_sources`` names the source and target clusters in each bar
    (several mirrors at once)."""
    messages = app_ctx.messages
    if messages.quiet:
        yield None
        return
    if not messages.interactive:
        started = time.monotonic()
        last: dict[tuple[str, str, str], float] = {}  # per mirror: several run at once in aggregate and flows

        def log_line(event: MirrorProgress) -> None:
            now = time.monotonic()
            mirror_key = (event.flow, event.source, event.target)
            if now - last.get(mirror_key, started) < LOG_INTERVAL:
                return
            last[mirror_key] = now
            lag = "unknown" if event.lag is None else f"{event.lag:,}"
            messages.info(f"mirror {event.source} -> {event.target}: {event.records:,} records, "
                          f"{event.rate:,.0f}/s, lag {lag}")

        yield log_line
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:>12,.0f} records"),
                  TextColumn("{task.fields[rate]:>10,.0f}/s"), TextColumn("lag {task.fields[lag]}"),
                  TimeElapsedColumn(), console=messages.console, transient=False) as bars:
        tasks: dict[tuple[str, str, str, str], Any] = {}

        def update(event: MirrorProgress) -> None:
            for topic in event.topics:
                key = (event.flow, event.source, event.target, topic.source_topic)
                if key not in tasks:
                    label = (f"{event.source}->{event.target} {topic.source_topic}" if label_sources
                             else topic.source_topic)
                    tasks[key] = bars.add_task(label, total=None, rate=0.0, lag="-")
                lag = "-" if topic.lag is None else f"{topic.lag:,}"
                bars.update(tasks[key], completed=topic.records, total=topic.total, rate=topic.rate, lag=lag)

        yield update

