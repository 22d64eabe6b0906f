"""Reading an export for ``kmc import``: a directory of parts or a tar stream, as chunks of checked batches.

Both kinds give the import the same things in the same order: the plan (the manifests it can see before
any data: every complete part of a directory; the first manifest of a stream), then :class:`Chunk`s of one
partition's batches in offset order, interleaved over partitions (a produce request carries one batch per
partition: feeding the producer several partitions at once is what keeps its requests full), then the
end of each part. A data file is checked against its manifest's SHA-256 before any of its batches is used;
when it fails, its batches before the damage are used and the damage is an :class:`ArchiveError` for its
partition (:attr:`Chunk.damage`): nothing past the last good batch. Library code: no printing.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kmc.archive.format import (
    MANIFEST,
    SHA256_PAX,
    SHA256_PREFIX,
    ArchiveError,
    Batch,
    DataFile,
    Manifest,
    PartitionEntry,
    list_parts,
    read_batches,
    sha256_of,
)

CHUNK_BYTES = 1024 * 1024  # batches handed over per partition at a time
OPEN_PARTITIONS = 64  # partitions read at once from a directory
_DATA_RE = re.compile(r"(part-\d{5,})/data/(.+)/(\d+)/(\d{20})\.batches")


@dataclass
class Chunk:
    """Some of one partition's batches, in order. ``damage``: the partition's data is damaged right after
    ``batches`` (which are good); nothing more comes for it. ``end``: the part's data of this partition
    ends here, at this source offset (every offset before it is done)."""

    part: int
    topic: str
    partition: int
    batches: list[Batch]
    damage: ArchiveError | None = None
    end: int | None = None


@dataclass
class PartEnd:
    """A part was read whole: its final manifest."""

    manifest: Manifest


def _checked(data: IO[bytes], expected: DataFile | None, sha256: str | None, where: str, topic: str,
             partition: int, after: int, end: int) -> Iterator[Batch | ArchiveError]:
    """The batches of one data file; a damage ends them as an ArchiveError item. ``sha256``: the file's
    actual digest, computed beforehand; when it is not the manifest's (``expected``), the file is walked
    for the first damaged batch: the batches before it are good, and without one found, none is used."""
    wanted = expected.sha256 if expected is not None and expected.sha256 else None
    trusted = wanted is None or sha256 == wanted
    batches: list[Batch] = []
    try:
        for batch in read_batches(data, where, topic, partition, after, end):
            if trusted:
                yield batch
            else:
                batches.append(batch)
    except ArchiveError as exc:
        yield from batches
        yield exc
        return
    if not trusted:
        yield ArchiveError(f"{where}: {topic}[{partition}]: checksum mismatch (SHA-256 {sha256}, the manifest says "
                           f"{wanted}); none of its batches imported (from offset {after + 1})")


class DirectorySource:
    """Every complete part of an export directory, in order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        parts = list_parts(directory)
        self.parts = []
        self.incomplete: list[str] = []
        for part in parts:
            if part.complete:
                if self.incomplete:  # an incomplete part before a complete one: it was never written again
                    raise ArchiveError(f"{directory}: {self.incomplete[0]} is incomplete but later parts are not")
                self.parts.append(part)
            else:
                self.incomplete.append(part.path.name)
        if not self.parts:
            raise ArchiveError(f"{directory}: no complete part (an export that did not finish?)",
                               hint="run kmc export again")

    def plan(self) -> list[Manifest]:
        return [part.manifest for part in self.parts if part.manifest is not None]

    def chunks(self) -> Iterator[Chunk | PartEnd]:
        for part in self.parts:
            manifest = part.manifest
            assert manifest is not None
            waiting = list(manifest.partitions)
            readers: list[Iterator[Chunk]] = []
            while waiting or readers:
                while waiting and len(readers) < OPEN_PARTITIONS:
                    readers.append(self._partition(part.number, part.path, waiting.pop(0)))
                for reader in list(readers):
                    chunk = next(reader, None)
                    if chunk is None:
                        readers.remove(reader)
                    else:
                        yield chunk
            yield PartEnd(manifest)

    def _partition(self, number: int, root: Path, entry: PartitionEntry) -> Iterator[Chunk]:
        after = entry.start_offset - 1
        for item in entry.files:
            path = root / item.path
            where = str(path)
            if not path.is_file():
                yield Chunk(number, entry.topic, entry.partition, [], ArchiveError(
                    f"{where}: {entry.topic}[{entry.partition}]: the data file is missing (from offset {after + 1})"))
                return
            with open(path, "rb") as data:
                held: list[Batch] = []
                size = 0
                for found in _checked(data, item, sha256_of(path), where, entry.topic, entry.partition, after,
                                      entry.end_offset):
                    if isinstance(found, ArchiveError):
                        yield Chunk(number, entry.topic, entry.partition, held, found)
                        return
                    held.append(found)
                    size += len(found.raw)
                    after = found.last_offset
                    if size >= CHUNK_BYTES:
                        yield Chunk(number, entry.topic, entry.partition, held)
                        held, size = [], 0
                if held:
                    yield Chunk(number, entry.topic, entry.partition, held)
        yield Chunk(number, entry.topic, entry.partition, [], end=entry.end_offset)


class StreamSource:
    """A tar stream of one part (``kmc export --to -``), read once, in order."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.where = "the stream"
        try:
            self.tar = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed by chunks()
            member = self.tar.next()
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"{self.where}: not a kmc export stream ({exc})") from None
        if member is None or not member.name.endswith("/" + MANIFEST):
            raise ArchiveError(f"{self.where}: not a kmc export stream (it does not start with a manifest)")
        self.part_dir = member.name.rsplit("/", 1)[0]
        self.first = Manifest.from_json(self._read(member), f"{self.where}: {member.name}")

    def _read(self, member: tarfile.TarInfo) -> bytes:
        extracted = self.tar.extractfile(member)
        if extracted is None:
            raise ArchiveError(f"{self.where}: {member.name} is not a file")
        return extracted.read()

    def plan(self) -> list[Manifest]:
        return [self.first]

    def chunks(self) -> Iterator[Chunk | PartEnd]:
        entries = {(entry.topic, entry.partition): entry for entry in self.first.partitions}
        positions = {key: entry.start_offset - 1 for key, entry in entries.items()}
        damaged: set[tuple[str, int]] = set()
        current: str | None = None
        try:
            while True:
                member = self.tar.next()
                if member is None:
                    break
                current = member.name
                if member.name == f"{self.part_dir}/{MANIFEST}":
                    final = Manifest.from_json(self._read(member), f"{self.where}: {member.name}")
                    if not final.complete:
                        raise ArchiveError(f"{self.where}: the export stream says it is incomplete ({final.error})")
                    for key, entry in entries.items():
                        if key not in damaged:
                            yield Chunk(final.part, key[0], key[1], [], end=entry.end_offset)
                    yield PartEnd(final)
                    return
                found = _DATA_RE.fullmatch(member.name)
                key = (found.group(2), int(found.group(3))) if found else None
                if key is None or key not in entries:
                    raise ArchiveError(f"{self.where}: unexpected member {member.name}")
                data = self._read(member)
                if key in damaged:
                    continue
                entry = entries[key]
                digest = hashlib.sha256(data).hexdigest()
                recorded = member.pax_headers.get(SHA256_PAX, "").removeprefix(SHA256_PREFIX)
                expected = DataFile(member.name, 0, 0, 0, 0, len(data), recorded)
                held: list[Batch] = []
                for item in _checked(io.BytesIO(data), expected, digest, f"{self.where}: {member.name}", key[0],
                                     key[1], positions[key], entry.end_offset):
                    if isinstance(item, ArchiveError):
                        damaged.add(key)
                        yield Chunk(self.first.part, key[0], key[1], held, item)
                        held = []
                        break
                    held.append(item)
                    positions[key] = item.last_offset
                if held:
                    yield Chunk(self.first.part, key[0], key[1], held)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"{self.where}: truncated or damaged inside {current or 'its first member'} ({exc}); "
                               "nothing past the last whole member was imported") from None
        raise ArchiveError(f"{self.where}: truncated: it ends without its final manifest (after {current}); "
                           "nothing past the last whole member was imported")
