"""`kmc groups`: list a cluster's consumer groups, and translate their offsets into a mirror's target
(failover and failback, docs/failover.md)."""

from __future__ import annotations

import typer

from kmc.cli import _options as options
from kmc.cli import context
from kmc.cli._typer_internals import default_command_group
from kmc.cli.completion import complete_cluster
from kmc.cli.topics import cluster_and_pattern
from kmc.metadata import cluster_groups, compile_patterns
from kmc.mirror import DEFAULT_FLOW
from kmc.mirror.groups import translate_groups
from kmc.output import Column, OutputFormat, columns

app = typer.Typer(cls=default_command_group("list"), no_args_is_help=False,
                  help="List a cluster's consumer groups; `kmc groups translate SRC DST` moves them to a mirror's "
                       "target.")

GROUP_COLUMNS = columns("group", "state", Column("members", numeric=True), "topics", Column("lag", numeric=True))
GROUP_KEYS = ("group", "state", "protocol_type", "members", "topics", "lag")  # -o json/ndjson/csv, as --help says
TRANSLATE_COLUMNS = columns("group", "source_topic", Column("partition", "PART", numeric=True),
                            Column("source_offset", "SOURCE OFFSET", numeric=True),
                            Column("behind", numeric=True), "target_topic",
                            Column("target_offset", "TARGET OFFSET", numeric=True), "status", "committed")
TRANSLATE_KEYS = ("group", "source_topic", "partition", "source_offset", "behind", "target_topic", "target_offset",
                  "status", "previous_target_offset", "committed", "refused")


@app.command("list", hidden=True)
def list_groups(
    ctx: typer.Context,
    cluster: str | None = typer.Argument(None, metavar="CLUSTER", help="Cluster name, or host:port.",
                                         autocompletion=complete_cluster),
    pattern: str | None = typer.Argument(None, metavar="PATTERN", help="Anchored regex of group ids [default: all]."),
    bootstrap: str | None = typer.Option(None, "--bootstrap", "-b", metavar="HOST:PORT",
                                         help="Ad-hoc host:port[,host:port] instead of a name."),
) -> None:
    """List consumer groups: state, members, topics and total lag.

    With --bootstrap, the one argument is the PATTERN. `kmc groups translate SRC DST` translates groups'
    offsets into a mirror's target (see below).

    JSON keys: group, state, protocol_type, members, topics, lag (null when nothing is committed).
    """
    app_ctx = context.get(ctx)
    cluster, pattern = cluster_and_pattern(cluster, pattern, bootstrap)
    include = compile_patterns([pattern] if pattern else [], "PATTERN")
    found = cluster_groups(app_ctx.one_cluster(cluster, bootstrap), include, timeout=app_ctx.timeout)
    app_ctx.render.rows([group.to_dict() for group in found], GROUP_COLUMNS, keys=GROUP_KEYS)


@app.command("translate")
def translate(
    ctx: typer.Context,
    src: str = options.SOURCE,
    dst: str = options.TARGET,
    group: list[str] | None = typer.Option(None, "--group", metavar="RE",
                                           help="Consumer groups (anchored regex; repeatable) [default: all]."),
    topics: list[str] | None = typer.Option(None, "--topics", metavar="RE",
                                            help="Only these source topics (anchored regex; repeatable)."),
    rename: str | None = typer.Option(None, "--rename", metavar="TEMPLATE",
                                      help="Target topic names of the mirror, as given to kmc mirror "
                                           "[default: as its checkpoints name them]."),
    flow: str = typer.Option(DEFAULT_FLOW, "--flow", metavar="NAME",
                             help="The mirror's flow name (kmc mirror --flow, or a [flows.NAME])."),
    commit: bool = typer.Option(False, "--commit",
                                help="Commit the translated offsets on DST, for each group that has no active "
                                     "member there."),
) -> None:
    """Translate consumer groups' committed offsets on SRC into offsets on DST, through the mirror SRC -> DST.

    For each group and partition: the group's offset on SRC, the records it has not consumed there
    (BEHIND), and the offset on DST of the first record it has not consumed (TARGET OFFSET), found in the
    mirror's offset map (DST's kmc.checkpoints) and by pairing SRC's records with their copies. A consumer
    of the group on DST then receives exactly the records it had not consumed on SRC: none lost, none
    repeated. STATUS: exact; ahead (the group consumed records not mirrored yet: translated to the end of
    what was mirrored); gap (DST lacks records the group has not consumed: the mirror started after
    them, or DST lost them; translated to where the copy goes on); no-checkpoint (the mirror has no
    checkpoint for the partition: nothing translated).

    Reads SRC only and changes nothing, unless --commit: then the offsets are committed on DST for every
    group without active members there (a group with members is refused with one line naming it; the
    others are committed). Needs SRC to be reachable: for a failover after SRC is lost, keep DST's groups
    current while mirroring (kmc mirror --sync-groups). See docs/failover.md.

    Exit status: 0 done, 2 bad option, 4 a cluster unreachable, 5 not authorized, 6 some groups were
    refused (active on DST), the others committed.

    JSON (-o json): source, target, flow, source_cluster_id, target_cluster_id, commit, committed
    (partitions committed), groups[] {group, target_state, target_members, refused, partitions[]
    {source_topic, partition, source_offset, behind, target_topic, target_offset, status,
    previous_target_offset, committed}}. -o ndjson and -o csv: one line per group and partition.
    """
    app_ctx = context.get(ctx)
    report = translate_groups(app_ctx.cluster(src), app_ctx.cluster(dst), groups=tuple(group or ()),
                              topics=tuple(topics or ()), rename=rename, flow=flow, commit=commit,
                              timeout=app_ctx.timeout)
    app_ctx.render.report(report, TRANSLATE_COLUMNS, keys=TRANSLATE_KEYS)
    for refused in report.refused:
        app_ctx.messages.error(f"group {refused.group}: not committed: {refused.refused}")
    if app_ctx.render.fmt is not OutputFormat.json:
        partitions = sum(len(found.partitions) for found in report.groups)
        done = f"; {report.committed} committed on {report.target}" if commit else " (nothing committed: --commit)"
        app_ctx.messages.info(f"{len(report.groups)} group(s), {partitions} partition(s) translated{done}")
    failure = report.failure()
    if failure is not None:
        raise failure
