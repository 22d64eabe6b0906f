"""Consumer-group offset translation: where, in a mirror's target, a group that consumed the source up to a
committed offset goes on, so that it neither loses nor repeats a record (``kmc groups translate``,
``--sync-groups``; kmc/mirror/groups.py does the groups). docs/failover.md explains the method and its
limits; in short:

For a committed source offset ``c``, take the latest anchor ``(s, t)`` of the offset map with ``s <= c``
(kmc/mirror/checkpoints.py: from ``s`` on, the target partition holds this mirror's copies of the source's
records in order, starting at ``t``; the partition's checkpoint counts as an anchor). Read the source from
``s`` and the target from ``t`` (both read_committed), and pair each source record with its copy: the next
target record with the same key, value, timestamp (where the target keeps CreateTime) and origin (its
``kmc-origin`` header; else, for a batch a kmc mirror wrote, the cluster it copied from, which the cluster's
``kmc.provenance`` says by producer id; else the cluster itself).
Target records that pair with nothing are skipped: other writers' records and other sources' (merge), and
copies of records the source no longer has (compacted or deleted since they were copied). The translation
is the target offset of the copy of the first source record at or after ``c``: the failed-over consumer
receives exactly what it would have received from the source. A source record that came from the target
(the mirror never copies it back: loop prevention) is found as its original in the target, through
the offset map of the mirror the other way, which the source holds (a failback).

Statuses: ``exact``; ``ahead`` (the group consumed records the mirror has not copied yet: translated to the
end of what it copied); ``gap`` (the target lacks records the group has not consumed: the mirror started
after them, or the target lost them; translated to where the copy goes on); ``no-checkpoint`` (this mirror
has no offset map for the partition: nothing to translate). Library code: no printing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.admin import OffsetSpec

from kmc.client import KafkaSession, translate_errors
from kmc.errors import Interrupted, KmcError
from kmc.metadata import describe_topics, list_offsets, render_topic_name
from kmc.mirror.checkpoints import Checkpoint, CheckpointStore, checkpoint_flows
from kmc.mirror.copypath import ORIGIN_HEADER
from kmc.mirror.fetch import fetch_batches
from kmc.mirror.plan import DEFAULT_FLOW
from kmc.mirror.provenance import ProvenanceMap

STATUSES = ("exact", "ahead", "gap", "no-checkpoint")
# gaps after which the anchors written before them no longer describe the target (expired records do not
# change what the anchors say: the mirror never had them)
_RESETTING_GAPS = ("source-recreated", "source-truncated", "target-recreated", "target-truncated")


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Translation:
    """Where one source offset of one partition goes in the target."""

    target_topic: str | None
    target_offset: int | None  # None: no-checkpoint
    status: str


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Record:
    offset: int
    key: bytes | None
    value: bytes | None
    # where its data was first produced (a cluster id): its kmc-origin header; else, when a kmc mirror's producer
    # wrote its batch, the cluster that mirror copied from; else the cluster it is in
    origin: str
    via: str | None  # the cluster a kmc mirror's producer copied its batch from (None: a local producer)
    timestamp: int
    create_time: bool  # the timestamp is the producer's (CreateTime), not the broker's (LogAppendTime)

    def came_from(self, cluster_id: str) -> bool:
        """Whether a mirror into ``cluster_id`` leaves this record out (loop prevention, kmc/mirror/copypath.py):
        its batch was copied from there, or its kmc-origin names it."""
        return self.via == cluster_id or self.origin == cluster_id


def _header_origin(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The value of the first non-null ``kmc-origin`` header, as the copy paths read it."""
    for name, value in headers:
        if name == ORIGIN_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


class _Reader:
    """Reads one cluster's records, one partition at a time, with their provenance (kmc/mirror/provenance.py:
    which of the cluster's producers are kmc mirrors, and from where)."""

    def __init__(self, session: KafkaSession, cluster_id: str, provenance_required: bool = False) -> None:
        self.session = session
        self.cluster_id = cluster_id
        self.abandon: threading.Event | None = None  # set: stop reading (Interrupted)
        self.stall = max(30.0, 3 * session.timeout)  # seconds a read may go without progress before it fails
        self.provenance = ProvenanceMap(session, required=provenance_required)
        self._consumer: Any = None

    def records(self, tp: TopicPartition, start: int, end: int) -> Iterator[_Record]:
        """The read_committed records of ``tp`` from ``start`` up to ``end`` (exclusive), lazily. One partition
        is read at a time: a new call ends the records of the one before."""
        if start >= end:
            return
        cluster = self.session.cluster
        where = f"read {tp.topic}[{tp.partition}]"
        if self._consumer is None:
            self._consumer = self.session.consumer(isolation_level="read_committed",
                                                   max_partition_fetch_bytes=1024 * 1024)
            fetch_batches(self._consumer, raw=False)  # DecodedBatch items, with their producer ids
        consumer = self._consumer
        with translate_errors(cluster, where):
            consumer.assign([tp])
            consumer.seek(tp, start)
        last_progress = time.monotonic()
        while True:
            with translate_errors(cluster, where):
                items = consumer.poll(timeout_ms=500).get(tp, [])
                position = consumer.position(tp)
                via = self.provenance.origins({item.producer_id for item in items}) if items else {}
            for item in items:
                copied_from = via.get(item.producer_id)
                for record in item.records:
                    if record.offset >= end:
                        return
                    yield _Record(record.offset, record.key, record.value,
                                  _header_origin(record.headers or ()) or copied_from or self.cluster_id,
                                  copied_from, record.timestamp, record.timestamp_type == 0)
            if position is not None and position >= end:
                return
            if self.abandon is not None and self.abandon.is_set():
                raise Interrupted(f"{cluster.name}: {where}: stopped")
            now = time.monotonic()
            if items:
                last_progress = now
            elif now - last_progress > self.stall:
                raise KmcError(f"{cluster.name}: {where} made no progress for {self.stall:g}s (at {position}, "
                               f"end {end})")

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass(frozen=True)
class _Anchor:
    source: int  # source offset
    target: int  # target offset of the copy of the first copied record at or after ``source``


@dataclass(frozen=True)
class _PartitionMap:
    """What the target says about one source partition: its checkpoint and its anchors, oldest first."""

    checkpoint: Checkpoint
    anchors: tuple[_Anchor, ...]


def partition_maps(checkpoints: Mapping[tuple[str, int], Checkpoint],
                   anchors: Mapping[tuple[str, int], list[list[int]]]) -> dict[tuple[str, int], _PartitionMap]:
    """The offset map of each checkpointed partition: its anchors and its checkpoint (which counts as one),
    sorted, without those written before the last gap that changed what the target holds (a topic recreated
    or truncated on either side)."""
    maps = {}
    for key, checkpoint in checkpoints.items():
        since = max((int(gap.get("detected_ms") or 0) for gap in checkpoint.gaps
                     if gap.get("kind") in _RESETTING_GAPS), default=0)
        points = {(source, target) for source, target, ms in anchors.get(key, ()) if ms >= since}
        points.add((checkpoint.next_offset, checkpoint.target_next_offset))
        ordered = sorted(points)
        # a later stretch that starts at the same source offset replaces the earlier one
        by_source: dict[int, int] = {}
        for source, target in ordered:
            by_source[source] = max(target, by_source.get(source, target))
        maps[key] = _PartitionMap(checkpoint, tuple(_Anchor(source, target)
                                                    for source, target in sorted(by_source.items())))
    return maps


@dataclass(frozen=True)
class _ReturnMap:
    """The offset map of the mirror the other way (target -> source: the forward mirror, seen from a
    failback), kept in the source's kmc.checkpoints: where the source's copies of the target's records
    are. ``target_topic`` is the target topic they were copied from."""

    target_topic: str
    offsets: _PartitionMap


class OffsetTranslator:
    """Translates source offsets of one mirror (flow, source -> target) into target offsets, reading both
    clusters. :meth:`prepare` once per round, then :meth:`translate`. Results that cannot change (the
    counterpart was found) are kept between rounds (``--sync-groups``).

    A source record that came from the target (a failback: the reverse mirror leaves it out, loop
    prevention) has no copy in the target, but an original: it is found through the mirror the other way,
    whose offset map the source holds (:class:`_ReturnMap`)."""

    def __init__(self, source: KafkaSession, target: KafkaSession, flow: str = DEFAULT_FLOW,
                 rename: str | None = None, abandon: threading.Event | None = None) -> None:
        self.source = source
        self.target = target
        self.flow = flow
        self.rename = rename
        self.abandon = abandon  # set while reading records: give up (Interrupted)
        self.source_id = ""
        self.target_id = ""
        self.maps: dict[tuple[str, int], _PartitionMap] = {}
        self.returns: dict[tuple[str, int], _ReturnMap] = {}  # by source topic and partition
        self._source_ends: dict[TopicPartition, tuple[int, int]] = {}
        self._target_ends: dict[TopicPartition, tuple[int, int]] = {}
        self._known: dict[tuple[Any, ...], Translation] = {}
        self._source_reader: _Reader | None = None
        self._target_reader: _Reader | None = None

    def prepare(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Read this mirror's offset map (in the target), the map of the mirror the other way (in the
        source), and both sides' offsets, for ``partitions`` (source topic, partition)."""
        self.source_id = self.source_id or self.source.cluster_id()
        self.target_id = self.target_id or self.target.cluster_id()
        wanted = set(partitions)
        source_topics = {info.name: info for info in describe_topics(
            self.source, with_offsets=False, wanted={topic for topic, _ in wanted}.__contains__)}
        store, checkpoints = self._checkpoints()
        usable = {}
        for key, checkpoint in checkpoints.items():
            info = source_topics.get(key[0])
            if info is None or key not in wanted:
                continue
            if self._renamed(key[0]) not in (None, checkpoint.target_topic):
                continue  # another mirror of the same flow name (a different rename) wrote it
            if checkpoint.source_topic_id and info.topic_id and checkpoint.source_topic_id != info.topic_id:
                continue  # the source topic was recreated since: its offsets are not the checkpoint's
            usable[key] = checkpoint
        target_topics = {info.name: info for info in describe_topics(
            self.target, with_offsets=False, wanted={checkpoint.target_topic for checkpoint in usable.values()}
            .__contains__)}
        for key, checkpoint in list(usable.items()):
            info = target_topics.get(checkpoint.target_topic)
            if info is None or key[1] >= len(info.partitions) or (
                    checkpoint.target_topic_id and info.topic_id and checkpoint.target_topic_id != info.topic_id):
                del usable[key]  # the target topic is gone, or was recreated since
        self.maps = partition_maps(usable, store.anchors)
        self.returns = self._return_maps({key for key in self.maps})
        source_tps = [TopicPartition(topic, partition) for topic, partition in wanted
                      if topic in source_topics and partition < len(source_topics[topic].partitions)]
        target_tps = {TopicPartition(self.maps[key].checkpoint.target_topic, key[1]) for key in self.maps}
        target_tps |= {TopicPartition(back.target_topic, key[1]) for key, back in self.returns.items()}
        self._source_ends = _ends(self.source, source_tps)
        self._target_ends = _ends(self.target, sorted(target_tps))

    def _checkpoints(self) -> tuple[CheckpointStore, dict[tuple[str, int], Checkpoint]]:
        """This mirror's checkpoints (with its anchors, in the store), as the target holds them now."""
        self.source_id = self.source_id or self.source.cluster_id()
        store = CheckpointStore(self.target, self.flow, self.source_id)
        return store, store.load_present()

    def mirrored_topics(self) -> list[str]:
        """The source topics this mirror has checkpoints of (with ``rename``: of the mirror with that rename)."""
        return sorted({topic for (topic, _), checkpoint in self._checkpoints()[1].items()
                       if self._renamed(topic) in (None, checkpoint.target_topic)})

    def _renamed(self, topic: str) -> str | None:
        """The target topic ``rename`` names for a source topic (None: no rename given)."""
        return None if self.rename is None else render_topic_name(self.rename, topic, self.source.cluster.name)

    def _return_maps(self, keys: set[tuple[str, int]]) -> dict[tuple[str, int], _ReturnMap]:
        """The offset maps, in the source, of mirrors from the target into the source topics of ``keys``."""
        found: dict[tuple[str, int], _ReturnMap] = {}
        for flow in sorted(checkpoint_flows(self.source, self.target_id)):
            store = CheckpointStore(self.source, flow, self.target_id)
            checkpoints = store.load()
            for (target_topic, partition), offsets in partition_maps(checkpoints, store.anchors).items():
                key = (offsets.checkpoint.target_topic, partition)
                if key in keys and key not in found:
                    found[key] = _ReturnMap(target_topic, offsets)
        return found

    def source_end(self, topic: str, partition: int) -> int | None:
        """The source partition's last stable offset (None: unknown partition)."""
        ends = self._source_ends.get(TopicPartition(topic, partition))
        return None if ends is None else ends[1]

    def translate(self, topic: str, partition: int, offset: int) -> Translation:
        """Where source offset ``offset`` of ``topic[partition]`` goes in the target."""
        offset_map = self.maps.get((topic, partition))
        source_ends = self._source_ends.get(TopicPartition(topic, partition))
        if offset_map is None or source_ends is None or not offset_map.anchors:
            return Translation(offset_map.checkpoint.target_topic if offset_map else None, None, "no-checkpoint")
        target_tp = TopicPartition(offset_map.checkpoint.target_topic, partition)
        source_first, source_end = source_ends
        # records before the source's start are gone there: a consumer resuming on the source starts at it
        wanted = min(max(offset, source_first), source_end)
        anchors = offset_map.anchors
        index = max((i for i, anchor in enumerate(anchors) if anchor.source <= wanted), default=None)
        following = anchors[index + 1] if index is not None and index + 1 < len(anchors) else None
        key = (topic, partition, wanted, anchors[index] if index is not None else None, following)
        known = self._known.get(key)
        if known is not None:
            return known
        source_tp = TopicPartition(topic, partition)
        if index is None:
            result, final = self._before_first_anchor(source_tp, target_tp, wanted, anchors[0]), False
        else:
            result, final = self._align(source_tp, target_tp, wanted, anchors[index], following,
                                        offset_map.checkpoint)
        if final:
            self._known[key] = result
        return result

    # ---------------------------------------------------------------------------------- the work

    def _readers(self) -> tuple[_Reader, _Reader]:
        if self._source_reader is None or self._target_reader is None:
            self._source_reader = _Reader(self.source, self.source_id)
            # the target's kmc.provenance says which of its batches the mirror wrote: its copies (the source's
            # is needed only where records came from the target: a failback)
            self._target_reader = _Reader(self.target, self.target_id, provenance_required=True)
        self._source_reader.abandon = self._target_reader.abandon = self.abandon
        return self._source_reader, self._target_reader

    def _source_records(self, tp: TopicPartition, start: int, end: int) -> Iterator[_Record]:
        return self._readers()[0].records(tp, max(start, self._source_ends[tp][0]), end)

    def _target_records(self, tp: TopicPartition, start: int, end: int | None) -> Iterator[_Record]:
        first, last = self._target_ends[tp]
        return self._readers()[1].records(tp, max(start, first), last if end is None else min(end, last))

    def _before_first_anchor(self, source_tp: TopicPartition, target_tp: TopicPartition, wanted: int,
                             first: _Anchor) -> Translation:
        """The group is behind where the mirror started: the copy starts at the first anchor; records the
        source still has before it were never copied (a gap)."""
        missing = any(not record.came_from(self.target_id)
                      for record in self._source_records(source_tp, wanted, first.source))
        return Translation(target_tp.topic, first.target, "gap" if missing else "exact")

    def _align(self, source_tp: TopicPartition, target_tp: TopicPartition, wanted: int, anchor: _Anchor,
               following: _Anchor | None, checkpoint: Checkpoint) -> tuple[Translation, bool]:
        """Pair the source's records from the anchor with their copies in the target up to the counterpart
        of the first record at or after ``wanted``. Returns the translation and whether it is final (the
        counterpart was found: later rounds give the same answer)."""
        source_end = self._source_ends[source_tp][1]
        source_bound = min(following.source, source_end) if following is not None else source_end
        expected = self._source_records(source_tp, anchor.source, source_bound)
        copies = self._target_records(target_tp, anchor.target, following.target if following is not None else None)
        origins = {self.source_id}
        last_copy: int | None = None  # offset of the last target record that may be a copy of this mirror's

        def found(translation_offset: int, status: str, final: bool = False) -> tuple[Translation, bool]:
            return Translation(target_tp.topic, translation_offset, status), final

        def after_copies() -> int:
            return anchor.target if last_copy is None else last_copy + 1

        for record in expected:
            if record.came_from(self.target_id):  # not copied (loop prevention): its original is in the target
                if record.offset < wanted:
                    continue
                original = self._original(source_tp, record.offset)
                if original is None:
                    return Translation(target_tp.topic, None, "no-checkpoint"), False
                return found(original, "exact", final=True)
            origins.add(record.origin)
            for copy in copies:
                if copy.origin in origins:
                    last_copy = copy.offset
                if _is_copy(copy, record):
                    if record.offset >= wanted:
                        return found(copy.offset, "exact", final=True)
                    break
            else:  # the target ends without the copy of ``record``
                if following is not None:
                    # this stretch of the copy lost it (the target was truncated); the copy goes on there
                    return found(following.target, "gap")
                if record.offset >= checkpoint.next_offset:
                    # not copied yet: the group consumed it (ahead), or it is the next to copy (exact)
                    return found(after_copies(), "ahead" if record.offset < wanted else "exact")
                return found(after_copies(), "gap")
        # the source has nothing at or after ``wanted`` in this stretch
        if following is not None and source_bound == following.source:
            return found(following.target, "exact")
        for copy in copies:  # copies of records the source no longer has: all before ``wanted``
            if copy.origin in origins:
                last_copy = copy.offset
        return found(after_copies(), "exact")

    def _original(self, source_tp: TopicPartition, offset: int) -> int | None:
        """The target offset of the original of the source's record at ``offset``, which the mirror the other
        way copied from the target (its :class:`_ReturnMap`); None when that map does not cover it."""
        back = self.returns.get((source_tp.topic, source_tp.partition))
        if back is None:
            return None
        # that mirror's anchors pair its source (our target) offsets with its target (our source) offsets
        anchor = max((anchor for anchor in back.offsets.anchors if anchor.target <= offset),
                     key=lambda anchor: anchor.target, default=None)
        if anchor is None:
            return None
        following = min((candidate for candidate in back.offsets.anchors if candidate.target > anchor.target),
                        key=lambda candidate: candidate.target, default=None)
        target_tp = TopicPartition(back.target_topic, source_tp.partition)
        originals = self._target_records(target_tp, anchor.source,
                                         following.source if following is not None else None)
        copies = self._source_records(source_tp, anchor.target, offset + 1)
        for original in originals:
            if original.came_from(self.source_id):
                continue  # that mirror did not copy it back
            for copy in copies:
                if _is_copy(copy, original):
                    if copy.offset == offset:
                        return original.offset
                    break
            else:
                return None
        return None

    def close(self) -> None:
        for reader in (self._source_reader, self._target_reader):
            if reader is not None:
                reader.close()
        self._source_reader = self._target_reader = None


def _is_copy(copy: _Record, record: _Record) -> bool:
    """Whether target record ``copy`` is the mirror's copy of source record ``record``."""
    return (copy.origin == record.origin and copy.key == record.key and copy.value == record.value
            and (not copy.create_time or copy.timestamp == record.timestamp))


def _ends(session: KafkaSession, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
    """(earliest offset, last stable offset) of each partition."""
    if not tps:
        return {}
    earliest = list_offsets(session, dict.fromkeys(tps, OffsetSpec.EARLIEST))
    latest = list_offsets(session, dict.fromkeys(tps, OffsetSpec.LATEST), "read_committed")
    return {tp: (earliest[tp], latest[tp]) for tp in tps if tp in earliest and tp in latest}
