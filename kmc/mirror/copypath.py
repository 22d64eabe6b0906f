"""How records get from a source poll into the target producer: the copy paths.

The copy loop hands a :class:`CopyPath` one partition's fetched batches at a time (``send_batch``; items of
kmc/mirror/fetch.py) and gets back the future of the last record it sent, which the loop uses to know when
they are acknowledged. :class:`RecordCopyPath` re-produces decoded records; the byte path
(kmc/mirror/batchpath.py) forwards batches whole where it can and walks their bytes where it cannot.

Provenance and loops: a batch written by a kmc mirror whose data came from the target cluster is never
copied back (kmc/mirror/provenance.py: looked up by the batch's producer id). Records a copy path writes one
by one carry a ``kmc-origin`` header naming the cluster where they were first produced: a record that has
one keeps it (dc1 -> central -> dr keeps dc1), one without gets the cluster its batch's data came from
(the source cluster, unless a mirror wrote the batch into it); a record whose ``kmc-origin`` is the target
cluster is not sent at all.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from kafka import KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from kmc.mirror.provenance import ProvenanceMap

ORIGIN_HEADER = "kmc-origin"


class CopyPath(Protocol):
    def send_batch(self, target: TopicPartition, items: list[Any]) -> tuple[Any, int, int, int]:
        """Send one partition's fetched batches in order; returns (future of the last record sent or None,
        records sent, records skipped, bytes sent)."""
        ...

    def target_partition(self, topic: str, source_partition: int) -> int:
        """The target partition that follows source partition ``source_partition`` (its checkpoint's
        ``target_next_offset`` is counted there)."""
        ...


class RecordCopyPath:
    """Copies decoded records (:class:`~kmc.mirror.fetch.DecodedBatch` items) through a KafkaProducer,
    partition i to partition i.

    It appends straight to the producer's record accumulator instead of calling ``send()``: ``send()``
    re-validates, re-serializes and re-partitions every record (a third of the copy loop's time), and it
    rejects a record whose key and value are both null, which Kafka allows and a faithful copy must keep.
    kafka-python is pinned to 3.x (pyproject.toml); the fidelity tests exercise this path on every run.

    One thing kafka-python cannot send at all is a header whose value is null (its producer computes
    every header's length): such values are sent as empty values and counted in ``null_header_records``.
    """

    def __init__(self, producer: KafkaProducer, source_cluster_id: str, target_cluster_id: str,
                 provenance: ProvenanceMap | None = None, stamp_records: bool = False) -> None:
        self.producer = producer
        self._append = producer._accumulator.append  # noqa: SLF001
        self._wakeup = producer._sender.wakeup  # noqa: SLF001
        self._source_id = source_cluster_id
        self._target_id = target_cluster_id
        # records of the source's own producers get no kmc-origin (loop prevention goes by producer id)
        # unless every record is stamped (merge mode); None: no header
        self._origin_header = (ORIGIN_HEADER, source_cluster_id.encode()) if stamp_records else None
        self._target_origin = target_cluster_id.encode()
        self._provenance = provenance
        self.null_header_records = 0  # records whose null header values were sent as empty values
        # A transactional producer (--exactly-once) sends to a partition only once it is added to the open
        # transaction, which send() does and the direct appends here must do themselves.
        manager = producer._transaction_manager  # noqa: SLF001
        self._transaction = manager if manager is not None and manager.is_transactional() else None

    def prepare(self, topic: str) -> None:
        """Load the target topic's metadata once (``send()`` would do it per record)."""
        self.producer.partitions_for(topic)

    def target_partition(self, topic: str, source_partition: int) -> int:  # noqa: ARG002 - the CopyPath interface
        return source_partition

    def origins(self, items: list[Any]) -> dict[int, str | None]:
        """Where the data of each item's producer came from (None: the source cluster's own producers)."""
        if self._provenance is None:
            return {}
        return self._provenance.origins({item.producer_id for item in items})

    def send_batch(self, target: TopicPartition, items: list[Any]) -> tuple[Any, int, int, int]:
        if self._transaction is not None:
            self._transaction.maybe_add_partition_to_transaction(target)
        origins = self.origins(items)
        future = None
        sent = skipped = size = 0
        for item in items:
            origin = origins.get(item.producer_id)
            if origin == self._target_id:  # a mirror wrote it with the target's data: never back
                skipped += item.count
                continue
            header = self._origin_header if origin is None else (ORIGIN_HEADER, origin.encode())
            run_future, run_sent, run_skipped, run_size = self._send_records(target, item.records, header)
            if run_future is not None:
                future = run_future
            sent += run_sent
            skipped += run_skipped
            size += run_size
        return future, sent, skipped, size

    def _send_records(self, target: TopicPartition, records: list[Any],
                      origin_header: tuple[str, bytes] | None) -> tuple[Any, int, int, int]:
        """Append ``records`` to ``target`` (in the open transaction, if any), each stamped with
        ``origin_header`` (when not None) unless it has a ``kmc-origin``; those whose origin is the target
        are skipped."""
        append = self._append
        target_origin = self._target_origin
        now = time.monotonic()  # the accumulator's linger clock; one reading per batch is enough
        future = None
        skipped = 0
        size = 0
        wake = False
        # ConsumerRecord fields: topic, partition, leader_epoch, offset, timestamp, timestamp_type, key,
        # value, headers, checksum, serialized key/value/header sizes. Unpacking beats attribute access.
        for _, _, _, _, timestamp, _, key, value, headers, _, key_size, value_size, _ in records:
            origin = None
            null_values = False
            for name, header_value in headers:
                if header_value is None:
                    null_values = True
                elif name == ORIGIN_HEADER and origin is None:
                    origin = header_value
            if origin is None:
                if origin_header is not None:
                    headers.append(origin_header)
            elif origin == target_origin:  # it came from the target cluster: copying it back would loop
                skipped += 1
                continue
            if null_values:
                headers = [(name, b"" if header_value is None else header_value) for name, header_value in headers]
                self.null_header_records += 1
            future, full, new_batch, _ = append(target, timestamp, key, value, headers, now)
            if full or new_batch:
                wake = True
            # serialized sizes are -1 for null
            size += (key_size if key_size > 0 else 0) + (value_size if value_size > 0 else 0)
        if wake:
            self._wakeup()
        return future, len(records) - skipped, skipped, size


class KeyedCopyPath(RecordCopyPath):
    """Partitions by key instead of partition i to partition i (``MirrorSpec.partitioner="key"``), for
    merging sources whose partition counts differ.

    A record with a key goes to ``murmur2(key) mod target partitions``, the partition Kafka's default
    partitioner (Java, librdkafka's murmur2_random, kafka-python) picks, so keyed data lands where a
    producer writing to the target directly would put it. Records with a null key are sticky: those of
    source partition i go to target partition ``i mod target partitions`` and keep their order.

    One source batch may now reach several target partitions; the batch counts as acknowledged when the
    last record sent to each of them is (:class:`_AllAcknowledged`).
    """

    def __init__(self, producer: KafkaProducer, source_cluster_id: str, target_cluster_id: str,
                 provenance: ProvenanceMap | None = None, stamp_records: bool = False) -> None:
        super().__init__(producer, source_cluster_id, target_cluster_id, provenance, stamp_records)
        self._partitions: dict[str, list[TopicPartition]] = {}

    def prepare(self, topic: str) -> None:
        count = len(self.producer.partitions_for(topic) or ())
        self._partitions[topic] = [TopicPartition(topic, partition) for partition in range(count)]

    def target_partition(self, topic: str, source_partition: int) -> int:
        if topic not in self._partitions:
            self.prepare(topic)
        return source_partition % len(self._partitions[topic])

    def send_batch(self, target: TopicPartition, items: list[Any]) -> tuple[Any, int, int, int]:
        partitions = self._partitions[target.topic]
        count = len(partitions)
        origins = self.origins(items)
        # per target partition, runs of records that share an origin header, in order
        groups: dict[int, list[tuple[tuple[str, bytes], list[Any]]]] = {}
        skipped = 0
        for item in items:
            origin = origins.get(item.producer_id)
            if origin == self._target_id:
                skipped += item.count
                continue
            header = self._origin_header if origin is None else (ORIGIN_HEADER, origin.encode())
            for record in item.records:
                key = record.key
                partition = (murmur2(key) & 0x7FFFFFFF) % count if key is not None else target.partition
                runs = groups.setdefault(partition, [])
                if not runs or runs[-1][0] is not header:
                    runs.append((header, []))
                runs[-1][1].append(record)
        futures: dict[int, Any] = {}
        sent = size = 0
        for partition, runs in groups.items():  # each group keeps its records' order
            tp = partitions[partition]
            if self._transaction is not None:
                self._transaction.maybe_add_partition_to_transaction(tp)
            for header, records in runs:
                future, run_sent, run_skipped, run_size = self._send_records(tp, records, header)
                if future is not None:
                    futures[partition] = future
                sent += run_sent
                skipped += run_skipped
                size += run_size
        return (_AllAcknowledged(futures, target.partition) if futures else None), sent, skipped, size


class _AllAcknowledged:
    """The futures of the last record per target partition of one keyed batch, seen by the copy loop as one
    future: done when all are, failed when one failed; its value is the record metadata of the partition
    the checkpoint follows (None when the batch sent nothing there)."""

    __slots__ = ("_futures", "_followed")

    def __init__(self, futures: dict[int, Any], followed: int) -> None:
        self._futures = futures
        self._followed = followed

    @property
    def is_done(self) -> bool:
        return all(future.is_done for future in self._futures.values())

    @property
    def exception(self) -> BaseException | None:
        return next((future.exception for future in self._futures.values()
                     if future.is_done and future.exception is not None), None)

    @property
    def value(self) -> Any:
        future = self._futures.get(self._followed)
        return None if future is None else future.value

    def get(self, timeout: float | None = None) -> Any:
        for future in self._futures.values():
            future.get(timeout=timeout)
        return self.value
