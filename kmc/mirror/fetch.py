"""What the mirror's consumer hands the copy loop: whole record batches, each with its producer id.

kafka-python's consumer returns records one by one and drops what a mirror needs to know about the batch
they came in: its bytes (to forward it whole, still compressed) and its producer id (to know whether a kmc
mirror wrote it, and from which cluster: kmc/mirror/provenance.py). With :func:`fetch_batches` the
consumer's ``poll()`` returns, per partition, one item per batch instead:

- :class:`RawBatch`: a message-format-v2 batch as stored, undecoded (its records decompressed only when
  :attr:`RawBatch.body` is read); ``passable`` when it can be sent on whole (CreateTime, offsets without
  compaction gaps, no delete horizon);
- :class:`DecodedBatch`: the batch's records decoded by kafka-python (``ConsumerRecord``), for what the
  byte walk cannot take (the batch a fetch starts in the middle of, message formats v0/v1, LogAppendTime)
  and for every batch when the copy path works on records (``raw=False``).

Each item's ``offset`` is the batch's last offset (the loop continues after it) and ``count`` its number of
records. The batch loop is kafka-python 3.0's ``_unpack_records`` (CRC check, read_committed filtering of
aborted transactions, control batches skipped); kafka-python is pinned to 3.0.x and
tests/test_engine_internals.py checks what this relies on.
"""

from __future__ import annotations

from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaConsumer
from kafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

BATCH_HEADER_SIZE = DefaultRecordBatchBuilder.HEADER_STRUCT.size
_LOG_APPEND_TIME = DefaultRecordBatch.TIMESTAMP_TYPE_MASK
_CONTROL = DefaultRecordBatch.CONTROL_MASK
_CODEC_MASK = DefaultRecordBatch.CODEC_MASK
_DELETE_HORIZON = 0x40  # KIP-534: baseTimestamp holds the cleaner's delete horizon, not a record time


class RawBatch:
    """One fetched v2 record batch, as stored (still compressed)."""

    __slots__ = ("offset", "base_offset", "count", "first_timestamp", "max_timestamp", "codec", "producer_id",
                 "passable", "raw")

    def __init__(self, batch: DefaultRecordBatch, attributes: int) -> None:
        self.offset = batch.last_offset
        self.base_offset = batch.base_offset
        self.count = batch.records_count
        self.first_timestamp = batch.first_timestamp
        self.max_timestamp = batch.max_timestamp
        self.codec = attributes & _CODEC_MASK  # DefaultRecordBatch.CODEC_*
        self.producer_id = batch.producer_id if batch.has_producer_id() else -1
        # sent on whole only with consecutive offsets (a compacted batch has gaps, which a produced batch must
        # not have) and a base timestamp that is a record's
        self.passable = self.count == batch.last_offset_delta + 1 and not attributes & _DELETE_HORIZON
        self.raw = batch._buffer  # noqa: SLF001 - the whole batch: header and (compressed) records

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def body(self) -> bytes:
        """The records section, decompressed (not kept: every read decompresses again)."""
        data = memoryview(self.raw)[BATCH_HEADER_SIZE:]
        codec = self.codec
        if codec == DefaultRecordBatch.CODEC_NONE:
            return data.tobytes()
        if codec == DefaultRecordBatch.CODEC_LZ4:
            return lz4_decode(data.tobytes())
        if codec == DefaultRecordBatch.CODEC_ZSTD:
            return zstd_decode(data.tobytes())
        if codec == DefaultRecordBatch.CODEC_GZIP:
            return gzip_decode(data)
        if codec == DefaultRecordBatch.CODEC_SNAPPY:
            return snappy_decode(data.tobytes())
        raise kafka_errors.UnsupportedCodecError(f"unknown compression codec {codec}")


class DecodedBatch:
    """One fetched batch's records (those at or after the fetch offset), decoded by kafka-python."""

    __slots__ = ("offset", "count", "producer_id", "records")

    def __init__(self, offset: int, producer_id: int, records: list[ConsumerRecord]) -> None:
        self.offset = offset
        self.count = len(records)
        self.producer_id = producer_id
        self.records = records


class _BatchPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's fetched partition data, one item per batch (see the module docstring)."""

    raw = True  # False: every batch decoded (the record path)

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):  # noqa: ANN001, ANN202, ARG002, C901
        isolation_committed = self.isolation_level == IsolationLevel.READ_COMMITTED
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise kafka_errors.CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check")
            producer_id = -1
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if batch.has_producer_id():
                    producer_id = batch.producer_id
                    if isolation_committed:
                        self._consume_aborted_transactions_up_to(batch.last_offset)
                        if self._contains_abort_marker(batch):
                            self.aborted_producer_ids.discard(batch.producer_id)
                        elif self._is_batch_aborted(batch):
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue
                attributes = batch.attributes
                if attributes & _CONTROL:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                if self.raw and not attributes & _LOG_APPEND_TIME and batch.base_offset >= self.fetch_offset:
                    self.records_read += batch.records_count
                    self.bytes_read += batch.size_in_bytes
                    self.next_fetch_offset = batch.next_offset
                    yield RawBatch(batch, attributes)
                    batch = records.next_batch()
                    continue
            decoded = []
            for record in batch:
                if record.offset < self.fetch_offset:
                    continue  # the batch a fetch starts in the middle of: what came before is not wanted
                key_size = len(record.key) if record.key is not None else -1
                value_size = len(record.value) if record.value is not None else -1
                headers = record.headers
                header_size = sum(len(name.encode()) + (len(value) if value is not None else 0)
                                  for name, value in headers) if headers else -1
                self.bytes_read += record.size_in_bytes
                decoded.append(ConsumerRecord(tp.topic, tp.partition, self.leader_epoch, record.offset,
                                              record.timestamp, record.timestamp_type, record.key, record.value,
                                              headers, record.checksum, key_size, value_size, header_size))
            # v2 keeps a batch's last offset even when compaction removed its last record: continue after it
            last = batch.last_offset if batch.magic == 2 else (decoded[-1].offset if decoded else None)
            if last is not None and last >= self.fetch_offset:
                self.records_read += len(decoded)
                self.next_fetch_offset = last + 1
                if decoded:
                    yield DecodedBatch(last, producer_id, decoded)
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = max(self.next_fetch_offset, last_batch.next_offset)
        self.drain()


class _DecodedPartitionRecords(_BatchPartitionRecords):
    raw = False


def fetch_batches(consumer: KafkaConsumer, raw: bool = True) -> None:
    """Make ``consumer``'s ``poll()`` return one item per batch: :class:`RawBatch` where it can (``raw``),
    else :class:`DecodedBatch`."""
    consumer._fetcher.PartitionRecords = _BatchPartitionRecords if raw else _DecodedPartitionRecords  # noqa: SLF001


def item_records(items: list[Any]) -> int:
    """How many records the items hold."""
    return sum(item.count for item in items)
