"""The pure half of ``kmc diff``: which topics pair up through the rename template, how two topics'
metadata differ, and what a record's content is (a digest) and how two record sequences differ.
Source topic names go through the same rename template and the same ignored configs as the mirror
(:func:`kmc.metadata.render_topic_name`, :data:`kmc.metadata.CLUSTER_SPECIFIC_CONFIGS`), so a diff of a
mirror against its origin agrees with what the mirror did.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from itertools import zip_longest
from typing import Any

from kmc.diff.model import ConfigSelection, Difference, DiffOptions, FirstDifference, SequenceComparison
from kmc.metadata import TopicInfo, matches, render_topic_name

# Headers kmc itself adds when mirroring (``kmc-origin``): not part of a record's content.
KMC_HEADER_PREFIX = "kmc-"

RECORD_FIELDS = ("key", "value", "headers", "timestamp")


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
