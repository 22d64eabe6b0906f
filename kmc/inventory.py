"""What every cluster holds and how healthy it is, gathered in parallel with batched requests.

:func:`gather` runs :func:`inventory_cluster` on each cluster at once (one failing cluster does
not stop the others); the ``*_rows`` functions turn the result into the rows of the four views
(plain dicts whose keys are the ``-o json`` contract). Library code: no printing.

Requests per cluster, whatever its number of topics: DescribeCluster, DescribeQuorum, Metadata,
two rounds of (Metadata + one ListOffsets per leader broker), one DescribeConfigs for all topics,
one DescribeLogDirs per live broker, and for consumer groups ListGroups (one per broker),
FindCoordinator, DescribeGroups and OffsetFetch (one per coordinator).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kmc._kafka_internals import NEWEST_KNOWN_BROKER_VERSION, broker_version, on_admin_request
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, Outcome, gather_clusters, translate_errors
from kmc.errors import KafkaOperationError, KmcError
from kmc.metadata import (
    BrokerLogDirs,
    GroupInfo,
    TopicInfo,
    describe_groups,
    describe_log_dirs,
    describe_topics,
    effective_topic_configs,
    matches,
)
from kmc.profiles import Cluster

MIN_ISR = "min.insync.replicas"
MAX_ERROR_LENGTH = 300  # kafka-python's messages can list thousands of partitions


CLUSTER_KEYS = (
    "cluster", "status", "error", "cluster_id", "controller", "brokers", "fenced_brokers", "kafka_version",
    "topics", "partitions", "under_replicated", "offline", "under_min_isr", "bytes", "records", "groups", "lag",
)
TOPIC_KEYS = ("topic", "clusters", "present", "missing", "unknown")
TOPIC_CELL_KEYS = ("partitions", "records", "bytes")
BROKER_KEYS = (
    "cluster", "status", "error", "broker", "host", "port", "rack", "fenced", "controller", "kafka_version",
    "leaders", "replicas", "bytes", "log_dirs", "disk_total", "disk_usable",
)
GROUP_KEYS = ("cluster", "status", "error", "group", "state", "protocol_type", "members", "topics", "lag")


# ------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class TopicSummary:
    """One topic in one cluster, with its health counts."""

    name: str
    internal: bool
    partitions: int
    replication_factor: int
    records: int | None  # latest minus earliest offsets: an upper bound (compaction, txn markers)
    bytes: int | None  # every replica's log size; None when some broker's log dirs are unknown
    under_replicated: int
    offline: int
    under_min_isr: int
    min_insync_replicas: int | None


@dataclass(frozen=True)
class BrokerSummary:
    broker_id: int
    host: str
    port: int
    rack: str | None
    fenced: bool
    controller: bool
    kafka_version: str | None
    leaders: int  # partitions of the selected topics it leads
    replicas: int  # replicas of the selected topics assigned to it
    bytes: int | None  # size of those replicas on its disks
    log_dirs: int | None
    disk_total: int | None
    disk_usable: int | None
    error: str | None = None  # its log dirs could not be read


@dataclass(frozen=True)
class ClusterInventory:
    cluster_id: str
    controller: int | None
    kafka_version: str | None
    brokers: tuple[BrokerSummary, ...]
    topics: tuple[TopicSummary, ...]
    groups: tuple[GroupInfo, ...] | None  # None when they could not be read
    # what could not be gathered (the rest was): each a one-line reason; the cluster is "partial"
    problems: tuple[str, ...] = ()
    requests: Mapping[str, int] = field(default_factory=dict)  # sent during the gathering, by API
    elapsed: float = 0.0  # seconds

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    @property
    def bytes(self) -> int | None:
        if any(topic.bytes is None for topic in self.topics):
            return None
        return sum(topic.bytes or 0 for topic in self.topics)

    @property
    def records(self) -> int | None:
        known = [topic.records for topic in self.topics if topic.records is not None]
        return sum(known) if known else (0 if not self.topics else None)

    @property
    def lag(self) -> int | None:
        known = [group.lag for group in self.groups or () if group.lag is not None]
        return sum(known) if known else None


# ----------------------------------------------------------------------------------- request count


class RequestCounter:
    """Counts the requests one admin client sends, by API name (the connection handshakes are not
    counted). kafka-python has no public per-request hook: see kmc._kafka_internals.on_admin_request. If
    kafka-python's internals change, counting quietly stops; nothing else is affected."""

    def __init__(self) -> None:
        self.by_api: Counter[str] = Counter()

    def attach(self, admin: Any) -> RequestCounter:
        on_admin_request(admin, self._count)
        return self

    def _count(self, api: str) -> None:
        self.by_api[api] += 1


def shorten(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------- gather


def gather(
    clusters: list[Cluster],
    include: list[re.Pattern[str]] | None = None,
    *,
    include_internal: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Outcome]:
    """Inventory every cluster in parallel; each Outcome holds a ClusterInventory or the error."""
    return gather_clusters(
        clusters,
        lambda session: inventory_cluster(session, include, include_internal=include_internal),
        timeout,
    )


def inventory_cluster(
    session: KafkaSession,
    include: list[re.Pattern[str]] | None = None,
    *,
    include_internal: bool = False,
) -> ClusterInventory:
    """One cluster: brokers, topics (those matching ``include``) with health, sizes, groups and lag."""
    started = time.perf_counter()
    counter = RequestCounter().attach(session.admin)
    info = session.describe()
    controller = _active_controller(session)
    if controller is None:
        controller = info.controller_id
    problems: list[str] = []
    try:
        topics = describe_topics(session, include, include_internal=include_internal)
    except KafkaOperationError as exc:
        # e.g. partitions that keep answering "not leader" (a leader moving, a broker busy creating
        # new partitions): kafka-python fails the whole ListOffsets call; report the rest
        problems.append(f"records unknown: {shorten(str(exc))}")
        topics = describe_topics(session, include, include_internal=include_internal, with_offsets=False)
    min_isr = effective_topic_configs(session, [topic.name for topic in topics], [MIN_ISR])
    live = [broker["id"] for broker in info.brokers if not broker.get("fenced")]
    log_dirs = describe_log_dirs(session, live, {topic.name: [part.partition for part in topic.partitions]
                                                 for topic in topics})
    # only from brokers that just answered: the connection to any other would still carry the
    # version data it inherits from the bootstrap broker
    versions = {broker_id: _broker_version(session, broker_id) for broker_id in live
                if log_dirs[broker_id].error is None}
    latest = {(topic.name, partition): offset for topic in topics for partition, offset in topic.latest.items()}
    groups: list[GroupInfo] | None
    try:
        groups = describe_groups(session, known_latest=latest)
    except KafkaOperationError as exc:
        problems.append(f"consumer groups unknown: {shorten(str(exc))}")
        groups = None
    if include and groups is not None:
        groups = _groups_on_topics(groups, include)
    problems.extend(f"log dirs of broker {broker_id} unknown: {shorten(dirs.error)}"
                    for broker_id, dirs in sorted(log_dirs.items()) if dirs.error)

    sizes_known = all(dirs.error is None for dirs in log_dirs.values())
    summaries = tuple(_summarize_topic(topic, min_isr.get(topic.name, {}), log_dirs, sizes_known) for topic in topics)
    brokers = tuple(
        _summarize_broker(broker, controller, versions.get(broker["id"]), log_dirs.get(broker["id"]), topics)
        for broker in info.brokers
    )
    labels = sorted({label for label in versions.values() if label}, key=_version_key)
    return ClusterInventory(
        cluster_id=info.cluster_id,
        controller=controller,
        kafka_version=",".join(labels) or None,
        brokers=brokers,
        topics=summaries,
        groups=None if groups is None else tuple(groups),
        problems=tuple(problems),
        requests=dict(counter.by_api),
        elapsed=time.perf_counter() - started,
    )


def _active_controller(session: KafkaSession) -> int | None:
    """The KRaft quorum leader. In KRaft, brokers answer Metadata and DescribeCluster with a
    random live broker as "controller"; DescribeQuorum names the real one. None on clusters
    that cannot answer it (ZooKeeper mode, no DESCRIBE permission on the cluster)."""
    try:
        with translate_errors(session.cluster, "describe metadata quorum"):
            quorum = session.admin.describe_metadata_quorum()
    except KmcError:
        return None
    for topic in quorum.get("topics") or ():
        for partition in topic.get("partitions") or ():
            leader = partition.get("leader_id")
            if leader is not None and leader >= 0:
                return leader
    return None


def _broker_version(session: KafkaSession, broker_id: int) -> str | None:
    """The version kafka-python inferred from the broker's ApiVersions answer, e.g. "4.3+"; None when there
    is no connection to that broker."""
    version = broker_version(session.admin, broker_id)
    return version_label(version) if version else None


def version_label(version: tuple[int, ...]) -> str:
    """"4.2" for a version kafka-python can tell; "4.3+" for its newest, which newer brokers also match."""
    text = ".".join(str(part) for part in version)
    return f"{text}+" if version >= NEWEST_KNOWN_BROKER_VERSION else text


def _version_key(label: str) -> tuple[int, ...]:
    return tuple(int(part) for part in label.rstrip("+").split("."))


def _summarize_topic(topic: TopicInfo, configs: Mapping[str, str], log_dirs: Mapping[int, BrokerLogDirs],
                     sizes_known: bool) -> TopicSummary:
    min_isr = _int_or_none(configs.get(MIN_ISR))
    size: int | None = None
    if sizes_known:
        size = sum(dirs.partition_bytes.get((topic.name, part.partition), 0)
                   for dirs in log_dirs.values() for part in topic.partitions)
    return TopicSummary(
        name=topic.name,
        internal=topic.internal,
        partitions=len(topic.partitions),
        replication_factor=topic.replication_factor,
        records=topic.records,
        bytes=size,
        # online partitions only, as Kafka's own metrics count them: an offline one is counted as
        # offline (and what its ISR shows then differs between Kafka versions)
        under_replicated=sum(part.online and part.under_replicated for part in topic.partitions),
        offline=sum(not part.online for part in topic.partitions),
        # acks=all writes to these fail
        under_min_isr=sum(part.online and min_isr is not None and len(part.isr) < min_isr
                          for part in topic.partitions),
        min_insync_replicas=min_isr,
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _summarize_broker(broker: Mapping[str, Any], controller: int | None, version: str | None,
                      dirs: BrokerLogDirs | None, topics: Iterable[TopicInfo]) -> BrokerSummary:
    broker_id = broker["id"]
    leaders = replicas = 0
    hosted: list[tuple[str, int]] = []
    for topic in topics:
        for part in topic.partitions:
            leaders += part.leader == broker_id
            if broker_id in part.replicas:
                replicas += 1
                hosted.append((topic.name, part.partition))
    readable = dirs is not None and dirs.error is None
    return BrokerSummary(
        broker_id=broker_id,
        host=broker["host"],
        port=broker["port"],
        rack=broker.get("rack"),
        fenced=bool(broker.get("fenced")),
        controller=broker_id == controller,
        kafka_version=version,
        leaders=leaders,
        replicas=replicas,
        bytes=sum(dirs.partition_bytes.get(key, 0) for key in hosted) if readable else None,
        log_dirs=len(dirs.dirs) if readable else None,
        disk_total=dirs.total_bytes if readable else None,
        disk_usable=dirs.usable_bytes if readable else None,
        error=dirs.error if dirs is not None else None,
    )


def _groups_on_topics(groups: Iterable[GroupInfo], include: list[re.Pattern[str]]) -> list[GroupInfo]:
    """With --topics: the groups that committed offsets on a selected topic, lag on those topics only."""
    kept = []
    for group in groups:
        topics = tuple(topic for topic in group.topics if matches(topic, include))
        if not topics:
            continue
        partition_lag = {key: lag for key, lag in group.partition_lag.items() if matches(key[0], include)}
        kept.append(replace(group, topics=topics, partition_lag=partition_lag,
                            lag=sum(partition_lag.values()) if partition_lag else None))
    return kept


# ------------------------------------------------------------------------------------------ views


def _base_row(outcome: Outcome, keys: tuple[str, ...]) -> dict[str, Any]:
    """cluster, status (ok|partial|error) and error set; every other key None."""
    row: dict[str, Any] = dict.fromkeys(keys)
    row["cluster"] = outcome.cluster.name
    if outcome.error is not None:
        row["status"], row["error"] = "error", shorten(outcome.error.one_line())
    elif outcome.value.problems:
        row["status"], row["error"] = "partial", "; ".join(outcome.value.problems)
    else:
        row["status"] = "ok"
    return row


def cluster_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """The clusters view: one row per cluster; a failed cluster has the same keys, nulls and its error;
    a cluster with some data missing is "partial", its error saying what is missing."""
    rows = []
    for outcome in outcomes:
        row = _base_row(outcome, CLUSTER_KEYS)
        inventory: ClusterInventory | None = outcome.value
        if inventory is not None:
            row.update(
                cluster_id=inventory.cluster_id,
                controller=inventory.controller,
                brokers=len(inventory.brokers),
                fenced_brokers=sum(broker.fenced for broker in inventory.brokers),
                kafka_version=inventory.kafka_version,
                topics=len(inventory.topics),
                partitions=sum(topic.partitions for topic in inventory.topics),
                under_replicated=sum(topic.under_replicated for topic in inventory.topics),
                offline=sum(topic.offline for topic in inventory.topics),
                under_min_isr=sum(topic.under_min_isr for topic in inventory.topics),
                bytes=inventory.bytes,
                records=inventory.records,
                groups=None if inventory.groups is None else len(inventory.groups),
                lag=inventory.lag,
            )
        rows.append(row)
    return rows


def topic_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """The topics view: one row per topic name seen anywhere, with a cell per reachable cluster
    (None where the topic is missing); failed clusters are listed under ``unknown``."""
    outcomes = list(outcomes)
    reachable = [outcome for outcome in outcomes if outcome.error is None]
    failed = [outcome.cluster.name for outcome in outcomes if outcome.error is not None]
    by_cluster = {outcome.cluster.name: {topic.name: topic for topic in outcome.value.topics} for outcome in reachable}
    names = sorted({name for topics in by_cluster.values() for name in topics})
    rows = []
    for name in names:
        cells: dict[str, dict[str, Any] | None] = {}
        for cluster, topics in by_cluster.items():
            topic = topics.get(name)
            cells[cluster] = None if topic is None else {
                "partitions": topic.partitions, "records": topic.records, "bytes": topic.bytes}
        rows.append({
            "topic": name,
            "clusters": cells,
            "present": [cluster for cluster, cell in cells.items() if cell is not None],
            "missing": [cluster for cluster, cell in cells.items() if cell is None],
            "unknown": list(failed),
        })
    return rows


def broker_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """The brokers view: one row per broker of each cluster; a failed cluster is one error row."""
    rows = []
    for outcome in outcomes:
        if outcome.error is not None:
            rows.append(_base_row(outcome, BROKER_KEYS))
            continue
        for broker in outcome.value.brokers:
            row = _base_row(outcome, BROKER_KEYS)
            row.update(
                status="error" if broker.error else "ok",
                error=shorten(broker.error) if broker.error else None,
                broker=broker.broker_id,
                host=broker.host,
                port=broker.port,
                rack=broker.rack,
                fenced=broker.fenced,
                controller=broker.controller,
                kafka_version=broker.kafka_version,
                leaders=broker.leaders,
                replicas=broker.replicas,
                bytes=broker.bytes,
                log_dirs=broker.log_dirs,
                disk_total=broker.disk_total,
                disk_usable=broker.disk_usable,
            )
            rows.append(row)
    return rows


def group_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """The groups view: one row per consumer group of each cluster; a failed cluster, or one whose
    groups could not be read, is one error row."""
    rows = []
    for outcome in outcomes:
        if outcome.error is not None or outcome.value.groups is None:
            row = _base_row(outcome, GROUP_KEYS)
            row["status"] = "error"
            rows.append(row)
            continue
        for group in outcome.value.groups:
            row = _base_row(outcome, GROUP_KEYS)
            row.update(status="ok", error=None, group=group.group_id, state=group.state,
                       protocol_type=group.protocol_type, members=group.members, topics=list(group.topics),
                       lag=group.lag)
            rows.append(row)
    return rows
