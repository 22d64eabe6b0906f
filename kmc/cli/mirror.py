"""`kmc mirror`: copy topics from one cluster to another, once (cron) or continuously (a service)."""

from __future__ import annotations

import typer

from kmc.cli import _options as options
from kmc.cli import _run, context
from kmc.mirror import DEFAULT_FLOW, MirrorJob, MirrorSpec


@options.run_options
def mirror(
    ctx: typer.Context,
    src: str = options.SOURCE,
    dst: str = options.TARGET,
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    rename: str = options.RENAME,
    sync_configs: bool = options.SYNC_CONFIGS,
    flow: str = typer.Option(DEFAULT_FLOW, "--flow", metavar="NAME",
                             help="Name of this mirror in checkpoint keys and its lock."),
    exactly_once: bool = options.EXACTLY_ONCE,
    sync_acls: bool = options.SYNC_ACLS,
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
    copied back.

    Exit status: 0 done (or stopped by SIGTERM), 2 bad option, 4 a cluster unreachable, 5 authentication
    failed, TLS does not fit or an ACL is missing (the line names the operation and resource), 8 a Kafka
    error the mirror cannot retry (a record too large for the target...), 75 another run of the same mirror
    holds its lock, 130 stopped by SIGINT (progress is checkpointed).

    JSON (-o json): flow, source, target, source_cluster_id, target_cluster_id, mode, complete,
    elapsed_seconds, records, bytes, skipped, redelivered, changes[], warnings[], topics[] {source_topic,
    target_topic, partitions, records, bytes, skipped, redelivered, lag}. With --dry-run: flow, source,
    target, source_cluster_id, target_cluster_id, checkpoint_topic {name, exists}, topics[] {source_topic,
    target_topic, partitions, target_partitions, replication_factor, configs, config_drift, actions}, acls
    (with --sync-acls), permissions[] {cluster, resource_type, resource, pattern, operation, status,
    needed_for, checked_by}, warnings[]; a dry run checks every permission the mirror needs and exits 5
    when one is missing. -o ndjson and -o csv give the topics only, one per line. --workers N gives the same
    document, each topic's counts summed over the workers.
    """
    app_ctx = context.get(ctx)
    spec = MirrorSpec(topics=tuple(topics or ()), exclude=tuple(exclude or ()), rename=rename, flow=flow,
                      sync_configs=sync_configs, exactly_once=exactly_once, sync_acls=sync_acls, **run.spec)
    job = MirrorJob(app_ctx.cluster(src), app_ctx.cluster(dst), spec, workers=workers)
    _run.execute(app_ctx, [job], run)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("mirror")(mirror)
