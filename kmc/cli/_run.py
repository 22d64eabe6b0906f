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

from kmc.cli import context, signals
from kmc.cli._options import RunOptions
from kmc.errors import Interrupted, UsageError
from kmc.mirror import MirrorProgress, MirrorResult, Plan, runner
from kmc.mirror.jobs import MirrorJob
from kmc.output import Column, OutputFormat, columns
from kmc.profiles import Flow
from kmc.service.runtime import DEFAULT_STALL_TIMEOUT, Service, ServiceOptions

LOG_INTERVAL = 10.0  # seconds between progress lines when stderr is not a terminal

_NUMBERS = (Column("records", numeric=True), Column("bytes", numeric=True), Column("skipped", numeric=True),
            Column("redelivered", numeric=True), Column("lag", numeric=True), Column("gaps", numeric=True))
RESULT_COLUMNS = columns("source_topic", "target_topic", *_NUMBERS)
AGGREGATE_COLUMNS = columns("source", "source_topic", "target_topic", *_NUMBERS)
FLOW_COLUMNS = columns("flow", "source", "target", "source_topic", "target_topic", *_NUMBERS)
PLAN_COLUMNS = columns("source_topic", "target_topic", Column("partitions", numeric=True),
                       Column("target_partitions", "TARGET PARTS", numeric=True),
                       Column("replication_factor", "RF", numeric=True), "actions", "config_drift")
# The row keys of -o csv and -o ndjson (the CSV header, whatever the rows): one row per source topic, of one
# mirror (kmc mirror) or of every job with its flow, source and target (kmc aggregate, kmc flow run).
RESULT_KEYS = ("source_topic", "target_topic", "partitions", "records", "bytes", "skipped", "redelivered", "lag",
               "gaps")
PLAN_KEYS = ("source_topic", "target_topic", "partitions", "target_partitions", "replication_factor", "configs",
             "config_drift", "actions")
JOBS_RESULT_KEYS = ("flow", "source", "target", *RESULT_KEYS)
JOBS_PLAN_KEYS = ("flow", "source", *PLAN_KEYS)
JOBS_PLAN_COLUMNS = columns("flow", "source", "source_topic", "target_topic", Column("partitions", numeric=True),
                            Column("target_partitions", "TARGET PARTS", numeric=True), "actions")


def execute(app_ctx: context.AppContext, jobs: Sequence[MirrorJob], options: RunOptions, *,
            title: str | None = None, by_flow: bool = False, flows: Sequence[Flow] = ()) -> None:
    """Run (or plan) ``jobs``, render the report, and raise what the exit status should say.

    Without ``title``, the one job is `kmc mirror`: its own JSON document (a mirror result or a plan), its
    error as it is, and a cluster that cannot be reached is exit 4 at once. With ``title`` (it names the
    run in the summary line) the jobs are `kmc aggregate` / `kmc flow run`: one document for all, a
    failure of some is exit 6, and with --follow a job whose cluster cannot be reached is tried again;
    ``by_flow`` adds the flow and target columns. A --follow run with a metrics address (the option, the
    ``flows``' metrics_addr, or [service] in the config) serves /metrics and /healthz while it runs.
    """
    single = title is None
    messages = app_ctx.messages
    service_options = _service_options(app_ctx, options, flows)
    stop = threading.Event()
    with stop_on_signals(stop) as received, progress_display(app_ctx, label_sources=not single) as progress, \
            _serving(app_ctx, jobs, service_options) as service:

        def notice(job: MirrorJob, level: str, text: str) -> None:
            shown = text if single or messages.structured else f"{job.label}: {text}"
            (messages.warn if level == "warn" else messages.info)(shown, **job_fields(job))
            if service is not None:
                service.notice(job, level, text)

        callbacks = [callback for callback in (progress, service and service.progress) if callback is not None]
        report = runner.run(jobs, mode=options.mode, dry_run=options.dry_run, stop_event=stop,
                            progress_callback=_each(callbacks), notice_callback=notice, timeout=app_ctx.timeout,
                            retry=not single)
    failure = report.failure()
    if single:
        outcome = report.outcomes[0]
        if outcome.plan is not None:  # a dry run: shown even when a permission is missing (then its error)
            _render_plan(app_ctx, outcome.plan)
        if outcome.failed:
            raise outcome.error
        if outcome.plan is not None:
            pass
        elif outcome.result is not None:
            _render_result(app_ctx, outcome.result)
        elif outcome.stopped and not options.dry_run:  # SIGTERM is a clean stop even then: the usual summary
            app_ctx.messages.info(f"mirror {outcome.job.label}: stopped while connecting; nothing copied")
            _render_result(app_ctx, runner.stopped_result(outcome.job, options.mode, report.elapsed))
        elif outcome.stopped:
            app_ctx.messages.info(f"mirror {outcome.job.label}: stopped while connecting; nothing planned")
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


def job_fields(job: MirrorJob) -> dict[str, str]:
    """What a log line says about the mirror it is about (JSON logs)."""
    return {"flow": job.flow, "source": job.source.name, "target": job.target.name}


def _service_options(app_ctx: context.AppContext, options: RunOptions, flows: Sequence[Flow]) -> ServiceOptions | None:
    """The service of a --follow run: the options given, else the flows' metrics_addr, else [service] of the
    config; None without a metrics address (and for --once or a dry run)."""
    if options.mode != "follow" or options.dry_run:
        return None
    settings = app_ctx.config().service
    address = options.metrics_addr
    if address is None:
        named = sorted({flow.metrics_addr for flow in flows if flow.metrics_addr})
        if len(named) > 1:
            raise UsageError(f"the flows run here set different metrics_addr ({', '.join(named)})",
                             hint="run them apart, or give one --metrics-addr")
        address = named[0] if named else settings.metrics_addr
    if address is None:
        return None
    return ServiceOptions(address, options.stall_timeout or settings.stall_timeout or DEFAULT_STALL_TIMEOUT,
                          options.metrics_partitions or settings.metrics_partitions)


@contextlib.contextmanager
def _serving(app_ctx: context.AppContext, jobs: Sequence[MirrorJob],
             options: ServiceOptions | None) -> Iterator[Service | None]:
    if options is None:
        yield None
        return
    with Service(jobs, options, app_ctx.timeout) as service:
        app_ctx.messages.info(f"metrics on {service.url}/metrics, health on {service.url}/healthz",
                              event="service-started")
        yield service


def _each(callbacks: list[Callable[[MirrorProgress], None]]) -> Callable[[MirrorProgress], None] | None:
    if len(callbacks) < 2:
        return callbacks[0] if callbacks else None

    def call(event: MirrorProgress) -> None:
        for callback in callbacks:
            callback(event)

    return call


# ------------------------------------------------------------------------------------------ rendering


def _table(*keys: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """For a table: the lists under ``keys`` as comma-separated text ("-" when empty)."""

    def shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(row, **{key: ",".join(row[key]) or "-" for key in keys}) for row in rows]

    return shown


def _render_plan(app_ctx: context.AppContext, plan: Plan) -> None:
    if app_ctx.render.fmt is not OutputFormat.json:
        _report_permissions(app_ctx, plan)
        if plan.refused:
            return
    app_ctx.render.report(plan, PLAN_COLUMNS, keys=PLAN_KEYS, table=_table("actions", "config_drift"))
    if app_ctx.render.fmt is OutputFormat.json:
        return
    for warning in plan.warnings:
        app_ctx.messages.warn(warning)
    for binding in plan.acl_sync.create if plan.acl_sync is not None else ():
        app_ctx.messages.info(f"would create ACL {binding.label()} on topic {binding.name}")
    app_ctx.messages.info(f"copy mode: {plan.copy[0]}: {plan.copy[1]}")
    count = len(plan.topics)
    app_ctx.messages.info(f"dry run: nothing changed ({count} topic{'' if count == 1 else 's'} planned)")


def _report_permissions(app_ctx: context.AppContext, plan: Plan, label: str = "") -> None:
    """A dry run's permission check on stderr: a warning per missing permission, a note per one nothing tells."""
    for cluster, verdict in plan.permissions:
        where = f"{label}{cluster}: {verdict.need.permission.label()}"
        if verdict.status == "missing":
            app_ctx.messages.warn(f"{where}: missing (needed to {verdict.need.purpose})")
        elif verdict.status == "unknown":
            app_ctx.messages.info(f"{where}: cannot tell whether it is granted ({verdict.how})")
    granted = sum(verdict.status == "granted" for _, verdict in plan.permissions)
    app_ctx.messages.info(f"{label}permissions: {granted} of {len(plan.permissions)} needed are granted")


def _render_result(app_ctx: context.AppContext, result: MirrorResult) -> None:
    """The summary: the JSON document, or one row per topic, and a line on stderr."""
    app_ctx.render.report(result, RESULT_COLUMNS, keys=RESULT_KEYS)
    if app_ctx.render.fmt is OutputFormat.json:
        return
    megabytes = result.bytes / 1e6
    rate = result.records / result.elapsed if result.elapsed > 0 else 0.0
    extra = f", {result.redelivered:,} redelivered" if result.redelivered else ""
    app_ctx.messages.info(f"mirror {result.source} -> {result.target}: {result.records:,} records "
                          f"({megabytes:.1f} MB) in {result.elapsed:.1f}s ({rate:,.0f}/s){extra}", event="done",
                          flow=result.flow, source=result.source, target=result.target, records=result.records)


def _render_plans(app_ctx: context.AppContext, report: runner.RunReport) -> None:
    """Each job's plan; a job that could not be planned is reported like a failed run. When no job could be
    planned there is no plan to show (a table of headers only) nor to sum up: the error says why."""
    if not report.plans and not app_ctx.render.machine:
        return
    app_ctx.render.report(report, JOBS_PLAN_COLUMNS, keys=JOBS_PLAN_KEYS, table=_table("actions"))
    if app_ctx.render.fmt is OutputFormat.json or not report.plans:
        return
    for outcome in report.outcomes:
        if outcome.plan is not None:
            _report_permissions(app_ctx, outcome.plan, f"{outcome.job.label}: ")
        for warning in outcome.plan.warnings if outcome.plan is not None else ():
            app_ctx.messages.warn(f"{outcome.job.label}: {warning}")
        if outcome.plan is not None:
            app_ctx.messages.info(f"{outcome.job.label}: copy mode {outcome.plan.copy[0]}: {outcome.plan.copy[1]}")
    unplanned = len(report.outcomes) - len(report.plans)
    unplanned_text = f"; {unplanned} of {len(report.outcomes)} mirrors could not be planned" if unplanned else ""
    app_ctx.messages.info(f"dry run: nothing changed ({sum(len(plan.topics) for plan in report.plans)} topics "
                          f"planned{unplanned_text})")


def _render_runs(app_ctx: context.AppContext, report: runner.RunReport, title: str, by_flow: bool) -> None:
    app_ctx.render.report(report, FLOW_COLUMNS if by_flow else AGGREGATE_COLUMNS, keys=JOBS_RESULT_KEYS)
    if app_ctx.render.fmt is OutputFormat.json:
        return
    rate = report.records / report.elapsed if report.elapsed > 0 else 0.0
    stopped = f"; {len(report.stopped)} stopped before they connected" if report.stopped else ""
    app_ctx.messages.info(f"{title}: {report.records:,} records ({report.bytes / 1e6:.1f} MB) in "
                          f"{report.elapsed:.1f}s ({rate:,.0f}/s); {len(report.results)} of {len(report.outcomes)} "
                          f"mirrors succeeded{stopped}")
    for outcome in report.stopped:
        if outcome.error is not None:  # what it met before the stop (a source down, with --follow)
            app_ctx.messages.warn(f"{outcome.job.label}: stopped; last: {outcome.error.one_line()}")


# ------------------------------------------------------------------------------------------ while it runs


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGTERM and SIGINT set ``stop`` (the engine then stops cleanly) and make connections being made give
    up at once (Cancelled; connected clients keep working, to finish cleanly); a second SIGINT gives up
    waiting (KeyboardInterrupt). Yields the signals received, in order, from the first one kmc noted (a
    signal that came before this handler: stop at once). Only the main thread can do this."""
    received: list[int] = signals.pending()
    if received:
        stop.set()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
        if signum == signal.SIGINT and received and received[-1] == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()
        signals.abandon_soon(connecting_only=True)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
                          f"{event.rate:,.0f}/s, lag {lag}", event="progress", flow=event.flow, source=event.source,
                          target=event.target, records=event.records, records_per_second=round(event.rate, 1),
                          lag=event.lag)

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

