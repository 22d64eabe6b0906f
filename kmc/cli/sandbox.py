"""`kmc sandbox`: local real Kafka clusters (KRaft) for demos and tests, registered as profiles."""

from __future__ import annotations

import contextlib
import time

import typer

from kmc import sandbox
from kmc.cli import context
from kmc.cli._options import MAX_SECONDS
from kmc.cli.completion import complete_cluster, complete_sandbox
from kmc.errors import UsageError
from kmc.output import Column, columns
from kmc.seed import SAMPLE_TOPICS
from kmc.seed import seed as seed_sample_data

app = typer.Typer(help="Local real Apache Kafka clusters (KRaft) for demos and tests.", no_args_is_help=True)

STATUS_COLUMNS = columns("name", "health", "security", "bootstrap", Column("brokers", numeric=True), "pids",
                         "data_dir")
STATUS_KEYS = ("name", "health", "security", "bootstrap", "brokers", "pids", "data_dir", "nodes")


@app.command("up")
def up(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., metavar="NAME", help="Names of the clusters to start (also their profile "
                                                               "names)."),
    brokers: int = typer.Option(1, "--brokers", min=1, max=5, metavar="N",
                                help="Brokers per cluster (3 gives a real quorum)."),
    wait: float = typer.Option(120.0, "--wait", min=1.0, max=MAX_SECONDS, metavar="SECONDS",
                               help="How long to wait for the clusters to answer."),
    secure: bool = typer.Option(False, "--secure",
                                help="A SASL_SSL listener (SCRAM-SHA-512, users admin and mirror), TLS from a CA of "
                                     "its own, ACLs enforced."),
    mtls: bool = typer.Option(False, "--mtls",
                              help="An SSL listener that requires client certificates (CN admin or mirror), ACLs "
                                   "enforced."),
) -> None:
    """Start clusters (idempotent: a running one is left as it is) and register them as profiles.

    Kafka's jars come from $KAFKA_HOME/libs when set, else from Maven Central into
    $XDG_CACHE_HOME/kmc the first time. Data and logs live under $XDG_DATA_HOME/kmc/sandbox/NAME.
    A --secure or --mtls cluster NAME is registered twice: NAME authenticates as admin (a super user),
    NAME.mirror as the mirror user, who may do nothing until ACLs are granted. Their CA, certificates and
    passwords live under NAME/security (secrets mode 0600); profiles read them from there.
    """
    app_ctx = context.get(ctx)
    if secure and mtls:
        raise UsageError("give --secure or --mtls, not both")
    mode = sandbox.SASL_SSL if secure else sandbox.MTLS if mtls else None
    started = time.monotonic()
    spinner = app_ctx.messages.console.status("starting Kafka…") if app_ctx.messages.interactive else None
    with spinner or contextlib.nullcontext():
        clusters = sandbox.up(list(names), brokers=brokers, timeout=wait, security_mode=mode)
    app_ctx.messages.info(f"{len(clusters)} cluster(s) up in {time.monotonic() - started:.1f}s")
    app_ctx.render.rows(_status_rows(name for name in names), STATUS_COLUMNS, keys=STATUS_KEYS)


@app.command("down")
def down(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, metavar="NAME", help="Clusters to stop [default: all sandboxes].",
                                             autocompletion=complete_sandbox),
    keep_data: bool = typer.Option(False, "--keep-data", help="Keep data and logs for the next 'up'."),
) -> None:
    """Stop sandbox clusters (only the processes kmc started) and remove their data."""
    app_ctx = context.get(ctx)
    stopped = sandbox.down(list(names) if names else None, keep_data=keep_data)
    if stopped:
        app_ctx.messages.info(f"stopped: {', '.join(stopped)}" + (" (data kept)" if keep_data else ""))
    else:
        app_ctx.messages.info("no sandbox clusters")


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Each sandbox: health (up, degraded, down), security, bootstrap, pids, data directory.

    security is plaintext, sasl_ssl (--secure) or mtls (--mtls).
    JSON keys: name, health, security, bootstrap, brokers, pids, data_dir, nodes.
    """
    app_ctx = context.get(ctx)
    rows = _status_rows(None)
    app_ctx.render.rows(rows, STATUS_COLUMNS, keys=STATUS_KEYS, styles={"up": "green", "degraded": "yellow",
                                                                          "down": "red"})
    if not rows:
        app_ctx.messages.info("no sandbox clusters; start some with 'kmc sandbox up NAME...'")


@app.command("seed")
def seed(
    ctx: typer.Context,
    cluster: str = typer.Argument(..., metavar="CLUSTER", help="Cluster name, or host:port.",
                                  autocompletion=complete_cluster),
    topics: str = typer.Option(",".join(SAMPLE_TOPICS), "--topics", metavar="TOPIC[,TOPIC...]",
                               help="Which sample topics to write."),
    records: int = typer.Option(1000, "--records", min=1, max=100_000_000, metavar="N", help="Records per topic."),
    force: bool = typer.Option(False, "--force", help="Write into a cluster that is not a sandbox."),
) -> None:
    """Write sample data (orders, payments, clicks, customers) with keys, headers and tombstones.

    Only into sandboxes (by name, or by one of their addresses), so that a slip of the finger never adds
    sample topics to a real cluster: any other cluster needs --force.

    JSON keys: topic, partitions, records (records written by this run).
    """
    app_ctx = context.get(ctx)
    target = app_ctx.cluster(cluster)
    if not force and not _is_sandbox(target.bootstrap):
        raise UsageError(f"'{cluster}' is not a sandbox; seed would write sample topics "
                         f"({', '.join(SAMPLE_TOPICS)}) into it",
                         hint="seed a sandbox ('kmc sandbox status'), or pass --force to write them there anyway")
    results = seed_sample_data(target, [t.strip() for t in topics.split(",") if t.strip()], records,
                               origin=target.name, timeout=app_ctx.timeout)
    app_ctx.render.rows([result.to_dict() for result in results],
                        columns("topic", Column("partitions", numeric=True), Column("records", numeric=True)))


def _is_sandbox(bootstrap: tuple[str, ...]) -> bool:
    """Whether the addresses are those of a sandbox (a profile of another name for it counts too)."""
    return any(set(bootstrap) & set(found.bootstrap) for found in sandbox.list_sandboxes())


def _status_rows(names) -> list[dict]:  # noqa: ANN001 - iterable of names or None
    wanted = set(names) if names is not None else None
    rows = []
    for entry in sandbox.status():
        if wanted is not None and entry["name"] not in wanted:
            continue
        nodes = entry.get("brokers", [])
        rows.append({
            "name": entry["name"],
            "health": entry["health"],
            "security": entry.get("security", sandbox.PLAINTEXT),
            "bootstrap": entry["bootstrap"],
            "brokers": len(nodes),
            "pids": [node.get("pid") for node in nodes],
            "data_dir": entry.get("data_dir"),
            "nodes": nodes,
        })
    return rows
