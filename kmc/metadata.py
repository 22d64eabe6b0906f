"""Batched reads of what a cluster holds: topics, partitions, offsets, consumer groups and lag.

Every function here sends a bounded number of requests whatever the size of the cluster:
one metadata request, one ListOffsets per leader broker (kafka-python groups partitions by
leader), one OffsetFetch per group coordinator, one DescribeConfigs for all topics, one
DescribeLogDirs per broker. Library code: no printing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, OffsetSpec

from kmc.client import DEFAULT_TIMEOUT, KafkaSession, broker_error, translate_errors
from kmc.errors import KmcError, UsageError
from kmc.profiles import Cluster, compile_regexes

KMC_INTERNAL_PREFIX = "kmc."
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline: tuple[int, ...] = ()

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def online(self) -> bool:
        return self.leader is not None


@dataclass(frozen=True)
class TopicInfo:
    name: str
    internal: bool
    partitions: tuple[PartitionInfo, ...]
    earliest: dict[int, int] = field(default_factory=dict)
    latest: dict[int, int] = field(default_factory=dict)
    topic_id: str | None = None  # Kafka's topic id (a new one when a topic is deleted and created again)

    @property
    def replication_factor(self) -> int:
        return max((len(partition.replicas) for partition in self.partitions), default=0)

    @property
    def records(self) -> int | None:
        """Sum of latest minus earliest offsets: an upper bound (compaction, transaction markers)."""
        if not self.latest:
            return None
        return sum(self.latest[p] - self.earliest.get(p, 0) for p in self.latest)

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc topics`` row: topic, partitions, replication_factor, records, under_replicated, internal."""
        return {"topic": self.name, "partitions": len(self.partitions), "replication_factor": self.replication_factor,
                "records": self.records, "under_replicated": sum(p.under_replicated for p in self.partitions),
                "internal": self.internal}


def compile_patterns(patterns: Iterable[str], option: str = "--topics") -> list[re.Pattern[str]]:
    """Anchored regexes from user input; a bad one is a usage error naming the option."""
    return compile_regexes(patterns, option, UsageError, hint="check the pattern's syntax")


def matches(name: str, include: list[re.Pattern[str]], exclude: list[re.Pattern[str]] = ()) -> bool:
    """True when ``name`` fully matches an include pattern (all when none) and no exclude pattern."""
    if include and not any(pattern.fullmatch(name) for pattern in include):
        return False
    return not any(pattern.fullmatch(name) for pattern in exclude)


def is_valid_topic_name(name: str) -> bool:
    """Whether Kafka accepts ``name`` for a topic: 1 to 249 of letters, digits, '.', '_' and '-', not . or .."""
    return bool(_TOPIC_NAME.fullmatch(name)) and name not in (".", "..")


def is_internal(name: str, flagged_internal: bool = False) -> bool:
    """Kafka's internal topics (``__consumer_offsets``…) and kmc's own (``kmc.checkpoints``)."""
    return flagged_internal or name.startswith("__") or name.startswith(KMC_INTERNAL_PREFIX)


def describe_topics(
    session: KafkaSession,
    include: list[re.Pattern[str]] | None = None,
    exclude: list[re.Pattern[str]] | None = None,
    *,
    include_internal: bool = False,
    with_offsets: bool = True,
    wanted: Callable[[str], bool] | None = None,
) -> list[TopicInfo]:
    """Topics matching the patterns (and ``wanted``, when given), sorted by name, with earliest/latest
    offsets when asked; offsets are asked for the selected topics only."""
    with translate_errors(session.cluster, "describe topics"):
        metadata = session.admin.describe_topics()
    topics: list[TopicInfo] = []
    for entry in metadata:
        name = entry["name"]
        if not include_internal and is_internal(name, entry.get("is_internal", False)):
            continue
        if not matches(name, include or [], exclude or []) or (wanted is not None and not wanted(name)):
            continue
        partitions = tuple(
            PartitionInfo(
                partition=part["partition_index"],
                leader=part["leader_id"] if part["leader_id"] >= 0 else None,
                replicas=tuple(part["replica_nodes"]),
                isr=tuple(part["isr_nodes"]),
                offline=tuple(part.get("offline_replicas") or ()),
            )
            for part in sorted(entry["partitions"], key=lambda part: part["partition_index"])
        )
        topics.append(TopicInfo(name=name, internal=is_internal(name, entry.get("is_internal", False)),
                                partitions=partitions, topic_id=_topic_id(entry.get("topic_id"))))
    topics.sort(key=lambda topic: topic.name)
    if with_offsets and topics:
        earliest, latest = partition_offsets(session, topics)
        topics = [
            TopicInfo(topic.name, topic.internal, topic.partitions,
                      earliest={p.partition: earliest[(topic.name, p.partition)]
                                for p in topic.partitions if (topic.name, p.partition) in earliest},
                      latest={p.partition: latest[(topic.name, p.partition)]
                              for p in topic.partitions if (topic.name, p.partition) in latest},
                      topic_id=topic.topic_id)
            for topic in topics
        ]
    return topics


def _topic_id(value: object) -> str | None:
    """kafka-python's topic id as text; None for a missing or all-zero id (a broker without topic ids)."""
    text = str(value) if value else ""
    return text if text and text.strip("0-") else None


def list_offsets(session: KafkaSession, specs: Mapping[TopicPartition, Any],
                 isolation: str = "read_uncommitted") -> dict[TopicPartition, int]:
    """The offset each partition's spec names (``OffsetSpec.EARLIEST``, ``OffsetSpec.LATEST``, a timestamp):
    one ListOffsets request per leader broker. ``isolation="read_committed"`` makes LATEST the last stable
    offset, the end of what read_committed readers (and the mirror) see."""
    if not specs:
        return {}
    with translate_errors(session.cluster, "list offsets"):
        answer = session.admin.list_partition_offsets(dict(specs), isolation_level=isolation)
    return {tp: value.offset for tp, value in answer.items()}


def partition_offsets(
    session: KafkaSession, topics: Iterable[TopicInfo]
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Earliest and latest offsets of every online partition: two ListOffsets rounds, one request
    per leader broker each."""
    online = [TopicPartition(topic.name, part.partition) for topic in topics for part in topic.partitions
              if part.online]
    earliest = list_offsets(session, dict.fromkeys(online, OffsetSpec.EARLIEST))
    latest = list_offsets(session, dict.fromkeys(online, OffsetSpec.LATEST))
    return ({(tp.topic, tp.partition): offset for tp, offset in earliest.items()},
            {(tp.topic, tp.partition): offset for tp, offset in latest.items()})


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    state: str
    protocol_type: str
    members: int
    topics: tuple[str, ...]
    lag: int | None  # None when the group has no committed offsets
    partition_lag: dict[tuple[str, int], int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc groups`` row: group, state, protocol_type, members, topics, lag."""
        return {"group": self.group_id, "state": self.state, "protocol_type": self.protocol_type,
                "members": self.members, "topics": list(self.topics), "lag": self.lag}


def cluster_topics(cluster: Cluster, include: list[re.Pattern[str]] | None = None, *, include_internal: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> list[TopicInfo]:
    """``kmc topics``: the topics of ``cluster`` matching ``include``, with offsets (see :func:`describe_topics`)."""
    with KafkaSession(cluster, timeout) as session:
        return describe_topics(session, include, include_internal=include_internal)


def cluster_groups(cluster: Cluster, include: list[re.Pattern[str]] | None = None, *,
                   timeout: float = DEFAULT_TIMEOUT) -> list[GroupInfo]:
    """``kmc groups``: the consumer groups of ``cluster`` matching ``include`` (see :func:`describe_groups`)."""
    with KafkaSession(cluster, timeout) as session:
        return describe_groups(session, include)


def describe_groups(
    session: KafkaSession,
    include: list[re.Pattern[str]] | None = None,
    *,
    known_latest: Mapping[tuple[str, int], int] | None = None,
) -> list[GroupInfo]:
    """Consumer groups with state, member count and total lag against the latest offsets.

    ``known_latest`` maps (topic, partition) to a latest offset the caller already holds; only
    the partitions missing from it are asked for (saves a ListOffsets round in inventory).
    """
    admin = session.admin
    with translate_errors(session.cluster, "list consumer groups"):
        listed = [group for group in admin.list_groups() if matches(group["group_id"], include or [])]
    if not listed:
        return []
    ids = sorted(group["group_id"] for group in listed)
    with translate_errors(session.cluster, "describe consumer groups"):
        described = admin.describe_groups(ids)
        committed = admin.list_group_offsets(ids)
    wanted = {tp for offsets in committed.values() for tp, meta in offsets.items()
              if meta is not None and meta.offset >= 0}
    known = known_latest or {}
    latest: dict[TopicPartition, int] = {tp: known[(tp.topic, tp.partition)] for tp in wanted
                                         if (tp.topic, tp.partition) in known}
    latest.update(list_offsets(session, dict.fromkeys(wanted - latest.keys(), OffsetSpec.LATEST)))
    groups = []
    for group_id in ids:
        info = described.get(group_id) or {}
        offsets = {tp: meta.offset for tp, meta in (committed.get(group_id) or {}).items()
                   if meta is not None and meta.offset >= 0}
        partition_lag = {(tp.topic, tp.partition): max(0, latest[tp] - offset)
                         for tp, offset in offsets.items() if tp in latest}
        groups.append(GroupInfo(
            group_id=group_id,
            state=info.get("group_state") or next(g["group_state"] for g in listed if g["group_id"] == group_id),
            protocol_type=info.get("protocol_type") or "",
            members=len(info.get("members") or ()),
            topics=tuple(sorted({tp.topic for tp in offsets})),
            lag=sum(partition_lag.values()) if partition_lag else None,
            partition_lag=partition_lag,
        ))
    return groups


# Topic configs that legitimately differ between clusters: they describe placement, the local
# broker's message format, or are set by tiered storage and follower throttling. Mirror never
# copies them; diff ignores them unless asked for by name.
CLUSTER_SPECIFIC_CONFIGS = frozenset({
    "confluent.placement.constraints",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "message.downconversion.enable",
    "min.insync.replicas",
    "remote.storage.enable",
    "local.retention.ms",
    "local.retention.bytes",
    "unclean.leader.election.enable",
})


def topic_configs(session: KafkaSession, topics: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each topic's own (topic-level, non-default) configs, in one DescribeConfigs request."""
    return own_configs(describe_topic_configs(session, topics))


def describe_topic_configs(session: KafkaSession, topics: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every config of each topic as the broker describes it (``value``, ``config_source``), wherever its
    value comes from, in one DescribeConfigs request.

    A topic whose configs the broker refuses to describe is an AuthorizationError naming it: kafka-python
    3.0 drops DescribeConfigs' per-resource errors, which would make such a topic look as if it had no
    configs of its own (and a mirror create its copy without them). Asking for every config tells the two
    apart: a topic always has some.
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    names = sorted(set(topics))
    if not names:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    with translate_errors(session.cluster, "describe topic configs"):
        described = session.admin.describe_configs(resources, config_filter="all")
    by_topic = described.get("topic", {})
    _check_described(session, [name for name in names if not by_topic.get(name)])
    return {name: by_topic.get(name, {}) for name in names}


def own_configs(described: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """The topic-level (non-default) configs among :func:`describe_topic_configs`' answer."""
    return {name: {key: entry.get("value") for key, entry in sorted(entries.items())
                   if entry.get("config_source") == "DYNAMIC_TOPIC_CONFIG"}
            for name, entries in described.items()}


def _check_described(session: KafkaSession, empty: list[str]) -> None:
    """Raise for the topics among ``empty`` (no configs described) that this user may not describe."""
    if not empty:
        return
    with translate_errors(session.cluster, "describe topics"):
        described = session.admin.describe_topics(empty)
    for topic in described:
        error = kafka_errors.for_code(topic.get("error_code", 0))
        operations = topic.get("authorized_operations")
        if error is kafka_errors.TopicAuthorizationFailedError or (
                error is kafka_errors.NoError and operations is not None and "DESCRIBE_CONFIGS" not in operations):
            raise broker_error(f"{session.cluster.name}: describe configs of topic {topic['name']}: ",
                               kafka_errors.TopicAuthorizationFailedError)
        # otherwise it was deleted meanwhile: it has no configs to report


def effective_topic_configs(
    session: KafkaSession, topics: Iterable[str], keys: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The value each topic runs with for ``keys``, wherever it comes from (the topic's own
    setting, a broker or cluster default, Kafka's default), in one DescribeConfigs request.

    A key the broker does not report for a topic (the topic was just deleted) is left out.
    """
    names = sorted(set(topics))
    wanted = sorted(set(keys))
    if not names or not wanted:
        return {name: {} for name in names}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, wanted) for name in names]
    with translate_errors(session.cluster, "describe topic configs"):
        described = session.admin.describe_configs(resources, config_filter="all")
    by_topic = described.get("topic", {})
    return {
        name: {key: entry.get("value") for key, entry in by_topic.get(name, {}).items()
               if key in wanted and entry.get("value") is not None}
        for name in names
    }


@dataclass(frozen=True)
class LogDirInfo:
    path: str
    error: str | None  # e.g. KafkaStorageError for an offline directory
    total_bytes: int | None  # the volume's size and free space (DescribeLogDirs v4+, Kafka 3.3+)
    usable_bytes: int | None


@dataclass(frozen=True)
class BrokerLogDirs:
    broker_id: int
    dirs: tuple[LogDirInfo, ...] = ()
    # bytes of each partition replica on this broker (a replica being moved between
    # directories counts in both: it takes disk in both)
    partition_bytes: dict[tuple[str, int], int] = field(default_factory=dict)
    error: str | None = None  # the request to this broker failed

    @property
    def total_bytes(self) -> int | None:
        return _sum_known(d.total_bytes for d in self.dirs)

    @property
    def usable_bytes(self) -> int | None:
        return _sum_known(d.usable_bytes for d in self.dirs)


def _sum_known(values: Iterable[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def describe_log_dirs(
    session: KafkaSession, broker_ids: Iterable[int], partitions: Mapping[str, Iterable[int]]
) -> dict[int, BrokerLogDirs]:
    """Every log directory of the given brokers with the size of each of ``partitions`` (topic ->
    partition numbers) in it: one DescribeLogDirs request per broker.

    The partitions are named in the request because kafka-python, asked for "all", first fetches
    the metadata of every topic again to list them.

    A broker that cannot be asked becomes a BrokerLogDirs with ``error`` set; the others are
    still reported.
    """
    wanted = {topic: sorted(numbers) for topic, numbers in partitions.items()}
    result: dict[int, BrokerLogDirs] = {}
    for broker_id in sorted(set(broker_ids)):
        try:
            with translate_errors(session.cluster, f"describe log dirs of broker {broker_id}"):
                responses = session.admin.describe_log_dirs(wanted, brokers=[broker_id])
        except KmcError as exc:
            result[broker_id] = BrokerLogDirs(broker_id, error=str(exc))
            continue
        if not any(response["log_dirs"] for response in responses):
            # every broker has a log directory: none means the request was refused (kafka-python drops the
            # response's error code), which happens to a user without DESCRIBE on the cluster
            result[broker_id] = BrokerLogDirs(broker_id, error=f"{session.cluster.name}: broker {broker_id} reported "
                                                               "no log directories (not authorized: DESCRIBE on the "
                                                               "cluster)")
            continue
        dirs: list[LogDirInfo] = []
        sizes: dict[tuple[str, int], int] = {}
        for response in responses:
            for entry in response["log_dirs"]:
                error = kafka_errors.for_code(entry.get("error_code", 0))
                dirs.append(LogDirInfo(
                    path=entry.get("log_dir", ""),
                    error=None if error is kafka_errors.NoError else error.__name__,
                    total_bytes=_non_negative(entry.get("total_bytes")),
                    usable_bytes=_non_negative(entry.get("usable_bytes")),
                ))
                for topic in entry.get("topics") or ():
                    for part in topic.get("partitions") or ():
                        key = (topic["name"], part["partition_index"])
                        sizes[key] = sizes.get(key, 0) + part["partition_size"]
        result[broker_id] = BrokerLogDirs(broker_id, tuple(dirs), sizes)
    return result


def _non_negative(value: int | None) -> int | None:
    """Kafka sends -1 for "unknown"."""
    return value if value is not None and value >= 0 else None


_TEMPLATE_FIELD = re.compile(r"\{(topic|source)\}")


def render_topic_name(template: str, topic: str, source: str) -> str:
    """Map a source topic through a rename template: ``{topic}``, ``{source}`` (profile name)."""
    return _TEMPLATE_FIELD.sub(lambda match: topic if match.group(1) == "topic" else source, template)
