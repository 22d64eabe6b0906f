"""``kmc diff`` as one call: :func:`diff_clusters` compares the selected topics of a source cluster with
their renamed counterparts in a target: metadata, record counts, and with ``data`` their content.
Library code: no printing.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kmc.acls import Need, acl_differences, diff_needs, explain_denials, literal_topic_names, raise_for_hidden_topics
from kmc.client import DEFAULT_TIMEOUT, KafkaSession
from kmc.diff.compare import compare_topic, map_topics, reverse_topic_name
from kmc.diff.model import KINDS, Difference, DiffOptions, DiffReport, SequenceComparison, TopicComparison
from kmc.diff.stream import ClusterSide, DataProgress, PartitionJob, compare_partitions
from kmc.errors import KafkaOperationError, KmcError, UsageError
from kmc.metadata import TopicInfo, compile_patterns, matches, render_topic_name
from kmc.profiles import Cluster, validate_rename


def validate_options(options: DiffOptions) -> tuple[list[re.Pattern[str]], list[re.Pattern[str]]]:
    """Check the options before any cluster is contacted; returns the compiled patterns."""
    validate_rename(options.rename, "--rename", UsageError)
    return compile_patterns(options.topics, "--topics"), compile_patterns(options.exclude, "--exclude")


def diff_clusters(source: Cluster | Path, target: Cluster | Path, options: DiffOptions, *,
                  timeout: float = DEFAULT_TIMEOUT,
                  progress: Callable[[DataProgress], None] | None = None) -> DiffReport:
    """Compare the selected topics of the source cluster with their renamed counterparts in the target.
    Either side may be an export directory (``kmc export``), read as the cluster it was exported from
    (``{source}`` of a rename template is that cluster's profile name).

    UsageError for bad options, before any cluster is contacted; the errors of the client layer
    (unreachable, authentication...) for a cluster that cannot be read, ArchiveError for an export that
    cannot be. ``progress`` hears about each batch of records compared with ``options.data``.
    """
    started = time.monotonic()
    include, exclude = validate_options(options)
    if options.acls and any(isinstance(side, Path) for side in (source, target)):
        raise UsageError("--acls compares two clusters' ACLs; an export holds none: name two clusters")
    pairs: list[tuple[str, str]] = []  # filled in once known: what a denial's needs are checked for
    with contextlib.ExitStack() as stack:
        sides = []
        for side in (source, target):
            if isinstance(side, Path):
                from kmc.archive.view import ArchiveSide

                sides.append(ArchiveSide(side))
            else:
                sides.append(ClusterSide(stack.enter_context(KafkaSession(side, timeout))))

        def checks() -> list[tuple[KafkaSession, list[Need]]]:
            origin = getattr(sides[0], "source_name", sides[0].name)
            wanted = pairs or [(name, render_topic_name(options.rename, name, origin))
                               for name in literal_topic_names(options.topics)]
            source_needs, target_needs = diff_needs(wanted, options.data, options.acls)
            return [(side.session, needs) for side, needs in zip(sides, (source_needs, target_needs), strict=True)
                    if isinstance(side, ClusterSide)]

        with explain_denials(checks):  # a denial names the missing operation and resource (kmc.acls)
            report = _compare(sides[0], sides[1], options, include, exclude, progress, pairs)
    report.seconds = time.monotonic() - started
    return report


def _compare(source_side: Any, target_side: Any, options: DiffOptions,
             include: list[re.Pattern[str]], exclude: list[re.Pattern[str]],
             progress: Callable[[DataProgress], None] | None, pairs: list[tuple[str, str]]) -> DiffReport:
    source_name = getattr(source_side, "source_name", source_side.name)

    def target_wanted(name: str) -> bool:
        origin = reverse_topic_name(options.rename, name, source_name)
        return origin is not None and matches(origin, include, exclude)

    with ThreadPoolExecutor(max_workers=2) as pool:
        source_future = pool.submit(source_side.describe, include, exclude)
        target_future = pool.submit(target_side.describe, wanted=target_wanted)
        failures = []
        for future in (source_future, target_future):
            try:
                future.result()
            except KmcError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]  # the source's, when both fail
        source_topics = {topic.name: topic for topic in source_future.result()}
        target_topics = {topic.name: topic for topic in target_future.result()}
        if isinstance(source_side, ClusterSide):
            raise_for_hidden_topics(source_side.session, options.topics, source_topics, options.exclude)
        mapping = map_topics(source_topics, target_topics, options.rename, source_name, include, exclude)
        pairs.extend(mapping.pairs)
        if options.configs.mode != "none" and mapping.pairs:
            source_configs_future = pool.submit(source_side.configs, [pair[0] for pair in mapping.pairs])
            target_configs_future = pool.submit(target_side.configs, [pair[1] for pair in mapping.pairs])
            source_configs, target_configs = source_configs_future.result(), target_configs_future.result()
        else:
            source_configs, target_configs = {}, {}
        acl_found: dict[str, list[Difference]] = {}
        if options.acls and mapping.pairs:
            for item in acl_differences(source_side.session, target_side.session, dict(mapping.pairs)):
                text = item.binding.label()
                acl_found.setdefault(item.source_topic, []).append(Difference(
                    "acl", item.source_topic, item.target_topic, key=text,
                    source=text if item.side == "missing" else None, target=text if item.side == "extra" else None))

    report = DiffReport(source_side.name, target_side.name, options)
    data: dict[tuple[str, int], SequenceComparison] = {}
    if options.data and mapping.pairs:
        jobs = _partition_jobs(source_side, target_side, mapping.pairs, source_topics, target_topics)
        data = compare_partitions(source_side, target_side, jobs, progress)
        report.records_compared = sum(max(r.source_records, r.target_records) for r in data.values())
        report.bytes_compared = sum(r.source_bytes + r.target_bytes for r in data.values())

    entries: list[tuple[str, TopicComparison, list[Difference]]] = []
    for topic, target_topic in mapping.missing:
        info = source_topics[topic]
        entries.append((topic, TopicComparison(topic, target_topic, "missing", (len(info.partitions), None),
                                               (info.replication_factor, None), (info.records, None)),
                        [Difference("missing_topic", topic, target_topic, source=topic)]))
    for origin, target_topic in mapping.extra:
        info = target_topics[target_topic]
        entries.append((origin, TopicComparison(origin, target_topic, "extra", (None, len(info.partitions)),
                                                (None, info.replication_factor), (None, info.records)),
                        [Difference("extra_topic", origin, target_topic, target=target_topic)]))
    for topic, target_topic in mapping.pairs:
        source_info, target_info = source_topics[topic], target_topics[target_topic]
        topic_data = None
        records = (source_info.records, target_info.records)
        if options.data:
            topic_data = {partition: result for (name, partition), result in data.items() if name == topic}
            records = (_total(r.source_records for r in topic_data.values()),
                       _total(r.target_records for r in topic_data.values()))
        found = compare_topic(source_info, target_info, source_configs.get(topic, {}),
                              target_configs.get(target_topic, {}), options, topic_data)
        found += acl_found.get(topic, [])
        found.sort(key=lambda difference: KINDS.index(difference.kind))
        entries.append((topic, TopicComparison(
            topic, target_topic, "different" if found else "equal",
            (len(source_info.partitions), len(target_info.partitions)),
            (source_info.replication_factor, target_info.replication_factor), records), found))
    entries.sort(key=lambda entry: (entry[0], entry[1].target_topic or ""))
    for _, comparison, found in entries:
        report.topics.append(comparison)
        report.differences.extend(found)
    return report


def _total(counts: Iterable[int]) -> int | None:
    counts = list(counts)
    return sum(counts) if counts else None


def _partition_jobs(source_side: Any, target_side: Any, pairs: Sequence[tuple[str, str]],
                    source_topics: Mapping[str, TopicInfo], target_topics: Mapping[str, TopicInfo],
                    ) -> list[PartitionJob]:
    """The common, online partitions of each pair, with end offsets captured now on both sides."""
    common = []
    for topic, target_topic in pairs:
        source_info, target_info = source_topics[topic], target_topics[target_topic]
        for partition in sorted(set(source_info.latest) & set(target_info.latest)):
            common.append((topic, target_topic, partition))
    with ThreadPoolExecutor(max_workers=2) as pool:
        source_ends = pool.submit(source_side.ends, [(t, p) for t, _, p in common])
        target_ends = pool.submit(target_side.ends, [(t, p) for _, t, p in common])
        source_end, target_end = source_ends.result(), target_ends.result()
    jobs = []
    for topic, target_topic, partition in common:
        if (topic, partition) not in source_end or (target_topic, partition) not in target_end:
            raise KafkaOperationError(f"no end offset for {topic}[{partition}]")
        jobs.append(PartitionJob(
            topic, target_topic, partition,
            (source_topics[topic].earliest.get(partition, 0), source_end[(topic, partition)]),
            (target_topics[target_topic].earliest.get(partition, 0), target_end[(target_topic, partition)])))
    return jobs
