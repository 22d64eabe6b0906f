"""`kmc mirror`: copy topics from one cluster to another, once (cron) or continuously (a service)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import typer

from kmc.cli import _options as options
from kmc.cli import context
from kmc.errors import Interrupted, UsageError
from kmc.flows import run_sharded_mirror
from kmc.mirror import DEFAULT_FLOW, MirrorProgress, MirrorResult, MirrorSpec, Plan, plan_mirror, run_mirror
from kmc.output import Column, OutputFormat, columns

LOG_INTERVAL = 10.0  # seconds between progress lines when stderr is not a terminal

PLAN_COLUMNS = columns("source_topic", "target_topic", Column("partitions", numeric=True),
                       Column("target_partitions", "TARGET PARTS", numeric=True),
                       Column("replication_factor", "RF", numeric=True), "actions", "config_drift")
RESULT_COLUMNS = columns("source_topic", "target_topic", Column("records", numeric=True),
                         Column("bytes", numeric=True), Column("skipped", numeric=True),
                         Column("redelivered", numeric=True), Column("lag", numeric=True),
                         Column("gaps", numeric=True))


def mirror(
    ctx: typer.Context,
    src: str = options.SOURCE,
    dst: str = options.TARGET,
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    rename: str = options.RENAME,
    once: bool = options.ONCE,
    follow: bool = options.FOLLOW,
    start: str = options.START,
    sync_configs: bool = typer.Option(False, "--sync-configs",
                                      help="Make existing target topics' configs equal to the source's."),
    replication_factor: int | None = options.REPLICATION_FACTOR,
    dry_run: bool = options.DRY_RUN,
    flow: str = typer.Option(DEFAULT_FLOW, "--flow", metavar="NAME",
                             help="Name of this mirror in checkpoint keys and its lock."),
    refresh: float = options.REFRESH,
    checkpoint_interval: float = options.CHECKPOINT_INTERVAL,
    compression: str = options.COMPRESSION,
    delivery_timeout: float = options.DELIVERY_TIMEOUT,
    exactly_once: bool = options.EXACTLY_ONCE,
    workers: int = typer.Option(1, "--workers", min=1, max=64, metavar="N",
                                help="Copy in N processes, worker i taking the source partitions p with "
                                     "p % N == i (more cores for one mirror)."),
) -> None:
    """Copy topics from SRC to DST, partition to partition, resuming from checkpoints.

    Creates missing target topics (the source's partitions and configs), adds partitions the source
    gained, and copies key, value, headers, timestamp and tombstones of every committed record. Progress
    is checkpointed in DST's kmc.checkpoints topic only after DST acknowledged the records; a restarted
    run resumes there (at-least-once: records written after the last checkpoint are copied again and
    counted as redelivered; with --exactly-once records and checkpoints commit together in a transaction,
    so read_committed readers never see a repeat). Records whose kmc-origin header names DST are never
    copied back.

    Exit status: 0 done (or stopped by SIGTERM), 1 a Kafka error, 2 bad option, 4 a cluster
    unreachable, 5 authentication failed, 75 another run of the same mirror holds its lock,
    130 stopped by SIGINT (progress is checkpointed).

    JSON (-o json): flow, source, target, source_cluster_id, target_cluster_id, mode, complete,
    elapsed_seconds, records, bytes, skipped, redelivered, changes[], warnings[], topics[] {source_topic,
    target_topic, partitions, records, bytes, skipped, redelivered, lag}. With --dry-run: flow, source,
    target, source_cluster_id, target_cluster_id, checkpoint_topic {name, exists}, topics[] {source_topic,
    target_topic, partitions, target_partitions, replication_factor, configs, config_drift, actions},
    warnings[]. -o ndjson and -o csv give the topics only, one per line. --workers N gives the same
    document, each topic's counts summed over the workers.
    """
    app_ctx = context.get(ctx)
    if once and follow:
        raise UsageError("give --once or --follow, not both")
    spec = MirrorSpec(
        topics=tuple(topics or ()), exclude=tuple(exclude or ()), rename=rename, flow=flow, start=start,
        sync_configs=sync_configs, replication_factor=replication_factor, checkpoint_interval=checkpoint_interval,
        refresh_interval=refresh, compression=None if compression.lower() == "none" else compression.lower(),
        delivery_timeout=delivery_timeout, exactly_once=exactly_once,
    )
    spec.validate()
    source_cluster, target_cluster = app_ctx.cluster(src), app_ctx.cluster(dst)
    if dry_run:
        plan = plan_mirror(app_ctx.session(source_cluster), app_ctx.session(target_cluster), spec)
        _render_plan(app_ctx, plan)
        return
    mode = "follow" if follow else "once"
    stop = threading.Event()
    with stop_on_signals(stop) as received, progress_display(app_ctx) as progress:
        if workers == 1:
            result = run_mirror(source_cluster, target_cluster, spec, mode=mode, stop_event=stop,
                                progress_callback=progress, notice_callback=notice_printer(app_ctx),
                                timeout=app_ctx.timeout)
        else:
            result = run_sharded_mirror(source_cluster, target_cluster, spec, workers, mode=mode, stop_event=stop,
                                        progress_callback=progress, notice_callback=notice_printer(app_ctx),
                                        timeout=app_ctx.timeout)
    render_result(app_ctx, result)
    if received and received[-1] == signal.SIGINT:
        raise Interrupted("interrupted; progress up to the interruption is checkpointed")
    gap_error = result.gap_error() if mode == "once" else None
    if gap_error is not None:
        raise gap_error


# The helpers below are shared with the commands that run several mirrors at once (aggregate, flows).


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


def notice_printer(app_ctx: context.AppContext) -> Any:
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


def _render_plan(app_ctx: context.AppContext, plan: Plan) -> None:
    render = app_ctx.render
    if render.fmt is OutputFormat.json:
        render.document(plan.to_dict())
        return
    rows = [topic.to_dict() for topic in plan.topics]
    if not render.machine:
        for row in rows:
            row["actions"] = ",".join(row["actions"]) or "-"
            row["config_drift"] = ",".join(row["config_drift"]) or "-"
    render.rows(rows, PLAN_COLUMNS)
    for warning in plan.warnings:
        app_ctx.messages.warn(warning)
    count = len(plan.topics)
    app_ctx.messages.info(f"dry run: nothing changed ({count} topic{'' if count == 1 else 's'} planned)")


def render_result(app_ctx: context.AppContext, result: MirrorResult) -> None:
    """The summary: the JSON document, or one row per topic, and a line on stderr."""
    render = app_ctx.render
    if render.fmt is OutputFormat.json:
        render.document(result.to_dict())
        return
    render.rows([topic.to_dict() for topic in result.topics], RESULT_COLUMNS)
    megabytes = result.bytes / 1e6
    rate = result.records / result.elapsed if result.elapsed > 0 else 0.0
    extra = f", {result.redelivered:,} redelivered" if result.redelivered else ""
    app_ctx.messages.info(f"mirror {result.source} -> {result.target}: {result.records:,} records "
                          f"({megabytes:.1f} MB) in {result.elapsed:.1f}s ({rate:,.0f}/s){extra}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("mirror")(mirror)
