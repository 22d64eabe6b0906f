"""Checks on a set of mirror jobs before any of them starts, for the jobs that write into one target: two
sources whose topics cannot share a target topic are a usage error, found from the sources' topic lists
(the same check ``kmc flow check`` runs on a config's flows). Library code: no printing.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kmc.client import DEFAULT_TIMEOUT, KafkaSession, gather_clusters
from kmc.errors import UsageError
from kmc.metadata import compile_patterns, describe_topics, matches, render_topic_name
from kmc.mirror.jobs import MirrorJob, cluster_key, is_merge
from kmc.mirror.plan import DEFAULT_FLOW, apply_plan, plan_mirror

NoticeCallback = Callable[[MirrorJob, str, str], None]  # (job, level "info" | "warn", message)


@dataclass(frozen=True)
class MergeConflict:
    """Sources whose topics land in one target topic but cannot share it."""

    target_topic: str
    writers: tuple[tuple[str, str, int], ...]  # (source name, source topic, partitions)
    kind: str  # "partitions": counts differ (merge mode); "names": two sources collide in prefix mode

    def describe(self) -> str:
        if self.kind == "names":
            parts = " and ".join(f"{source} '{topic}'" for source, topic, _ in self.writers)
            return f"{parts} would both be written to {self.target_topic}"
        counts = ", ".join(f"{count} in {source}" + (f" ({topic})" if topic != self.target_topic else "")
                           for source, topic, count in self.writers)
        return f"{self.target_topic} has differing partition counts: {counts}"


def merge_conflicts(listing: Mapping[str, Mapping[str, int]], rename: str, partitioner: str = "same",
                    ) -> list[MergeConflict]:
    """Given each source's topics (source name -> {topic: partitions}), the target topics two sources
    cannot share: with ``{source}`` in the rename any shared name is a collision; without it (merge),
    differing partition counts are, unless records are rehashed by key."""
    writers: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for source, topics in listing.items():
        for topic, partitions in topics.items():
            writers[render_topic_name(rename, topic, source)].append((source, topic, partitions))
    conflicts = []
    for target_topic, found in sorted(writers.items()):
        if len({source for source, _, _ in found}) < 2:
            continue
        if not is_merge(rename):
            conflicts.append(MergeConflict(target_topic, tuple(found), "names"))
        elif partitioner == "same" and len({count for _, _, count in found}) > 1:
            conflicts.append(MergeConflict(target_topic, tuple(found), "partitions"))
    return conflicts


def preflight(jobs: Sequence[MirrorJob], timeout: float = DEFAULT_TIMEOUT,
              notice: NoticeCallback | None = None, *, prepare: bool = True) -> None:
    """Checks that need the sources' topic lists, before any job starts: two sources that cannot share a
    target topic are a UsageError. In merge mode with ``partitioner="key"`` (and ``prepare``), a target
    topic the sources disagree on is created first with the largest partition count (whichever source got
    there first would otherwise decide it). A source that does not answer is left out: its own run
    reports it."""
    groups: dict[tuple[str, tuple[str, ...]], list[MirrorJob]] = defaultdict(list)
    for job in jobs:
        groups[(job.flow, cluster_key(job.target))].append(job)
    shared = [group for group in groups.values() if len(group) > 1]
    if not shared:
        return
    clusters = {cluster_key(job.source): job.source for group in shared for job in group}
    outcomes = gather_clusters(list(clusters.values()),
                               lambda session: describe_topics(session, with_offsets=False), timeout)
    listed = {cluster_key(outcome.cluster): outcome.value for outcome in outcomes if outcome.error is None}
    for group in shared:
        spec = group[0].spec
        include, exclude = compile_patterns(spec.topics, "--topics"), compile_patterns(spec.exclude, "--exclude")
        listing = {job.source.name: {topic.name: len(topic.partitions) for topic in listed[cluster_key(job.source)]
                                     if matches(topic.name, include, exclude)}
                   for job in group if cluster_key(job.source) in listed}
        partitioner = getattr(spec, "partitioner", "same")
        conflicts = merge_conflicts(listing, spec.rename, partitioner)
        if conflicts:
            where = "" if spec.flow == DEFAULT_FLOW else f"flow {spec.flow}: "
            hint = ("merging maps partition i to partition i; use --partitioner key (partitioner = \"key\" in a "
                    "flow) to rehash by key, or give the topics equal partition counts"
                    if conflicts[0].kind == "partitions" else "use a rename that keeps the sources apart")
            raise UsageError(where + "; ".join(conflict.describe() for conflict in conflicts), hint=hint)
        if prepare and is_merge(spec.rename) and partitioner == "key":
            _create_merged_topics(group, listing, timeout, notice)


def _create_merged_topics(group: Sequence[MirrorJob], listing: Mapping[str, Mapping[str, int]], timeout: float,
                          notice: NoticeCallback | None) -> None:
    by_name = {job.source.name: job for job in group}
    widest: dict[str, tuple[int, str, str]] = {}  # target topic -> (partitions, source, source topic)
    counts: dict[str, set[int]] = defaultdict(set)
    for source, topics in listing.items():
        for topic, partitions in topics.items():
            name = render_topic_name(group[0].spec.rename, topic, source)
            counts[name].add(partitions)
            widest[name] = max(widest.get(name, (0, "", "")), (partitions, source, topic))
    differing = {name for name, values in counts.items() if len(values) > 1}
    if not differing:
        return
    by_source: dict[str, list[str]] = defaultdict(list)
    for name in sorted(differing):
        by_source[widest[name][1]].append(widest[name][2])
    target = group[0].target
    with KafkaSession(target, timeout) as target_session:
        existing = {topic.name for topic in describe_topics(target_session, with_offsets=False)}
        for source, topics in by_source.items():
            missing = [topic for topic in topics
                       if render_topic_name(group[0].spec.rename, topic, source) not in existing]
            if not missing:
                continue
            job = by_name[source]
            spec = dataclasses.replace(job.spec, topics=tuple(re.escape(topic) for topic in missing), exclude=())
            with KafkaSession(job.source, timeout) as source_session:
                changes = apply_plan(target_session, plan_mirror(source_session, target_session, spec))
            for change in changes:
                if notice is not None:
                    notice(job, "info", change)
