"""An export directory seen as one side of ``kmc diff`` (kmc/diff/clusters.py): its topics, configs, record
counts and, read by a reader process like a cluster's, its records' digests. Library code: no printing.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kafka.record.default_records import DefaultRecordBatch

from kmc.archive.format import ArchiveError, Manifest, PartitionEntry, list_parts, read_batches
from kmc.diff.compare import record_digest
from kmc.metadata import PartitionInfo, TopicInfo, matches
from kmc.worker import Channel, Worker

DIGESTS_PER_EVENT = 10000


def is_export(reference: str) -> bool:
    """Whether a SRC or DST argument names an export directory rather than a cluster (a cluster name has no
    '/'; an export directory holds part-NNNNN directories)."""
    path = Path(reference)
    return path.is_dir() and any(re.fullmatch(r"part-\d{5,}", entry.name) for entry in path.iterdir())


def complete_manifests(directory: Path) -> list[tuple[Path, Manifest]]:
    """The complete parts of an export, in order (ArchiveError when there is none)."""
    found = [(part.path, part.manifest) for part in list_parts(directory) if part.complete and part.manifest]
    if not found:
        raise ArchiveError(f"{directory}: no complete part (an export that did not finish?)")
    return found


class ArchiveSide:
    """The diff side of an export directory (the methods of kmc.diff.clusters' cluster side)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.parts = complete_manifests(directory)
        self.name = str(directory)
        last = self.parts[-1][1]
        self.cluster_id = last.source_cluster_id
        self.source_name = last.source_name  # {source} of a rename template
        self.timeout = 0.0
        self._topics = {topic.name: topic for _, manifest in self.parts for topic in manifest.topics}
        self._counts: dict[tuple[str, int], int] = {}
        for _, manifest in self.parts:
            for entry in manifest.partitions:
                key = (entry.topic, entry.partition)
                self._counts[key] = self._counts.get(key, 0) + entry.records

    def describe(self, include: list[re.Pattern[str]] | None = None, exclude: list[re.Pattern[str]] | None = None,
                 wanted: Any = None) -> list[TopicInfo]:
        """Each exported topic as a TopicInfo whose offset span is its record count."""
        found = []
        for name, topic in sorted(self._topics.items()):
            if not matches(name, include or [], exclude or []) or (wanted is not None and not wanted(name)):
                continue
            replicas = tuple(range(topic.replication_factor))
            partitions = tuple(PartitionInfo(p, 0, replicas, replicas) for p in range(topic.partitions))
            found.append(TopicInfo(name, False, partitions, earliest={p: 0 for p in range(topic.partitions)},
                                   latest={p: self._counts.get((name, p), 0) for p in range(topic.partitions)},
                                   topic_id=topic.topic_id))
        return found

    def configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        return {name: dict(self._topics[name].configs) for name in names if name in self._topics}

    def ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {key: self._counts.get(key, 0) for key in partitions}

    def reader(self, partitions: list[list[Any]]) -> Worker:
        return Worker("kmc.archive.view:read_side", {"directory": str(self.directory),
                                                     "partitions": [[topic, p] for topic, p, *_ in partitions]},
                      name=f"{self.name}: the reader process")

    def record(self, topic: str, partition: int, offset: int) -> Any:
        """The record at source ``offset`` (for naming a first difference's fields), or None."""
        for record in _records(self.parts, topic, partition):
            if record.offset == offset:
                return record
            if record.offset > offset:
                return None
        return None


def _entries(parts: list[tuple[Path, Manifest]], topic: str, partition: int) -> Iterator[tuple[Path, PartitionEntry]]:
    for root, manifest in parts:
        for entry in manifest.partitions:
            if entry.topic == topic and entry.partition == partition:
                yield root, entry


def _records(parts: list[tuple[Path, Manifest]], topic: str, partition: int) -> Iterator[Any]:
    """Every exported record of one partition, in order, checked as the import checks them."""
    after = -1
    for root, entry in _entries(parts, topic, partition):
        after = max(after, entry.start_offset - 1)
        for item in entry.files:
            with open(root / item.path, "rb") as data:
                for batch in read_batches(data, str(root / item.path), topic, partition, after, entry.end_offset):
                    after = batch.last_offset
                    yield from DefaultRecordBatch(bytes(batch.raw))


def read_side(request: dict[str, Any], channel: Channel) -> None:
    """The reader process of an export (kmc.worker task): the events kmc.diff.stream's reader sends."""
    from kmc.diff.stream import _BATCH

    parts = complete_manifests(Path(request["directory"]))
    for topic, partition in request["partitions"]:
        offsets: list[int] = []
        digests: list[bytes] = []
        size = 0
        for record in _records(parts, topic, partition):
            if channel.stop.is_set():
                return
            offsets.append(record.offset)
            digests.append(record_digest(record.key, record.value, record.headers, record.timestamp))
            size += len(record.key or b"") + len(record.value or b"")
            if len(offsets) >= DIGESTS_PER_EVENT:
                channel.send_bytes(_BATCH.pack(len(offsets), size) + array("q", offsets).tobytes() + b"".join(digests))
                offsets, digests, size = [], [], 0
        if offsets:
            channel.send_bytes(_BATCH.pack(len(offsets), size) + array("q", offsets).tobytes() + b"".join(digests))
        channel.send("end")
