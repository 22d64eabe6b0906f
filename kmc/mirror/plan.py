"""What a mirror will do before it copies anything: which source topics map to which target topics, what
must be created, which partitions added, which configs drift. :func:`plan_mirror` only reads;
:func:`apply_plan` makes the target match the plan. Library code: no printing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kafka.errors as kafka_errors
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

from kmc.acls import (
    AclSync,
    Verdict,
    acls_to_sync,
    apply_acl_sync,
    check_mirror,
    permission_failure,
    raise_for_hidden_topics,
)
from kmc.client import KafkaSession, broker_error, translate_errors
from kmc.errors import AuthorizationError, KafkaOperationError, KmcError, UsageError
from kmc.metadata import (
    CLUSTER_SPECIFIC_CONFIGS,
    compile_patterns,
    describe_topic_configs,
    describe_topics,
    is_internal,
    is_valid_topic_name,
    own_configs,
    render_topic_name,
    topic_configs,
)
from kmc.profiles import MAX_TOPIC_NAME, NAME_RE, PARTITIONERS, validate_rename

DEFAULT_FLOW = "mirror"
"""The flow name of an ad-hoc ``kmc mirror`` (checkpoint keys and the lock include it)."""

DEFAULT_MAX_MESSAGE_BYTES = 1048588  # Kafka's default max.message.bytes


def transaction_timeout_ms(delivery_timeout: float) -> int:
    """--exactly-once: how long a transaction may stay open before the coordinator aborts it (fencing its
    producer): longer than a batch may be retried, within the brokers' default maximum (15 min)."""
    return min(900_000, int(delivery_timeout * 1000) + 60_000)


@dataclass(frozen=True)
class MirrorSpec:
    """What to mirror and how; shared by ``kmc mirror``, ``kmc aggregate`` and named flows.

    ``start`` applies only to partitions without a checkpoint: ``"earliest"``, ``"latest"`` or an epoch
    timestamp in milliseconds (the first offset at or after it).
    """

    topics: tuple[str, ...] = ()  # anchored include regexes; empty: every topic
    exclude: tuple[str, ...] = ()
    rename: str = "{topic}"
    flow: str = DEFAULT_FLOW
    start: str | int = "earliest"
    sync_configs: bool = False
    replication_factor: int | None = None
    checkpoint_interval: float = 1.0  # seconds between checkpoint writes in follow mode
    refresh_interval: float = 30.0  # seconds between looks for new topics and partitions (follow)
    progress_interval: float = 1.0  # seconds between progress callbacks
    # "keep": each batch keeps its source codec (records that cannot pass as batches: lz4); a codec
    # recompresses everything with it; None sends uncompressed
    compression: str | None = "keep"
    delivery_timeout: float = 300.0  # seconds the producer retries one batch before giving up on it
    # "same": source partition i -> target partition i; "key": murmur2(key) mod the target's partition count,
    # as Kafka's producer would (kmc aggregate --merge --partitioner key); see copypath.KeyedCopyPath
    partitioner: str = "same"
    # (index, count): copy only the source partitions p with p % count == index (kmc mirror --workers runs
    # one worker process per shard); None copies every partition
    shard: tuple[int, int] | None = None
    # records and their checkpoints in one target transaction per checkpoint interval (--exactly-once)
    exactly_once: bool = False
    # every record stamped with kmc-origin (merge mode: consumers of a merged topic tell sources apart by
    # it); otherwise batches of the source's own producers are forwarded whole, unstamped
    stamp_records: bool = False
    # copy the source's ACLs of the mirrored topics to the target, renamed, minus ALLOW WRITE (--sync-acls;
    # kmc.acls has the rules)
    sync_acls: bool = False
    # consumer groups (anchored regexes) whose offsets are translated into the target and committed there
    # while mirroring (--sync-groups; kmc/mirror/groups.py), every sync_interval seconds with --follow,
    # once at the end with --once
    sync_groups: tuple[str, ...] = ()
    sync_interval: float = 10.0
    # --group NAME: copy as one member of a Kafka group on the target; the group's members share the
    # source partitions (kmc/mirror/member.py, docs/scale-out.md). session_timeout: seconds a member may be
    # silent before the others take its partitions over.
    group: str | None = None
    session_timeout: float = 10.0

    def __post_init__(self) -> None:
        # as typed on a command line: any case, "none" for uncompressed
        if isinstance(self.compression, str):
            codec = self.compression.strip().lower()
            object.__setattr__(self, "compression", None if codec == "none" else codec)

    def owns(self, partition: int) -> bool:
        """Whether this spec's shard copies source partition ``partition``."""
        return self.shard is None or partition % self.shard[1] == self.shard[0]

    @property
    def transaction_timeout_ms(self) -> int:
        return transaction_timeout_ms(self.delivery_timeout)

    def validate(self) -> None:
        """Raise UsageError for anything the user typed wrong, before any cluster is contacted."""
        compile_patterns(self.topics, "--topics")
        compile_patterns(self.exclude, "--exclude")
        validate_rename(self.rename, "--rename", error=UsageError)
        if not NAME_RE.match(self.flow):
            raise UsageError(f"--flow: invalid flow name '{self.flow}'", hint="use letters, digits, '.', '_' or '-'")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise UsageError("--replication-factor must be at least 1")
        if self.compression not in (None, "keep", "gzip", "snappy", "lz4", "zstd"):
            raise UsageError(f"--compression: unknown codec '{self.compression}'",
                             hint="use keep, none, gzip, snappy, lz4 or zstd")
        if self.delivery_timeout < 2:
            raise UsageError("--delivery-timeout must be at least 2 seconds")
        if self.exactly_once and self.checkpoint_interval * 1000 >= self.transaction_timeout_ms:
            # each checkpoint commits the open transaction: the coordinator would abort every one first
            raise UsageError(f"--checkpoint-interval {self.checkpoint_interval:g} is not shorter than the transaction "
                             f"timeout ({self.transaction_timeout_ms // 1000} s) of --exactly-once",
                             hint="the transaction timeout is --delivery-timeout + 60 s, at most 900 s: use a shorter "
                                  "--checkpoint-interval or a longer --delivery-timeout")
        if self.partitioner not in PARTITIONERS:
            raise UsageError(f"--partitioner: '{self.partitioner}' is not 'same' or 'key'")
        compile_patterns(self.sync_groups, "--sync-groups")
        if self.sync_interval < 1:
            raise UsageError("--sync-interval must be at least 1 second")
        if self.sync_groups and self.partitioner != "same":
            raise UsageError("--sync-groups needs partition i copied to partition i (--partitioner same): "
                             "offsets cannot be translated across a repartitioning")
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise UsageError(f"shard {self.shard[0]} of {self.shard[1]} does not exist")
        parse_start(self.start)
        if self.group is not None and not NAME_RE.match(self.group):
            raise UsageError(f"--group: invalid group name '{self.group}'", hint="use letters, digits, '.', '_' or '-'")
        if not 6 <= self.session_timeout <= 1800:
            raise UsageError("--session-timeout must be between 6 and 1800 seconds",
                             hint="Kafka's brokers accept 6 s to 30 min by default "
                                  "(group.min.session.timeout.ms, group.max.session.timeout.ms)")


# KMC_COPY_PATH: "batches" (the default: whole batches where possible, the byte walk elsewhere), "walk" (the
# byte walk for every batch) or "records" (decoded records only): for comparisons and as an escape hatch;
# see docs/mirror.md.
COPY_PATHS = ("batches", "walk", "records")
KEEP_CODEC = "keep"  # MirrorSpec.compression: each batch keeps its source codec (the default)


def copy_mode(spec: MirrorSpec) -> tuple[str, str]:
    """How a mirror copies, and why (kmc/mirror/batchpath.py, copypath.py): ``whole`` (the batches of the
    source's own producers travel whole, still compressed; copies other mirrors wrote into the source are
    walked and stamped with their origin), ``walk`` (every batch walked record by record as bytes) or
    ``records`` (every record decoded and produced again)."""
    chosen = os.environ.get("KMC_COPY_PATH", "batches").strip().lower() or "batches"
    if chosen not in COPY_PATHS:
        raise UsageError(f"KMC_COPY_PATH={chosen!r}: expected one of {', '.join(COPY_PATHS)}")
    if spec.partitioner == "key":
        return "records", "--partitioner key reads every record's key"
    if chosen != "batches":
        return ("records" if chosen == "records" else "walk"), f"KMC_COPY_PATH={chosen}"
    if spec.stamp_records:
        return "walk", "several sources merge into one topic: every record is stamped with its origin (kmc-origin)"
    if spec.compression != KEEP_CODEC:
        return "walk", f"--compression {spec.compression or 'none'} recompresses every batch"
    return "whole", ("batches of the source's own producers travel whole; copies other mirrors wrote into the "
                     "source are walked and stamped with their origin")


def parse_start(value: str | int) -> str | int:
    """``earliest``, ``latest``, epoch milliseconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"--from: timestamp {value} is negative")
        return value
    text = value.strip().lower()
    if text in ("earliest", "latest"):
        return text
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"--from: '{value}' is not earliest, latest, epoch milliseconds or an ISO-8601 time",
                         hint="e.g. --from 2024-05-01T12:00:00Z or --from 1714564800000") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class TopicPlan:
    """One source topic and what the target needs for it."""

    source_topic: str
    target_topic: str
    partitions: int  # source partition count
    target_partitions: int | None  # None: the target topic does not exist yet
    replication_factor: int  # the new topic's (create), else the existing target topic's
    configs: Mapping[str, str]  # source configs that travel (cluster-specific keys removed)
    config_drift: Mapping[str, Mapping[str, str | None]]  # key -> {"source": v, "target": v}
    actions: tuple[str, ...]  # "create", "add_partitions", "sync_configs"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # the source topic's effective max.message.bytes
    source_topic_id: str | None = None
    target_topic_id: str | None = None  # None until the target topic exists

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_topic": self.source_topic,
            "target_topic": self.target_topic,
            "partitions": self.partitions,
            "target_partitions": self.target_partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
            "config_drift": {key: dict(value) for key, value in self.config_drift.items()},
            "actions": list(self.actions),
        }


@dataclass(frozen=True)
class Plan:
    flow: str
    source: str  # profile names
    target: str
    source_cluster_id: str
    target_cluster_id: str
    target_brokers: int
    topics: tuple[TopicPlan, ...]
    sync_configs: bool
    warnings: tuple[str, ...] = ()
    checkpoint_topic_exists: bool = False
    copy: tuple[str, str] = ("whole", "")  # copy_mode(spec): (mode, why)
    acl_sync: AclSync | None = None  # with --sync-acls: the target ACLs to create
    # a dry run's check of every permission the mirror needs: (profile name, verdict) pairs (kmc.acls)
    permissions: tuple[tuple[str, Verdict], ...] = ()
    refused: bool = False  # the clusters refused what planning asks: only ``permissions`` says anything

    @property
    def max_message_bytes(self) -> int:
        return max((topic.max_message_bytes for topic in self.topics), default=DEFAULT_MAX_MESSAGE_BYTES)

    def to_dict(self) -> dict[str, Any]:
        """The ``--dry-run -o json`` document (keys documented in docs/mirror.md)."""
        from kmc.mirror.checkpoints import CHECKPOINT_TOPIC

        return {
            "flow": self.flow,
            "source": self.source,
            "target": self.target,
            "source_cluster_id": self.source_cluster_id or None,
            "target_cluster_id": self.target_cluster_id or None,
            "checkpoint_topic": None if self.refused else {"name": CHECKPOINT_TOPIC,
                                                           "exists": self.checkpoint_topic_exists},
            "copy": {"mode": self.copy[0], "why": self.copy[1]},
            "topics": [topic.to_dict() for topic in self.topics],
            "acls": None if self.acl_sync is None else self.acl_sync.to_dict(),
            "permissions": [verdict.to_dict(cluster) for cluster, verdict in self.permissions],
            "warnings": list(self.warnings),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per source topic (``-o ndjson`` and ``-o csv``): the ``topics`` of :meth:`to_dict`."""
        return [topic.to_dict() for topic in self.topics]


SAME_CLUSTER_HINT = "rename the copies with --rename (or a flow's rename key), e.g. '{topic}.copy'"


def checked_plan(source: KafkaSession, target: KafkaSession, spec: MirrorSpec) -> tuple[Plan, KmcError | None]:
    """A dry run: the plan, and every permission the mirror needs checked on both clusters (kmc.acls), with
    the error to end on (exit 5) when one is missing. When the plan itself is refused, the permissions are
    checked all the same and the plan is an empty one that says so (``refused``)."""
    plan: Plan | None = None
    denied: KmcError | None = None
    try:
        plan = plan_mirror(source, target, spec)
    except AuthorizationError as exc:
        denied = exc
    checks = check_mirror(source, target, spec, plan)
    permissions = tuple((cluster.name, verdict) for cluster, verdicts in checks for verdict in verdicts)
    if plan is None:
        plan = Plan(spec.flow, source.cluster.name, target.cluster.name, "", "", 0, (), spec.sync_configs,
                    refused=True)
    return dataclasses.replace(plan, permissions=permissions), permission_failure(checks) or denied


def plan_mirror(source: KafkaSession, target: KafkaSession, spec: MirrorSpec) -> Plan:
    """Read both clusters and work out what the target needs; changes nothing."""
    from kmc.mirror.checkpoints import CHECKPOINT_TOPIC

    spec.validate()
    include = compile_patterns(spec.topics, "--topics")
    exclude = compile_patterns(spec.exclude, "--exclude")
    source_id = source.cluster_id()
    target_info = target.describe()
    if source_id and source_id == target_info.cluster_id and spec.rename == "{topic}":
        raise UsageError(f"{source.cluster.name} and {target.cluster.name} are the same cluster "
                         f"({source_id}): mirroring topics onto themselves", hint=SAME_CLUSTER_HINT)
    source_topics = [topic for topic in describe_topics(source, include, exclude, with_offsets=False)
                     if not topic.internal]
    raise_for_hidden_topics(source, spec.topics, [topic.name for topic in source_topics], spec.exclude)
    mapping = {topic.name: render_topic_name(spec.rename, topic.name, source.cluster.name)
               for topic in source_topics}
    _check_target_names(mapping, spec.rename)
    wanted = set(mapping.values())
    target_all = describe_topics(target, include_internal=True, with_offsets=False)
    target_topics = {topic.name: topic for topic in target_all if topic.name in wanted}
    checkpoint_exists = any(topic.name == CHECKPOINT_TOPIC for topic in target_all)
    described = describe_topic_configs(source, mapping)  # (one request: own configs and effective limits)
    source_configs = _travelling(own_configs(described))
    target_configs = _travelling(topic_configs(target, target_topics))
    max_bytes = _max_message_bytes(described)
    brokers = len(target_info.brokers)
    if spec.replication_factor is not None and spec.replication_factor > brokers:
        raise UsageError(f"--replication-factor {spec.replication_factor}: {target.cluster.name} has only "
                         f"{brokers} broker(s)")

    warnings: list[str] = []
    plans = []
    for topic in source_topics:
        name = mapping[topic.name]
        configs = source_configs.get(topic.name, {})
        existing = target_topics.get(name)
        if existing is None:
            rf = spec.replication_factor or max(1, min(topic.replication_factor, brokers))
            plans.append(TopicPlan(topic.name, name, len(topic.partitions), None, rf, configs, {}, ("create",),
                                   max_bytes.get(topic.name, DEFAULT_MAX_MESSAGE_BYTES), topic.topic_id))
            continue
        actions = []
        if spec.partitioner == "key":
            pass  # records are hashed over the target's partitions, whatever their number: never add any
        elif len(existing.partitions) < len(topic.partitions):
            actions.append("add_partitions")
        elif len(existing.partitions) > len(topic.partitions):
            warnings.append(f"{name}: the target has {len(existing.partitions)} partitions, the source "
                            f"{len(topic.partitions)}; partitions {len(topic.partitions)} and up receive nothing")
        drift = _drift(configs, target_configs.get(name, {}))
        if drift and spec.sync_configs:
            actions.append("sync_configs")
        elif drift:
            warnings.append(f"{name}: configs differ from the source ({', '.join(sorted(drift))}); "
                            "--sync-configs makes them equal")
        plans.append(TopicPlan(topic.name, name, len(topic.partitions), len(existing.partitions),
                               existing.replication_factor, configs, drift, tuple(actions),
                               max_bytes.get(topic.name, DEFAULT_MAX_MESSAGE_BYTES), topic.topic_id,
                               existing.topic_id))
    if not source_topics:
        warnings.append("no source topic matches the selection")
    acl_sync = acls_to_sync(source, target, mapping) if spec.sync_acls else None
    if acl_sync is not None and acl_sync.skipped:
        warnings.append(f"--sync-acls: {len(acl_sync.skipped)} ALLOW WRITE ACL(s) of the source are not copied "
                        "(only the mirror writes to a mirrored topic)")
    return Plan(
        flow=spec.flow,
        source=source.cluster.name,
        target=target.cluster.name,
        source_cluster_id=source_id,
        target_cluster_id=target_info.cluster_id,
        target_brokers=brokers,
        topics=tuple(plans),
        sync_configs=spec.sync_configs,
        warnings=tuple(warnings),
        checkpoint_topic_exists=checkpoint_exists,
        copy=copy_mode(spec),
        acl_sync=acl_sync,
    )


def _check_target_names(mapping: dict[str, str], template: str) -> None:
    seen: dict[str, str] = {}
    for source_name, target_name in mapping.items():
        if not is_valid_topic_name(target_name):
            too_long = len(target_name) > MAX_TOPIC_NAME
            raise UsageError(f"--rename '{template}' maps {source_name} to '{target_name}', not a valid topic name",
                             hint=f"Kafka allows {MAX_TOPIC_NAME} characters" if too_long else
                             "topic names use letters, digits, '.', '_' and '-'")
        if is_internal(target_name):
            raise UsageError(f"--rename '{template}' maps {source_name} to '{target_name}', a name reserved for "
                             "Kafka's and kmc's internal topics")
        if target_name in seen:
            raise UsageError(f"--rename '{template}' maps both {seen[target_name]} and {source_name} to "
                             f"'{target_name}'")
        seen[target_name] = source_name


def _travelling(configs: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Topic configs minus the ones that describe the cluster rather than the data."""
    return {topic: {key: value for key, value in values.items() if key not in CLUSTER_SPECIFIC_CONFIGS}
            for topic, values in configs.items()}


def _drift(source: Mapping[str, str], target: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Keys whose value differs; a key set on one side only compares against None (the default)."""
    return {key: {"source": source.get(key), "target": target.get(key)}
            for key in sorted(set(source) | set(target)) if source.get(key) != target.get(key)}


def _max_message_bytes(described: dict[str, dict[str, dict[str, Any]]]) -> dict[str, int]:
    """Each topic's effective max.message.bytes (its own or the broker default)."""
    values = {name: str(entries.get("max.message.bytes", {}).get("value") or "") for name, entries in described.items()}
    return {name: int(value) for name, value in values.items() if value.isdigit()}


def apply_plan(target: KafkaSession, plan: Plan) -> list[str]:
    """Create missing topics, add partitions and (when the plan says so) sync configs and ACLs on the target.

    Returns one line per change made. A topic created meanwhile by someone else (another source of an
    aggregate) is not an error.
    """
    done: list[str] = []
    admin = target.admin
    creates = {topic.target_topic: {"num_partitions": topic.partitions,
                                    "replication_factor": topic.replication_factor,
                                    "configs": dict(topic.configs)}
               for topic in plan.topics if "create" in topic.actions}
    if creates:
        with translate_errors(target.cluster, "create topics"):
            response = admin.create_topics(creates, raise_errors=False)
        for entry in response.get("topics", []):
            error = kafka_errors.for_code(entry.get("error_code", 0))
            if error is kafka_errors.NoError:
                done.append(f"created {entry['name']} ({creates[entry['name']]['num_partitions']} partitions, "
                            f"replication factor {creates[entry['name']]['replication_factor']})")
            elif error is not kafka_errors.TopicAlreadyExistsError:
                raise broker_error(f"{target.cluster.name}: create topic {entry['name']}: ", error,
                                   entry.get("error_message") or "")
    grow = {topic.target_topic: topic.partitions for topic in plan.topics if "add_partitions" in topic.actions}
    if grow:
        with translate_errors(target.cluster, "add partitions"):
            response = admin.create_partitions(grow, raise_errors=False)
        for result in getattr(response, "results", []):
            error = kafka_errors.for_code(result.error_code)
            if error is kafka_errors.NoError:
                done.append(f"added partitions to {result.name} (now {grow[result.name]})")
            elif error is not kafka_errors.InvalidPartitionsError:  # already grown by someone else
                raise broker_error(f"{target.cluster.name}: add partitions to {result.name}: ", error,
                                   result.error_message or "")
    syncs = [topic for topic in plan.topics if "sync_configs" in topic.actions]
    if syncs:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topic.target_topic, configs={
                key: (AlterConfigOp.SET, values["source"]) if values["source"] is not None
                else (AlterConfigOp.DELETE, None)
                for key, values in topic.config_drift.items()})
            for topic in syncs
        ]
        with translate_errors(target.cluster, "sync topic configs"):
            results = admin.alter_configs(resources, raise_on_unknown=False, incremental=True)
        for topic in syncs:
            outcome = results.get("topic", {}).get(topic.target_topic, "OK")
            if outcome != "OK":
                raise KafkaOperationError(f"{target.cluster.name}: sync configs of {topic.target_topic}: {outcome}")
            done.append(f"synced configs of {topic.target_topic} ({', '.join(sorted(topic.config_drift))})")
    if creates or grow:
        _wait_for_partitions(target, {topic.target_topic: topic.partitions for topic in plan.topics
                                      if topic.target_topic in creates or topic.target_topic in grow})
    if plan.acl_sync is not None:
        done += apply_acl_sync(target, plan.acl_sync)
    return done


def _wait_for_partitions(session: KafkaSession, wanted: dict[str, int], timeout: float | None = None) -> None:
    """Block until the target's metadata shows every new partition with a leader."""
    import time

    deadline = time.monotonic() + (timeout if timeout is not None else max(10.0, session.timeout))
    while True:
        topics = {topic.name: topic for topic in describe_topics(session, with_offsets=False)
                  if topic.name in wanted}
        if all(name in topics and len(topics[name].partitions) >= count
               and all(part.online for part in topics[name].partitions) for name, count in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise KafkaOperationError(f"{session.cluster.name}: new topics or partitions did not get leaders in time")
        time.sleep(0.2)
