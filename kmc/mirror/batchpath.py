"""The byte-level copy path: record batches forwarded whole where they can be, walked as bytes where not.

The record path (:class:`~kmc.mirror.copypath.RecordCopyPath`) lets kafka-python decode every fetched
record into a ``ConsumerRecord`` and re-encode it in the producer: on small records that is four fifths
of a mirror's CPU. This path does neither. For each fetched v2 batch (a :class:`~kmc.mirror.fetch.RawBatch`):

- **Whole** (:meth:`BatchCopyPath._send_whole`): a batch a local producer of the source wrote (no kmc
  mirror: kmc/mirror/provenance.py), with consecutive offsets and CreateTime, goes to the target as it was
  fetched, still compressed: :class:`_WholeBatch` stands in the producer's batch for it, and only the batch
  header fields the target needs are rewritten when the producer sends it (base offset 0, producer id,
  epoch and base sequence of kmc's idempotent or transactional producer, the transactional bit) with the
  CRC. Not one record is read: no decompression, no recompression. This needs ``--compression keep``
  (the default) and no per-record stamp (merge mode stamps every record: ``MirrorSpec.stamp_records``).
- **Walked** (:func:`encode_records`): any other batch is decompressed and its bytes walked once, reading
  only the varints that locate each record's key, value and header count; each record goes straight into
  the target producer's open batch with its offset delta renumbered from 0 (a compacted source leaves gaps
  a produced batch must not have), its timestamp delta re-based on the target batch's first timestamp
  (the CreateTime is kept), and ``kmc-origin`` appended when it has none (the record skipped when its
  origin is the target cluster). Key, value and every other header pass through byte for byte
  (including null header values, which kafka-python's producer cannot write).
- **Skipped**: a batch a kmc mirror wrote into the source with data from the target cluster (two-way and
  ring mirrors), found by its producer id, is not copied at all.

Batches the fetcher decodes (kmc/mirror/fetch.py: a fetch that starts mid-batch, v0/v1, LogAppendTime) go
through the record path in the same poll. Producer ids, sequence numbers, retries, ordering and
acknowledgements stay kafka-python's: the bytes go into the ``ProducerBatch`` objects its accumulator
drains, so idempotence, transactions and the copy loop's checkpoint logic are unchanged.

kafka-python is pinned to 3.x (pyproject.toml): this module uses its record batch classes and its
accumulator's internals; tests/test_engine_internals.py checks each, and every fidelity, kill -9,
broker-restart and chaos test in the suite runs through it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import struct
import time
from collections.abc import Iterator
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaProducer, TopicPartition
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c

from kmc.mirror.copypath import ORIGIN_HEADER, RecordCopyPath
from kmc.mirror.fetch import RawBatch
from kmc.mirror.provenance import ProvenanceMap

log = logging.getLogger(__name__)

_ORIGIN_NAME = ORIGIN_HEADER.encode()
# The v2 batch header fields a whole batch gets anew (byte positions from the protocol's RecordBatch):
# base offset (0), batch length (4), partition leader epoch (4) | magic | CRC | attributes | ... | producer id,
# producer epoch, base sequence | records count.
_BASE = struct.Struct(">qii")
_AFTER_LENGTH = 12  # the batch length counts from the partition leader epoch on
_CRC = struct.Struct(">I")
_CRC_AT = DefaultRecordBatch.CRC_OFFSET
_ATTRIBUTES = struct.Struct(">h")
_ATTRIBUTES_AT = DefaultRecordBatch.ATTRIBUTES_OFFSET
_PRODUCER_STATE = struct.Struct(">qhi")
_PRODUCER_STATE_AT = 43
_TRANSACTIONAL = DefaultRecordBatch.TRANSACTIONAL_MASK
_DELETE_HORIZON = 0x40
# The varint bytes of every zigzag-encoded value below 2**14 (1 or 2 bytes), looked up instead of encoded.
_VARINTS = tuple(bytes((z,)) if z < 0x80 else bytes((0x80 | (z & 0x7F), z >> 7)) for z in range(1 << 14))
_SMALL = len(_VARINTS)


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
        if origin is None and origin_size:  # stamped: kmc-origin appended
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
        else:  # it has an origin (an earlier hop), or it needs none: headers kept as they are
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


# ---------------------------------------------------------------------------------------- sending


class _NoRebind:
    """Stands in the batch's per-record future list for the records that have no future of their own:
    kafka-python rebinds those futures when it splits a too-large batch, by record index."""

    __slots__ = ()

    def rebind(self, new_produce_future: Any, new_batch_index: int) -> None:  # noqa: ARG002
        return None


_NO_FUTURE = _NoRebind()


@contextlib.contextmanager
def _appending(accumulator: Any, tp: TopicPartition) -> Iterator[Any]:
    """The partition's queue of producer batches, to append to as kafka-python's own ``append()`` does:
    counted as an append in progress (``close()`` waits for those) and under the partition's lock."""
    accumulator._appends_in_progress.increment()  # noqa: SLF001
    try:
        with accumulator._tp_lock(tp):  # noqa: SLF001
            if accumulator._closed:  # noqa: SLF001
                raise kafka_errors.IllegalStateError("RecordAccumulator is closed")
            yield accumulator._batches[tp]  # noqa: SLF001
    finally:
        accumulator._appends_in_progress.decrement()  # noqa: SLF001


class _WholeBatch:
    """Stands in kafka-python's ``MemoryRecordsBuilder`` in a ``ProducerBatch`` for one source batch sent as
    it was fetched. The sender sets the producer state when it drains the batch (``set_producer_state``)
    and closes it; closing writes that state into the batch header, with base offset 0 and the CRC. The
    records, compressed or not, are not touched. A batch the broker refuses as too large is split by
    kafka-python like any other (it decodes ``buffer()``)."""

    __slots__ = ("_raw", "_count", "_producer_id", "_producer_epoch", "_base_sequence", "_transactional",
                 "_closed")

    def __init__(self, raw: bytearray, count: int) -> None:
        self._raw = raw
        self._count = count
        self._producer_id = -1
        self._producer_epoch = -1
        self._base_sequence = -1
        self._transactional = False
        self._closed = False

    def append(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - nothing is added to a whole batch
        return None

    def is_full(self) -> bool:
        return True

    def next_offset(self) -> int:
        return self._count  # the sender advances the partition's sequence by this many

    def set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int,
                           is_transactional: bool) -> None:
        if self._closed:
            raise kafka_errors.IllegalStateError("Trying to set producer state of an already closed batch")
        self._producer_id, self._producer_epoch = producer_id, producer_epoch
        self._base_sequence, self._transactional = base_sequence, is_transactional

    @property
    def producer_id(self) -> int:
        return self._producer_id

    @property
    def producer_epoch(self) -> int:
        return self._producer_epoch

    @property
    def base_sequence(self) -> int:
        return self._base_sequence

    def close(self) -> None:
        if self._closed:
            return  # a retry sends the same bytes, state and all
        raw = self._raw
        attributes = (_ATTRIBUTES.unpack_from(raw, _ATTRIBUTES_AT)[0] & ~(_TRANSACTIONAL | _DELETE_HORIZON)
                      | (_TRANSACTIONAL if self._transactional else 0))
        _BASE.pack_into(raw, 0, 0, len(raw) - _AFTER_LENGTH, -1)  # base offset, length, partition leader epoch
        _ATTRIBUTES.pack_into(raw, _ATTRIBUTES_AT, attributes)
        _PRODUCER_STATE.pack_into(raw, _PRODUCER_STATE_AT, self._producer_id, self._producer_epoch,
                                  self._base_sequence)
        _CRC.pack_into(raw, _CRC_AT, calc_crc32c(memoryview(raw)[_ATTRIBUTES_AT:]))
        self._closed = True

    def is_closed(self) -> bool:
        return self._closed

    def size_in_bytes(self) -> int:
        return len(self._raw)

    def compression_rate(self) -> float:
        return 1.0

    def buffer(self) -> bytearray:
        return self._raw


class BatchCopyPath(RecordCopyPath):
    """Partition i to partition i: fetched batches whole, walked as bytes, or skipped (module docstring);
    decoded batches in between through the record path (all append to the same producer accumulator, in
    order)."""

    def __init__(self, producer: KafkaProducer, source_cluster_id: str, target_cluster_id: str,
                 provenance: ProvenanceMap | None = None, keep_codec: bool = False, whole: bool = False,
                 stamp_records: bool = False) -> None:
        super().__init__(producer, source_cluster_id, target_cluster_id, provenance, stamp_records)
        self._keep_codec = keep_codec  # each target batch compressed as its source batch was
        self._whole = whole and keep_codec  # batches of local producers forwarded whole
        self._accumulator = producer._accumulator  # noqa: SLF001
        config = self._accumulator.config
        self._magic = config["message_version"]
        self._compression = config["compression_attrs"]
        self._batch_size = config["batch_size"]
        # the kmc-origin header bytes per origin; records of the source's own producers get none (loop
        # prevention goes by producer id) unless every record is stamped (merge mode)
        self._origin_bytes = {None: origin_header_bytes(source_cluster_id) if stamp_records else b""}
        self.whole_batches = 0  # source batches forwarded whole (for tests and --debug)
        self.walked_batches = 0  # source batches walked record by record as bytes

    def send_batch(self, target: TopicPartition, items: list[Any]) -> tuple[Any, int, int, int]:
        if self._transaction is not None:
            self._transaction.maybe_add_partition_to_transaction(target)
        origins = self.origins(items)
        target_id = self._target_id
        future = None
        sent = skipped = size = 0
        for item in items:
            origin = origins.get(item.producer_id)
            if origin == target_id:  # a mirror wrote it with the target's data: never back
                skipped += item.count
                continue
            if type(item) is RawBatch:
                if origin is None and self._whole and item.passable:
                    run_future, run_sent, run_skipped, run_size = self._send_whole(target, item)
                else:
                    header = self._origin_bytes.get(origin)
                    if header is None:
                        header = self._origin_bytes[origin] = origin_header_bytes(origin)
                    run_future, run_sent, run_skipped, run_size = self._send_raw(target, item, header)
            else:
                header = self._origin_header if origin is None else (ORIGIN_HEADER, origin.encode())
                run_future, run_sent, run_skipped, run_size = self._send_records(target, item.records, header)
            if run_future is not None:
                future = run_future
            sent += run_sent
            skipped += run_skipped
            size += run_size
        return future, sent, skipped, size

    def _send_whole(self, tp: TopicPartition, item: RawBatch) -> tuple[Any, int, int, int]:
        """Queue ``item`` as a producer batch of its own, its bytes as fetched (:class:`_WholeBatch`)."""
        count = item.count
        with _appending(self._accumulator, tp) as queue:
            batch = ProducerBatch(tp, _WholeBatch(item.raw, count))
            future = FutureRecordMetadata(batch.produce_future, count - 1, item.max_timestamp, None, -1, -1, -1)
            futures = batch._record_futures  # noqa: SLF001 - rebound by record index if the batch is split
            futures.extend(itertools.repeat(_NO_FUTURE, count - 1))
            futures.append(future)
            queue.append(batch)
            self._accumulator._incomplete.add(batch)  # noqa: SLF001
        self.whole_batches += 1
        self._wakeup()
        return future, count, 0, item.size

    def _send_raw(self, tp: TopicPartition, item: RawBatch, origin_bytes: bytes) -> tuple[Any, int, int, int]:
        """Walk ``item``'s records into the partition's open producer batch (module docstring)."""
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
        with _appending(accumulator, tp) as queue:
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
                    first_delta, limit, origin_bytes, self._target_origin, check_origin)
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
        self.walked_batches += 1
        if new_batch or full:
            self._wakeup()
        return future, sent, skipped, size
