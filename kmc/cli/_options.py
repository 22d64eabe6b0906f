"""Arguments and options shared by the commands that pair clusters (`kmc diff`, `kmc mirror`,
`kmc aggregate`, `kmc flow run`). One definition each, so the commands cannot drift apart in defaults,
limits or help; the run options are one group (:func:`run_options`), declared once for the three
commands that run mirrors."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from kmc.cli._typer_internals import with_parameters
from kmc.cli.completion import CODECS, complete_cluster, complete_from
from kmc.errors import UsageError

# The longest wait any option takes: a day. Without a bound, --timeout inf or 1e308 overflowed kafka-python's
# integer milliseconds as an internal error.
MAX_SECONDS = 86400.0

SOURCE = typer.Argument(..., metavar="SRC", help="Source cluster: a profile name, or host:port.",
                        autocompletion=complete_cluster)
TARGET = typer.Argument(..., metavar="DST", help="Target cluster: a profile name, or host:port.",
                        autocompletion=complete_cluster)
TOPICS = typer.Option(None, "--topics", metavar="RE",
                      help="Source topics (anchored regex; repeatable) [default: all but internal].")
EXCLUDE = typer.Option(None, "--exclude", metavar="RE", help="Source topics to leave out (anchored regex; repeatable).")
RENAME = typer.Option("{topic}", "--rename", metavar="TEMPLATE",
                      help="Target topic name: {topic}, {source} (the source profile name), e.g. '{source}.{topic}'.")

ONCE = typer.Option(False, "--once", help="Copy up to the end offsets seen at the start, then exit (the default).")
FOLLOW = typer.Option(False, "--follow", help="Keep copying until SIGTERM (exit 0) or SIGINT (exit 130).")
START = typer.Option("earliest", "--from", metavar="earliest|latest|TIMESTAMP",
                     autocompletion=complete_from({"earliest": "the oldest record kept", "latest": "new records only"}),
                     help="Where partitions without a checkpoint start: earliest, latest, epoch milliseconds or an "
                          "ISO-8601 time (UTC unless it has an offset).")
REPLICATION_FACTOR = typer.Option(None, "--replication-factor", min=1, max=32767, metavar="N",
                                  help="Replication factor of created topics [default: the source's, at most the "
                                       "target's brokers].")
SYNC_CONFIGS = typer.Option(False, "--sync-configs", help="Make existing target topics' configs equal to the source's.")
DRY_RUN = typer.Option(False, "--dry-run", help="Print the plan and change nothing.")
REFRESH = typer.Option(30.0, "--refresh", min=1.0, max=MAX_SECONDS, metavar="SECONDS",
                       help="--follow: how often to look for new topics and partitions.")
CHECKPOINT_INTERVAL = typer.Option(1.0, "--checkpoint-interval", min=0.1, max=3600.0, metavar="SECONDS",
                                   help="How often to write checkpoints of what the target acknowledged.")
COMPRESSION = typer.Option("keep", "--compression", metavar="CODEC", autocompletion=complete_from(CODECS),
                           help="Codec of the batches sent to the target: keep (each batch as compressed at "
                                "the source), none, gzip, snappy, lz4, zstd.")
EXACTLY_ONCE = typer.Option(False, "--exactly-once",
                            help="Write records and their checkpoints in one target transaction per checkpoint "
                                 "interval: read_committed consumers of DST see each record once, even across "
                                 "crashes.")
SYNC_ACLS = typer.Option(False, "--sync-acls",
                         help="Copy the source's ACLs of the mirrored topics to the target, renamed with the topics, "
                              "except ALLOW WRITE (as MirrorMaker 2 does); needs DESCRIBE on the source cluster and "
                              "ALTER on the target cluster.")
SYNC_GROUPS = typer.Option(None, "--sync-groups", metavar="RE",
                           help="Consumer groups (anchored regex; repeatable) whose offsets on SRC are translated "
                                "and committed on DST while mirroring, so they can fail over (docs/failover.md).")
SYNC_INTERVAL = typer.Option(10.0, "--sync-interval", min=1.0, max=MAX_SECONDS, metavar="SECONDS",
                             help="--follow with --sync-groups (or a flow's sync_groups): how often to sync the "
                                  "groups' offsets.")
DELIVERY_TIMEOUT = typer.Option(300.0, "--delivery-timeout", min=2.0, max=MAX_SECONDS, metavar="SECONDS",
                                help="How long a batch is retried before kmc rewinds to the last acknowledged "
                                     "offsets and sends it again.")
METRICS_ADDR = typer.Option(None, "--metrics-addr", metavar="HOST:PORT",
                            help="--follow: serve Prometheus metrics on http://HOST:PORT/metrics and health on "
                                 "/healthz [default: metrics_addr of the flow, else of [service] in the config].")
METRICS_PARTITIONS = typer.Option(False, "--metrics-partitions",
                                  help="A partition label on the per-partition metrics (5 series per partition; "
                                       "per topic without it).")
STALL_TIMEOUT = typer.Option(None, "--stall-timeout", min=1.0, metavar="SECONDS",
                             help="/healthz answers 503 when a checkpoint stood still this long while records "
                                  "waited [default: 300].")

MAX_LAG = typer.Option(None, "--max-lag", min=0, metavar="RECORDS",
                       help="Exit 1 when a partition is more than RECORDS behind (offenders on stderr).")
MAX_LAG_SECONDS = typer.Option(None, "--max-lag-seconds", min=0.0, metavar="S",
                               help="Exit 1 when a partition's oldest uncopied record is more than S seconds old "
                                    "(offenders on stderr).")
PARTITIONS = typer.Option(False, "--partitions",
                          help="One row per partition, with the member (host:pid) of a --group that copies it.")
GROUP = typer.Option(None, "--group", metavar="NAME",
                     help="--follow: copy as one member of the group NAME (kept on DST): every kmc started with "
                          "the same mirror and group, on any host, shares the source partitions [default: group "
                          "of the flow].")
SESSION_TIMEOUT = typer.Option(None, "--session-timeout", min=6.0, max=1800.0, metavar="SECONDS",
                               help="--group: how long a member may be silent before the others take over its "
                                    "partitions [default: 10].")


# ------------------------------------------------------------------------------------------ the run options


@dataclass(frozen=True)
class RunOptions:
    """The options of every command that runs mirrors (`kmc mirror`, `kmc aggregate`, `kmc flow run`): how to
    run (``mode``, ``dry_run``) and the MirrorSpec fields they set (``spec``); the library validates those."""

    mode: str
    dry_run: bool
    spec: dict[str, Any]
    # the service of a --follow run (kmc/service/): None where the config decides
    metrics_addr: str | None = None
    metrics_partitions: bool = False
    stall_timeout: float | None = None

    @classmethod
    def collect(cls, once: bool, follow: bool, start: str, replication_factor: int | None, dry_run: bool,
                refresh: float, checkpoint_interval: float, compression: str, delivery_timeout: float,
                sync_interval: float = 10.0, metrics_addr: str | None = None, metrics_partitions: bool = False,
                stall_timeout: float | None = None, group: str | None = None,
                session_timeout: float | None = None) -> RunOptions:
        if once and follow:
            raise UsageError("give --once or --follow, not both")
        service_options = [name for name, value in (("--metrics-addr", metrics_addr), ("--metrics-partitions",
                           metrics_partitions), ("--stall-timeout", stall_timeout)) if value]
        if service_options and not follow:
            raise UsageError(f"{service_options[0]} needs --follow", hint="metrics are served while kmc runs as a "
                                                                          "service; a --once run reports on exit")
        spec = {"start": start, "replication_factor": replication_factor, "refresh_interval": refresh,
                "checkpoint_interval": checkpoint_interval, "compression": compression,
                "delivery_timeout": delivery_timeout, "sync_interval": sync_interval}
        # only when given: a flow's own group stands otherwise
        spec.update({key: value for key, value in (("group", group), ("session_timeout", session_timeout))
                     if value is not None})
        return cls("follow" if follow else "once", dry_run, spec, metrics_addr, metrics_partitions, stall_timeout)


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


RUN_PARAMETERS = (
    _option("once", bool, ONCE),
    _option("follow", bool, FOLLOW),
    _option("start", str, START),
    _option("replication_factor", int | None, REPLICATION_FACTOR),
    _option("dry_run", bool, DRY_RUN),
    _option("refresh", float, REFRESH),
    _option("checkpoint_interval", float, CHECKPOINT_INTERVAL),
    _option("compression", str, COMPRESSION),
    _option("delivery_timeout", float, DELIVERY_TIMEOUT),
    _option("sync_interval", float, SYNC_INTERVAL),
    _option("metrics_addr", str | None, METRICS_ADDR),
    _option("metrics_partitions", bool, METRICS_PARTITIONS),
    _option("stall_timeout", float | None, STALL_TIMEOUT),
    _option("group", str | None, GROUP),
    _option("session_timeout", float | None, SESSION_TIMEOUT),
)


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the run options (:data:`RUN_PARAMETERS`) in place of its ``run: RunOptions``
    parameter."""
    return with_parameters(command, "run", RUN_PARAMETERS, RunOptions.collect)
