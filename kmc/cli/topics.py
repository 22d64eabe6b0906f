"""`kmc topics` and `kmc groups`: small listings of one cluster."""

from __future__ import annotations

import typer

from kmc.cli import context
from kmc.metadata import compile_patterns, describe_groups, describe_topics
from kmc.output import Column, columns

TOPIC_COLUMNS = columns(
    "topic", Column("partitions", numeric=True), Column("replication_factor", "RF", numeric=True),
    Column("records", numeric=True), Column("under_replicated", "UNDER-REPL", numeric=True),
)
GROUP_COLUMNS = columns("group", "state", Column("members", numeric=True), "topics", Column("lag", numeric=True))


def _cluster_and_pattern(
    cluster: str | None, pattern: str | None, bootstrap: str | None
) -> tuple[str | None, str | None]:
    """With --bootstrap the cluster is already given, so a single positional argument is the pattern."""
    if bootstrap and pattern is None:
        return None, cluster
    return cluster, pattern


def topics(
    ctx: typer.Context,
    cluster: str | None = typer.Argument(None, metavar="CLUSTER", help="Cluster name, or host:port."),
    pattern: str | None = typer.Argument(None, metavar="PATTERN", help="Anchored regex of topic names [default: all]."),
    bootstrap: str | None = typer.Option(None, "--bootstrap", "-b", help="Ad-hoc host:port instead of a name."),
    include_internal: bool = typer.Option(False, "--include-internal", help="Also Kafka's and kmc's internal topics."),
) -> None:
    """List topics: partitions, replication factor, records (latest minus earliest offsets).

    With --bootstrap, the one argument is the PATTERN: `kmc topics -b host:9092 'orders.*'`.

    JSON keys: topic, partitions, replication_factor, records, under_replicated, internal.
    """
    app_ctx = context.get(ctx)
    cluster, pattern = _cluster_and_pattern(cluster, pattern, bootstrap)
    include = compile_patterns([pattern] if pattern else [], "PATTERN")
    session = app_ctx.session(app_ctx.one_cluster(cluster, bootstrap))
    rows = [
        {"topic": topic.name, "partitions": len(topic.partitions), "replication_factor": topic.replication_factor,
         "records": topic.records, "under_replicated": sum(p.under_replicated for p in topic.partitions),
         "internal": topic.internal}
        for topic in describe_topics(session, include, include_internal=include_internal)
    ]
    app_ctx.render.rows(rows, TOPIC_COLUMNS)


def groups(
    ctx: typer.Context,
    cluster: str | None = typer.Argument(None, metavar="CLUSTER", help="Cluster name, or host:port."),
    pattern: str | None = typer.Argument(None, metavar="PATTERN", help="Anchored regex of group ids [default: all]."),
    bootstrap: str | None = typer.Option(None, "--bootstrap", "-b", help="Ad-hoc host:port instead of a name."),
) -> None:
    """List consumer groups: state, members, topics and total lag.

    With --bootstrap, the one argument is the PATTERN.

    JSON keys: group, state, protocol_type, members, topics, lag (null when nothing is committed).
    """
    app_ctx = context.get(ctx)
    cluster, pattern = _cluster_and_pattern(cluster, pattern, bootstrap)
    include = compile_patterns([pattern] if pattern else [], "PATTERN")
    session = app_ctx.session(app_ctx.one_cluster(cluster, bootstrap))
    rows = [
        {"group": group.group_id, "state": group.state, "protocol_type": group.protocol_type,
         "members": group.members, "topics": list(group.topics), "lag": group.lag}
        for group in describe_groups(session, include)
    ]
    app_ctx.render.rows(rows, GROUP_COLUMNS)


def register(app: typer.Typer) -> None:
    app.command("topics")(topics)
    app.command("groups")(groups)
