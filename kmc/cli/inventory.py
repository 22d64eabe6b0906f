"""`kmc inventory`: every cluster's contents and health in one view."""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Any

import typer

from kmc import inventory as inv
from kmc.cli import context
from kmc.cli.completion import complete_cluster
from kmc.cli.context import AppContext
from kmc.client import Outcome
from kmc.errors import PartialFailure, UsageError, combined_failure
from kmc.metadata import compile_patterns
from kmc.output import Column, columns
from kmc.profiles import Cluster

STYLES = {"error": "red", "missing": "red", "?": "yellow"}


class View(str, Enum):
    clusters = "clusters"
    topics = "topics"
    brokers = "brokers"
    groups = "groups"


def inventory(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, metavar="CLUSTER", autocompletion=complete_cluster,
                                             help="Profile names or host:port [default: every configured cluster]."),
    all_clusters: bool = typer.Option(False, "--all", help="Every configured cluster (sandboxes included), "
                                                           "plus any named ones."),
    bootstrap: list[str] | None = typer.Option(None, "--bootstrap", "-b", metavar="HOST:PORT",
                                               help="An ad-hoc cluster (repeatable)."),
    topics: list[str] | None = typer.Option(None, "--topics", metavar="RE",
                                            help="Only topics matching (anchored regex; repeatable); groups and lag "
                                                 "then count those topics only."),
    include_internal: bool = typer.Option(False, "--include-internal",
                                          help="Also Kafka's internal topics (__consumer_offsets...) and kmc's."),
    view: View = typer.Option(View.clusters, "--view", case_sensitive=False, help="What a row is."),
) -> None:
    """What every cluster holds and how healthy it is, all clusters gathered in parallel.

    Views: clusters (a row per cluster), topics (a topic x cluster matrix: where each topic lives,
    where it is missing), brokers, groups. A cluster that cannot be reached or refuses access becomes
    a row with its error; the others are still shown. Records are latest minus earliest offsets, an
    upper bound (compaction, transaction markers). Bytes count every replica.

    Exit status: 0 all clusters answered, 2 bad option, unknown cluster or bad regex, 4 every cluster
    unreachable, 5 authentication failed everywhere, 6 some clusters failed or were gathered only in
    part (status "partial": e.g. records unknown while partitions change leader).

    JSON keys (-o json; unknown values are null; see docs/inventory.md):

    clusters: cluster, status (ok|partial|error), error (null when ok), cluster_id, controller, brokers,
    fenced_brokers, kafka_version, topics, partitions, under_replicated, offline, under_min_isr, bytes,
    records, groups, lag.

    topics: topic, clusters {CLUSTER: {partitions, records, bytes}, or null where the topic is missing},
    present, missing, unknown (the clusters that failed).

    brokers: cluster, status, error, broker, host, port, rack, fenced, controller, kafka_version, leaders,
    replicas, bytes, log_dirs, disk_total, disk_usable.

    groups: cluster, status, error, group, state, protocol_type, members, topics, lag.
    """
    app_ctx = context.get(ctx)
    include = compile_patterns(topics or [], "--topics")
    clusters = _select_clusters(app_ctx, names or [], bootstrap or [], all_clusters)
    spinner = (app_ctx.messages.console.status(f"gathering the inventory of {_count(len(clusters), 'cluster')}...")
               if app_ctx.messages.interactive else contextlib.nullcontext())
    with spinner:
        outcomes = inv.gather(clusters, include, include_internal=include_internal, timeout=app_ctx.timeout)
    for outcome in outcomes:
        if outcome.value is not None:
            app_ctx.messages.detail(_requests_line(outcome))
    _render(app_ctx, view, outcomes)
    _exit_status(outcomes)


def _select_clusters(app_ctx: AppContext, names: list[str], bootstrap: list[str], all_clusters: bool) -> list[Cluster]:
    selected: dict[str, Cluster] = {}
    if all_clusters or not (names or bootstrap):
        selected.update((cluster.name, cluster) for cluster in app_ctx.all_clusters())
    for reference in [*names, *bootstrap]:
        cluster = app_ctx.cluster(reference)
        selected.setdefault(cluster.name, cluster)
    if not selected:
        raise UsageError("no clusters to inventory",
                         hint="name one, pass --bootstrap host:port, add one with 'kmc profile add' "
                              "or start a sandbox with 'kmc sandbox up NAME'")
    return list(selected.values())


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _requests_line(outcome: Outcome) -> str:
    found: inv.ClusterInventory = outcome.value
    detail = ", ".join(f"{api} {count}" for api, count in sorted(found.requests.items()))
    return (f"{outcome.cluster.name}: {_count(found.request_count, 'request')} in {found.elapsed:.2f}s"
            f" ({detail})")


def _exit_status(outcomes: list[Outcome]) -> None:
    """4 or 5 when every cluster failed; 6 when some failed, or some were gathered only in part."""
    errors = [outcome.error for outcome in outcomes if outcome.error is not None]
    failure = combined_failure(errors, len(outcomes) - len(errors))
    if failure is not None and not isinstance(failure, PartialFailure):
        raise failure
    failed = [outcome.cluster.name for outcome in outcomes if outcome.error is not None]
    partial = [outcome for outcome in outcomes if outcome.value is not None and outcome.value.problems]
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {len(outcomes)} clusters failed: {', '.join(failed)}")
    if partial:
        parts.append(f"{len(partial)} of {len(outcomes)} clusters gathered in part: "
                     + ", ".join(f"{outcome.cluster.name} ({outcome.value.problems[0]})" for outcome in partial))
    if parts:
        raise PartialFailure("; ".join(parts))


# ------------------------------------------------------------------------------------------ render


def _render(app_ctx: AppContext, view: View, outcomes: list[Outcome]) -> None:
    render = app_ctx.render
    if view is View.topics:
        rows = inv.topic_rows(outcomes)
        if render.machine:
            render.rows(rows, columns(*inv.TOPIC_KEYS))
        else:
            _render_matrix(app_ctx, rows, outcomes)
        for row in inv.cluster_rows(outcomes):  # the matrix has no room for the errors themselves
            if row["status"] == "partial":
                app_ctx.messages.warn(f"{row['cluster']}: {row['error']}")
            elif row["error"]:
                app_ctx.messages.warn(row["error"])  # already names the cluster
        return
    build, keys, table_columns = {
        View.clusters: (inv.cluster_rows, inv.CLUSTER_KEYS, CLUSTER_COLUMNS),
        View.brokers: (inv.broker_rows, inv.BROKER_KEYS, BROKER_COLUMNS),
        View.groups: (inv.group_rows, inv.GROUP_KEYS, GROUP_COLUMNS),
    }[view]
    rows = build(outcomes)
    if render.machine:
        render.rows(rows, columns(*keys))
        return
    if any(row["error"] for row in rows):
        table_columns = (*table_columns, Column("error", free=True))
    render.rows([_table_row(row) for row in rows], table_columns, styles=STYLES)


CLUSTER_COLUMNS = columns(
    "cluster", Column("cluster_id", "ID"), Column("controller", "CTRL", numeric=True),
    Column("brokers", numeric=True), Column("kafka_version", "VERSION"), Column("topics", numeric=True),
    Column("partitions", "PARTS", numeric=True), Column("under_replicated", "UNDER-REPL", numeric=True),
    Column("offline", numeric=True), Column("under_min_isr", "UNDER-MIN-ISR", numeric=True),
    Column("bytes", numeric=True), Column("records", numeric=True), Column("groups", numeric=True),
    Column("lag", numeric=True),
)
BROKER_COLUMNS = columns(
    "cluster", Column("broker", numeric=True), Column("address"), "rack", Column("role"),
    Column("kafka_version", "VERSION"), Column("leaders", numeric=True), Column("replicas", numeric=True),
    Column("bytes", numeric=True), Column("disk", "DISK FREE/TOTAL", numeric=True),
)
GROUP_COLUMNS = columns(
    "cluster", "group", "state", Column("members", numeric=True), "topics", Column("lag", numeric=True),
)


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    """Human forms for a table: sizes in KiB/MiB, brokers as "3 (1 fenced)"."""
    shown = dict(row)
    if "bytes" in shown:
        shown["bytes"] = human_bytes(shown["bytes"])
    if shown.get("fenced_brokers"):
        shown["brokers"] = f"{shown['brokers']} ({shown['fenced_brokers']} fenced)"
    if "broker" in shown and shown["broker"] is not None:
        shown["address"] = f"{shown['host']}:{shown['port']}"
        shown["role"] = ",".join(role for role, flag in (("controller", shown["controller"]),
                                                          ("fenced", shown["fenced"])) if flag) or None
        if shown["disk_total"] is not None:
            shown["disk"] = f"{human_bytes(shown['disk_usable'])}/{human_bytes(shown['disk_total'])}"
    return shown


def _render_matrix(app_ctx: AppContext, rows: list[dict[str, Any]], outcomes: list[Outcome]) -> None:
    names = [outcome.cluster.name for outcome in outcomes]
    # cluster names become column keys: prefix them so a cluster called "topic" cannot collide
    table_columns = (Column("topic"), *(Column(f"@{name}", name.upper()) for name in names))
    table = []
    for row in rows:
        shown: dict[str, Any] = {"topic": row["topic"]}
        for name in names:
            if name in row["unknown"]:
                shown[f"@{name}"] = "?"
            elif row["clusters"].get(name) is None:
                shown[f"@{name}"] = "missing"
            else:
                cell = row["clusters"][name]
                records = "-" if cell["records"] is None else cell["records"]
                shown[f"@{name}"] = f"{cell['partitions']}p {records}r {human_bytes(cell['bytes'])}"
        table.append(shown)
    app_ctx.render.rows(table, table_columns, styles=STYLES)


def human_bytes(value: int | None) -> str | None:
    """1536 -> "1.5 KiB"; None stays None (shown as "-")."""
    if value is None:
        return None
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("inventory")(inventory)
