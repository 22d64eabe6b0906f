"""`kmc export` and `kmc import`: topics to files and back (air gaps, backups), docs/export-format.md."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from kmc.archive import ExportOptions, ImportOptions, export_topics, import_archive
from kmc.cli import _options as options
from kmc.cli import context
from kmc.cli._run import stop_on_signals
from kmc.errors import Interrupted
from kmc.mirror import DEFAULT_FLOW
from kmc.output import Column, OutputFormat, columns

LOG_INTERVAL = 10.0
EXPORT_COLUMNS = columns("topic", Column("partitions", numeric=True), Column("records", numeric=True),
                         Column("batches", numeric=True), Column("bytes", numeric=True), Column("gaps", numeric=True))
IMPORT_COLUMNS = columns("source_topic", "target_topic", Column("partitions", numeric=True),
                         Column("records", numeric=True), Column("bytes", numeric=True),
                         Column("present", numeric=True))
# the row keys (-o ndjson/csv), in order, as --help lists them
EXPORT_KEYS = ("topic", "partitions", "records", "batches", "bytes", "gaps")
IMPORT_KEYS = ("source_topic", "target_topic", "partitions", "records", "bytes", "present")


def _progress_log(app_ctx: context.AppContext, verb: str) -> Any:
    last = [time.monotonic()]

    def log(event: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= LOG_INTERVAL:
            last[0] = now
            app_ctx.messages.info(f"{verb} {event.records:,} records ({event.bytes / 1e6:,.1f} MB) so far")

    return log


def _notice(app_ctx: context.AppContext) -> Any:
    def notice(level: str, text: str) -> None:
        (app_ctx.messages.warn if level == "warn" else app_ctx.messages.info)(text)

    return notice


def export(
    ctx: typer.Context,
    src: str = options.SOURCE,
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    to: str = typer.Option(..., "--to", metavar="DIR|-",
                           help="Directory of the export (a new part is added to an existing one), or - for one "
                                "tar stream on stdout."),
) -> None:
    """Export topics of SRC to files: every committed record batch as fetched (still compressed), topic
    configs, partition counts, offset ranges and consumer groups' committed offsets.

    Copies each partition up to the end offset seen at the start (read_committed: aborted records and
    transaction markers are left out). Into a directory, a second export continues where the first ended,
    as a new numbered part (part-00002/...), so a nightly cron job ships only what is new; a part that did
    not finish (full disk, interrupted) is written again by the next export. --to - streams one
    self-describing tar archive to stdout (e.g. `kmc export dc1 --to - | ssh host kmc import - dst`);
    `tar x` of it gives an export directory. The format: docs/export-format.md.

    Exit status: 0 done, 2 bad option (or DIR holds another cluster's export), 3 DIR cannot be made or
    written (found before connecting), 4 SRC unreachable, 5 authentication or authorization failed, 8
    writing failed (a full disk: the part is incomplete),
    130 interrupted (the part is incomplete).

    JSON (-o json): source, source_cluster_id, destination, part, complete, elapsed_seconds, records, bytes,
    groups, warnings[], gaps[], topics[] {topic, partitions, records, batches, bytes, gaps}. With --to -
    the report goes to stderr as one line.
    """
    app_ctx = context.get(ctx)
    export_options = ExportOptions(topics=tuple(topics or ()), exclude=tuple(exclude or ()))
    export_options.validate()
    cluster = app_ctx.cluster(src)
    streaming = to == "-"
    if streaming and sys.stdout.isatty():
        from kmc.errors import UsageError

        raise UsageError("--to -: stdout is a terminal", hint="redirect it to a file or a pipe")
    stop = threading.Event()
    with stop_on_signals(stop):
        if streaming:
            sys.stdout.flush()
            report = export_topics(cluster, sys.stdout.buffer, export_options, timeout=app_ctx.timeout,
                                   stop_event=stop, notice_callback=_notice(app_ctx),
                                   progress_callback=_progress_log(app_ctx, "exported"))
            sys.stdout.buffer.flush()
        else:
            report = export_topics(cluster, Path(to), export_options, timeout=app_ctx.timeout, stop_event=stop,
                                   notice_callback=_notice(app_ctx),
                                   progress_callback=_progress_log(app_ctx, "exported"))
    if not streaming:
        app_ctx.render.report(report, EXPORT_COLUMNS, keys=EXPORT_KEYS)
    where = "stdout" if streaming else f"{to}/part-{report.part:05d}"
    app_ctx.messages.info(f"export {report.source} -> {where}: {report.records:,} records "
                          f"({report.bytes / 1e6:,.1f} MB) in {report.elapsed:.1f}s, {report.groups} group(s)")


def import_(
    ctx: typer.Context,
    source: str = typer.Argument(..., metavar="DIR|-", help="An export directory, or - for a stream on stdin."),
    dst: str = options.TARGET,
    topics: list[str] | None = typer.Option(None, "--topics", metavar="RE",
                                            help="Exported topics to import (anchored regex; repeatable) "
                                                 "[default: all]."),
    rename: str = typer.Option("{topic}", "--rename", metavar="TEMPLATE",
                               help="Target topic name: {topic}, {source} (the exported cluster's profile name)."),
    exactly_once: bool = typer.Option(False, "--exactly-once",
                                      help="Write records and their checkpoints in one target transaction per "
                                           "checkpoint interval."),
    flow: str = typer.Option(DEFAULT_FLOW, "--flow", metavar="NAME",
                             help="Flow name of the checkpoints (the default is kmc mirror's: a later mirror from "
                                  "the exported cluster, and groups translate, go on from the import)."),
    replication_factor: int | None = options.REPLICATION_FACTOR,
    checkpoint_interval: float = options.CHECKPOINT_INTERVAL,
) -> None:
    """Import an export (kmc export) into DST: every batch to the same partition, in order.

    Creates missing topics with the exported partition counts and configs (a target topic with fewer
    partitions is refused). Resumable and idempotent: progress is checkpointed in DST's kmc.checkpoints
    as kmc mirror does, keyed by the exported cluster's id, so a killed import resumes exactly and a
    repeated one copies nothing; the offset map is kept too, so `kmc groups translate` moves the exported
    groups' offsets onto the imported topics. Each data file is checked (SHA-256, every batch's CRC)
    before it is used: a damaged partition stops at its last good batch, the others are imported.

    Exit status: 0 done, 2 bad option or a target topic with fewer partitions, 4 DST unreachable,
    5 authentication or authorization failed, 8 the target refused records, 9 the export is damaged,
    truncated, fails its checksum or has an unknown format version (one line names the file, the partition
    and the offset where the damage starts; nothing past it was imported), 75 another import or mirror of
    the same topics holds the lock, 130 interrupted (progress is checkpointed).

    JSON (-o json): source, source_cluster_id, target, target_cluster_id, flow, parts[], complete,
    elapsed_seconds, records, bytes, present, changes[], warnings[], damaged[], topics[] {source_topic,
    target_topic, partitions, records, bytes, present} (present: records the target already had from an
    interrupted run, not sent again).
    """
    app_ctx = context.get(ctx)
    import_options = ImportOptions(topics=tuple(topics or ()), rename=rename, flow=flow, exactly_once=exactly_once,
                                   replication_factor=replication_factor, checkpoint_interval=checkpoint_interval)
    import_options.validate()
    cluster = app_ctx.cluster(dst)
    stop = threading.Event()
    with stop_on_signals(stop):
        archive: Any = sys.stdin.buffer if source == "-" else Path(source)
        report = import_archive(archive, cluster, import_options, timeout=app_ctx.timeout, stop_event=stop,
                                notice_callback=_notice(app_ctx), progress_callback=_progress_log(app_ctx, "imported"))
    app_ctx.render.report(report, IMPORT_COLUMNS, keys=IMPORT_KEYS)
    if app_ctx.render.fmt is not OutputFormat.json:
        present = sum(topic.present for topic in report.topics)
        already = f", {present:,} already there" if present else ""
        app_ctx.messages.info(f"import {report.source} -> {report.target}: {report.records:,} records "
                              f"({report.bytes / 1e6:,.1f} MB){already} in {report.elapsed:.1f}s")
    failure = report.failure()
    if failure is not None:
        raise failure
    if stop.is_set():
        raise Interrupted("import interrupted")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("export")(export)
    app.command("import")(import_)
