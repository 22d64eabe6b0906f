"""Mirror progress, stored in the target cluster's compacted ``kmc.checkpoints`` topic.

One record per (flow, source cluster id, source topic, partition)::

    key   "{flow}/{source_cluster_id}/{source_topic}/{partition}"
    value {"next_offset": N, "target_topic": "...", "target_next_offset": M, "updated_ms": T,
           "source_topic_id": "...", "target_topic_id": "...", "gaps": [...],
           "member": "host:pid", "writer": "kmc/..."}

``next_offset`` is the next source offset to copy; every record before it is acknowledged by the target.
``target_next_offset`` is the target partition's end offset right after the last of those records was
acknowledged: on a restart, ``target end offset - target_next_offset`` is the number of records written
after the checkpoint, which the restart copies again. The topic ids (Kafka's, since 2.8) tell a topic
recreated under the mirror from the one that was copied; ``gaps`` lists the most recent data gaps found
on the partition (docs/mirror.md). ``member`` (``host:pid``) names the group member that copies the
partition (``--group``, docs/scale-out.md), ``writer`` the transactional id it commits with under
``--exactly-once``, which the next owner fences. Older checkpoints without ids or gaps are read as they
are. The source is never written to.

Anchors, for translating consumer-group offsets (the offset map): a second record per partition,

    key   "anchors/{flow}/{source_cluster_id}/{source_topic}/{partition}"
    value [[next_offset, target_next_offset, updated_ms], ...]   (oldest first, at most MAX_ANCHORS)

each pair a checkpoint at which the copy (re)started or that was kept as a waypoint: from an anchor on, the
target partition holds this mirror's copies of the source's records from ``next_offset`` in order, starting
at ``target_next_offset`` (plus any other writer's records and transaction markers). A source offset
translates exactly by counting the records copied since the nearest anchor before it (kmc/mirror/offsets).
Written only when the copy restarts, rewinds or finds a gap, and every ANCHOR_INTERVAL while it moves.

Reading: :meth:`CheckpointStore.load` reads to the high watermark and applies read_committed itself
(kmc/mirror/logreader.py), so an open transaction of another writer never hides newer checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import kafka.errors as kafka_errors

from kmc._kafka_internals import close_producer
from kmc.client import KafkaSession, authorization_error, broker_error, translate_errors
from kmc.errors import KafkaOperationError
from kmc.mirror import producer_hooks
from kmc.mirror.logreader import read_topic

CHECKPOINT_TOPIC = "kmc.checkpoints"
CHECKPOINT_PARTITIONS = 3
CHECKPOINT_CONFIGS = {
    "cleanup.policy": "compact",
    # Small segments that roll often, so the cleaner keeps the log near one value per key and a reader at
    # start-up reads few superseded values: a busy partition writes one checkpoint a second.
    "segment.ms": str(2 * 60 * 1000),
    "segment.bytes": str(8 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": str(5 * 60 * 1000),
}
MAX_GAPS = 10  # recent gaps kept in a checkpoint
MAX_ANCHORS = 200  # offset-map anchors kept per partition (the oldest go first)
ANCHOR_INTERVAL = 600.0  # seconds between waypoint anchors of a partition that is copying


@dataclass(frozen=True)
class Checkpoint:
    next_offset: int
    target_topic: str
    target_next_offset: int
    updated_ms: int = 0
    source_topic_id: str | None = None
    target_topic_id: str | None = None
    gaps: tuple[dict[str, Any], ...] = ()  # Gap.to_dict() of the most recent gaps, oldest first
    member: str | None = None  # --group: the member (host:pid) that wrote it
    writer: str | None = None  # --group --exactly-once: the transactional id it committed in

    def to_json(self) -> bytes:
        value: dict[str, Any] = {"next_offset": self.next_offset, "target_topic": self.target_topic,
                                 "target_next_offset": self.target_next_offset, "updated_ms": self.updated_ms}
        if self.source_topic_id:
            value["source_topic_id"] = self.source_topic_id
        if self.target_topic_id:
            value["target_topic_id"] = self.target_topic_id
        if self.gaps:
            value["gaps"] = list(self.gaps[-MAX_GAPS:])
        if self.member:
            value["member"] = self.member
        if self.writer:
            value["writer"] = self.writer
        return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes) -> Checkpoint:
        """Raises ValueError, KeyError or TypeError for a value that is not a checkpoint."""
        data = json.loads(value)
        gaps = data.get("gaps") or []
        if not isinstance(gaps, list) or not all(isinstance(gap, dict) for gap in gaps):
            raise TypeError("gaps is not a list of objects")
        return cls(int(data["next_offset"]), str(data["target_topic"]), int(data["target_next_offset"]),
                   int(data.get("updated_ms", 0)), data.get("source_topic_id") or None,
                   data.get("target_topic_id") or None, tuple(gaps), data.get("member") or None,
                   data.get("writer") or None)


def checkpoint_key(flow: str, source_cluster_id: str, topic: str, partition: int) -> str:
    return f"{flow}/{source_cluster_id}/{topic}/{partition}"


def anchor_key(flow: str, source_cluster_id: str, topic: str, partition: int) -> str:
    return f"anchors/{checkpoint_key(flow, source_cluster_id, topic, partition)}"


def ensure_checkpoint_topic(target: KafkaSession) -> bool:
    """Create ``kmc.checkpoints`` on the target unless it exists; True when this call created it."""
    return ensure_internal_topic(target, CHECKPOINT_TOPIC, CHECKPOINT_PARTITIONS, CHECKPOINT_CONFIGS)


def ensure_internal_topic(target: KafkaSession, name: str, partitions: int, configs: dict[str, str]) -> bool:
    """Create one of kmc's own topics on the target (replication factor up to 3) unless it exists; True when
    this call created it. Another run creating it at the same moment is no error."""
    admin = target.admin
    with translate_errors(target.cluster, f"create {name}"):
        if name in set(admin.list_topics()):
            return False
        brokers = len(target.describe().brokers)
        response = admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": min(3, brokers), "configs": configs}},
            raise_errors=False, wait_for_metadata=False)
        for entry in response.get("topics", []):
            error = kafka_errors.for_code(entry.get("error_code", 0))
            if error is kafka_errors.TopicAlreadyExistsError:
                return False
            if error is not kafka_errors.NoError:
                raise broker_error(f"{target.cluster.name}: create {name}: ", error)
        admin.wait_for_topics([name], timeout_ms=int(max(10.0, target.timeout) * 1000))
    return True


def checkpoint_flows(session: KafkaSession, source_cluster_id: str) -> set[str]:
    """The flows that keep checkpoints of source cluster ``source_cluster_id`` in this cluster (read to the
    end, like :meth:`CheckpointStore.load`); none when there is no ``kmc.checkpoints``."""
    with translate_errors(session.cluster, "list topics"):
        if CHECKPOINT_TOPIC not in set(session.admin.list_topics()):
            return set()  # (a consumer asked about a missing topic may auto-create it)
    marker = f"/{source_cluster_id}/".encode()
    keys = read_topic(session, CHECKPOINT_TOPIC, lambda key: not key.startswith(b"anchors/") and marker in key)
    return {key.decode("utf-8", "replace").split("/", 1)[0] for key in keys
            if key.decode("utf-8", "replace").split("/")[1:2] == [source_cluster_id]}


class CheckpointStore:
    """Reads and writes one flow's checkpoints for one source cluster."""

    def __init__(self, target: KafkaSession, flow: str, source_cluster_id: str, member: str | None = None,
                 writer: str | None = None) -> None:
        self.target = target
        self.member = member  # written into every checkpoint (Checkpoint.member, .writer)
        self.writer = writer
        self.prefix = f"{flow}/{source_cluster_id}/"
        self.flow = flow
        self.source_cluster_id = source_cluster_id
        self._producer = None
        self._own_producer = False
        self._failed: list[tuple[str, BaseException]] = []
        # the anchors the last load() found, per (source topic, partition): [[next_offset, target_next, ms]]
        self.anchors: dict[tuple[str, int], list[list[int]]] = {}

    def load(self, warn: Callable[[str], None] = lambda message: None) -> dict[tuple[str, int], Checkpoint]:
        """Every committed checkpoint of this flow and source, read to the end offsets seen at the start
        (past any open transaction: kmc/mirror/logreader.py); their anchors land in :attr:`anchors`."""
        prefix = self.prefix.encode()
        anchor_prefix = b"anchors/" + prefix
        values = read_topic(self.target, CHECKPOINT_TOPIC,
                            lambda key: key.startswith(prefix) or key.startswith(anchor_prefix))
        found: dict[tuple[str, int], Checkpoint] = {}
        self.anchors = {}
        for key, value in values.items():
            text = key.decode("utf-8", "replace")
            is_anchor = key.startswith(anchor_prefix)
            topic, _, partition = text[len(anchor_prefix if is_anchor else prefix):].rpartition("/")
            if not topic or not partition.isdigit():
                continue
            try:
                if is_anchor:
                    anchors = json.loads(value)
                    if not all(isinstance(a, list) and len(a) == 3 and all(isinstance(n, int) for n in a)
                               for a in anchors):
                        raise TypeError("not a list of [next_offset, target_next_offset, updated_ms]")
                    self.anchors[(topic, int(partition))] = anchors
                else:
                    found[(topic, int(partition))] = Checkpoint.from_json(value)
            except (ValueError, KeyError, TypeError):
                warn(f"{CHECKPOINT_TOPIC}: ignoring unreadable {'anchors' if is_anchor else 'checkpoint'} {text}")
        return found

    def load_present(self) -> dict[tuple[str, int], Checkpoint]:
        """:meth:`load` when the target has a ``kmc.checkpoints`` (none: no checkpoints), for readers that must
        not create it (asking a consumer about a missing topic may auto-create it). A user who may not describe
        it cannot tell whether it exists: AuthorizationError, not "no checkpoints"."""
        with translate_errors(self.target.cluster, "list topics"):
            present = CHECKPOINT_TOPIC in set(self.target.admin.list_topics())
        if present:
            return self.load()
        from kmc.acls import hidden_topics  # kmc.acls reads checkpoints through this module

        if hidden_topics(self.target, [CHECKPOINT_TOPIC]):
            raise authorization_error(f"{self.target.cluster.name}: read {CHECKPOINT_TOPIC}: ",
                                      kafka_errors.TopicAuthorizationFailedError())
        self.anchors = {}
        return {}

    def use_producer(self, producer) -> None:  # noqa: ANN001 - a kafka-python KafkaProducer
        """Write through ``producer`` (the mirror's transactional producer with --exactly-once, so that
        checkpoints commit or abort with the records they cover)."""
        self._producer = producer
        self._own_producer = False

    def _producer_client(self):  # noqa: ANN202 - a kafka-python KafkaProducer
        if self._producer is None:
            self._producer = self.target.producer(acks="all", linger_ms=5, enable_idempotence=True,
                                                  compression_type="lz4", delivery_timeout_ms=120000,
                                                  retries=2**31 - 1)
            self._own_producer = True
        return self._producer

    def write(self, checkpoints: Iterable[tuple[str, int, Checkpoint]],
              anchors: Iterable[tuple[str, int, list[list[int]]]] = ()) -> int:
        """Send checkpoints (and anchor lists) without waiting for them; :meth:`flush` waits. Returns how
        many checkpoints were sent."""
        producer = self._producer_client()
        sent = 0
        with translate_errors(self.target.cluster, f"write {CHECKPOINT_TOPIC}"):
            for topic, partition, checkpoint in checkpoints:
                if self.member or self.writer:
                    checkpoint = dataclasses.replace(checkpoint, member=self.member, writer=self.writer)
                key = checkpoint_key(self.flow, self.source_cluster_id, topic, partition)
                self._send(producer, key, checkpoint.to_json())
                sent += 1
            for topic, partition, points in anchors:
                key = anchor_key(self.flow, self.source_cluster_id, topic, partition)
                self._send(producer, key, json.dumps(points[-MAX_ANCHORS:], separators=(",", ":")).encode())
        return sent

    def _send(self, producer: Any, key: str, value: bytes) -> None:
        future = producer.send(CHECKPOINT_TOPIC, key=key.encode(), value=value)
        future.add_errback(self._record_failure, key)

    def _record_failure(self, key: str, exc: BaseException) -> None:
        self._failed.append((key, exc))  # called on the producer's thread; list.append is atomic

    def take_failures(self) -> list[tuple[str, BaseException]]:
        """The writes that failed since the last call. After a failure the store's own producer is replaced
        at the next write: kafka-python 3.0's idempotent producer stays broken after a batch fails for good
        (e.g. MESSAGE_TOO_LARGE, even once the topic accepts the size again)."""
        failed, self._failed = self._failed, []
        if failed and self._own_producer and self._producer is not None:
            close_producer(self._producer, 0)
            self._producer = None
        return failed

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every checkpoint sent so far is acknowledged; KafkaOperationError if any failed."""
        if self._producer is None:
            return
        with translate_errors(self.target.cluster, f"write {CHECKPOINT_TOPIC}"):
            producer_hooks.flush(self._producer, 120.0 if timeout is None else timeout)
        failed = self.take_failures()
        if failed:
            key, exc = failed[0]
            if isinstance(exc, kafka_errors.AuthorizationError):  # exit 5, the missing ACL named (kmc.acls)
                raise authorization_error(f"{self.target.cluster.name}: write {CHECKPOINT_TOPIC}: ", exc)
            raise KafkaOperationError(f"{self.target.cluster.name}: could not write checkpoint {key}: {exc}")
