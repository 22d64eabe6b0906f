"""Read a compacted topic's latest values with read_committed semantics applied by kmc, not the broker.

A read_committed consumer stops at the partition's last stable offset: one open transaction anywhere in
``kmc.checkpoints`` (another ``--exactly-once`` flow that is mid-commit, or a shard killed in a
transaction whose transactional id is never used again) hides every newer committed value until that
transaction times out, up to 15 minutes. :func:`read_latest` reads to the high watermark instead, sees
each batch's producer id and the transaction markers, and keeps a value only when it is committed: a
value of a plain (non-transactional) batch at once, a transactional one when its producer's commit
marker follows, never one whose transaction was aborted or is still open at the end.

The latest value of a key is the committed one at the highest offset, as a read_committed reader that
reached the end would see it. Library code: no printing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import Fetcher

from kmc.client import KafkaSession, is_transient, translate_errors
from kmc.errors import KmcError

# The longest a read may go without progress before it fails (it may take longer in all while it moves).
DEFAULT_STALL = 30.0


class LogBatch:
    """One batch as stored: its producer id (-1: none), whether it is transactional, for a control batch
    ``"commit"`` or ``"abort"``, and its records' (offset, key, value)."""

    __slots__ = ("offset", "producer_id", "transactional", "control", "records")

    def __init__(self, offset: int, producer_id: int, transactional: bool, control: str | None,
                 records: list[tuple[int, bytes | None, bytes | None]]) -> None:
        self.offset = offset  # the batch's last offset (the fetcher continues after it)
        self.producer_id = producer_id
        self.transactional = transactional
        self.control = control
        self.records = records


class _LogPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's fetched partition data, yielding one :class:`LogBatch` per batch, control batches
    included (kafka-python drops them). The consumer must read uncommitted: nothing is filtered here."""

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):  # noqa: ANN001, ANN202, ARG002
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise kafka_errors.CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check")
            if batch.magic == 2:
                producer_id = batch.producer_id if batch.has_producer_id() else -1
                if batch.is_control_batch:
                    marker = next(iter(batch), None)
                    control = None if marker is None else "abort" if marker.abort else "commit"
                    item = LogBatch(batch.last_offset, producer_id, True, control, [])
                else:
                    item = LogBatch(batch.last_offset, producer_id, batch.is_transactional, None,
                                    [(record.offset, record.key, record.value) for record in batch])
                self.next_fetch_offset = batch.next_offset
            else:  # v0/v1: no transactions
                item_records = [(record.offset, record.key, record.value) for record in batch]
                if not item_records:
                    batch = records.next_batch()
                    continue
                item = LogBatch(item_records[-1][0], -1, False, None, item_records)
                self.next_fetch_offset = item.offset + 1
            self.records_read += len(item.records)
            self.bytes_read += batch.size_in_bytes
            yield item
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()


def read_topic(session: KafkaSession, topic: str, wanted: Callable[[bytes], bool],
               producers: dict[bytes, int] | None = None) -> dict[bytes, bytes]:
    """:func:`read_latest` of ``topic`` on ``session``'s cluster, asked again with a new reader while a broker
    is down (its partitions' leadership moving); it fails when it makes no progress for 30 s (or 3 times
    the session's timeout), however long it takes in all."""
    stall = max(30.0, 3 * session.timeout)
    deadline = time.monotonic() + stall
    while True:
        consumer = session.consumer(isolation_level="read_uncommitted")
        try:
            with translate_errors(session.cluster, f"read {topic}"):
                return read_latest(consumer, topic, wanted, stall=stall, producers=producers)
        except KmcError as exc:
            if not is_transient(exc.__cause__) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
        finally:
            consumer.close()


def read_latest(consumer: KafkaConsumer, topic: str, wanted: Callable[[bytes], bool],
                stall: float = DEFAULT_STALL, producers: dict[bytes, int] | None = None) -> dict[bytes, bytes]:
    """The latest committed value of every key of ``topic`` that ``wanted`` accepts (tombstones remove
    keys), read to the high watermarks seen at the start. ``consumer`` must be fresh, read uncommitted,
    and is used up. Raises KafkaTimeoutError when ``stall`` seconds pass without progress. ``producers``,
    when given, receives the producer id (-1: none) of the batch each returned value came in."""
    if consumer.config["isolation_level"] != "read_uncommitted":
        raise ValueError("read_latest needs a read_uncommitted consumer")
    consumer._fetcher.PartitionRecords = _LogPartitionRecords  # noqa: SLF001 - see the module docstring
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return {}
    consumer.assign(tps)
    ends = consumer.end_offsets(tps)
    consumer.seek_to_beginning(*tps)
    latest: dict[bytes, tuple[int, bytes | None, int]] = {}
    # per partition and producer id: the values of its open transaction, kept until its marker
    open_transactions: dict[tuple[TopicPartition, int], list[tuple[int, bytes, bytes | None]]] = {}

    def keep(offset: int, key: bytes, value: bytes | None, producer_id: int) -> None:
        current = latest.get(key)
        if current is None or offset > current[0]:
            latest[key] = (offset, value, producer_id)

    remaining = {tp for tp in tps if ends[tp] > 0}
    positions = {tp: -1 for tp in remaining}
    last_progress = time.monotonic()
    while remaining:
        for tp, items in consumer.poll(timeout_ms=200).items():
            for item in items:
                if item.control is not None:
                    values = open_transactions.pop((tp, item.producer_id), ())
                    if item.control == "commit":
                        for offset, key, value in values:
                            keep(offset, key, value, item.producer_id)
                    continue
                for offset, key, value in item.records:
                    if offset >= ends[tp] or key is None or not wanted(key):
                        continue
                    if item.transactional:
                        open_transactions.setdefault((tp, item.producer_id), []).append((offset, key, value))
                    else:
                        keep(offset, key, value, item.producer_id)
        now = time.monotonic()
        for tp in list(remaining):
            position = consumer.position(tp)
            if position != positions[tp]:
                positions[tp] = position
                last_progress = now
            if position >= ends[tp]:
                remaining.discard(tp)
        if remaining and now - last_progress > stall:
            behind = ", ".join(f"{tp.topic}[{tp.partition}] at {positions[tp]} of {ends[tp]}"
                               for tp in sorted(remaining))
            raise kafka_errors.KafkaTimeoutError(f"no progress for {stall:g}s reading {behind}")
    # whatever is still in open_transactions was not committed when the read started: it does not count
    if producers is not None:
        producers.update({key: producer_id for key, (_, value, producer_id) in latest.items() if value is not None})
    return {key: value for key, (_, value, _) in latest.items() if value is not None}

