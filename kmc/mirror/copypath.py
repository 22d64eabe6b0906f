"""How records get from a source poll batch into the target producer: the per-record hot path.

The copy loop hands a :class:`CopyPath` one partition's records at a time (``send_batch``) and gets back
the future of the last record it sent, which the loop uses to know when that batch is acknowledged.
:class:`RecordCopyPath` re-produces decoded records; a byte-level path (forwarding raw record batches
without decoding them) can implement the same interface later.

Provenance: every copied record carries a ``kmc-origin`` header naming the cluster where it was first
produced. A record without one gets the source cluster id; a record with one keeps it (dc1 -> central
-> dr keeps dc1); a record whose origin is the target cluster is not sent at all, so two-way mirrors do
not loop.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from kafka import KafkaProducer, TopicPartition

ORIGIN_HEADER = "kmc-origin"


class CopyPath(Protocol):
    def send_batch(self, target: TopicPartition, records: list[Any]) -> tuple[Any, int, int, int]:
        """Send one partition's records in order; returns (future of the last record sent or None,
        records sent, records skipped, payload bytes sent)."""
        ...


class RecordCopyPath:
    """Copies kafka-python ConsumerRecords through a KafkaProducer, partition i to partition i.

    It appends straight to the producer's record accumulator instead of calling ``send()``: ``send()``
    re-validates, re-serializes and re-partitions every record (a third of the copy loop's time), and it
    rejects a record whose key and value are both null, which Kafka allows and a faithful copy must keep.
    kafka-python is pinned to 3.x (pyproject.toml); the fidelity tests exercise this path on every run.

    One thing kafka-python cannot send at all is a header whose value is null (its producer computes
    every header's length): such values are sent as empty values and counted in ``null_header_records``.
    """

    def __init__(self, producer: KafkaProducer, source_cluster_id: str, target_cluster_id: str) -> None:
        self.producer = producer
        self._append = producer._accumulator.append
        self._wakeup = producer._sender.wakeup
        self._origin_header = (ORIGIN_HEADER, source_cluster_id.encode())
        self._target_origin = target_cluster_id.encode()
        self.null_header_records = 0  # records whose null header values were sent as empty values

    def prepare(self, topic: str) -> None:
        """Load the target topic's metadata once (``send()`` would do it per record)."""
        self.producer.partitions_for(topic)

    def send_batch(self, target: TopicPartition, records: list[Any]) -> tuple[Any, int, int, int]:
        append = self._append
        origin_header = self._origin_header
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
