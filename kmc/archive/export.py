"""``kmc export``: a cluster's topics to files, record batches as fetched (kmc/archive/format.py).

The mirror's fetch layer (kmc/mirror/fetch.py) hands over each fetched v2 batch as stored, still
compressed (:class:`RawBatch`): those bytes are what is written, untouched. Batches the fetch layer decodes
(the batch a fetch starts in the middle of, message formats v0/v1, LogAppendTime) are written as new v2
batches of the same records with their source offsets (:func:`encode_batch`). read_committed: aborted
records and transaction markers are left out. ``--once`` semantics: each partition up to the last stable
offset seen at the start. A second export into the same directory writes the next part, continuing where
the previous parts ended. Library code: no printing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.admin import OffsetSpec
from kafka.record.default_records import DefaultRecordBatchBuilder

from kmc.archive.format import (
    HEADER,
    MANIFEST,
    SEGMENT_BYTES,
    SHA256_PAX,
    SHA256_PREFIX,
    STREAM_CHUNK,
    DataFile,
    Manifest,
    PartitionEntry,
    TopicEntry,
    data_path,
    list_parts,
    now_ms,
    part_name,
    write_atomically,
)
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import ConfigError, Interrupted, KmcError, UsageError
from kmc.metadata import compile_patterns, describe_topics, effective_topic_configs, list_offsets, topic_configs
from kmc.mirror.fetch import RawBatch, fetch_batches
from kmc.mirror.plan import DEFAULT_MAX_MESSAGE_BYTES
from kmc.mirror.provenance import ProvenanceMap
from kmc.profiles import Cluster

MiB = 1024 * 1024
STREAM_BUFFERED = 64 * MiB  # a stream export holds at most about this much of unfinished members

NoticeCallback = Callable[[str, str], None]
ProgressCallback = Callable[["ExportProgress"], None]


@dataclass(frozen=True)
class ExportOptions:
    topics: tuple[str, ...] = ()  # anchored include regexes; empty: every topic but internal ones
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        compile_patterns(self.topics, "--topics")
        compile_patterns(self.exclude, "--exclude")


@dataclass
class ExportedTopic:
    topic: str
    partitions: int
    records: int = 0
    batches: int = 0
    bytes: int = 0  # bytes written (batches as stored)
    gaps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partitions": self.partitions, "records": self.records,
                "batches": self.batches, "bytes": self.bytes, "gaps": self.gaps}


@dataclass
class ExportReport:
    """What :func:`export_topics` wrote (the ``kmc export -o json`` document, docs/export-format.md)."""

    source: str
    source_cluster_id: str
    destination: str
    part: int
    complete: bool
    elapsed: float
    topics: list[ExportedTopic]
    groups: int
    warnings: list[str] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(topic.records for topic in self.topics)

    @property
    def bytes(self) -> int:
        return sum(topic.bytes for topic in self.topics)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "source_cluster_id": self.source_cluster_id, "destination": self.destination,
                "part": self.part, "complete": self.complete, "elapsed_seconds": round(self.elapsed, 3),
                "records": self.records, "bytes": self.bytes, "groups": self.groups, "warnings": self.warnings,
                "gaps": self.gaps, "topics": [topic.to_dict() for topic in self.topics]}

    def rows(self) -> list[dict[str, Any]]:
        return [topic.to_dict() for topic in self.topics]


@dataclass(frozen=True)
class ExportProgress:
    records: int
    bytes: int
    total_offsets: int  # the offset span to export (an upper bound of records)
    done_offsets: int
    elapsed: float


# ------------------------------------------------------------------------------------------ writers


class _File:
    """One data file being written: where, and the running counts and SHA-256."""

    def __init__(self, path: str, first_offset: int) -> None:
        self.path = path
        self.first_offset = first_offset
        self.last_offset = first_offset
        self.records = self.batches = self.bytes = 0
        self.digest = hashlib.sha256()

    def add(self, data: bytes | bytearray | memoryview, last_offset: int, records: int, batches: int) -> None:
        self.digest.update(data)
        self.last_offset = last_offset
        self.records += records
        self.batches += batches
        self.bytes += len(data)

    def entry(self) -> DataFile:
        return DataFile(self.path, self.first_offset, self.last_offset, self.records, self.batches, self.bytes,
                        self.digest.hexdigest())


class _DirectoryWriter:
    """A part as a directory: each partition's batches appended to its data file, a new file past
    SEGMENT_BYTES."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.open: dict[tuple[str, int], _File] = {}

    def start(self, manifest: Manifest) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.root / MANIFEST, manifest.to_json())

    def write(self, entry: PartitionEntry, batches: list[tuple[bytes | bytearray, int, int, int]]) -> None:
        """Append ``batches`` ((bytes, base offset, last offset, records) each) to the partition's file."""
        key = (entry.topic, entry.partition)
        current = self.open.get(key)
        if current is not None and current.bytes >= SEGMENT_BYTES:
            entry.files.append(current.entry())
            current = None
        if current is None:
            current = self.open[key] = _File(data_path(entry.topic, entry.partition, batches[0][1]), batches[0][1])
            (self.root / current.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.root / current.path, "ab") as out:
            for data, _, last, records in batches:
                out.write(data)
                current.add(data, last, records, 1)

    def end_partition(self, entry: PartitionEntry) -> None:
        current = self.open.pop((entry.topic, entry.partition), None)
        if current is not None:
            entry.files.append(current.entry())

    def finish(self, manifest: Manifest) -> None:
        write_atomically(self.root / MANIFEST, manifest.to_json())

    def abandon(self, manifest: Manifest) -> None:
        """The part stays incomplete; say why in its manifest if the disk still takes it."""
        with contextlib.suppress(OSError):
            write_atomically(self.root / MANIFEST, manifest.to_json())


class _StreamWriter:
    """A part as a tar stream (format.py): members of at most STREAM_CHUNK bytes, each with its SHA-256."""

    def __init__(self, stream: IO[bytes], part: str) -> None:
        self.part = part
        self.tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.buffers: dict[tuple[str, int], tuple[_File, bytearray, PartitionEntry]] = {}
        self.buffered = 0

    def _member(self, name: str, data: bytes | bytearray, pax: dict[str, str] | None = None) -> None:
        info = tarfile.TarInfo(f"{self.part}/{name}")
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        if pax:
            info.pax_headers = pax
        self.tar.addfile(info, _Reader(data))

    def start(self, manifest: Manifest) -> None:
        self._member(MANIFEST, manifest.to_json())

    def write(self, entry: PartitionEntry, batches: list[tuple[bytes | bytearray, int, int, int]]) -> None:
        key = (entry.topic, entry.partition)
        for data, base, last, records in batches:
            held = self.buffers.get(key)
            if held is not None and len(held[1]) + len(data) > STREAM_CHUNK:
                self._emit(key)
                held = None
            if held is None:
                held = self.buffers[key] = (_File(data_path(entry.topic, entry.partition, base), base), bytearray(),
                                            entry)
            held[0].add(data, last, records, 1)
            held[1].extend(data)
            self.buffered += len(data)
        while self.buffered > STREAM_BUFFERED:  # many partitions each holding a part of a chunk
            self._emit(max(self.buffers, key=lambda name: len(self.buffers[name][1])))

    def _emit(self, key: tuple[str, int]) -> None:
        current, data, entry = self.buffers.pop(key)
        self.buffered -= len(data)
        file_entry = current.entry()
        self._member(current.path, data, {SHA256_PAX: SHA256_PREFIX + file_entry.sha256})
        entry.files.append(file_entry)

    def end_partition(self, entry: PartitionEntry) -> None:
        if (entry.topic, entry.partition) in self.buffers:
            self._emit((entry.topic, entry.partition))

    def finish(self, manifest: Manifest) -> None:
        self._member(MANIFEST, manifest.to_json())
        self.tar.close()

    def abandon(self, manifest: Manifest) -> None:  # noqa: ARG002 - a stream cut short has no final manifest
        with contextlib.suppress(Exception):
            self.tar.fileobj.flush()


class _Reader:
    """A read-only file object over bytes, for tarfile.addfile (no copy, unlike io.BytesIO of a bytearray)."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._view = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._at + size)
        chunk = self._view[self._at:end].tobytes()
        self._at = end
        return chunk


# ------------------------------------------------------------------------------------------ records


def encode_batch(records: list[Any]) -> tuple[bytearray, int, int]:
    """A v2 batch (uncompressed, CreateTime) of decoded records (kafka-python ``ConsumerRecord``), each at its
    source offset; null header values kept. Returns (bytes, base offset, last offset)."""
    base = records[0].offset
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 31)
    for record in records:
        builder.append(record.offset - base, record.timestamp, record.key, record.value,
                       list(record.headers or ()))
    raw = builder.build()
    HEADER.pack_into(raw, 0, base, *HEADER.unpack_from(raw)[1:])  # the base offset: the source's
    # (the CRC does not cover the base offset, so it stays valid)
    return raw, base, records[-1].offset


# ------------------------------------------------------------------------------------------ the export


def check_writable(directory: Path) -> None:
    """Make the export directory (with its parents) and check that a file can be written in it, before any
    connection: a ConfigError (exit 3) naming the directory when it cannot be."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the export into {directory}: {exc.strerror or exc}",
                          hint="export to a directory you can write (--to DIR), or --to - for a tar stream "
                               "on stdout") from None


def export_topics(cluster: Cluster, destination: Path | IO[bytes], options: ExportOptions = ExportOptions(), *,
                  timeout: float = DEFAULT_TIMEOUT, stop_event: threading.Event | None = None,
                  notice_callback: NoticeCallback | None = None,
                  progress_callback: ProgressCallback | None = None) -> ExportReport:
    """Export the selected topics of ``cluster`` into the directory ``destination`` (the next part) or, given
    a binary file object, as one tar stream (part 1). Returns what was written; a stop (``stop_event``) or
    a failure leaves the part incomplete (the next export into the directory writes it again): Interrupted,
    or the failure's error (a full disk: KmcError naming the file, exit 8)."""
    options.validate()
    include = compile_patterns(options.topics, "--topics")
    exclude = compile_patterns(options.exclude, "--exclude")
    notice = notice_callback or (lambda level, text: None)
    stop_event = stop_event or threading.Event()
    started = time.monotonic()
    streaming = not isinstance(destination, Path)
    if not streaming:
        check_writable(destination)
    parts = [] if streaming else list_parts(destination) if destination.exists() else []
    with KafkaSession(cluster, timeout) as session:
        source_id = session.cluster_id()
        previous: dict[tuple[str, int], tuple[int, str | None]] = {}  # (end offset, topic id) of earlier parts
        number = 1
        for part in parts:
            if not part.complete:
                notice("warn", f"{part.path.name} is incomplete (an earlier export did not finish"
                               f"{': ' + part.manifest.error if part.manifest and part.manifest.error else ''}); "
                               "writing it again")
                shutil.rmtree(part.path)
                break
            manifest = part.manifest
            if manifest.source_cluster_id != source_id:
                raise UsageError(f"{destination} holds an export of cluster {manifest.source_cluster_id} "
                                 f"({manifest.source_name}), not of {cluster.name} ({source_id})",
                                 hint="export into another directory")
            ids = {topic.name: topic.topic_id for topic in manifest.topics}
            for entry in manifest.partitions:
                previous[(entry.topic, entry.partition)] = (entry.end_offset, ids.get(entry.topic))
            number = part.number + 1
        exporter = _Export(session, source_id, include, exclude, previous, notice, stop_event, progress_callback)
        manifest = exporter.plan(number, options)
        if streaming:
            writer: Any = _StreamWriter(destination, part_name(number))
            where = "-"
        else:
            writer = _DirectoryWriter(destination / part_name(number))
            where = str(destination)
        try:
            writer.start(manifest)
            exporter.writer = writer
            exporter.copy(manifest)
        except OSError as exc:
            manifest.error = f"{exc.strerror or exc}"
            writer.abandon(manifest)
            if exc.errno == errno.ENOSPC:
                raise KmcError(f"disk full writing {where}: {part_name(number)} is incomplete; the next export "
                               "writes it again", hint="free some space, or export to another disk") from None
            if exc.errno == errno.EPIPE:
                raise KmcError(f"the reader of the stream went away: {part_name(number)} is incomplete",
                               hint="check the command reading kmc export's output") from None
            raise KmcError(f"writing {where}: {exc}: {part_name(number)} is incomplete") from None
        except BaseException:
            manifest.error = "interrupted" if stop_event.is_set() else "failed"
            writer.abandon(manifest)
            raise
        if stop_event.is_set():
            manifest.error = "interrupted"
            writer.abandon(manifest)
            raise Interrupted(f"export stopped: {part_name(number)} is incomplete; the next export writes it again")
        manifest.complete = True
        manifest.finished_ms = now_ms()
        writer.finish(manifest)
    topics = {topic.name: ExportedTopic(topic.name, topic.partitions) for topic in manifest.topics}
    for entry in manifest.partitions:
        stats = topics[entry.topic]
        stats.records += entry.records
        stats.batches += entry.batches
        stats.bytes += entry.bytes
    for gap in manifest.gaps:
        topics[gap["topic"]].gaps += 1
    return ExportReport(cluster.name, source_id, where, number, True, time.monotonic() - started,
                        list(topics.values()), len(manifest.groups), exporter.warnings, manifest.gaps)


class _Export:
    def __init__(self, session: KafkaSession, source_id: str, include: list, exclude: list,
                 previous: dict[tuple[str, int], tuple[int, str | None]], notice: NoticeCallback,
                 stop_event: threading.Event, progress: ProgressCallback | None) -> None:
        self.session = session
        self.source_id = source_id
        self.include = include
        self.exclude = exclude
        self.previous = previous
        self.notice = notice
        self.stop_event = stop_event
        self.progress = progress
        self.warnings: list[str] = []
        self.writer: Any = None

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            self.notice("warn", text)

    def plan(self, number: int, options: ExportOptions) -> Manifest:
        """The part's manifest before any record is read: topics, configs, offset ranges, groups."""
        session = self.session
        topics = [topic for topic in describe_topics(session, self.include, self.exclude, with_offsets=False)
                  if not topic.internal]
        if not topics:
            self.warn("no topic matches the selection")
        names = [topic.name for topic in topics]
        configs = topic_configs(session, names)
        sizes = effective_topic_configs(session, names, ["max.message.bytes"])
        tps = [TopicPartition(topic.name, p.partition) for topic in topics for p in topic.partitions]
        earliest = list_offsets(session, dict.fromkeys(tps, OffsetSpec.EARLIEST))
        # read_committed: the last stable offset, so an open transaction does not hold the export up
        latest = list_offsets(session, dict.fromkeys(tps, OffsetSpec.LATEST), "read_committed")
        created = now_ms()
        entries, gaps = [], []
        for topic in topics:
            for info in topic.partitions:
                tp = TopicPartition(topic.name, info.partition)
                first, end = earliest[tp], latest[tp]
                start = first
                known = self.previous.get((topic.name, info.partition))
                if known is not None:
                    previous_end, previous_id = known
                    if previous_id and topic.topic_id and previous_id != topic.topic_id:
                        gaps.append(self._gap(topic.name, info.partition, "source-recreated", previous_end, None,
                                              created))
                    elif previous_end < first:
                        gaps.append(self._gap(topic.name, info.partition, "expired", previous_end, first, created))
                    elif previous_end > end:
                        gaps.append(self._gap(topic.name, info.partition, "source-truncated", end, previous_end,
                                              created))
                        start = end
                    else:
                        start = previous_end
                entries.append(PartitionEntry(topic.name, info.partition, start, end))
        size_of = {name: int(values.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES))
                   for name, values in sizes.items()}
        manifest = Manifest(
            part=number, source_name=session.cluster.name, source_cluster_id=self.source_id,
            topics=[TopicEntry(topic.name, topic.topic_id, len(topic.partitions), topic.replication_factor,
                               configs.get(topic.name, {}), size_of.get(topic.name, DEFAULT_MAX_MESSAGE_BYTES))
                    for topic in topics],
            partitions=entries, groups=self._groups(set(tps)), created_ms=created,
            selection={"topics": list(options.topics), "exclude": list(options.exclude)}, gaps=gaps)
        return manifest

    def _gap(self, topic: str, partition: int, kind: str, first: int | None, end: int | None,
             detected: int) -> dict[str, Any]:
        what = {"expired": "records expired at the source since the previous export",
                "source-recreated": "the source topic was recreated since the previous export: exporting it from "
                                    "its beginning",
                "source-truncated": "the source lost records the previous export has"}[kind]
        span = f" ({first if first is not None else '?'} to {end - 1 if end is not None else '?'})"
        self.warn(f"{topic}[{partition}]: {what}{span}")
        return {"topic": topic, "partition": partition, "kind": kind, "first_offset": first, "end_offset": end,
                "detected_ms": detected}

    def _groups(self, wanted: set[TopicPartition]) -> dict[str, list[dict[str, Any]]]:
        """The committed offsets of every consumer group on the exported partitions."""
        admin = self.session.admin
        with translate_errors(self.session.cluster, "list consumer groups"):
            ids = sorted({entry["group_id"] for entry in admin.list_groups()})
        if not ids or not wanted:
            return {}
        with translate_errors(self.session.cluster, "read consumer group offsets"):
            committed = admin.list_group_offsets(ids)
        groups: dict[str, list[dict[str, Any]]] = {}
        for group in ids:
            offsets = [{"topic": tp.topic, "partition": tp.partition, "offset": meta.offset,
                        "metadata": meta.metadata or ""}
                       for tp, meta in sorted((committed.get(group) or {}).items())
                       if tp in wanted and meta is not None and meta.offset >= 0]
            if offsets:
                groups[group] = offsets
        return groups

    def copy(self, manifest: Manifest) -> None:
        """Fetch every partition from its start to its end offset and hand the batches to the writer."""
        session = self.session
        writer = self.writer
        todo = {TopicPartition(entry.topic, entry.partition): entry for entry in manifest.partitions}
        for tp, entry in list(todo.items()):
            if entry.start_offset >= entry.end_offset:
                del todo[tp]
                writer.end_partition(entry)
        max_bytes = max((topic.max_message_bytes for topic in manifest.topics), default=DEFAULT_MAX_MESSAGE_BYTES)
        total = sum(entry.end_offset - entry.start_offset for entry in todo.values())
        done_offsets = records = size = 0
        provenance = ProvenanceMap(session, self.warn)
        producer_ids: set[int] = set()
        consumer = session.consumer(isolation_level="read_committed", auto_offset_reset="none",
                                    fetch_max_bytes=16 * MiB, max_partition_fetch_bytes=max(2 * MiB, max_bytes),
                                    max_poll_records=2000, fetch_max_wait_ms=200)
        fetch_batches(consumer, raw=True)
        with translate_errors(session.cluster, "assign partitions"):
            consumer.assign(list(todo))
            for tp, entry in todo.items():
                consumer.seek(tp, entry.start_offset)
        last_report = time.monotonic()
        try:
            while todo and not self.stop_event.is_set():
                try:
                    with translate_errors(session.cluster, "fetch"):
                        polled = consumer.poll(timeout_ms=200)
                except KmcError as exc:
                    if isinstance(exc.__cause__, kafka_errors.OffsetOutOfRangeError):
                        self._moved(consumer, todo, manifest, exc.__cause__)
                        continue
                    raise
                for tp, items in polled.items():
                    entry = todo.get(tp)
                    if entry is None:
                        continue
                    batches = []
                    for item in items:
                        producer_ids.add(item.producer_id)
                        if type(item) is RawBatch:
                            if item.base_offset >= entry.end_offset:
                                break
                            batches.append((item.raw, item.base_offset, item.offset, item.count))
                        else:
                            kept = [record for record in item.records if record.offset < entry.end_offset]
                            if kept:
                                raw, base, last = encode_batch(kept)
                                batches.append((raw, base, last, len(kept)))
                    if batches:
                        writer.write(entry, batches)
                        count = sum(batch[3] for batch in batches)
                        written = sum(len(batch[0]) for batch in batches)
                        entry.records += count
                        entry.batches += len(batches)
                        entry.bytes += written
                        records += count
                        size += written
                    position = items[-1].offset + 1 if items else entry.start_offset
                    if position >= entry.end_offset:
                        self._done(consumer, todo, tp)
                if not polled:
                    with translate_errors(session.cluster, "read positions"):
                        for tp in list(todo):  # only markers or aborted records were left
                            position = consumer.position(tp)
                            if position is not None and position >= todo[tp].end_offset:
                                self._done(consumer, todo, tp)
                now = time.monotonic()
                if self.progress is not None and now - last_report >= 1.0:
                    last_report = now
                    done_offsets = total - sum(entry.end_offset - max(entry.start_offset, consumer.position(tp) or 0)
                                               for tp, entry in todo.items())
                    self.progress(ExportProgress(records, size, total, done_offsets, now))
        finally:
            consumer.close()
        origins = provenance.origins(producer_ids - {-1}) if producer_ids - {-1} else {}
        manifest.producers = {str(pid): origin for pid, origin in sorted(origins.items()) if origin}

    def _done(self, consumer: Any, todo: dict[TopicPartition, PartitionEntry], tp: TopicPartition) -> None:
        entry = todo.pop(tp)
        self.writer.end_partition(entry)
        consumer.pause(tp)

    def _moved(self, consumer: Any, todo: dict[TopicPartition, PartitionEntry], manifest: Manifest,
               error: Exception) -> None:
        """Records deleted (retention) while they were exported: a gap, and on from the new start."""
        where = [tp for tp in (error.args[0] if error.args and isinstance(error.args[0], dict) else {}) if tp in todo]
        earliest = list_offsets(self.session, dict.fromkeys(where, OffsetSpec.EARLIEST))
        for tp in where:
            first = earliest[tp]
            manifest.gaps.append(self._gap(tp.topic, tp.partition, "expired", None, first, now_ms()))
            if first >= todo[tp].end_offset:
                self._done(consumer, todo, tp)
            else:
                consumer.seek(tp, first)
