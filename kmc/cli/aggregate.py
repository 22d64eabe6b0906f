"""`kmc aggregate`: several source clusters copied into one target at once (fan-in)."""

from __future__ import annotations

import typer

from kmc.cli import _options as options
from kmc.cli import _run, context
from kmc.cli.completion import complete_cluster, complete_from
from kmc.errors import UsageError
from kmc.flows import MERGE_RENAME, PREFIX_RENAME, aggregate_jobs
from kmc.mirror import DEFAULT_FLOW, MirrorSpec


@options.run_options
def aggregate(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(..., metavar="SRC", help="Source clusters: profile names, or host:port.",
                                        autocompletion=complete_cluster),
    into: str = typer.Option(..., "--into", metavar="DST", help="Target cluster: a profile name, or host:port.",
                             autocompletion=complete_cluster),
    topics: list[str] | None = options.TOPICS,
    exclude: list[str] | None = options.EXCLUDE,
    rename: str | None = typer.Option(None, "--rename", metavar="TEMPLATE",
                                      help=f"Target topic name: {{topic}}, {{source}} (the source profile name) "
                                           f"[default: '{PREFIX_RENAME}']."),
    merge: bool = typer.Option(False, "--merge", help=f"Write every source's topic into one target topic "
                                                      f"(--rename '{MERGE_RENAME}'); kmc-origin tells them apart."),
    partitioner: str = typer.Option("same", "--partitioner", metavar="same|key",
                                    autocompletion=complete_from({"same": "partition i to partition i",
                                                                  "key": "murmur2(key) mod partitions"}),
                                    help="same: partition i to partition i (merging needs equal partition "
                                         "counts); key: murmur2(key) mod the target's partitions, like a Kafka "
                                         "producer."),
    flow: str = typer.Option(DEFAULT_FLOW, "--flow", metavar="NAME",
                             help="Name in checkpoint keys and locks; the default is kmc mirror's, so "
                                  "`kmc mirror SRC DST` with the same options shares checkpoints and lock."),
    sync_configs: bool = options.SYNC_CONFIGS,
    exactly_once: bool = options.EXACTLY_ONCE,
    sync_acls: bool = options.SYNC_ACLS,
    run: options.RunOptions = None,
) -> None:
    """Copy the topics of every SRC into DST at once, each source with its own checkpoints and lock.

    Prefix mode (the default, --rename '{source}.{topic}') keeps each source's topics apart: dc1.orders,
    dc2.orders. --merge writes them into one topic (orders), partition i to partition i, which needs the
    same partition count in every source (exit 2 naming the topic otherwise), unless --partitioner key
    rehashes each record by key; the kmc-origin header names each record's source cluster. Each source is
    one `kmc mirror SRC DST` (same plan, copy, checkpoints, lock), in a process of its own so that the
    sources use several cores; a failing source does not stop the others. With --follow a source that
    cannot be reached is tried again, from 5 s up to every minute.

    SIGTERM (and Ctrl-C) stop it within about a second, also while sources connect or wait to be tried
    again: those are listed as stopped, not failed.

    Exit status: 0 done (or stopped by SIGTERM), 2 bad option or sources that cannot share a target
    topic, 6 some sources failed (the message names each and why) while others succeeded; when all
    failed, the first failure's status (4 unreachable, 5 authentication, 75 locked by another run);
    130 stopped by SIGINT.

    JSON (-o json): mode, complete, elapsed_seconds, records, bytes, runs[] (one kmc mirror -o json document
    per source that ran), failures[] {flow, source, target, exit_code, error}, stopped[] {flow, source,
    target, error (what it last met, or null)}: the mirrors the run was stopped before they connected. With
    --dry-run: plans[] (kmc mirror --dry-run documents), failures[], stopped[]. -o ndjson and -o csv give one
    row per source topic: flow, source, target, source_topic, target_topic, partitions, records, bytes,
    skipped, redelivered, lag, gaps.
    """
    app_ctx = context.get(ctx)
    if merge and rename is not None:
        raise UsageError("give --merge or --rename, not both")
    spec = MirrorSpec(topics=tuple(topics or ()), exclude=tuple(exclude or ()),
                      rename=MERGE_RENAME if merge else rename or PREFIX_RENAME, flow=flow, sync_configs=sync_configs,
                      partitioner=partitioner, exactly_once=exactly_once, sync_acls=sync_acls, **run.spec)
    target = app_ctx.cluster(into)
    jobs = aggregate_jobs([app_ctx.cluster(source) for source in sources], target, spec)
    title = f"aggregate {', '.join(job.source.name for job in jobs)} -> {target.name}"
    _run.execute(app_ctx, jobs, run, title=title)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("aggregate")(aggregate)
