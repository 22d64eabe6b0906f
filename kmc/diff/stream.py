"""Reading and comparing the content of partitions (``kmc diff --data``), streamed with bounded memory.

kafka-python decodes records in pure Python, which makes decoding, not the network, the limit of --data.
Each side is therefore read by a process of its own (:func:`read_side`, run by kmc.worker), so the two
sides decode on two cores instead of sharing one interpreter lock. A reader process gets its cluster and
partitions from the worker request and sends batches of (offsets, digests); a thread per side in the
comparing process moves them into a bounded queue. Pipe and queue bound the memory whatever the size of
the topics: a reader ahead of the comparison blocks on its pipe. Library code: no printing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import struct
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.admin import OffsetSpec

from kmc.client import KafkaSession, translate_errors
from kmc.diff.compare import compare_sequences, differing_fields, record_digest
from kmc.diff.model import FirstDifference, SequenceComparison
from kmc.errors import KafkaOperationError, UnreachableError
from kmc.metadata import TopicInfo, describe_topics, list_offsets, topic_configs
from kmc.worker import Channel, Worker

# Large fetches and polls: a diff reads whole partitions, and kafka-python's per-request overhead
# dominates otherwise. Larger than these bought no speed on 1M records, only memory (a reader
# process peaks near 100 MB with these, 155 MB with twice as much).
READER_SETTINGS: dict[str, Any] = {
    "isolation_level": "read_committed",  # aborted transactional records are not content
    "auto_offset_reset": "none",  # records deleted under the reader are an error, not a silent skip
    "max_poll_records": 10000,
    "fetch_max_bytes": 16 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_wait_ms": 100,  # a switch to the next partition waits out a fetch past the end
    "receive_buffer_bytes": 4 * 1024 * 1024,
}
QUEUE_BATCHES = 8
POLL_MS = 200
_BATCH = struct.Struct(">IQ")  # records, payload bytes; then offsets (native int64) and 16-byte digests


@dataclass(frozen=True)
class PartitionJob:
    """One partition to compare: the same partition of both topics, from the offsets captured at the
    start (earliest) to the last committed offset (LSO) captured before reading."""

    topic: str
    target_topic: str
    partition: int
    source_range: tuple[int, int]
    target_range: tuple[int, int]


@dataclass(frozen=True)
class DataProgress:
    """What a progress callback receives after each batch of compared records."""

    topic: str
    partition: int
    records: int  # source records read so far, all partitions
    total: int  # the source's offset span over all partitions: an upper bound of ``records``


def read_partition(session: KafkaSession, consumer: Any, partition: TopicPartition, start: int,
                   end: int) -> Iterator[tuple[list[int], list[bytes], int]]:
    """Batches of (offsets, digests, payload bytes) of one partition's committed records in [start, end)."""
    cluster = session.cluster
    where = f"read {partition.topic}[{partition.partition}]"
    with translate_errors(cluster, where):
        consumer.assign([partition])
        consumer.seek(partition, start)
    position = last_position = start
    last_progress = time.monotonic()
    digest = record_digest
    while position < end:
        try:
            with translate_errors(cluster, where):
                polled = consumer.poll(timeout_ms=POLL_MS)
        except KafkaOperationError as exc:
            if isinstance(exc.__cause__, kafka_errors.OffsetOutOfRangeError):
                raise KafkaOperationError(
                    f"{cluster.name}: {where}: offset {position} no longer exists",
                    hint="records were deleted (retention) while diff read them; run it again") from exc
            raise
        records = polled.get(partition, ())
        offsets: list[int] = []
        digests: list[bytes] = []
        size = 0
        for record in records:
            if record.offset >= end:
                break
            offsets.append(record.offset)
            digests.append(digest(record.key, record.value, record.headers, record.timestamp))
            size += (max(record.serialized_key_size, 0) + max(record.serialized_value_size, 0)
                     + max(record.serialized_header_size, 0))
        if offsets:
            yield offsets, digests, size
        if records:
            position = records[-1].offset + 1
        else:
            # No records, yet the position may move: past control markers and aborted batches.
            with translate_errors(cluster, where):
                position = max(position, consumer.position(partition) or position)
        if position > last_position:
            last_position = position
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > session.timeout:
            raise UnreachableError(f"{cluster.name}: {where}: no progress at offset {position} "
                                   f"for {session.timeout:g}s (end offset {end})")


_END = object()


def read_side(request: dict[str, Any], channel: Channel) -> None:
    """The task of a reader process (kmc.worker): read the partitions of one side in order, sending per
    partition batches of (offsets, digests, payload bytes) as raw bytes, then an ``("end",)`` event."""
    with KafkaSession(request["cluster"], request["timeout"]) as session:
        consumer = session.consumer(**READER_SETTINGS)
        for topic, partition, start, end in request["partitions"]:
            if channel.stop.is_set():
                return
            if start < end:
                for offsets, digests, size in read_partition(session, consumer, TopicPartition(topic, partition),
                                                             start, end):
                    channel.send_bytes(_BATCH.pack(len(offsets), size) + array("q", offsets).tobytes()
                                       + b"".join(digests))
            channel.send("end")


class ClusterSide:
    """One side of a diff that is a cluster: what :func:`kmc.diff.clusters.diff_clusters` asks of a side (an
    export directory is the other kind: kmc.archive.view.ArchiveSide)."""

    def __init__(self, session: KafkaSession) -> None:
        self.session = session
        self.name = session.cluster.name

    def describe(self, include: list[Any] | None = None, exclude: list[Any] | None = None,
                 wanted: Callable[[str], bool] | None = None) -> list[TopicInfo]:
        return describe_topics(self.session, include, exclude, wanted=wanted)

    def configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        return topic_configs(self.session, names)

    def ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The last stable offset of each partition: the end of what read_committed consumers can read."""
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        found = list_offsets(self.session, dict.fromkeys(wanted, OffsetSpec.LATEST), "read_committed")
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    def reader(self, partitions: list[list[Any]]) -> Worker:
        return Worker("kmc.diff.stream:read_side",
                      {"cluster": self.session.cluster, "timeout": self.session.timeout, "partitions": partitions},
                      name=f"{self.name}: the reader process")

    def record(self, topic: str, partition: int, offset: int) -> Any:
        return _fetch_record(self.session, topic, partition, offset)


class _Reader:
    """One side's reader process, and the thread that moves what it sends into a bounded queue: per
    partition, batches of (offsets, digests, bytes), then an end marker; a failure as an exception."""

    def __init__(self, side: Any, jobs: Sequence[PartitionJob], index: int) -> None:
        self.items: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stopped = threading.Event()
        partitions = [[job.target_topic if index else job.topic, job.partition,
                       *(job.target_range if index else job.source_range)] for job in jobs]
        self.worker = side.reader(partitions)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"kmc-diff-{index}")
        self.thread.start()

    def _put(self, item: Any) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(queue.Full):
                self.items.put(item, timeout=0.2)
                return

    def _run(self) -> None:
        try:
            for event in self.worker.events():
                if self.stopped.is_set():
                    return
                if isinstance(event, bytes):
                    count, size = _BATCH.unpack_from(event)
                    offsets = array("q")
                    offsets.frombytes(event[_BATCH.size:_BATCH.size + 8 * count])
                    blob = event[_BATCH.size + 8 * count:]
                    self._put((offsets.tolist(), [blob[i:i + 16] for i in range(0, 16 * count, 16)], size))
                else:
                    self._put(_END)
            self.worker.result()
        except BaseException as exc:  # noqa: BLE001 - handed to the comparing thread, which raises it
            self._put(exc)

    def close(self) -> None:
        """Stop the reader process (if still running) and the thread."""
        self.stopped.set()
        self.worker.close(grace=1.0)
        self.thread.join(timeout=5)


def _sequence(reader: _Reader, sizes: list[int],
              on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[int, bytes]]:
    """One partition's (offset, digest) pairs from a reader's queue, up to its end marker."""
    while True:
        item = reader.items.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        offsets, digests, size = item
        sizes[0] += size
        yield from zip(offsets, digests, strict=True)
        if on_batch is not None:
            on_batch(len(offsets))


def _fetch_record(session: KafkaSession, topic: str, partition: int, offset: int) -> Any:
    """The one record at ``offset`` (read_committed), to name the fields of a first difference; None
    when it is gone (deleted or compacted away since)."""
    tp = TopicPartition(topic, partition)
    consumer = session.consumer(isolation_level="read_committed", auto_offset_reset="none", max_poll_records=1)
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + session.timeout
        while time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=POLL_MS).get(tp, ()):
                return record if record.offset == offset else None
        return None
    except kafka_errors.KafkaError:
        return None  # the comparison itself stands; only the naming of the fields is lost
    finally:
        consumer.close()


def compare_partitions(source_side: Any, target_side: Any, jobs: Sequence[PartitionJob],
                       progress: Callable[[DataProgress], None] | None = None,
                       ) -> dict[tuple[str, int], SequenceComparison]:
    """Stream every job's partition from both sides (:class:`ClusterSide`, or an export's) at once and
    compare them in lock step.

    A reader process per side feeds a bounded queue, so memory stays bounded whatever the size of
    the topics. Result: (source topic, partition) → comparison.
    """
    if not jobs:
        return {}
    readers = (_Reader(source_side, jobs, 0), _Reader(target_side, jobs, 1))
    total = sum(job.source_range[1] - job.source_range[0] for job in jobs)
    read = [0]
    results: dict[tuple[str, int], SequenceComparison] = {}
    try:
        for job in jobs:
            def on_batch(count: int, job: PartitionJob = job) -> None:
                read[0] += count
                if progress is not None:
                    progress(DataProgress(job.topic, job.partition, read[0], total))

            source_sizes, target_sizes = [0], [0]
            result = compare_sequences(_sequence(readers[0], source_sizes, on_batch),
                                       _sequence(readers[1], target_sizes))
            results[(job.topic, job.partition)] = dataclasses.replace(
                result, source_bytes=source_sizes[0], target_bytes=target_sizes[0])
    finally:
        for reader in readers:
            reader.close()
    for job in jobs:
        result = results[(job.topic, job.partition)]
        first = result.first
        if first is not None and first.source_offset is not None and first.target_offset is not None:
            fields = _first_fields(source_side, target_side, job, first)
            results[(job.topic, job.partition)] = dataclasses.replace(
                result, first=dataclasses.replace(first, fields=fields))
    return results


def _first_fields(source_side: Any, target_side: Any, job: PartitionJob,
                  first: FirstDifference) -> tuple[str, ...] | None:
    source_record = source_side.record(job.topic, job.partition, first.source_offset)
    target_record = target_side.record(job.target_topic, job.partition, first.target_offset)
    if source_record is None or target_record is None:
        return None  # gone meanwhile (retention): the digests still say they differed
    return differing_fields(source_record, target_record)
