"""`kmc diff`: how two clusters' topics differ, in metadata and (with --data) in content."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from kmc.archive.view import is_export
from kmc.cli import _options as options
from kmc.cli import context
from kmc.diff import ConfigSelection, DataProgress, Difference, DiffOptions, DiffReport, diff_clusters, validate_options
from kmc.errors import ExitCode, UsageError
from kmc.output import Column, columns

ABSENT = "(absent)"
UNSET = "(unset)"
MARKERS = {"missing_topic": "-", "extra_topic": "+"}
MARKER_STYLES = {"-": "red", "+": "green", "~": "yellow"}
DIFFERENCE_KEYS = ("kind", "topic", "target_topic", "partition", "key", "source", "target", "data")


def diff(
    ctx: typer.Context,
    src: str = options.SOURCE,
    dst: str = options.TARGET,
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    rename: str = options.RENAME,
    configs: str = typer.Option("all", "--configs", metavar="all|none|KEY,...",
                                help="Topic configs to compare: all (except the cluster-specific keys listed in "
                                     "docs/diff.md), none, or these keys (compared even if cluster-specific)."),
    strict: bool = typer.Option(False, "--strict", help="A replication factor difference counts as a difference."),
    data: bool = typer.Option(False, "--data",
                              help="Also compare content: every record's key, value, headers (except kmc-*) and "
                                   "timestamp, partition by partition, in order (read_committed)."),
    acls: bool = typer.Option(False, "--acls",
                              help="Also compare the topics' literal ACLs as --sync-acls makes them (ALLOW WRITE "
                                   "left out, ALLOW ALL as READ); needs DESCRIBE on both clusters."),
) -> None:
    """Compare the topics of SRC with their counterparts in DST; exit 1 when they differ.

    Compares: topics missing or extra, partition counts, replication factor (a difference only with
    --strict), topic-level configs, per-partition record counts (offset spans; with --data the records
    actually read), with --data content, and with --acls the topics' ACLs. Raw offsets are never compared:
    a mirror's differ by nature. SRC or DST may be an export directory (kmc export --to DIR), which stands
    for the cluster it was exported from: `kmc diff DIR DST --data` proves an import complete (its record
    counts are the exported records; {source} in --rename is the exported cluster's name).

    Exit status: 0 no differences, 1 differences (and only then), 2 bad option, unknown cluster, bad regex
    or rename template, 4 a cluster unreachable, 5 authentication or authorization failed (a missing ACL: the
    line names the operation and the resource), 8 the comparison failed (a broker refused a request, a read
    failed), 9 an export is damaged: a script can tell "different" from "could not tell".

    JSON (-o json): source, target, rename, configs, strict, data, acls, equal,
    topics[] {topic, target_topic, status (equal|different|missing|extra), partitions, replication_factor,
    records: each {source, target}},
    differences[] {kind, topic, target_topic, partition, key, source, target, data} where kind is one of
    missing_topic, extra_topic, partitions, replication_factor, config, acl, records, data (for acl, key is the
    ACL, source or target holds it on the side that has it), and data (kind
    "data" only, else null) is {differing, missing, extra, first_difference: {index, source_offset,
    target_offset, fields}},
    summary {topics, equal_topics, different_topics, missing_topics, extra_topics, differences,
    records_compared, bytes_compared, seconds}. -o ndjson and -o csv give the differences only, one per line.
    """
    app_ctx = context.get(ctx)
    options = DiffOptions(topics=tuple(topics or ()), exclude=tuple(exclude or ()), rename=rename,
                          configs=ConfigSelection.parse(configs), data=data, strict=strict, acls=acls)
    validate_options(options)  # before the config file is read: a bad option is exit 2 whatever the file holds
    source_cluster, target_cluster = (_side(app_ctx, side) for side in (src, dst))
    with _progress(app_ctx, data) as progress:
        report = diff_clusters(source_cluster, target_cluster, options, timeout=app_ctx.timeout, progress=progress)
    _render(app_ctx, report)
    _summarize(app_ctx, report)
    if not report.equal:
        raise typer.Exit(int(ExitCode.DIFFERENCES))


@contextlib.contextmanager
def _progress(app_ctx: context.AppContext, data: bool) -> Iterator[Any]:
    """A progress bar for --data on a terminal; None (no callback) otherwise."""
    if not (data and app_ctx.messages.interactive):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=app_ctx.messages.console, transient=True) as bar:
        task = bar.add_task("comparing", total=None)

        def update(event: DataProgress) -> None:
            bar.update(task, completed=event.records, total=event.total,
                       description=f"{event.topic}[{event.partition}]")

        yield update


def _side(app_ctx: context.AppContext, side: str) -> Path | Any:
    """An export directory, or the cluster a name or address gives. A path (a cluster name has no '/') that
    holds no export is a usage error that says so, not an unknown cluster."""
    if is_export(side):
        return Path(side)
    if "/" in side or side.startswith((".", "~")):
        path = Path(side).expanduser()
        what = "holds no export (no part-NNNNN directory)" if path.is_dir() else "is not a directory"
        if not path.exists():
            what = "does not exist"
        raise UsageError(f"{side} {what}", hint="give the directory kmc export wrote (--to DIR), or a cluster name")
    return app_ctx.cluster(side)


def _render(app_ctx: context.AppContext, report: DiffReport) -> None:
    render = app_ctx.render
    if render.machine:
        render.report(report, columns(*DIFFERENCE_KEYS), keys=DIFFERENCE_KEYS)
        return
    if report.differences:
        table_columns = columns(Column("change", " "), "topic", "key", Column("source", report.source),
                                Column("target", report.target), Column("detail", free=True))
        render.rows([_table_row(difference) for difference in report.differences], table_columns,
                    styles=MARKER_STYLES)


def _table_row(difference: Difference) -> dict[str, Any]:
    """One line of the terminal table: what differs (KEY), both sides' values, and a marker."""
    topic = difference.topic if difference.topic == difference.target_topic \
        else f"{difference.topic} -> {difference.target_topic}"
    row = {"change": MARKERS.get(difference.kind, "~"), "topic": topic, "key": difference.kind.replace("_", " "),
           "source": difference.source, "target": difference.target, "detail": ""}
    renamed = difference.topic != difference.target_topic
    if difference.kind == "missing_topic":
        row.update(key="topic", source=difference.topic, target=ABSENT, topic=difference.topic,
                   detail=f"expected as {difference.target_topic}" if renamed else "")
    elif difference.kind == "extra_topic":
        row.update(key="topic", source=ABSENT, target=difference.target_topic, topic=difference.target_topic,
                   detail=f"no source topic {difference.topic}" if renamed else "")
    elif difference.kind == "acl":
        row.update(key="acl", source=difference.source or ABSENT, target=difference.target or ABSENT)
    elif difference.kind == "config":
        row.update(key=f"config {difference.key}",
                   source=UNSET if difference.source is None else difference.source,
                   target=UNSET if difference.target is None else difference.target)
    elif difference.kind == "records":
        row.update(key=f"records[{difference.partition}]")
    elif difference.kind == "data" and difference.data is not None:
        result, first = difference.data, difference.data.first
        row.update(key=f"data[{difference.partition}]", source=f"{difference.source} records",
                   target=f"{difference.target} records")
        where = ""
        if first is not None:
            offsets = "/".join("-" if offset is None else str(offset)
                               for offset in (first.source_offset, first.target_offset))
            fields = f", {'+'.join(first.fields)}" if first.fields else ""
            where = f"first at #{first.index} (offsets {offsets}{fields}); "
        row["detail"] = f"{where}{result.differing} differing, {result.missing} missing, {result.extra} extra"
    return row


def _summarize(app_ctx: context.AppContext, report: DiffReport) -> None:
    """Notes and a one-line summary on stderr (silenced by -q)."""
    messages = app_ctx.messages
    if not report.options.strict:
        for topic in report.topics:
            source_rf, target_rf = topic.replication_factor
            if topic.status != "missing" and topic.status != "extra" and source_rf != target_rf:
                messages.info(f"note: {topic.topic}: replication factor {source_rf} vs {target_rf} "
                              "(a difference only with --strict)")
    if report.records_compared is not None:
        size = report.bytes_compared or 0
        shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
        messages.info(f"compared {report.records_compared} records ({shown} read) in {report.seconds:.1f}s")
    differing = sum(topic.status != "equal" for topic in report.topics)
    where = f"{report.source} -> {report.target}"
    if not report.topics:  # "no differences in 0 topics" must not pass for a proof: a --topics typo?
        messages.warn("no topic matches the selection on either side (check --topics and --exclude)")
    if report.equal:
        messages.info(f"{where}: no differences in {len(report.topics)} topics")
    else:
        messages.info(f"{where}: {len(report.differences)} differences in {differing} of "
                      f"{len(report.topics)} topics")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("diff")(diff)
