"""Named flows and fan-in as mirror jobs: a ``[flows.NAME]`` table (one job per ``from`` cluster) or
``kmc aggregate SRC... --into DST`` (one job per source) becomes :class:`kmc.mirror.jobs.MirrorJob` objects,
with every mistake that needs no cluster to find reported first. Library code: no printing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from kmc.errors import ConfigError, UnknownClusterError, UsageError
from kmc.mirror import MirrorSpec
from kmc.mirror.jobs import MirrorJob, check_source_name, cluster_key, is_merge
from kmc.profiles import Cluster, Config, Flow, resolve_cluster

PREFIX_RENAME = "{source}.{topic}"  # kmc aggregate's default: each source's topics apart
MERGE_RENAME = "{topic}"  # kmc aggregate --merge: one target topic for every source's topic


def aggregate_jobs(sources: Sequence[Cluster], target: Cluster, spec: MirrorSpec, *,
                   allow_self: bool = False) -> list[MirrorJob]:
    """One job per source, all into ``target`` with ``spec``; UsageError for what cannot work at all.

    The target among the sources is refused unless ``allow_self`` (flows, whose cycles ``check_flows``
    analyses): aggregated into itself, a cluster would copy the copies of its topics again at every run.
    """
    spec.validate()
    if not sources:
        raise UsageError("give at least one source cluster")
    seen: dict[tuple[str, ...], str] = {}
    for source in sources:
        key = cluster_key(source)
        if key in seen:
            raise UsageError(f"{source.name} is given twice as a source" if seen[key] == source.name
                             else f"{seen[key]} and {source.name} are the same cluster ({','.join(key)})")
        seen[key] = source.name
        if key == cluster_key(target) and not allow_self:
            raise UsageError(f"{source.name} is both a source and the target",
                             hint="a cluster aggregated into itself would copy its copies again at every run")
        check_source_name(source, spec.rename, "--rename")
    if len(sources) > 1 and is_merge(spec.rename):
        # one target topic for several sources: every record says where it came from (kmc-origin)
        spec = dataclasses.replace(spec, stamp_records=True)
    return [MirrorJob(source, target, spec) for source in sources]


def spec_options() -> frozenset[str]:
    """The MirrorSpec fields this version of the mirror engine has."""
    return frozenset(item.name for item in dataclasses.fields(MirrorSpec))


def unsupported_settings(flow: Flow) -> list[tuple[str, str]]:
    """(key, reason) for each setting of ``flow`` that the mirror engine cannot honour."""
    options = spec_options()
    found = []
    if flow.exactly_once and "exactly_once" not in options:
        found.append(("exactly_once", "exactly-once delivery is not available in this version of kmc "
                                      "(flows copy at least once); remove the key or set it to false"))
    if flow.sync_groups and flow.partitioner != "same":
        found.append(("sync_groups", "consumer group offsets cannot be translated through partitioner = \"key\" "
                                     "(one source partition's records land in several target partitions)"))
    elif flow.sync_groups and len(flow.sources) > 1 and is_merge(flow.rename):
        found.append(("sync_groups", "the sources merge into the same target topics, so each source's groups "
                                     "would be committed over each other's; sync one source's groups, or rename "
                                     "with {source}"))
    if flow.partitioner != "same" and "partitioner" not in options:
        found.append(("partitioner", "this version of the mirror engine copies partition i to partition i only"))
    return found


def flow_spec(flow: Flow, **options: Any) -> MirrorSpec:
    """The MirrorSpec of a named flow; ``options`` are run options (start, compression, ...)."""
    settings: dict[str, Any] = {
        # topics = [".*"] (the default) selects what an empty selection selects; writing it as () keeps the
        # lock identity equal to an ad-hoc `kmc mirror --flow NAME` of the same clusters
        "topics": () if flow.topics == (".*",) else flow.topics,
        "exclude": flow.exclude,
        "rename": flow.rename,
        "flow": flow.name,
        "sync_configs": flow.sync_configs,
        "group": flow.group,
    }
    supported = spec_options()
    if "partitioner" in supported:
        settings["partitioner"] = flow.partitioner
    if "exactly_once" in supported:
        settings["exactly_once"] = flow.exactly_once
    if "sync_groups" in supported:
        settings["sync_groups"] = flow.sync_groups
    if "sync_acls" in supported:
        settings["sync_acls"] = flow.sync_acls
    settings.update(options)
    return MirrorSpec(**settings)


def flow_clusters(config: Config, flow: Flow) -> tuple[list[Cluster], Cluster]:
    """The flow's source and target clusters; ConfigError naming the flow and key for an unknown one."""
    sources = []
    for name in flow.sources:
        try:
            sources.append(resolve_cluster(config, name))
        except UnknownClusterError as exc:
            raise ConfigError(f"flows.{flow.name}.from: {exc.message}") from None
    try:
        target = resolve_cluster(config, flow.target)
    except UnknownClusterError as exc:
        raise ConfigError(f"flows.{flow.name}.to: {exc.message}") from None
    return sources, target


def flow_jobs(config: Config, flow: Flow, **options: Any) -> list[MirrorJob]:
    """One job per source of ``flow``; ConfigError for what the flow's table gets wrong."""
    for key, reason in unsupported_settings(flow):
        raise ConfigError(f"flows.{flow.name}.{key}: {reason}")
    sources, target = flow_clusters(config, flow)
    spec = flow_spec(flow, **options)
    if flow.rename == MERGE_RENAME and any(cluster_key(source) == cluster_key(target) for source in sources):
        raise ConfigError(f"flows.{flow.name}.rename: {target.name} is also a source: an identity rename would "
                          "copy its topics onto themselves")
    try:
        return aggregate_jobs(sources, target, spec, allow_self=True)
    except UsageError as exc:
        raise ConfigError(f"flows.{flow.name}: {exc.message}", hint=exc.hint) from None
