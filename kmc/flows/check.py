"""``kmc flow check``: everything that would make a config's flows fail or misbehave, found before they run:
unknown clusters, unsupported settings, two flows writing one topic, partition counts that cannot merge,
and cycles of renames that create topics without end. Library code: no printing.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kmc.client import DEFAULT_TIMEOUT, gather_clusters
from kmc.errors import ConfigError, UnknownClusterError, UsageError
from kmc.flows.jobs import MERGE_RENAME, check_source_name, flow_spec, unsupported_settings
from kmc.flows.patterns import pattern_strings
from kmc.metadata import compile_patterns, describe_topics, is_internal, is_valid_topic_name, matches, render_topic_name
from kmc.mirror.jobs import cluster_key, is_merge
from kmc.mirror.plan import copy_mode
from kmc.mirror.preflight import merge_conflicts
from kmc.profiles import Cluster, Config, Flow, resolve_cluster

MAX_LAPS = 10  # a cycle whose renamed names still match after this many laps grows without end


@dataclass(frozen=True)
class FlowProblem:
    """One thing wrong with the flows, naming the flows and the config key it is about."""

    flows: tuple[str, ...]
    key: str
    message: str

    def line(self) -> str:
        return ", ".join(f"flows.{name}.{self.key}" for name in self.flows) + f": {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"flows": list(self.flows), "key": self.key, "message": self.message, "line": self.line()}


@dataclass
class FlowCheck:
    flows: list[str]
    errors: list[FlowProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)  # clusters whose real topic lists were used
    copy_modes: dict[str, tuple[str, str]] = field(default_factory=dict)  # flow -> copy_mode(): (mode, why)

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc flow check -o json`` document (keys in docs/flows.md)."""
        return {"ok": not self.errors, "flows": list(self.flows), "errors": [error.to_dict() for error in self.errors],
                "warnings": list(self.warnings), "live_clusters": list(self.live),
                "copy_modes": {name: {"mode": mode, "why": why} for name, (mode, why) in self.copy_modes.items()}}


@dataclass(frozen=True)
class _Edge:
    """One source of one flow: a copy from a cluster into another."""

    flow: Flow
    source_name: str
    source: tuple[str, ...]  # cluster keys
    target: tuple[str, ...]
    target_name: str
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    def selects(self, topic: str) -> bool:
        return not is_internal(topic) and matches(topic, list(self.include), list(self.exclude))

    def rename(self, topic: str) -> str:
        return render_topic_name(self.flow.rename, topic, self.source_name)


def check_flows(config: Config, *, live: bool = True, timeout: float = DEFAULT_TIMEOUT) -> FlowCheck:
    """Everything that would make the config's flows fail or misbehave, found before they run.

    Always (static): unknown clusters in ``from``/``to``; settings the engine cannot honour; a source that
    is also the target with an identity rename; a rename giving a topic a name Kafka refuses (too long) or
    reserves for internal topics; two flows, or two sources of a prefix-mode flow, writing
    the same target topic, as far as the topic patterns are literal (``orders``, ``orders|payments``); and
    cycles whose renames keep producing names the next flow selects again (topics without end). With
    ``live``, the source clusters that answer are asked for their topics, and the same checks run on the
    real names, plus differing partition counts where a flow merges several sources; a cluster that does
    not answer is a warning, not an error.
    """
    report = FlowCheck(sorted(config.flows))
    edges: list[_Edge] = []
    names_by_cluster: dict[tuple[str, ...], str] = {}
    for name in sorted(config.flows):
        flow = config.flows[name]
        for key, reason in unsupported_settings(flow):
            report.errors.append(FlowProblem((name,), key, reason))
        merged = len(flow.sources) > 1 and is_merge(flow.rename)
        report.copy_modes[name] = copy_mode(dataclasses.replace(flow_spec(flow), stamp_records=merged))
        target = _lookup(config, flow, "to", flow.target, report)
        sources = [(source_name, _lookup(config, flow, "from", source_name, report)) for source_name in flow.sources]
        if target is None:
            continue
        names_by_cluster.setdefault(cluster_key(target), target.name)
        include = tuple(compile_patterns(flow.topics, f"flows.{name}.topics"))
        exclude = tuple(compile_patterns(flow.exclude, f"flows.{name}.exclude"))
        seen: set[tuple[str, ...]] = set()
        for source_name, source in sources:
            if source is None:
                continue
            key = cluster_key(source)
            names_by_cluster.setdefault(key, source.name)
            if key in seen:
                report.errors.append(FlowProblem((name,), "from", f"{source_name} is listed twice "
                                                                  "(or two profiles name the same cluster)"))
                continue
            seen.add(key)
            try:
                check_source_name(source, flow.rename, "rename")
            except UsageError as exc:
                report.errors.append(FlowProblem((name,), "rename", exc.message.removeprefix("rename ")))
                continue
            if key == cluster_key(target) and flow.rename == MERGE_RENAME:
                report.errors.append(FlowProblem((name,), "rename", f"{source_name} is also the target: "
                                                 "an identity rename would copy its topics onto themselves"))
                continue
            edges.append(_Edge(flow, source.name, key, cluster_key(target), target.name, include, exclude))

    real: dict[tuple[str, ...], dict[str, int]] = {}
    if live and edges:
        clusters = {edge.source: resolve_cluster(config, edge.source_name) for edge in edges}
        outcomes = gather_clusters(list(clusters.values()),
                                   lambda session: describe_topics(session, with_offsets=False), timeout)
        for outcome in outcomes:
            if outcome.error is None:
                real[cluster_key(outcome.cluster)] = {topic.name: len(topic.partitions) for topic in outcome.value}
                report.live.append(outcome.cluster.name)
            else:
                report.warnings.append(f"{outcome.cluster.name}: could not list its topics ({outcome.error.message}); "
                                       "its flows were checked from their literal topic patterns only")
        report.live.sort()
    literal = _literal_names(edges)
    report.errors.extend(_unusable_names(edges, literal, real))
    report.errors.extend(_collisions(edges, literal, real, names_by_cluster))
    report.errors.extend(_partition_mismatches(edges, real))
    report.errors.extend(_endless_cycles(edges, real, names_by_cluster))
    return report


def _lookup(config: Config, flow: Flow, key: str, name: str, report: FlowCheck) -> Cluster | None:
    try:
        return resolve_cluster(config, name)
    except (UnknownClusterError, UsageError, ConfigError) as exc:
        report.errors.append(FlowProblem((flow.name,), key, exc.message))
        return None


def _literal_names(edges: Iterable[_Edge]) -> dict[tuple[str, ...], set[str]]:
    """Per source cluster, the topic names the flows' patterns spell out literally: topics that exist
    there, as far as the config can tell without asking the cluster."""
    names: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for edge in edges:
        for pattern in edge.flow.topics:
            for name in pattern_strings(pattern, exact=True) or ():
                if edge.selects(name) and is_valid_topic_name(name):
                    names[edge.source].add(name)
    return names


def _unusable_names(edges: Sequence[_Edge], literal: Mapping[tuple[str, ...], set[str]],
                    real: Mapping[tuple[str, ...], Mapping[str, int]]) -> list[FlowProblem]:
    """A rename that gives a topic, literal in the patterns or real, a name Kafka refuses (over 249
    characters, mostly: the template itself was checked when the file was loaded) or one reserved for
    internal topics: the flow would fail when it gets there. One problem per flow and source."""
    problems = []
    for edge in edges:
        candidates = set(literal.get(edge.source, ())) | set(real.get(edge.source, {}))
        for topic in sorted(candidates):
            if not edge.selects(topic):
                continue
            name = edge.rename(topic)
            shown = name if len(name) <= 60 else f"{name[:57]}..."
            if not is_valid_topic_name(name):
                reason = f"{len(name)} characters, Kafka allows 249" if len(name) > 249 else "not a valid topic name"
            elif is_internal(name):
                reason = "a name reserved for internal topics"
            else:
                continue
            problems.append(FlowProblem((edge.flow.name,), "rename", f"maps {edge.source_name} '{topic}' to "
                                                                     f"'{shown}': {reason}"))
            break
    return problems


def _collisions(edges: Sequence[_Edge], literal: Mapping[tuple[str, ...], set[str]],
                real: Mapping[tuple[str, ...], Mapping[str, int]],
                cluster_names: Mapping[tuple[str, ...], str]) -> list[FlowProblem]:
    writers: dict[tuple[tuple[str, ...], str], dict[tuple[str, str], str]] = defaultdict(dict)
    for edge in edges:
        candidates = set(literal.get(edge.source, ())) | set(real.get(edge.source, {}))
        for topic in sorted(candidates):
            if edge.selects(topic):
                writers[(edge.target, edge.rename(topic))].setdefault((edge.flow.name, edge.source_name), topic)
    flows_by_name = {edge.flow.name: edge.flow for edge in edges}
    problems = []
    for (target, target_topic), found in sorted(writers.items()):
        flows = sorted({flow for flow, _ in found})
        where = f"{cluster_names.get(target, ','.join(target))}/{target_topic}"
        sources = "; ".join(f"{flow} from {source} '{topic}'" for (flow, source), topic in sorted(found.items()))
        if len(flows) > 1:
            problems.append(FlowProblem(tuple(flows), "topics", f"both write {where} ({sources})"))
        elif len(found) > 1 and not is_merge(flows_by_name[flows[0]].rename):
            problems.append(FlowProblem(tuple(flows), "rename", f"two sources write {where} ({sources})"))
    return problems


def _partition_mismatches(edges: Sequence[_Edge],
                          real: Mapping[tuple[str, ...], Mapping[str, int]]) -> list[FlowProblem]:
    by_flow: dict[str, list[_Edge]] = defaultdict(list)
    for edge in edges:
        by_flow[edge.flow.name].append(edge)
    problems = []
    for name, flow_edges in sorted(by_flow.items()):
        flow = flow_edges[0].flow
        if len(flow_edges) < 2 or not is_merge(flow.rename):
            continue
        listing = {edge.source_name: {topic: count for topic, count in real[edge.source].items() if edge.selects(topic)}
                   for edge in flow_edges if edge.source in real}
        for conflict in merge_conflicts(listing, flow.rename, flow.partitioner):
            problems.append(FlowProblem((name,), "partitioner", f"{conflict.describe()}; merging maps partition i "
                                        "to partition i (set partitioner = \"key\" to rehash by key)"))
    return problems


def _endless_cycles(edges: Sequence[_Edge], real: Mapping[tuple[str, ...], Mapping[str, int]],
                    cluster_names: Mapping[tuple[str, ...], str]) -> list[FlowProblem]:
    """Cycles of flows whose renames keep producing new names that the next flow selects again.

    With identity renames all the way round, the ``kmc-origin`` header stops every record before it
    returns to its origin (and the names stay the same), so such a cycle is fine. Otherwise the names of
    a seed topic are followed round the cycle (seeds: examples of each flow's patterns, and the real
    topics when known); if a name still survives after MAX_LAPS laps, each lap creates new topics.
    """
    problems = []
    for cycle in _simple_cycles(edges):
        if all(edge.flow.rename == MERGE_RENAME for edge in cycle):
            continue
        witness: list[str] | None = None
        for shift in range(len(cycle)):
            rotation = cycle[shift:] + cycle[:shift]
            first = rotation[0]
            seeds = set(real.get(first.source, {}))
            for pattern in first.flow.topics:
                seeds.update(pattern_strings(pattern, exact=False) or ())
            for seed in sorted(seed for seed in seeds if is_valid_topic_name(seed)):
                witness = _follow(rotation, seed)
                if witness is not None:
                    break
            if witness is not None:
                break
        if witness is None:
            continue
        route = " -> ".join([cluster_names.get(rotation[0].source, rotation[0].source_name)]
                            + [cluster_names.get(edge.target, edge.target_name) for edge in rotation])
        flows = tuple(dict.fromkeys(edge.flow.name for edge in rotation))
        shown = " -> ".join(witness[:4]) + " -> ..."
        problems.append(FlowProblem(flows, "rename", f"the cycle {route} creates topics without end ({shown}): "
                                                     "narrow the topics so renamed names are not selected again"))
    return problems


def _follow(rotation: Sequence[_Edge], seed: str) -> list[str] | None:
    """The names of ``seed`` round the cycle; None when the chain stops within MAX_LAPS laps."""
    name, trail = seed, [seed]
    for _ in range(MAX_LAPS):
        for edge in rotation:
            if not edge.selects(name):
                return None
            name = edge.rename(name)
            if not is_valid_topic_name(name):  # Kafka refuses it: the chain ends there
                return None
            trail.append(name)
    return trail


def _simple_cycles(edges: Sequence[_Edge], limit: int = 1000) -> list[list[_Edge]]:
    """Every simple cycle of the cluster graph (clusters as nodes, one edge per flow source), each once:
    found from its smallest node. The graphs are small (a handful of clusters)."""
    outgoing: dict[tuple[str, ...], list[_Edge]] = defaultdict(list)
    for edge in edges:
        outgoing[edge.source].append(edge)
    nodes = sorted(set(outgoing) | {edge.target for edge in edges})
    cycles: list[list[_Edge]] = []

    def walk(start: tuple[str, ...], node: tuple[str, ...], path: list[_Edge], visited: set[tuple[str, ...]]) -> None:
        for edge in outgoing.get(node, ()):
            if len(cycles) >= limit:
                return
            if edge.target == start:
                cycles.append([*path, edge])
            elif edge.target > start and edge.target not in visited:
                walk(start, edge.target, [*path, edge], visited | {edge.target})

    for start in nodes:
        walk(start, start, [], {start})
    return cycles
