"""The byte-level copy path: record batches forwarded as bytes, with one header added to each record.

The record path (:class:`~kmc.mirror.copypath.RecordCopyPath`) lets kafka-python decode every fetched
record into a ``ConsumerRecord`` and re-encode it in the producer: on small records that is four fifths
of a mirror's CPU. This path skips both. The consumer's fetcher hands over each v2 record batch as a
:class:`RawBatch` (its decompressed record bytes); :func:`encode_records` walks those bytes once, reading
only the varints that locate each record's key, value and header count, and writes each record straight
into the target producer's open batch with three things changed:

- the offset delta, renumbered from 0 in the target batch (the broker assigns offsets; a compacted
  source leaves gaps that a produced batch must not have);
- the timestamp delta, re-based on the target batch's first timestamp (the CreateTime is kept);
- the headers: ``kmc-origin`` appended when the record has none, the record skipped when its origin is
  the target cluster (two-way mirrors), kept as they are otherwise.

Key, value and every other header pass through untouched, byte for byte (including null header values,
which kafka-python's producer cannot write). Compression, producer ids, sequence numbers, retries,
ordering and acknowledgements stay kafka-python's: the bytes go into the same ``ProducerBatch`` objects
its accumulator drains, so idempotence and the copy loop's checkpoint logic are unchanged.

Batches this path does not take fall back to decoded records, in the same poll: message format v0/v1,
LogAppendTime batches (their records' CreateTime deltas are not what a consumer sees), and the batch
a fetch starts in the middle of (records before the fetch offset must be dropped one by one).
Aborted transactions and control batches are filtered exactly as kafka-python does (read_committed).

kafka-python is pinned to 3.x (pyproject.toml): this module uses its fetcher's ``PartitionRecords``,
its record batch classes and its accumulator's internals. Every fidelity, kill -9 and broker-restart
test in the suite runs through it.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecordsBuilder

from kmc.mirror.copypath import ORIGIN_HEADER, RecordCopyPath

log = logging.getLogger(__name__)

_ORIGIN_NAME = ORIGIN_HEADER.encode()
_LOG_APPEND_TIME = DefaultRecordBatch.TIMESTAMP_TYPE_MASK
_CONTROL = DefaultRecordBatch.CONTROL_MASK
_CODEC_MASK = DefaultRecordBatch.CODEC_MASK
_CODEC_NONE = DefaultRecordBatch.CODEC_NONE
_BATCH_HEADER_SIZE = DefaultRecordBatchBuilder.HEADER_STRUCT.size
# The varint bytes of every zigzag-encoded value below 2**14 (1 or 2 bytes), looked up instead of encoded.
_VARINTS = tuple(bytes((z,)) if z < 0x80 else bytes((0x80 | (z & 0x7F), z >> 7)) for z in range(1 << 14))
_SMALL = len(_VARINTS)


class RawBatch:
    """One fetched v2 record batch, as stored (still compressed). ``offset`` is its last offset (what the
    copy loop reads from the last item of a poll to know where the partition continues).

    The records are decompressed only when :attr:`body` is read, by the copy path as it sends them, and
    the result is not kept: a poll's worth of batches stays at its compressed size in memory, and the
    decompressed bytes of one batch live only while it is copied."""

    __slots__ = ("offset", "base_offset", "count", "first_timestamp", "codec", "raw")

    def __init__(self, offset: int, base_offset: int, count: int, first_timestamp: int, codec: int,
                 raw: bytearray) -> None:
        self.offset = offset
        self.base_offset = base_offset
        self.count = count
        self.first_timestamp = first_timestamp
        self.codec = codec  # DefaultRecordBatch.CODEC_* of the source batch
        self.raw = raw  # the whole batch: header and (compressed) records

    @property
    def body(self) -> bytes:
        """The records section, decompressed."""
        data = memoryview(self.raw)[_BATCH_HEADER_SIZE:]
        codec = self.codec
        if codec == _CODEC_NONE:
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


# ---------------------------------------------------------------------------------------- varints


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint of any length at ``pos``: (value, position after it)."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _varint_bytes(z: int) -> bytes:
    """The varint bytes of an already zigzag-encoded (non-negative) value."""
    if z < _SMALL:
        return _VARINTS[z]
    out = bytearray()
    while z >= 0x80:
        out.append(0x80 | (z & 0x7F))
        z >>= 7
    out.append(z)
    return bytes(out)


def origin_header_bytes(cluster_id: str) -> bytes:
    """The encoded ``kmc-origin`` header (name length, name, value length, value) for ``cluster_id``."""
    value = cluster_id.encode()
    return (_varint_bytes(len(_ORIGIN_NAME) << 1) + _ORIGIN_NAME + _varint_bytes(len(value) << 1) + value)


def _find_origin(data: bytes, pos: int, count: int) -> bytes | None:
    """The value of the first non-null ``kmc-origin`` among ``count`` headers starting at ``pos``."""
    for _ in range(count):
        size, pos = _varint(data, pos)
        name = data[pos:pos + size]
        pos += size
        size, pos = _varint(data, pos)
        if size < 0:
            continue
        if name == _ORIGIN_NAME:
            return data[pos:pos + size]
        pos += size
    return None


# ---------------------------------------------------------------------------------------- encoding


def encode_records(out: bytearray, body: bytes, pos: int, first_timestamp: int, base_timestamp: int | None,
                   next_delta: int, limit: int, origin_header: bytes, target_origin: bytes,
                   check_origin: bool) -> tuple[int, int, int, int, int | None, int]:
    """Append the records of ``body`` from ``pos`` to ``out`` (a v2 batch's record section) until the body
    ends or ``out`` reaches ``limit`` bytes (at least one record is always written into an empty batch).

    ``first_timestamp`` is the source batch's base timestamp, ``base_timestamp`` the target batch's
    (None: the first record written sets it), ``next_delta`` the target batch's next offset delta.
    ``check_origin`` False promises that no record carries a ``kmc-origin`` header (the caller looked for
    the name in the whole body), so every record gets ``origin_header``.

    Returns (position in body, records written, records skipped, key + value bytes written,
    base timestamp, max timestamp written or -1).
    """
    varints, small, slow = _VARINTS, _SMALL, _varint
    end = len(body)
    written = skipped = payload = 0
    max_timestamp = -1
    origin_size = len(origin_header)
    empty = next_delta == 0
    while pos < end:
        if len(out) >= limit and not (empty and written == 0):
            break
        # Each varint read: one byte inline, two bytes inline (lengths of 64 to 8191), longer ones called.
        byte = body[pos]
        if byte < 0x80:
            length = (byte >> 1) ^ -(byte & 1)
            pos += 1
        elif body[pos + 1] < 0x80:
            z = (byte & 0x7F) | (body[pos + 1] << 7)
            length = (z >> 1) ^ -(z & 1)
            pos += 2
        else:
            length, pos = slow(body, pos)
        record_end = pos + length
        at = pos + 1  # the record's attributes byte: unused in v2, written as 0
        byte = body[at]
        if byte < 0x80:
            timestamp = first_timestamp + ((byte >> 1) ^ -(byte & 1))
            at += 1
        elif body[at + 1] < 0x80:
            z = (byte & 0x7F) | (body[at + 1] << 7)
            timestamp = first_timestamp + ((z >> 1) ^ -(z & 1))
            at += 2
        else:
            delta, at = slow(body, at)
            timestamp = first_timestamp + delta
        byte = body[at]  # the source's offset delta: skipped, renumbered below
        at += 1
        while byte >= 0x80:
            byte = body[at]
            at += 1
        content = at
        byte = body[at]
        if byte < 0x80:
            size = (byte >> 1) ^ -(byte & 1)
            at += 1
        elif body[at + 1] < 0x80:
            z = (byte & 0x7F) | (body[at + 1] << 7)
            size = (z >> 1) ^ -(z & 1)
            at += 2
        else:
            size, at = slow(body, at)
        kv = 0
        if size > 0:
            at += size
            kv = size
        byte = body[at]
        if byte < 0x80:
            size = (byte >> 1) ^ -(byte & 1)
            at += 1
        elif body[at + 1] < 0x80:
            z = (byte & 0x7F) | (body[at + 1] << 7)
            size = (z >> 1) ^ -(z & 1)
            at += 2
        else:
            size, at = slow(body, at)
        if size > 0:
            at += size
            kv += size
        headers_at = at
        byte = body[at]
        if byte < 0x80:
            header_count = (byte >> 1) ^ -(byte & 1)
            at += 1
        else:
            header_count, at = slow(body, at)
        origin = _find_origin(body, at, header_count) if check_origin and header_count else None
        if origin is not None and origin == target_origin:
            skipped += 1  # it came from the target cluster: copying it back would loop
            pos = record_end
            continue
        if base_timestamp is None:
            base_timestamp = timestamp
        delta = timestamp - base_timestamp
        z = (delta << 1) ^ (delta >> 63)
        timestamp_bytes = varints[z] if z < small else _varint_bytes(z)
        z = next_delta << 1
        offset_bytes = varints[z] if z < small else _varint_bytes(z)
        if origin is None:
            z = (header_count + 1) << 1
            count_bytes = varints[z] if z < small else _varint_bytes(z)
            z = (1 + len(timestamp_bytes) + len(offset_bytes) + headers_at - content + len(count_bytes)
                 + record_end - at + origin_size) << 1
            out += varints[z] if z < small else _varint_bytes(z)
            out.append(0)
            out += timestamp_bytes
            out += offset_bytes
            out += body[content:headers_at]
            out += count_bytes
            out += body[at:record_end]
            out += origin_header
        else:  # it has an origin (an earlier hop): kept
            z = (1 + len(timestamp_bytes) + len(offset_bytes) + record_end - content) << 1
            out += varints[z] if z < small else _varint_bytes(z)
            out.append(0)
            out += timestamp_bytes
            out += offset_bytes
            out += body[content:record_end]
        next_delta += 1
        written += 1
        payload += kv
        if timestamp > max_timestamp:
            max_timestamp = timestamp
        pos = record_end
    return pos, written, skipped, payload, base_timestamp, max_timestamp


# ---------------------------------------------------------------------------------------- fetching


class _BatchPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's fetched partition data, yielding :class:`RawBatch` items where it can.

    The batch loop is kafka-python 3.0's ``_unpack_records`` (CRC check, read_committed filtering of
    aborted transactions, control batches skipped) with one branch added: an eligible batch is yielded
    whole instead of record by record.
    """

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):  # noqa: ANN001, ANN202, C901
        isolation_committed = self.isolation_level == IsolationLevel.READ_COMMITTED
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise kafka_errors.CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check")
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if isolation_committed and batch.has_producer_id():
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
                if not attributes & _LOG_APPEND_TIME and batch.base_offset >= self.fetch_offset:
                    count = batch.records_count
                    self.records_read += count
                    self.bytes_read += batch.size_in_bytes
                    self.next_fetch_offset = batch.next_offset
                    yield RawBatch(batch.last_offset, batch.base_offset, count, batch.first_timestamp,
                                   attributes & _CODEC_MASK, batch._buffer)  # noqa: SLF001 - the batch's bytes
                    batch = records.next_batch()
                    continue
            for record in batch:
                key_size = len(record.key) if record.key is not None else -1
                value_size = len(record.value) if record.value is not None else -1
                headers = record.headers
                header_size = sum(len(name.encode()) + (len(value) if value is not None else 0)
                                  for name, value in headers) if headers else -1
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                self.next_fetch_offset = record.offset + 1
                yield ConsumerRecord(tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                                     record.timestamp_type, record.key, record.value, headers, record.checksum,
                                     key_size, value_size, header_size)
            batch = records.next_batch()
        # v2 keeps a batch's last offset even when compaction removed its last record: continue after it
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()


def fetch_batches(consumer: KafkaConsumer) -> None:
    """Make ``consumer`` return :class:`RawBatch` items for the batches the byte path takes (its
    ``poll()`` then mixes them with ConsumerRecords; only :class:`BatchCopyPath` can consume that)."""
    consumer._fetcher.PartitionRecords = _BatchPartitionRecords  # noqa: SLF001


# ---------------------------------------------------------------------------------------- sending


class _NoRebind:
    """Stands in the batch's per-record future list for the records that have no future of their own:
    kafka-python rebinds those futures when it splits a too-large batch, by record index."""

    __slots__ = ()

    def rebind(self, new_produce_future: Any, new_batch_index: int) -> None:  # noqa: ARG002
        return None


_NO_FUTURE = _NoRebind()


class BatchCopyPath(RecordCopyPath):
    """Partition i to partition i, :class:`RawBatch` items as bytes and any ConsumerRecords in between
    through the record path (both append to the same producer accumulator, in order)."""

    def __init__(self, producer: KafkaProducer, source_cluster_id: str, target_cluster_id: str,
                 keep_codec: bool = False) -> None:
        super().__init__(producer, source_cluster_id, target_cluster_id)
        self._keep_codec = keep_codec  # each target batch compressed as its source batch was
        self._accumulator = producer._accumulator  # noqa: SLF001
        config = self._accumulator.config
        self._magic = config["message_version"]
        self._compression = config["compression_attrs"]
        self._batch_size = config["batch_size"]
        self._origin_bytes = origin_header_bytes(source_cluster_id)
        self.raw_batches = 0  # source batches forwarded as bytes (for tests and --debug)

    def send_batch(self, target: TopicPartition, records: list[Any]) -> tuple[Any, int, int, int]:
        if self._transaction is not None:
            self._transaction.maybe_add_partition_to_transaction(target)
        future = None
        sent = skipped = size = 0
        start = 0
        count = len(records)
        while start < count:
            item = records[start]
            if type(item) is RawBatch:
                run_future, run_sent, run_skipped, run_size = self._send_raw(target, item)
                start += 1
            else:
                stop = start + 1
                while stop < count and type(records[stop]) is not RawBatch:
                    stop += 1
                run_future, run_sent, run_skipped, run_size = self._send_records(target, records[start:stop])
                start = stop
            if run_future is not None:
                future = run_future
            sent += run_sent
            skipped += run_skipped
            size += run_size
        return future, sent, skipped, size

    def _send_raw(self, tp: TopicPartition, item: RawBatch) -> tuple[Any, int, int, int]:
        accumulator = self._accumulator
        body = item.body
        check_origin = _ORIGIN_NAME in body
        limit = self._batch_size
        codec = item.codec if self._keep_codec else self._compression
        future = None
        sent = skipped = size = 0
        pos = 0
        new_batch = full = False
        now = time.monotonic()
        accumulator._appends_in_progress.increment()  # noqa: SLF001 - close() waits for appends in progress
        try:
            with accumulator._tp_lock(tp):  # noqa: SLF001
                if accumulator._closed:  # noqa: SLF001
                    raise kafka_errors.IllegalStateError("RecordAccumulator is closed")
                queue = accumulator._batches[tp]  # noqa: SLF001
                while pos < len(body):
                    batch = queue[-1] if queue else None
                    builder = None
                    if batch is not None and getattr(batch, "kmc_codec", None) == codec:
                        records = batch.records
                        builder = records._builder  # noqa: SLF001 - None once the batch is closed
                        if builder is not None and len(builder._buffer) >= limit:  # noqa: SLF001
                            builder = None
                    if builder is None:
                        records = MemoryRecordsBuilder(self._magic, codec, limit)
                        batch = ProducerBatch(tp, records, now=now)
                        batch.kmc_codec = codec  # a batch of this path: only this path appends to it
                        builder = records._builder  # noqa: SLF001
                        # Appends through accumulator.append() (the record path) must open their own batch:
                        # this one's futures are only its last records'.
                        builder._batch_size = 0  # noqa: SLF001
                        queue.append(batch)
                        accumulator._incomplete.add(batch)  # noqa: SLF001
                        new_batch = True
                    first_delta = records._next_offset  # noqa: SLF001
                    pos, written, dropped, payload, base, highest = encode_records(
                        builder._buffer, body, pos, item.first_timestamp, builder._first_timestamp,  # noqa: SLF001
                        first_delta, limit, self._origin_bytes, self._target_origin, check_origin)
                    skipped += dropped
                    if not written:
                        # Every remaining record came from the target (loop prevention). A batch opened for
                        # them holds no record and must not be sent: the broker rejects an empty batch.
                        if not builder._num_records:  # noqa: SLF001
                            queue.pop()
                            accumulator._incomplete.remove(batch)  # noqa: SLF001
                        continue
                    builder._first_timestamp = base  # noqa: SLF001
                    if builder._max_timestamp is None or highest > builder._max_timestamp:  # noqa: SLF001
                        builder._max_timestamp = highest  # noqa: SLF001
                    last = first_delta + written - 1
                    builder._num_records += written  # noqa: SLF001
                    builder._last_offset = last  # noqa: SLF001
                    records._next_offset = last + 1  # noqa: SLF001
                    batch.last_append = now
                    future = FutureRecordMetadata(batch.produce_future, last, highest, None, -1, -1, -1)
                    futures = batch._record_futures  # noqa: SLF001
                    futures.extend(itertools.repeat(_NO_FUTURE, written - 1))
                    futures.append(future)
                    sent += written
                    size += payload
                    full = len(queue) > 1 or len(builder._buffer) >= limit  # noqa: SLF001
        finally:
            accumulator._appends_in_progress.decrement()  # noqa: SLF001
        self.raw_batches += 1
        if new_batch or full:
            self._wakeup()
        return future, sent, skipped, size
