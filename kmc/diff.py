"""Compare the topics of two clusters: which exist, their partitions, replication, configs and record
counts, and (on request) their content, record by record, streamed with bounded memory.

Source topic names go through the same rename template and the same ignored configs as the mirror
(:func:`kmc.metadata.render_topic_name`, :data:`kmc.metadata.CLUSTER_SPECIFIC_CONFIGS`), so a diff
of a mirror against its origin agrees with what the mirror did. Library code: no printing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import zip_longest
from types import MappingProxyType
from typing import Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.admin import OffsetSpec
from kafka.protocol.consumer.offsets import IsolationLevel

from kmc import errors
from kmc.client import KafkaSession, translate_errors
from kmc.errors import KafkaOperationError, KmcError, UnreachableError, UsageError
from kmc.metadata import (
    CLUSTER_SPECIFIC_CONFIGS,
    TopicInfo,
    compile_patterns,
    describe_topics,
    matches,
    render_topic_name,
    topic_configs,
)
from kmc.profiles import Cluster, Secret, validate_rename

# Every kind of difference, in the order a topic's differences are listed.
KINDS = ("missing_topic", "extra_topic", "partitions", "replication_factor", "config", "records", "data")

# Headers kmc itself adds when mirroring (``kmc-origin``): not part of a record's content.
KMC_HEADER_PREFIX = "kmc-"

RECORD_FIELDS = ("key", "value", "headers", "timestamp")


# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigSelection:
    """Which topic configs to compare: ``all`` (minus the cluster-specific ones), ``none``, or named keys."""

    mode: str = "all"
    keys: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> ConfigSelection:
        value = text.strip()
        if value.lower() in ("all", "none"):
            return cls(value.lower())
        keys = frozenset(key.strip() for key in value.split(",") if key.strip())
        if not keys:
            raise UsageError(f"--configs: expected all, none or KEY,... (got '{text}')")
        return cls("keys", keys)

    def wanted(self, key: str) -> bool:
        if self.mode == "none":
            return False
        if self.mode == "keys":
            return key in self.keys  # named keys are compared even when cluster-specific
        return key not in CLUSTER_SPECIFIC_CONFIGS

    def to_json(self) -> str | list[str]:
        return sorted(self.keys) if self.mode == "keys" else self.mode


@dataclass(frozen=True)
class DiffOptions:
    topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rename: str = "{topic}"
    configs: ConfigSelection = ConfigSelection()
    data: bool = False
    strict: bool = False


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstDifference:
    """Where a partition's two record sequences first part: the index counts records from the start
    of each side; an offset is None on the side that had no record there."""

    index: int
    source_offset: int | None
    target_offset: int | None
    fields: tuple[str, ...] | None = None  # which of key/value/headers/timestamp differ, when both exist

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "source_offset": self.source_offset, "target_offset": self.target_offset,
                "fields": list(self.fields) if self.fields is not None else None}


@dataclass(frozen=True)
class SequenceComparison:
    """The outcome of comparing one partition's records on both sides, in order."""

    source_records: int = 0
    target_records: int = 0
    differing: int = 0  # same index on both sides, different content
    missing: int = 0  # in the source, not in the target (the target is shorter)
    extra: int = 0  # in the target, not in the source (the target is longer)
    first: FirstDifference | None = None
    source_bytes: int = 0
    target_bytes: int = 0

    @property
    def equal(self) -> bool:
        return self.first is None


@dataclass(frozen=True)
class Difference:
    """One difference. Every instance has the same keys in JSON; those that do not apply are null."""

    kind: str
    topic: str | None  # the source topic (for extra_topic: the source name it would come from)
    target_topic: str | None
    partition: int | None = None
    key: str | None = None  # config key, for kind "config"
    source: Any = None
    target: Any = None
    data: SequenceComparison | None = None

    def to_dict(self) -> dict[str, Any]:
        data = None
        if self.data is not None:
            data = {"differing": self.data.differing, "missing": self.data.missing, "extra": self.data.extra,
                    "first_difference": self.data.first.to_dict() if self.data.first else None}
        return {"kind": self.kind, "topic": self.topic, "target_topic": self.target_topic,
                "partition": self.partition, "key": self.key, "source": self.source, "target": self.target,
                "data": data}


@dataclass(frozen=True)
class TopicComparison:
    """One source topic and its counterpart, side by side, whether or not they differ."""

    topic: str | None
    target_topic: str | None
    status: str  # equal | different | missing | extra
    partitions: tuple[int | None, int | None]
    replication_factor: tuple[int | None, int | None]
    records: tuple[int | None, int | None]

    def to_dict(self) -> dict[str, Any]:
        def pair(values: tuple[Any, Any]) -> dict[str, Any]:
            return {"source": values[0], "target": values[1]}

        return {"topic": self.topic, "target_topic": self.target_topic, "status": self.status,
                "partitions": pair(self.partitions), "replication_factor": pair(self.replication_factor),
                "records": pair(self.records)}


@dataclass
class DiffReport:
    source: str
    target: str
    options: DiffOptions
    topics: list[TopicComparison] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    records_compared: int | None = None  # record pairs read with --data
    bytes_compared: int | None = None  # key+value+header bytes read on both sides with --data
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        statuses = [topic.status for topic in self.topics]
        return {
            "source": self.source,
            "target": self.target,
            "rename": self.options.rename,
            "configs": self.options.configs.to_json(),
            "strict": self.options.strict,
            "data": self.options.data,
            "equal": self.equal,
            "topics": [topic.to_dict() for topic in self.topics],
            "differences": [difference.to_dict() for difference in self.differences],
            "summary": {
                "topics": len(self.topics),
                "equal_topics": statuses.count("equal"),
                "different_topics": statuses.count("different"),
                "missing_topics": statuses.count("missing"),
                "extra_topics": statuses.count("extra"),
                "differences": len(self.differences),
                "records_compared": self.records_compared,
                "bytes_compared": self.bytes_compared,
                "seconds": round(self.seconds, 3),
            },
        }


# --- topic mapping (pure) ---------------------------------------------------------------------


def reverse_topic_name(template: str, target_topic: str, source: str) -> str | None:
    """The source topic that ``template`` maps onto ``target_topic``, or None when none does."""
    pattern = []
    seen_topic = False
    for piece in re.split(r"(\{topic\}|\{source\})", template):
        if piece == "{topic}":
            pattern.append("(?P=topic)" if seen_topic else "(?P<topic>.+)")
            seen_topic = True
        elif piece == "{source}":
            pattern.append(re.escape(source))
        else:
            pattern.append(re.escape(piece))
    found = re.fullmatch("".join(pattern), target_topic)
    if not found:
        return None
    topic = found.group("topic")
    return topic if render_topic_name(template, topic, source) == target_topic else None


@dataclass(frozen=True)
class TopicMapping:
    pairs: tuple[tuple[str, str], ...]  # (source topic, target topic), both present
    missing: tuple[tuple[str, str], ...]  # (source topic, the target name it should have)
    extra: tuple[tuple[str, str], ...]  # (source name it would come from, target topic)


def map_topics(source_topics: Iterable[str], target_topics: Iterable[str], template: str, source: str,
               include: Sequence[re.Pattern[str]] = (), exclude: Sequence[re.Pattern[str]] = ()) -> TopicMapping:
    """Pair source topics with their renamed counterparts.

    A target topic is in scope when the template could have produced it from a source topic name
    that the include/exclude patterns select; such a topic with no source is ``extra``. So with
    ``{source}.{topic}`` a central cluster's ``dc2.*`` topics are not extra when diffing dc1.
    """
    targets = set(target_topics)
    selected = sorted(topic for topic in set(source_topics) if matches(topic, list(include), list(exclude)))
    pairs, missing, mapped = [], [], set()
    for topic in selected:
        target_topic = render_topic_name(template, topic, source)
        mapped.add(target_topic)
        (pairs if target_topic in targets else missing).append((topic, target_topic))
    extra = []
    for target_topic in sorted(targets - mapped):
        origin = reverse_topic_name(template, target_topic, source)
        if origin is not None and matches(origin, list(include), list(exclude)):
            extra.append((origin, target_topic))
    return TopicMapping(tuple(pairs), tuple(missing), tuple(extra))


# --- metadata comparison (pure) ---------------------------------------------------------------


def compare_configs(source: Mapping[str, str | None], target: Mapping[str, str | None],
                    selection: ConfigSelection) -> list[tuple[str, str | None, str | None]]:
    """(key, source value, target value) for every selected key whose topic-level value differs.

    Both mappings hold topic-level overrides only; a key set on one side is a difference even if the
    other cluster's default happens to match today, since the override pins the value and the
    default does not.
    """
    keys = sorted(key for key in set(source) | set(target) if selection.wanted(key))
    return [(key, source.get(key), target.get(key)) for key in keys if source.get(key) != target.get(key)]


def partition_records(topic: TopicInfo) -> dict[int, int]:
    """Records per partition as the offset span (latest minus earliest) of each online partition."""
    return {partition: topic.latest[partition] - topic.earliest.get(partition, 0) for partition in topic.latest}


def compare_topic(source: TopicInfo, target: TopicInfo, source_configs: Mapping[str, str | None],
                  target_configs: Mapping[str, str | None], options: DiffOptions,
                  data: Mapping[int, SequenceComparison] | None = None) -> list[Difference]:
    """The differences between one source topic and its counterpart.

    Record counts are offset spans unless ``data`` (partition → streamed comparison) is given; then
    they are the records actually read, which transaction markers and compaction do not inflate.
    """
    def difference(kind: str, **values: Any) -> Difference:
        return Difference(kind, source.name, target.name, **values)

    found = []
    if len(source.partitions) != len(target.partitions):
        found.append(difference("partitions", source=len(source.partitions), target=len(target.partitions)))
    if options.strict and source.replication_factor != target.replication_factor:
        found.append(difference("replication_factor", source=source.replication_factor,
                                target=target.replication_factor))
    for key, source_value, target_value in compare_configs(source_configs, target_configs, options.configs):
        found.append(difference("config", key=key, source=source_value, target=target_value))
    if data is None:
        source_counts, target_counts = partition_records(source), partition_records(target)
        for partition in sorted(set(source_counts) & set(target_counts)):
            if source_counts[partition] != target_counts[partition]:
                found.append(difference("records", partition=partition, source=source_counts[partition],
                                        target=target_counts[partition]))
    else:
        for partition in sorted(data):
            result = data[partition]
            if result.source_records != result.target_records:
                found.append(difference("records", partition=partition, source=result.source_records,
                                        target=result.target_records))
        for partition in sorted(data):
            result = data[partition]
            if not result.equal:
                found.append(difference("data", partition=partition, source=result.source_records,
                                        target=result.target_records, data=result))
    return found


def _total(counts: Iterable[int]) -> int | None:
    counts = list(counts)
    return sum(counts) if counts else None


# --- record content (pure) --------------------------------------------------------------------

_SIZE = struct.Struct(">i").pack
_TIMESTAMP = struct.Struct(">q").pack
_NULL = _SIZE(-1)


def content_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> list[tuple[str, bytes | None]]:
    """A record's headers as compared: every header in order, duplicates kept, except kmc's own."""
    return [(key, value) for key, value in headers or () if not key.startswith(KMC_HEADER_PREFIX)]


def record_digest(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None,
                  timestamp: int) -> bytes:
    """A 16-byte digest of what a record holds: key, value, headers (kmc's own excluded) and timestamp.

    Every field is length-prefixed (-1 for null), so a null key and an empty key, or a header split
    differently between key and value, never digest alike. Written out field by field because this
    runs once per record read: it is the hot path of --data.
    """
    digest = blake2b(_TIMESTAMP(timestamp), digest_size=16)
    update = digest.update
    if key is None:
        update(_NULL)
    else:
        update(_SIZE(len(key)))
        update(key)
    if value is None:
        update(_NULL)
    else:
        update(_SIZE(len(value)))
        update(value)
    for header_key, header_value in headers or ():
        if not header_key.startswith(KMC_HEADER_PREFIX):
            name = header_key.encode()
            update(_SIZE(len(name)))
            update(name)
            if header_value is None:
                update(_NULL)
            else:
                update(_SIZE(len(header_value)))
                update(header_value)
    return digest.digest()


def differing_fields(source: Any, target: Any) -> tuple[str, ...]:
    """Which of key, value, headers (kmc's own excluded) and timestamp two consumer records differ in."""
    def content(record: Any) -> dict[str, Any]:
        return {"key": record.key, "value": record.value, "headers": content_headers(record.headers),
                "timestamp": record.timestamp}

    left, right = content(source), content(target)
    return tuple(name for name in RECORD_FIELDS if left[name] != right[name])


def compare_sequences(source: Iterable[tuple[int, bytes]], target: Iterable[tuple[int, bytes]]) -> SequenceComparison:
    """Compare two ordered sequences of (offset, digest) in lock step; consumes both completely.

    The record at index i of one side is compared with the record at index i of the other; the
    longer side's surplus counts as missing (source longer) or extra (target longer).
    """
    source_records = target_records = differing = 0
    first: FirstDifference | None = None
    for index, (left, right) in enumerate(zip_longest(source, target)):
        source_records += left is not None
        target_records += right is not None
        if left is not None and right is not None and left[1] == right[1]:
            continue
        differing += left is not None and right is not None
        if first is None:
            first = FirstDifference(index, left[0] if left else None, right[0] if right else None)
    missing = max(0, source_records - target_records)
    extra = max(0, target_records - source_records)
    return SequenceComparison(source_records, target_records, differing, missing, extra, first)


# --- streaming the content of partitions ------------------------------------------------------
#
# kafka-python decodes records in pure Python, which makes decoding, not the network, the limit of
# --data. Each side is therefore read by a process of its own (``serve_reader``), so the two sides
# decode on two cores instead of sharing one interpreter lock. A reader process gets its cluster and
# partitions on stdin and writes framed batches of (offsets, digests) to stdout; a thread per side in
# the comparing process moves them into a bounded queue. Pipe and queue bound the memory whatever the
# size of the topics: a reader ahead of the comparison blocks on its pipe.

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
READER_COMMAND = (sys.executable, "-c", "from kmc.diff import serve_reader; serve_reader()")

_FRAME = struct.Struct(">cI")  # kind, payload length
_BATCH = struct.Struct(">IQ")  # records, payload bytes; then offsets (native int64) and 16-byte digests
_FRAME_BATCH, _FRAME_END, _FRAME_ERROR = b"B", b"E", b"X"


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


def _cluster_to_json(cluster: Cluster) -> dict[str, Any]:
    """A Cluster as JSON for a reader process (secrets included: it goes down a pipe, never argv)."""
    data: dict[str, Any] = {}
    for item in dataclasses.fields(cluster):
        value = getattr(cluster, item.name)
        if isinstance(value, Secret):
            value = {_SECRET: value.reveal()}
        elif isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        data[item.name] = value
    return data


def _cluster_from_json(data: Mapping[str, Any]) -> Cluster:
    values: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and set(value) == {_SECRET}:
            value = Secret(value[_SECRET])
        elif isinstance(value, dict):
            value = MappingProxyType(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return Cluster(**values)


_SECRET = "__secret__"


def serve_reader() -> None:
    """The body of a reader process: read the partitions named on stdin, write frames to stdout.

    Ctrl-C is left to the comparing process, which stops its readers; a reader whose pipe is closed
    (the comparing process went away) just ends.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # errors are reported as frames, once
    out = sys.stdout.buffer

    def frame(kind: bytes, payload: bytes = b"") -> None:
        out.write(_FRAME.pack(kind, len(payload)))
        out.write(payload)

    try:
        request = json.loads(sys.stdin.buffer.read())
        cluster = _cluster_from_json(request["cluster"])
        with KafkaSession(cluster, request["timeout"]) as session:
            consumer = session.consumer(**READER_SETTINGS)
            for topic, partition, start, end in request["partitions"]:
                if start < end:
                    for offsets, digests, size in read_partition(session, consumer, TopicPartition(topic, partition),
                                                                 start, end):
                        frame(_FRAME_BATCH, _BATCH.pack(len(offsets), size) + array("q", offsets).tobytes()
                              + b"".join(digests))
                frame(_FRAME_END)
                out.flush()
    except BrokenPipeError:
        return
    except Exception as exc:  # noqa: BLE001 - every failure goes to the comparing process as a frame
        error = exc if isinstance(exc, KmcError) else KafkaOperationError(f"{type(exc).__name__}: {exc}")
        frame(_FRAME_ERROR, json.dumps({"type": type(error).__name__, "message": error.message,
                                        "hint": error.hint}).encode())
    with contextlib.suppress(BrokenPipeError):
        out.flush()


_END = object()


class _Reader:
    """One side's reader process, and the thread that moves its frames into a bounded queue: per
    partition, batches of (offsets, digests, bytes), then an end marker; a failure as an exception."""

    def __init__(self, session: KafkaSession, jobs: Sequence[PartitionJob], side: int) -> None:
        self.cluster = session.cluster
        self.items: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stopped = threading.Event()
        partitions = [[job.target_topic if side else job.topic, job.partition,
                       *(job.target_range if side else job.source_range)] for job in jobs]
        request = json.dumps({"cluster": _cluster_to_json(session.cluster), "timeout": session.timeout,
                              "partitions": partitions}).encode()
        self.process = subprocess.Popen(READER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.thread = threading.Thread(target=self._run, args=(request, len(jobs)), daemon=True,
                                       name=f"kmc-diff-{self.cluster.name}")
        self.thread.start()

    def _put(self, item: Any) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(queue.Full):
                self.items.put(item, timeout=0.2)
                return

    def _run(self, request: bytes, partitions: int) -> None:
        try:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.write(request)
                self.process.stdin.close()
            pipe = self.process.stdout
            while partitions and not self.stopped.is_set():
                header = pipe.read(_FRAME.size)
                kind, length = _FRAME.unpack(header) if len(header) == _FRAME.size else (b"", -1)
                payload = pipe.read(length) if length > 0 else b""
                if length < 0 or len(payload) < length:
                    status = self.process.wait()
                    raise KafkaOperationError(f"{self.cluster.name}: the reader process ended unexpectedly "
                                              f"(exit status {status})")
                if kind == _FRAME_END:
                    partitions -= 1
                    self._put(_END)
                elif kind == _FRAME_BATCH:
                    count, size = _BATCH.unpack_from(payload)
                    offsets = array("q")
                    offsets.frombytes(payload[_BATCH.size:_BATCH.size + 8 * count])
                    blob = payload[_BATCH.size + 8 * count:]
                    self._put((offsets.tolist(), [blob[i:i + 16] for i in range(0, 16 * count, 16)], size))
                else:
                    error = json.loads(payload)
                    error_class = getattr(errors, error["type"], None)
                    if not (isinstance(error_class, type) and issubclass(error_class, KmcError)):
                        error_class = KafkaOperationError
                    raise error_class(error["message"], error["hint"])
        except BaseException as exc:  # noqa: BLE001 - handed to the comparing thread, which raises it
            self._put(exc)

    def close(self) -> None:
        """Stop the reader process (if still running) and the thread."""
        self.stopped.set()
        if self.process.poll() is None:
            self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.thread.join(timeout=5)  # the pipe is at its end now: the thread's read returns
        self.process.stdout.close()


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


def compare_partitions(source_session: KafkaSession, target_session: KafkaSession, jobs: Sequence[PartitionJob],
                       progress: Callable[[DataProgress], None] | None = None,
                       ) -> dict[tuple[str, int], SequenceComparison]:
    """Stream every job's partition from both clusters at once and compare them in lock step.

    A reader process per side feeds a bounded queue, so memory stays bounded whatever the size of
    the topics. Result: (source topic, partition) → comparison.
    """
    if not jobs:
        return {}
    readers = (_Reader(source_session, jobs, 0), _Reader(target_session, jobs, 1))
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
            fields = _first_fields(source_session, target_session, job, first)
            results[(job.topic, job.partition)] = dataclasses.replace(
                result, first=dataclasses.replace(first, fields=fields))
    return results


def _first_fields(source_session: KafkaSession, target_session: KafkaSession, job: PartitionJob,
                  first: FirstDifference) -> tuple[str, ...] | None:
    source_record = _fetch_record(source_session, job.topic, job.partition, first.source_offset)
    target_record = _fetch_record(target_session, job.target_topic, job.partition, first.target_offset)
    if source_record is None or target_record is None:
        return None  # gone meanwhile (retention): the digests still say they differed
    return differing_fields(source_record, target_record)


# --- the whole comparison ---------------------------------------------------------------------


def _committed_ends(session: KafkaSession, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The last stable offset of each partition: the end of what read_committed consumers can read."""
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not wanted:
        return {}
    with translate_errors(session.cluster, "list offsets"):
        found = session.admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in wanted},
                                                     isolation_level=IsolationLevel.READ_COMMITTED)
    return {(tp.topic, tp.partition): value.offset for tp, value in found.items()}


def validate_options(options: DiffOptions) -> tuple[list[re.Pattern[str]], list[re.Pattern[str]]]:
    """Check the options before any cluster is contacted; returns the compiled patterns."""
    validate_rename(options.rename, "--rename", UsageError)
    return compile_patterns(options.topics, "--topics"), compile_patterns(options.exclude, "--exclude")


def diff_clusters(source_session: KafkaSession, target_session: KafkaSession, options: DiffOptions,
                  progress: Callable[[DataProgress], None] | None = None) -> DiffReport:
    """Compare the selected topics of the source cluster with their renamed counterparts in the target."""
    started = time.monotonic()
    include, exclude = validate_options(options)
    source_name = source_session.cluster.name

    def target_wanted(name: str) -> bool:
        origin = reverse_topic_name(options.rename, name, source_name)
        return origin is not None and matches(origin, include, exclude)

    with ThreadPoolExecutor(max_workers=2) as pool:
        source_future = pool.submit(describe_topics, source_session, include, exclude)
        target_future = pool.submit(describe_topics, target_session, wanted=target_wanted)
        failures = []
        for future in (source_future, target_future):
            try:
                future.result()
            except KmcError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]  # the source's, when both fail
        source_topics = {topic.name: topic for topic in source_future.result()}
        target_topics = {topic.name: topic for topic in target_future.result()}
        mapping = map_topics(source_topics, target_topics, options.rename, source_name, include, exclude)
        if options.configs.mode != "none" and mapping.pairs:
            source_configs_future = pool.submit(topic_configs, source_session, [pair[0] for pair in mapping.pairs])
            target_configs_future = pool.submit(topic_configs, target_session, [pair[1] for pair in mapping.pairs])
            source_configs, target_configs = source_configs_future.result(), target_configs_future.result()
        else:
            source_configs, target_configs = {}, {}

    report = DiffReport(source_name, target_session.cluster.name, options)
    data: dict[tuple[str, int], SequenceComparison] = {}
    if options.data and mapping.pairs:
        jobs = _partition_jobs(source_session, target_session, mapping.pairs, source_topics, target_topics)
        data = compare_partitions(source_session, target_session, jobs, progress)
        report.records_compared = sum(max(r.source_records, r.target_records) for r in data.values())
        report.bytes_compared = sum(r.source_bytes + r.target_bytes for r in data.values())

    entries: list[tuple[str, TopicComparison, list[Difference]]] = []
    for topic, target_topic in mapping.missing:
        info = source_topics[topic]
        entries.append((topic, TopicComparison(topic, target_topic, "missing", (len(info.partitions), None),
                                               (info.replication_factor, None), (info.records, None)),
                        [Difference("missing_topic", topic, target_topic, source=topic)]))
    for origin, target_topic in mapping.extra:
        info = target_topics[target_topic]
        entries.append((origin, TopicComparison(origin, target_topic, "extra", (None, len(info.partitions)),
                                                (None, info.replication_factor), (None, info.records)),
                        [Difference("extra_topic", origin, target_topic, target=target_topic)]))
    for topic, target_topic in mapping.pairs:
        source_info, target_info = source_topics[topic], target_topics[target_topic]
        topic_data = None
        records = (source_info.records, target_info.records)
        if options.data:
            topic_data = {partition: result for (name, partition), result in data.items() if name == topic}
            records = (_total(r.source_records for r in topic_data.values()),
                       _total(r.target_records for r in topic_data.values()))
        found = compare_topic(source_info, target_info, source_configs.get(topic, {}),
                              target_configs.get(target_topic, {}), options, topic_data)
        entries.append((topic, TopicComparison(
            topic, target_topic, "different" if found else "equal",
            (len(source_info.partitions), len(target_info.partitions)),
            (source_info.replication_factor, target_info.replication_factor), records), found))
    entries.sort(key=lambda entry: (entry[0], entry[1].target_topic or ""))
    for _, comparison, found in entries:
        report.topics.append(comparison)
        report.differences.extend(found)
    report.seconds = time.monotonic() - started
    return report


def _partition_jobs(source_session: KafkaSession, target_session: KafkaSession, pairs: Sequence[tuple[str, str]],
                    source_topics: Mapping[str, TopicInfo], target_topics: Mapping[str, TopicInfo],
                    ) -> list[PartitionJob]:
    """The common, online partitions of each pair, with end offsets captured now on both sides."""
    common = []
    for topic, target_topic in pairs:
        source_info, target_info = source_topics[topic], target_topics[target_topic]
        for partition in sorted(set(source_info.latest) & set(target_info.latest)):
            common.append((topic, target_topic, partition))
    with ThreadPoolExecutor(max_workers=2) as pool:
        source_ends = pool.submit(_committed_ends, source_session, [(t, p) for t, _, p in common])
        target_ends = pool.submit(_committed_ends, target_session, [(t, p) for _, t, p in common])
        source_end, target_end = source_ends.result(), target_ends.result()
    jobs = []
    for topic, target_topic, partition in common:
        if (topic, partition) not in source_end or (target_topic, partition) not in target_end:
            raise KafkaOperationError(f"no end offset for {topic}[{partition}]")
        jobs.append(PartitionJob(
            topic, target_topic, partition,
            (source_topics[topic].earliest.get(partition, 0), source_end[(topic, partition)]),
            (target_topics[target_topic].earliest.get(partition, 0), target_end[(target_topic, partition)])))
    return jobs
