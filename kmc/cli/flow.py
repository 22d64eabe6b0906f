"""`kmc flow`: the named flows of the config file ([flows.NAME]): list, check, run, status, graph."""

from __future__ import annotations

import typer

from kmc.cli import _options as options
from kmc.cli import _run, _watch, context
from kmc.cli._options import MAX_SECONDS
from kmc.cli.completion import complete_flow
from kmc.errors import ConfigError, UsageError
from kmc.flows import GRAPH_FORMATS, STATUS_KEYS, check_flows, flow_graph, flow_jobs, flow_status
from kmc.mirror import DEFAULT_FLOW
from kmc.mirror.status import PARTITION_KEYS, LagReport, validate_limits
from kmc.output import Column, OutputFormat, columns
from kmc.profiles import Flow

app = typer.Typer(help="Named flows from the config file: list, check, run, status, graph.", no_args_is_help=True)

LIST_KEYS = ("name", "from", "to", "topics", "exclude", "rename", "sync_configs", "sync_groups", "exactly_once",
             "partitioner", "sync_acls", "group")
LIST_COLUMNS = columns("name", "from", "to", "topics", "exclude", "rename", "partitioner")
STATUS_COLUMNS = columns("flow", "source", "target", "source_topic", "target_topic",
                         Column("records_behind", "RECORDS BEHIND", numeric=True),
                         Column("seconds_behind", "SECONDS BEHIND", numeric=True),
                         Column("checkpointed", "CHECKPOINTED"))
PARTITION_COLUMNS = columns("flow", "source", "source_topic", Column("partition", numeric=True), "member",
                            Column("records_behind", "RECORDS BEHIND", numeric=True),
                            Column("seconds_behind", "SECONDS BEHIND", numeric=True))

# -o ndjson/csv rows of `flow check` (its errors) and `flow graph` (its edges), as their --help says
CHECK_KEYS = ("flows", "key", "message", "line")
CHECK_COLUMNS = columns(*CHECK_KEYS)
GRAPH_KEYS = ("flow", "source", "target", "topics", "exclude", "rename", "records_behind", "seconds_behind", "error")
GRAPH_COLUMNS = columns(*GRAPH_KEYS)


def _flows(app_ctx: context.AppContext, names: list[str] | None, every: bool = True) -> list[Flow]:
    config = app_ctx.config()
    if names:
        return [config.flow(name) for name in dict.fromkeys(names)]
    if not every:
        raise UsageError("name the flows to run, or give --all")
    if not config.flows:
        raise UsageError(f"no flows configured in {config.path}", hint="add a [flows.NAME] table, see docs/flows.md")
    return [config.flows[name] for name in sorted(config.flows)]


@app.command("list")
def list_flows(ctx: typer.Context) -> None:
    """The flows of the config file, as written.

    JSON keys: name, from[], to, topics[], exclude[], rename, sync_configs, sync_groups[], exactly_once,
    partitioner, sync_acls, group (null without one).
    """
    app_ctx = context.get(ctx)
    config = app_ctx.config()
    rows = [{"name": flow.name, "from": list(flow.sources), "to": flow.target, "topics": list(flow.topics),
             "exclude": list(flow.exclude), "rename": flow.rename, "sync_configs": flow.sync_configs,
             "sync_groups": list(flow.sync_groups), "exactly_once": flow.exactly_once,
             "partitioner": flow.partitioner, "sync_acls": flow.sync_acls, "group": flow.group}
            for flow in (config.flows[name] for name in sorted(config.flows))]
    app_ctx.render.rows(rows, LIST_COLUMNS, keys=LIST_KEYS)
    if not rows:
        app_ctx.messages.info(f"no flows in {config.path}; see docs/flows.md")


@app.command("check")
def check(
    ctx: typer.Context,
    offline: bool = typer.Option(False, "--offline", help="Do not ask the source clusters for their topics; "
                                                          "check the literal topic patterns only."),
) -> None:
    """Find what would go wrong with the config's flows, before running them.

    Errors (each names the flows and the config key): a cluster in from/to that is not configured; a
    setting this version cannot honour; a source that is also the target with an identity rename; a
    rename giving a topic the flow selects a name Kafka refuses (over 249 characters) or reserves; two
    flows, or two sources of a flow whose rename has {source}, writing the same target topic; a flow
    merging sources whose topics have differing partition counts (partitioner "same"); a cycle of flows
    whose renames keep producing names the next flow selects again (topics without end). An identity
    cycle is fine: the kmc-origin header stops records before they return to their origin. Bad regexes
    and rename templates (that can never give a topic name: '{topic}/x', 'kmc.{topic}', '__{topic}', too
    long) are found when the file is loaded (exit 3 too). Without --offline the source
    clusters are asked for their topics, so the checks also use the real names (a cluster that does not
    answer is a warning).

    Exit status: 0 no errors, 3 errors (one line each on stderr) or an invalid config file.

    JSON (-o json): ok, flows[], errors[] {flows[], key, message, line}, warnings[], live_clusters[],
    copy_modes {FLOW: {mode, why}}. -o ndjson and -o csv give the errors only, one per line.
    """
    app_ctx = context.get(ctx)
    config = app_ctx.config()
    report = check_flows(config, live=not offline, timeout=app_ctx.timeout)
    if app_ctx.render.fmt is OutputFormat.json:
        app_ctx.render.document(report.to_dict())
    elif app_ctx.render.machine:
        app_ctx.render.rows([error.to_dict() for error in report.errors], CHECK_COLUMNS, keys=CHECK_KEYS)
    for warning in report.warnings:
        app_ctx.messages.warn(warning)
    for error in report.errors:
        app_ctx.messages.error(error.line())
    if report.errors:
        raise ConfigError(f"{len(report.errors)} error(s) in the flows of {config.path}", hint="")
    for name, (mode, why) in report.copy_modes.items():
        app_ctx.messages.info(f"flow {name}: copy mode {mode}: {why}")
    live = f"; topics listed from {', '.join(report.live)}" if report.live else ""
    app_ctx.messages.info(f"{len(report.flows)} flow(s) checked, no errors{live}")


@app.command("run")
@options.run_options
def run_flows(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, metavar="NAME", help="Flows to run.", autocompletion=complete_flow),
    every: bool = typer.Option(False, "--all", help="Run every flow of the config file."),
    run: options.RunOptions = None,
) -> None:
    """Run named flows, all at once in this process: one mirror per flow and source.

    Each mirror is `kmc mirror SRC DST --flow NAME` with the flow's topics, exclude, rename and
    sync_configs: its own checkpoints (keyed by the flow name) and lock. A failing mirror does not stop
    the others. With --once, flows that feed others run first (dc1 -> central before central -> dr),
    so one run carries records all the way; with --follow every mirror runs at once.

    Exit status: 0 done (or stopped by SIGTERM), 2 unknown flow name or bad option, 3 a flow's table is
    wrong (unknown cluster, unsupported setting), 6 some mirrors failed (each named, with why) while
    others succeeded; when all failed, the first failure's status (4, 5, 75); 130 stopped by SIGINT.

    JSON (-o json): as kmc aggregate: mode, complete, elapsed_seconds, records, bytes, runs[], failures[],
    stopped[].
    """
    app_ctx = context.get(ctx)
    if names and every:
        raise UsageError("give flow names or --all, not both")
    flows = _flows(app_ctx, names, every=every)
    jobs = [job for flow in flows for job in flow_jobs(app_ctx.config(), flow, **run.spec)]
    _run.execute(app_ctx, jobs, run, title=f"flow {', '.join(flow.name for flow in flows)}", by_flow=True,
                 flows=flows)


@app.command("status")
def status(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, metavar="NAME", help="Flows [default: all].",
                                             autocompletion=complete_flow),
    watch: bool = typer.Option(False, "--watch", help="Look again every --interval seconds, with records/s and a "
                                                      "lag history, until Ctrl-C."),
    interval: float = typer.Option(5.0, "--interval", min=0.5, max=MAX_SECONDS, metavar="SECONDS",
                                   help="--watch: seconds between looks."),
    max_lag: int | None = options.MAX_LAG,
    max_lag_seconds: float | None = options.MAX_LAG_SECONDS,
    partitions: bool = options.PARTITIONS,
) -> None:
    """How far each flow is behind, per source and topic, from its checkpoints in the target.

    RECORDS BEHIND: the source's end offset (last stable offset) minus the checkpoint's next offset,
    summed over the topic's partitions (a partition without a checkpoint counts from its earliest
    offset). SECONDS BEHIND: now minus the timestamp of the oldest record not copied yet, the largest
    over the partitions; 0 when caught up. Reads only; needs no lock, so it works while the flow runs.

    Lag alarms, for cron and monitoring: with --max-lag RECORDS and/or --max-lag-seconds S, exit 1 when
    any partition is further behind, each offending partition named on stderr.

    Exit status: 0, 1 a lag alarm, 2 unknown flow, 3 a flow names an unknown cluster, 6 some sources or
    targets could not be asked (their rows carry the error); when none could, that error's status (4, 5).

    JSON (-o json): one object per flow, source and topic: flow, source, target, source_topic,
    target_topic, partitions, checkpointed_partitions, records_behind, seconds_behind (null when the
    oldest uncopied record could not be read), oldest_uncopied_ms (its timestamp; null when caught up),
    checkpoint_ms (the newest checkpoint's time; null when none), gaps, position (the next offsets to copy,
    summed), error (null, or why this source could not be asked: then the other values are null).

    --watch redraws the table in place on a terminal, prints it again after a time line elsewhere, and with
    -o json or ndjson writes each look as NDJSON rows with time, records_per_second and lag_history added;
    Ctrl-C ends it (exit 0). A source that cannot be asked stays a row with its error.

    --partitions: one row per source partition instead: flow, source, target, source_topic, partition,
    target_topic, member (host:pid of the --group member that wrote its checkpoint: the one copying it;
    null without a group), records_behind, seconds_behind, oldest_uncopied_ms, checkpoint_ms, gaps,
    position, error.
    """
    app_ctx = context.get(ctx)
    validate_limits(max_lag, max_lag_seconds)
    flows = _flows(app_ctx, names)
    if watch:
        if max_lag is not None or max_lag_seconds is not None:
            raise UsageError("give --watch or --max-lag/--max-lag-seconds, not both",
                             hint="the limits are for one look from cron or a monitoring check")

        def look() -> list[dict]:
            return _lag_rows(app_ctx, flow_status(app_ctx.config(), flows, app_ctx.timeout), partitions)

        _watch.watch(app_ctx, look, PARTITION_COLUMNS if partitions else STATUS_COLUMNS, interval,
                     f"flow status {', '.join(f.name for f in flows)}")
        return
    render_lags(app_ctx, flow_status(app_ctx.config(), flows, app_ctx.timeout), max_lag, max_lag_seconds,
                partitions)


def _lag_rows(app_ctx: context.AppContext, report: LagReport, partitions: bool) -> list[dict]:
    return report.rows(by_partition=True) if partitions else _status_rows(app_ctx, report.rows())


def render_lags(app_ctx: context.AppContext, report: LagReport, max_lag: int | None,
                max_lag_seconds: float | None, partitions: bool = False) -> None:
    """The rows of a lag report, per topic or with ``partitions`` per partition (each mirror that could not
    be asked has a row carrying its error: on a terminal in an ERROR column), its alarms on stderr, and the
    exit status it calls for, whose line sums up the errors (for `kmc flow status` and `kmc mirror status`)."""
    rows = _lag_rows(app_ctx, report, partitions)
    shown = PARTITION_COLUMNS if partitions else STATUS_COLUMNS
    table_columns = shown
    if not app_ctx.render.machine and any(row["error"] for row in rows):
        table_columns = (*shown, Column("error", free=True))
    app_ctx.render.rows(rows, table_columns, keys=PARTITION_KEYS if partitions else STATUS_KEYS)
    failure = report.failure(max_lag, max_lag_seconds)
    if not any(error is failure for error in report.errors):
        # some mirrors could be asked: each that could not is a line (the exit line points to them); else
        # the exit line is the first one's error, and the rows carry each
        for mirror in report.mirrors:
            if mirror.error is not None:
                name = "" if mirror.flow == DEFAULT_FLOW else f"flow {mirror.flow}: "
                app_ctx.messages.error(f"{name}{mirror.source} -> {mirror.target}: {mirror.error.one_line()}")
    for line in report.offenders(max_lag, max_lag_seconds):
        app_ctx.messages.error(f"lag: {line}")
    if failure is not None:
        raise failure


def _status_rows(app_ctx: context.AppContext, rows: list[dict]) -> list[dict]:
    """For a table: the checkpointed partitions as "3/4"."""
    if app_ctx.render.machine:
        return rows
    return [dict(row, checkpointed=None if row["error"] else f"{row['checkpointed_partitions']}/{row['partitions']}")
            for row in rows]


@app.command("graph")
def graph(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, metavar="NAME", help="Flows [default: all]."),
    fmt: str = typer.Option("text", "--format", metavar="text|mermaid|dot",
                            help="text (a line per edge), mermaid (Markdown, GitHub) or dot (Graphviz)."),
    with_status: bool = typer.Option(False, "--status", help="Label each edge with how far it is behind "
                                                             "(asks the clusters, as kmc flow status does)."),
) -> None:
    """Draw the flows: clusters as nodes, an edge per flow and source labelled with the flow's name, topic
    patterns, excludes and rename; with --status, records and seconds behind.

    Render a Mermaid graph in Markdown (```mermaid) or a DOT one with `dot -Tsvg`. Reads only the config,
    unless --status.

    Exit status: 0, 2 unknown flow or format, 3 a bad config; with --status as kmc flow status (6 when some
    sources could not be asked: their edges say "status unknown").

    JSON (-o json): nodes[] (cluster names), edges[] {flow, source, target, topics[], exclude[], rename,
    records_behind, seconds_behind, error}. -o ndjson and -o csv give the edges only, one per line.
    """
    app_ctx = context.get(ctx)
    if fmt not in GRAPH_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(GRAPH_FORMATS)}, not '{fmt}'")
    flows = _flows(app_ctx, names)
    report = flow_status(app_ctx.config(), flows, app_ctx.timeout) if with_status else None
    picture = flow_graph(flows, report.rows() if report is not None else ())
    if app_ctx.render.fmt is OutputFormat.json:
        app_ctx.render.document(picture.to_dict())
    elif app_ctx.render.machine:
        app_ctx.render.rows([edge.to_dict() for edge in picture.edges], GRAPH_COLUMNS, keys=GRAPH_KEYS)
    else:
        typer.echo(picture.draw(fmt), nl=False)
    failure = report.failure() if report is not None else None
    if failure is not None:
        raise failure
