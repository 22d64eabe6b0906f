"""The export format (docs/export-format.md): numbered parts, each a manifest and per-partition data files of
record batches exactly as Kafka stores them (message format v2, compressed ones still compressed).

An export directory holds ``part-00001/``, ``part-00002/`` ...; each part::

    part-NNNNN/manifest.json                                  what the part holds (below)
    part-NNNNN/data/<topic>/<partition>/<first offset>.batches  record batches, one after the other

A ``.batches`` file is v2 record batches back to back, each with its source offsets, CRC and all, as the
source broker served them. The manifest is written first with ``"complete": false`` and again with
``"complete": true`` and the files' SHA-256 when the part is done; a part that never got there (the disk
filled, the export was killed) is incomplete, and the next export writes it again.

``--to -`` streams one part as a POSIX tar archive (pax format) with the same member names: the manifest
first (``complete`` false: the plan), then data files of at most :data:`STREAM_CHUNK` bytes, each with
its SHA-256 in its pax ``comment`` record (``sha256:<hex>``), then the manifest again, complete.
Extracting it gives an export directory. Library code: no printing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import calc_crc32c, decode_varint

import kmc
from kmc.errors import ExitCode, KmcError, UsageError

FORMAT = "kmc-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PART_RE = re.compile(r"part-(\d{5,})")
SEGMENT_BYTES = 256 * 1024 * 1024  # a directory export rolls a partition's data file past this size
STREAM_CHUNK = 1024 * 1024  # a streamed data member holds at most this much (or one larger batch)
# a streamed data member's SHA-256, in the pax "comment" record (which tar tools ignore without a warning)
SHA256_PAX = "comment"
SHA256_PREFIX = "sha256:"

# The v2 record batch header (Kafka's DefaultRecordBatch): baseOffset int64, batchLength int32,
# partitionLeaderEpoch int32, magic int8, crc uint32, attributes int16, lastOffsetDelta int32,
# baseTimestamp int64, maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence int32,
# records int32. The CRC-32C covers everything from the attributes on.
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset and batchLength: the batch length counts the bytes after them
CRC_FROM = 21
MAX_BATCH_BYTES = 1 << 30
_CODEC_MASK = DefaultRecordBatch.CODEC_MASK
_COUNT_AT = HEADER_SIZE - 4


class ArchiveError(KmcError):
    """An export that cannot be read as it should: damaged, truncated, failing its checksum, or of a format
    this kmc does not know. Exit 9."""

    exit_code = ExitCode.ARCHIVE
    default_hint = "export again, or restore the file from a good copy; nothing past the damage was imported"


def part_name(number: int) -> str:
    return f"part-{number:05d}"


def data_path(topic: str, partition: int, first_offset: int) -> str:
    """A data file's path inside its part."""
    return f"data/{topic}/{partition}/{first_offset:020d}.batches"


# ------------------------------------------------------------------------------------------ the manifest


@dataclass
class DataFile:
    path: str  # relative to the part
    first_offset: int
    last_offset: int
    records: int
    batches: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "first_offset": self.first_offset, "last_offset": self.last_offset,
                "records": self.records, "batches": self.batches, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class PartitionEntry:
    """One partition in one part: the source offsets ``[start_offset, end_offset)`` it covers (end: the last
    stable offset seen when the export started), the files holding its committed records."""

    topic: str
    partition: int
    start_offset: int
    end_offset: int
    files: list[DataFile] = field(default_factory=list)
    records: int = 0
    batches: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "start_offset": self.start_offset,
                "end_offset": self.end_offset, "records": self.records, "batches": self.batches,
                "bytes": self.bytes, "files": [item.to_dict() for item in self.files]}


@dataclass
class TopicEntry:
    name: str
    topic_id: str | None
    partitions: int
    replication_factor: int
    configs: dict[str, str]  # the topic's own (non-default) configs at the source
    max_message_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "topic_id": self.topic_id, "partitions": self.partitions,
                "replication_factor": self.replication_factor, "configs": dict(self.configs),
                "max_message_bytes": self.max_message_bytes}


@dataclass
class Manifest:
    """What one part holds (docs/export-format.md lists every key)."""

    part: int
    source_name: str
    source_cluster_id: str
    topics: list[TopicEntry]
    partitions: list[PartitionEntry]
    groups: dict[str, list[dict[str, Any]]]  # group -> [{topic, partition, offset, metadata}]
    producers: dict[str, str] = field(default_factory=dict)  # producer id -> cluster its data came from
    complete: bool = False
    created_ms: int = 0
    finished_ms: int | None = None
    selection: dict[str, list[str]] = field(default_factory=dict)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def records(self) -> int:
        return sum(entry.records for entry in self.partitions)

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.partitions)

    def topic(self, name: str) -> TopicEntry | None:
        return next((topic for topic in self.topics if topic.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": self.format_version, "kmc_version": kmc.__version__,
                "part": self.part, "complete": self.complete, "created_ms": self.created_ms,
                "finished_ms": self.finished_ms, "error": self.error,
                "source": {"name": self.source_name, "cluster_id": self.source_cluster_id},
                "selection": self.selection, "records": self.records, "bytes": self.bytes,
                "topics": [topic.to_dict() for topic in self.topics],
                "partitions": [entry.to_dict() for entry in self.partitions],
                "groups": self.groups, "producers": self.producers, "gaps": self.gaps}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """ArchiveError for anything that is not a manifest this kmc reads."""
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ArchiveError(f"{where}: not a kmc export manifest ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ArchiveError(f"{where}: not a kmc export manifest (no \"format\": \"{FORMAT}\")")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ArchiveError(f"{where}: export format version {version!r}; this kmc reads version "
                               f"{FORMAT_VERSION}", hint="import it with the kmc version that exported it, or "
                                                         "a newer one")
        try:
            return cls(
                part=int(raw["part"]), source_name=str(raw["source"]["name"]),
                source_cluster_id=str(raw["source"]["cluster_id"]),
                topics=[TopicEntry(str(t["name"]), t.get("topic_id"), int(t["partitions"]),
                                   int(t["replication_factor"]), {str(k): str(v) for k, v in t["configs"].items()},
                                   int(t["max_message_bytes"])) for t in raw["topics"]],
                partitions=[PartitionEntry(str(p["topic"]), int(p["partition"]), int(p["start_offset"]),
                                           int(p["end_offset"]),
                                           [DataFile(str(f["path"]), int(f["first_offset"]), int(f["last_offset"]),
                                                     int(f["records"]), int(f["batches"]), int(f["bytes"]),
                                                     str(f["sha256"])) for f in p["files"]],
                                           int(p["records"]), int(p["batches"]), int(p["bytes"]))
                            for p in raw["partitions"]],
                groups={str(g): list(v) for g, v in raw.get("groups", {}).items()},
                producers={str(k): str(v) for k, v in raw.get("producers", {}).items()},
                complete=bool(raw["complete"]), created_ms=int(raw.get("created_ms") or 0),
                finished_ms=raw.get("finished_ms"), selection=dict(raw.get("selection") or {}),
                gaps=list(raw.get("gaps") or []), error=raw.get("error"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArchiveError(f"{where}: the manifest is damaged ({type(exc).__name__}: {exc})") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it, synced)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------ an export directory


@dataclass(frozen=True)
class Part:
    number: int
    path: Path
    manifest: Manifest | None  # None: the part has no readable manifest (the export died before writing it)

    @property
    def complete(self) -> bool:
        return self.manifest is not None and self.manifest.complete


def list_parts(directory: Path) -> list[Part]:
    """The parts of an export directory, in order. UsageError when ``directory`` is not one."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory", hint="give the directory kmc export wrote (--to DIR)")
    parts = []
    for entry in sorted(directory.iterdir()):
        found = PART_RE.fullmatch(entry.name)
        if not found or not entry.is_dir():
            continue
        manifest_path = entry / MANIFEST
        manifest = None
        if manifest_path.is_file():
            manifest = Manifest.from_json(manifest_path.read_bytes(), str(manifest_path))
        parts.append(Part(int(found.group(1)), entry, manifest))
    return parts


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------ batches


@dataclass(frozen=True)
class Batch:
    """One record batch read from a data file: its bytes (a fresh bytearray, as stored) and header fields."""

    raw: bytearray
    base_offset: int
    last_offset: int
    records: int
    position: int  # where it starts in its file


def read_batches(stream: IO[bytes], where: str, topic: str, partition: int, after: int = -1,
                 end: int | None = None) -> Iterator[Batch]:
    """The batches of one data file, checked one by one: framing (length, magic), CRC-32C, offsets increasing
    (each batch after ``after``, the previous batch's last offset) and below ``end``. The first damage raises
    ArchiveError naming the file, the partition and the offset where it starts; every batch yielded before
    it is good."""
    position = 0
    while True:
        head = stream.read(LOG_OVERHEAD)
        if not head:
            return
        next_offset = after + 1
        if len(head) < LOG_OVERHEAD:
            raise _damage(where, topic, partition, next_offset, position, "truncated: the file ends inside a batch")
        base_offset, length = struct.unpack(">qi", head)
        if length < HEADER_SIZE - LOG_OVERHEAD or length > MAX_BATCH_BYTES:
            raise _damage(where, topic, partition, next_offset, position, f"corrupted: impossible batch length "
                                                                          f"{length}")
        body = stream.read(length)
        if len(body) < length:
            raise _damage(where, topic, partition, next_offset, position, "truncated: the file ends inside a batch")
        raw = bytearray(head)
        raw += body
        (_, _, _, magic, crc, _, last_delta, _, _, _, _, _, count) = HEADER.unpack_from(raw)
        if magic != 2:
            raise _damage(where, topic, partition, next_offset, position, f"corrupted: message format {magic}, "
                                                                          "not 2")
        if calc_crc32c(memoryview(raw)[CRC_FROM:]) != crc:
            raise _damage(where, topic, partition, next_offset, position, "corrupted: the batch fails its CRC")
        last_offset = base_offset + last_delta
        if base_offset <= after or last_delta < 0 or count < 1 or count > last_delta + 1 or (
                end is not None and last_offset >= end):
            raise _damage(where, topic, partition, next_offset, position,
                          f"corrupted: batch offsets {base_offset}..{last_offset} out of order")
        yield Batch(raw, base_offset, last_offset, count, position)
        after = last_offset
        position += len(raw)


def _damage(where: str, topic: str, partition: int, offset: int, position: int, what: str) -> ArchiveError:
    return ArchiveError(f"{where}: {topic}[{partition}] damaged from offset {offset} (byte {position} of the file): "
                        f"{what}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def batch_tail(raw: bytearray, skip: int) -> bytearray:
    """A batch of ``raw``'s records after the first ``skip``: the same header (offsets and base timestamp, so
    each record's offset and timestamp deltas still hold), uncompressed, with its record count. Not a batch to
    store (its CRC is stale): the copy path walks it record by record (kmc/mirror/batchpath.py)."""
    body = _records_section(raw)
    position = 0
    for _ in range(skip):
        length, position = decode_varint(body, position)
        position += length
    out = bytearray(raw[:HEADER_SIZE])
    attributes = HEADER.unpack_from(out)[5] & ~_CODEC_MASK
    struct.pack_into(">h", out, 21, attributes)
    struct.pack_into(">i", out, _COUNT_AT, HEADER.unpack_from(raw)[12] - skip)
    out += body[position:]
    return out


def _records_section(raw: bytearray) -> bytes:
    """The records section of a batch, decompressed."""
    from kmc.mirror.fetch import RawBatch

    return RawBatch(DefaultRecordBatch(raw), HEADER.unpack_from(raw)[5]).body

