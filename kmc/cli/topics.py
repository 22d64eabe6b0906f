"""`kmc topics`: the topics of one cluster."""

from __future__ import annotations

import typer

from kmc.cli import context
from kmc.cli.completion import complete_cluster
from kmc.metadata import cluster_topics, compile_patterns
from kmc.output import Column, columns

TOPIC_COLUMNS = columns(
    "topic", Column("partitions", numeric=True), Column("replication_factor", "RF", numeric=True),
    Column("records", numeric=True), Column("under_replicated", "UNDER-REPL", numeric=True),
)
# The row keys (-o json/ndjson/csv), as each command's help lists them.
TOPIC_KEYS = ("topic", "partitions", "replication_factor", "records", "under_replicated", "internal")


def cluster_and_pattern(
    cluster: str | None, pattern: str | None, bootstrap: str | None
) -> tuple[str | None, str | None]:
    """With --bootstrap the cluster is already given, so a single positional argument is the pattern."""
    if bootstrap and pattern is None:
        return None, cluster
    return cluster, pattern


def topics(
    ctx: typer.Context,
    cluster: str | None = typer.Argument(None, metavar="CLUSTER", help="Cluster name, or host:port.",
                                         autocompletion=complete_cluster),
    pattern: str | None = typer.Argument(None, metavar="PATTERN", help="Anchored regex of topic names [default: all]."),
    bootstrap: str | None = typer.Option(None, "--bootstrap", "-b", metavar="HOST:PORT",
                                         help="Ad-hoc host:port[,host:port] instead of a name."),
    include_internal: bool = typer.Option(False, "--include-internal", help="Also Kafka's and kmc's internal topics."),
) -> None:
    """List topics: partitions, replication factor, records (latest minus earliest offsets).

    With --bootstrap, the one argument is the PATTERN: `kmc topics -b host:9092 'orders.*'`.

    JSON keys: topic, partitions, replication_factor, records, under_replicated, internal.
    """
    app_ctx = context.get(ctx)
    cluster, pattern = cluster_and_pattern(cluster, pattern, bootstrap)
    include = compile_patterns([pattern] if pattern else [], "PATTERN")
    found = cluster_topics(app_ctx.one_cluster(cluster, bootstrap), include, include_internal=include_internal,
                           timeout=app_ctx.timeout)
    app_ctx.render.rows([topic.to_dict() for topic in found], TOPIC_COLUMNS, keys=TOPIC_KEYS)


def register(app: typer.Typer) -> None:
    app.command("topics")(topics)
