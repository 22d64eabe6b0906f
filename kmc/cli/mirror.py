"""`kmc mirror`: copy topics from one cluster to another, once (cron) or continuously (a service)."""

from __future__ import annotations

import typer

from kmc.cli import _options as options
from kmc.cli import _run, context
from kmc.cli._typer_internals import default_command_group
from kmc.cli.flow import render_lags
from kmc.mirror import DEFAULT_FLOW, MirrorJob, MirrorSpec
from kmc.mirror.status import mirror_lags, validate_limits

app = typer.Typer(cls=default_command_group("run"), no_args_is_help=False,
                  help="Copy topics from SRC to DST, partition to partition, resuming from checkpoints; "
                       "`kmc mirror status SRC DST`: how far behind.")

FLOW = typer.Option(DEFAULT_FLOW, "--flow", metavar="NAME", help="Name of this mirror in checkpoint keys and its lock.")


@app.command("run", hidden=True)
@options.run_options
def mirror(
    ctx: typer.Context,
    src: str = options.SOURCE,
    dst: str = options.TARGET,
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    rename: str = options.RENAME,
    sync_configs: bool = options.SYNC_CONFIGS,
    flow: str = FLOW,
    exactly_once: bool = options.EXACTLY_ONCE,
    sync_acls: bool = options.SYNC_ACLS,
    sync_groups: list[str] | None = options.SYNC_GROUPS,
    workers: int = typer.Option(1, "--workers", min=1, max=64, metavar="N",
                                help="Copy in N processes, worker i taking the source partitions p with "
                                     "p % N == i (more cores for one mirror)."),
    run: options.RunOptions = None,
) -> None:
    """Copy topics from SRC to DST, partition to partition, resuming from checkpoints.

    Creates missing target topics (the source's partitions and configs), adds partitions the source
    gained, and copies key, value, headers, timestamp and tombstones of every committed record. Progress
    is checkpointed in DST's kmc.checkpoints topic only after DST acknowledged the records; a restarted
    run resumes there (at-least-once: records written after the last checkpoint are copied again and
    counted as redelivered; with --exactly-once records and checkpoints commit together in a transaction,
    so read_committed readers never see a repeat). Records whose kmc-origin header names DST are never
    copied back. With --sync-groups, the matching consumer groups' offsets on SRC are translated and
    committed on DST (every --sync-interval with --follow, once at the end with --once; never moving a
    group back, never for a group with members on DST), so they can fail over (docs/failover.md).

    `kmc mirror status SRC DST` says how far behind the mirror is (see `kmc mirror status --help`).

    Exit status: 0 done (or stopped by SIGTERM), 2 bad option, 4 a cluster unreachable, 5 authentication
    failed, TLS does not fit or an ACL is missing (the line names the operation and resource), 6 --once
    --sync-groups: some groups not synced (active on DST), 7 data gaps, 8 a Kafka error the mirror cannot
    retry (a record too large for the target...), 75 another run of the same mirror holds its lock, 130
    stopped by SIGINT (progress is checkpointed).

    JSON (-o json): flow, source, target, source_cluster_id, target_cluster_id, mode, complete,
    elapsed_seconds, records, bytes, skipped, redelivered, changes[], warnings[], gaps[], topics[]
    {source_topic, target_topic, partitions, records, bytes, skipped, redelivered, lag, gaps}, group_sync
    (null, or with --sync-groups the last sync's document, as kmc groups translate -o json). With
    --dry-run: flow, source, target, source_cluster_id, target_cluster_id, checkpoint_topic {name, exists},
    topics[] {source_topic, target_topic, partitions, target_partitions, replication_factor, configs,
    config_drift, actions}, acls (with --sync-acls), permissions[] {cluster, resource_type, resource,
    pattern, operation, status, needed_for, checked_by}, warnings[]; a dry run checks every permission the
    mirror needs and exits 5 when one is missing. -o ndjson and -o csv give the topics only, one per line.
    --workers N gives the same document, each topic's counts summed over the workers.
    """
    app_ctx = context.get(ctx)
    spec = MirrorSpec(topics=tuple(topics or ()), exclude=tuple(exclude or ()), rename=rename, flow=flow,
                      sync_configs=sync_configs, exactly_once=exactly_once, sync_acls=sync_acls,
                      sync_groups=tuple(sync_groups or ()), **run.spec)
    job = MirrorJob(app_ctx.cluster(src), app_ctx.cluster(dst), spec, workers=workers)
    _run.execute(app_ctx, [job], run)


@app.command("status")
def status(
    ctx: typer.Context,
    src: str = options.SOURCE,
    dst: str = options.TARGET,
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    rename: str = options.RENAME,
    flow: str = FLOW,
    max_lag: int | None = options.MAX_LAG,
    max_lag_seconds: float | None = options.MAX_LAG_SECONDS,
    partitions: bool = options.PARTITIONS,
) -> None:
    """How far the mirror SRC -> DST is behind, per topic, from its checkpoints in DST.

    The same rows as `kmc flow status`, for a mirror run with `kmc mirror` (give the same --topics,
    --exclude, --rename and --flow as the mirror). RECORDS BEHIND: SRC's end offset (last stable offset)
    minus the checkpoint's next offset, summed over the topic's partitions (a partition without a
    checkpoint counts from its earliest offset). SECONDS BEHIND: now minus the timestamp of the oldest
    record not copied yet; 0 when caught up. Reads only; works while the mirror runs.

    Lag alarms, for cron and monitoring: with --max-lag RECORDS and/or --max-lag-seconds S, exit 1 when
    any partition is further behind, each offending partition named on stderr.

    Exit status: 0, 1 a lag alarm, 2 bad option, 4 a cluster unreachable, 5 authentication failed.

    JSON (-o json): one object per topic: flow, source, target, source_topic, target_topic, partitions,
    checkpointed_partitions, records_behind, seconds_behind, oldest_uncopied_ms, checkpoint_ms, gaps, error.
    --partitions: one object per source partition, as `kmc flow status --partitions` (with the --group
    member copying it).
    """
    app_ctx = context.get(ctx)
    validate_limits(max_lag, max_lag_seconds)
    spec = MirrorSpec(topics=tuple(topics or ()), exclude=tuple(exclude or ()), rename=rename, flow=flow)
    report = mirror_lags([MirrorJob(app_ctx.cluster(src), app_ctx.cluster(dst), spec)], app_ctx.timeout)
    render_lags(app_ctx, report, max_lag, max_lag_seconds, partitions)
