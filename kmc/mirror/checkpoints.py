"""Mirror progress, stored in the target cluster's compacted ``kmc.checkpoints`` topic.

One record per (flow, source cluster id, source topic, partition)::

    key   "{flow}/{source_cluster_id}/{source_topic}/{partition}"
    value {"next_offset": N, "target_topic": "...", "target_next_offset": M, "updated_ms": T}

``next_offset`` is the next source offset to copy; every record before it is acknowledged by the target.
``target_next_offset`` is the target partition's end offset right after the last of those records was
acknowledged: on a restart, ``target end offset - target_next_offset`` is the number of records written
after the checkpoint, which the restart copies again. The source is never written to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import kafka.errors as kafka_errors
from kafka import TopicPartition

from kmc.client import KafkaSession, broker_error, translate_errors
from kmc.errors import KafkaOperationError

CHECKPOINT_TOPIC = "kmc.checkpoints"
CHECKPOINT_PARTITIONS = 3
CHECKPOINT_CONFIGS = {
    "cleanup.policy": "compact",
    # Compact soon after a segment rolls, so a reader at start-up reads few superseded values.
    "segment.ms": str(6 * 3600 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}


@dataclass(frozen=True)
class Checkpoint:
    next_offset: int
    target_topic: str
    target_next_offset: int
    updated_ms: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"next_offset": self.next_offset, "target_topic": self.target_topic,
                           "target_next_offset": self.target_next_offset, "updated_ms": self.updated_ms},
                          separators=(",", ":")).encode()


def checkpoint_key(flow: str, source_cluster_id: str, topic: str, partition: int) -> str:
    return f"{flow}/{source_cluster_id}/{topic}/{partition}"


def ensure_checkpoint_topic(target: KafkaSession) -> bool:
    """Create ``kmc.checkpoints`` on the target unless it exists; True when this call created it."""
    admin = target.admin
    with translate_errors(target.cluster, f"create {CHECKPOINT_TOPIC}"):
        if CHECKPOINT_TOPIC in set(admin.list_topics()):
            return False
        brokers = len(target.describe().brokers)
        response = admin.create_topics(
            {CHECKPOINT_TOPIC: {"num_partitions": CHECKPOINT_PARTITIONS, "replication_factor": min(3, brokers),
                                "configs": CHECKPOINT_CONFIGS}},
            raise_errors=False, wait_for_metadata=False)
        for entry in response.get("topics", []):
            error = kafka_errors.for_code(entry.get("error_code", 0))
            if error is kafka_errors.TopicAlreadyExistsError:
                return False
            if error is not kafka_errors.NoError:
                raise broker_error(f"{target.cluster.name}: create {CHECKPOINT_TOPIC}: ", error)
        admin.wait_for_topics([CHECKPOINT_TOPIC], timeout_ms=int(max(10.0, target.timeout) * 1000))
    return True


class CheckpointStore:
    """Reads and writes one flow's checkpoints for one source cluster."""

    def __init__(self, target: KafkaSession, flow: str, source_cluster_id: str) -> None:
        self.target = target
        self.prefix = f"{flow}/{source_cluster_id}/"
        self.flow = flow
        self.source_cluster_id = source_cluster_id
        self._producer = None
        self._failed: list[tuple[str, BaseException]] = []

    def load(self, warn: Callable[[str], None] = lambda message: None) -> dict[tuple[str, int], Checkpoint]:
        """Every checkpoint of this flow and source, read to the end offsets seen at the start."""
        # read_committed: checkpoints of an aborted --exactly-once transaction never count
        consumer = self.target.consumer(isolation_level="read_committed")
        try:
            with translate_errors(self.target.cluster, f"read {CHECKPOINT_TOPIC}"):
                partitions = consumer.partitions_for_topic(CHECKPOINT_TOPIC) or set()
                tps = [TopicPartition(CHECKPOINT_TOPIC, p) for p in sorted(partitions)]
                if not tps:
                    return {}
                consumer.assign(tps)
                ends = consumer.end_offsets(tps)
                consumer.seek_to_beginning(*tps)
                remaining = {tp for tp in tps if ends[tp] > 0}
                found: dict[tuple[str, int], Checkpoint] = {}
                deadline = time.monotonic() + max(30.0, 3 * self.target.timeout)
                while remaining:
                    if time.monotonic() > deadline:
                        raise KafkaOperationError(f"{self.target.cluster.name}: reading {CHECKPOINT_TOPIC} timed out")
                    for tp, records in consumer.poll(timeout_ms=200).items():
                        for record in records:
                            if record.offset < ends[tp]:
                                self._take(record.key, record.value, found, warn)
                    remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
                return found
        finally:
            consumer.close()

    def _take(self, key: bytes | None, value: bytes | None, found: dict[tuple[str, int], Checkpoint],
              warn: Callable[[str], None]) -> None:
        text = key.decode("utf-8", "replace") if key else ""
        if not text.startswith(self.prefix):
            return
        topic, _, partition = text[len(self.prefix):].rpartition("/")
        if not topic or not partition.isdigit():
            return
        where = (topic, int(partition))
        if value is None:  # a tombstone: the checkpoint was deleted
            found.pop(where, None)
            return
        try:
            data = json.loads(value)
            found[where] = Checkpoint(int(data["next_offset"]), str(data["target_topic"]),
                                      int(data["target_next_offset"]), int(data.get("updated_ms", 0)))
        except (ValueError, KeyError, TypeError):
            warn(f"{CHECKPOINT_TOPIC}: ignoring unreadable checkpoint {text}")

    def use_producer(self, producer) -> None:  # noqa: ANN001 - a kafka-python KafkaProducer
        """Write through ``producer`` (the mirror's transactional producer with --exactly-once, so that
        checkpoints commit or abort with the records they cover)."""
        self._producer = producer

    def _producer_client(self):  # noqa: ANN202 - a kafka-python KafkaProducer
        if self._producer is None:
            self._producer = self.target.producer(acks="all", linger_ms=5, enable_idempotence=True,
                                                  delivery_timeout_ms=120000, retries=2**31 - 1)
        return self._producer

    def write(self, checkpoints: Iterable[tuple[str, int, Checkpoint]]) -> int:
        """Send checkpoints without waiting for them; :meth:`flush` waits. Returns how many were sent."""
        producer = self._producer_client()
        sent = 0
        with translate_errors(self.target.cluster, f"write {CHECKPOINT_TOPIC}"):
            for topic, partition, checkpoint in checkpoints:
                key = checkpoint_key(self.flow, self.source_cluster_id, topic, partition)
                future = producer.send(CHECKPOINT_TOPIC, key=key.encode(), value=checkpoint.to_json())
                future.add_errback(self._record_failure, key)
                sent += 1
        return sent

    def _record_failure(self, key: str, exc: BaseException) -> None:
        self._failed.append((key, exc))  # called on the producer's thread; list.append is atomic

    def take_failures(self) -> list[tuple[str, BaseException]]:
        failed, self._failed = self._failed, []
        return failed

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every checkpoint sent so far is acknowledged; KafkaOperationError if any failed."""
        if self._producer is None:
            return
        with translate_errors(self.target.cluster, f"write {CHECKPOINT_TOPIC}"):
            self._producer.flush(timeout=timeout)
        failed = self.take_failures()
        if failed:
            key, exc = failed[0]
            raise KafkaOperationError(f"{self.target.cluster.name}: could not write checkpoint {key}: {exc}")
