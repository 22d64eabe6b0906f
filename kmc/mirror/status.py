"""How far a mirror is behind, per partition, from its checkpoints in the target (``kmc mirror status``,
``kmc flow status``), and the lag alarms of ``--max-lag`` / ``--max-lag-seconds``. Reads only: needs no lock,
so it works while the mirror runs. Library code: no printing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.admin import OffsetSpec

from kmc.acls import explain_status_denials
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import KmcError, LagAlarm, UsageError, combined_failure
from kmc.metadata import compile_patterns, describe_topics, list_offsets, render_topic_name
from kmc.mirror.checkpoints import CheckpointStore
from kmc.mirror.jobs import MirrorJob

STATUS_KEYS = ("flow", "source", "target", "source_topic", "target_topic", "partitions", "checkpointed_partitions",
               "records_behind", "seconds_behind", "oldest_uncopied_ms", "checkpoint_ms", "gaps", "position", "error")
# --partitions: one row per source partition, with the --group member (host:pid) that wrote its checkpoint
PARTITION_KEYS = ("flow", "source", "target", "source_topic", "partition", "target_topic", "member",
                  "records_behind", "seconds_behind", "oldest_uncopied_ms", "checkpoint_ms", "gaps", "position",
                  "error")


@dataclass(frozen=True)
class PartitionLag:
    """How far one source partition's copy is behind."""

    source_topic: str
    partition: int
    records_behind: int  # the source's last stable offset minus the checkpoint's next offset
    seconds_behind: float | None  # now minus the oldest uncopied record's timestamp; 0 caught up; None unknown
    oldest_uncopied_ms: int | None
    checkpoint_ms: int | None  # None: no checkpoint
    gaps: int  # data gaps recorded in the checkpoint
    position: int = 0  # the next offset to copy (the checkpoint's, else the partition's start)
    member: str | None = None  # --group: the member (host:pid) that wrote the checkpoint, i.e. copies it


@dataclass
class MirrorLag:
    """One mirror (flow, source -> target): its partitions' lags, or why it could not be asked."""

    flow: str
    source: str
    target: str
    rename: str
    topics: dict[str, int] = field(default_factory=dict)  # source topic -> partitions
    partitions: list[PartitionLag] = field(default_factory=list)
    error: KmcError | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per source topic (keys: STATUS_KEYS); a mirror that could not be asked is one row with
        ``error``."""
        where = {"flow": self.flow, "source": self.source, "target": self.target}
        if self.error is not None:
            return [dict.fromkeys(STATUS_KEYS) | where | {"error": self.error.one_line()}]
        rows = []
        for topic, count in self.topics.items():
            lags = [lag for lag in self.partitions if lag.source_topic == topic]
            stamps = [lag.oldest_uncopied_ms for lag in lags if lag.oldest_uncopied_ms is not None]
            lagging = any(lag.records_behind for lag in lags)
            seconds = [lag.seconds_behind for lag in lags if lag.records_behind and lag.seconds_behind is not None]
            rows.append(where | {
                "source_topic": topic, "target_topic": render_topic_name(self.rename, topic, self.source),
                "partitions": count, "checkpointed_partitions": sum(lag.checkpoint_ms is not None for lag in lags),
                "records_behind": sum(lag.records_behind for lag in lags),
                "seconds_behind": 0.0 if not lagging else max(seconds, default=None),
                "oldest_uncopied_ms": min(stamps) if stamps else None,
                "checkpoint_ms": max((lag.checkpoint_ms for lag in lags if lag.checkpoint_ms is not None),
                                     default=None),
                # data gaps recorded in the checkpoints (the most recent ones per partition; docs/mirror.md)
                "gaps": sum(lag.gaps for lag in lags),
                # the next offsets to copy, summed: what `--watch` turns into records/s between two looks
                "position": sum(lag.position for lag in lags),
                "error": None,
            })
        return rows

    def partition_rows(self) -> list[dict[str, Any]]:
        """One row per source partition (keys: PARTITION_KEYS), or the one row with ``error``."""
        where = {"flow": self.flow, "source": self.source, "target": self.target}
        if self.error is not None:
            return [dict.fromkeys(PARTITION_KEYS) | where | {"error": self.error.one_line()}]
        return [where | {"source_topic": lag.source_topic, "partition": lag.partition,
                         "target_topic": render_topic_name(self.rename, lag.source_topic, self.source),
                         "member": lag.member, "records_behind": lag.records_behind,
                         "seconds_behind": lag.seconds_behind, "oldest_uncopied_ms": lag.oldest_uncopied_ms,
                         "checkpoint_ms": lag.checkpoint_ms, "gaps": lag.gaps, "position": lag.position,
                         "error": None} for lag in self.partitions]

    def offenders(self, max_records: int | None, max_seconds: float | None) -> list[str]:
        """One line per partition further behind than the limits (None: no limit)."""
        lines = []
        for lag in self.partitions:
            over = []
            if max_records is not None and lag.records_behind > max_records:
                over.append(f"{lag.records_behind:,} records behind (max {max_records:,})")
            if max_seconds is not None and lag.seconds_behind is not None and lag.seconds_behind > max_seconds:
                over.append(f"{lag.seconds_behind:,.1f}s behind (max {max_seconds:g}s)")
            if over:
                name = "" if self.flow == "mirror" else f"flow {self.flow}: "
                lines.append(f"{name}{self.source} -> {self.target}: {lag.source_topic}[{lag.partition}]: "
                             + ", ".join(over))
        return lines


@dataclass
class LagReport:
    """What :func:`mirror_lags` found for several mirrors: :meth:`rows` for the output, :meth:`failure` for
    the exit status (with the alarms' limits)."""

    mirrors: list[MirrorLag]

    def rows(self, by_partition: bool = False) -> list[dict[str, Any]]:
        """Per source topic (STATUS_KEYS), or ``by_partition`` per source partition (PARTITION_KEYS)."""
        return [row for mirror in self.mirrors
                for row in (mirror.partition_rows() if by_partition else mirror.rows())]

    @property
    def errors(self) -> list[KmcError]:
        return [mirror.error for mirror in self.mirrors if mirror.error is not None]

    def offenders(self, max_records: int | None, max_seconds: float | None) -> list[str]:
        return [line for mirror in self.mirrors for line in mirror.offenders(max_records, max_seconds)]

    def failure(self, max_records: int | None = None, max_seconds: float | None = None) -> KmcError | None:
        """The error to exit with: mirrors that could not be asked first (6, or when none could, that
        error's 4/5), then a lag alarm (exit 1) when a partition is further behind than the limits."""
        errors = self.errors
        failed = combined_failure(errors, len(self.mirrors) - len(errors))
        if failed is not None:
            return failed
        offenders = self.offenders(max_records, max_seconds)
        if offenders:
            return LagAlarm(f"{len(offenders)} partition(s) further behind than allowed")
        return None


def validate_limits(max_records: int | None, max_seconds: float | None) -> None:
    if max_records is not None and max_records < 0:
        raise UsageError("--max-lag must be 0 or more records")
    if max_seconds is not None and max_seconds < 0:
        raise UsageError("--max-lag-seconds must be 0 or more")


def mirror_lags(jobs: Sequence[MirrorJob], timeout: float = DEFAULT_TIMEOUT, now_ms: int | None = None) -> LagReport:
    """How far behind each job's mirror is, per partition, from its checkpoints in the target: all jobs at
    once; a source or target that cannot be asked gives a :class:`MirrorLag` with ``error``."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    for job in jobs:
        job.validate()

    def one(job: MirrorJob) -> MirrorLag:
        lag = MirrorLag(job.flow, job.source.name, job.target.name, job.spec.rename)
        try:
            _measure(lag, job, timeout, now_ms)
        except KmcError as exc:
            lag.topics, lag.partitions, lag.error = {}, [], exc
        return lag

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        return LagReport(list(pool.map(one, jobs)))


def _measure(lag: MirrorLag, job: MirrorJob, timeout: float, now_ms: int) -> None:
    spec = job.spec
    include, exclude = compile_patterns(spec.topics, "topics"), compile_patterns(spec.exclude, "exclude")
    with KafkaSession(job.source, timeout) as source, KafkaSession(job.target, timeout) as target, \
            explain_status_denials(source, target, spec):  # a denial names the missing ACL (kmc.acls)
        source_id = source.cluster_id()
        topics = describe_topics(source, include, exclude, with_offsets=False)
        checkpoints = CheckpointStore(target, spec.flow, source_id).load_present()
        # a checkpoint kept for another target topic (the same flow run with another --rename) is not this
        # mirror's: the mirror itself ignores it and starts over, so it counts as none here too
        checkpoints = {key: checkpoint for key, checkpoint in checkpoints.items()
                       if checkpoint.target_topic == render_topic_name(spec.rename, key[0], job.source.name)}
        # offline partitions (no leader) cannot be asked for offsets: they count as not behind
        tps = [TopicPartition(topic.name, part.partition) for topic in topics for part in topic.partitions
               if part.online]
        earliest = list_offsets(source, dict.fromkeys(tps, OffsetSpec.EARLIEST))
        latest = list_offsets(source, dict.fromkeys(tps, OffsetSpec.LATEST), "read_committed")
        positions: dict[TopicPartition, int] = {}
        for tp in tps:
            checkpoint = checkpoints.get((tp.topic, tp.partition))
            start = earliest.get(tp, 0)
            positions[tp] = max(start, checkpoint.next_offset) if checkpoint is not None else start
        behind = {tp: max(0, latest.get(tp, 0) - positions[tp]) for tp in tps}
        oldest = _first_timestamps(source, {tp: positions[tp] for tp in tps if behind[tp] > 0}, timeout)
    lag.topics = {topic.name: len(topic.partitions) for topic in topics}
    for topic in topics:
        for part in topic.partitions:
            tp = TopicPartition(topic.name, part.partition)
            checkpoint = checkpoints.get((tp.topic, tp.partition))
            stamp = oldest.get(tp)
            lag.partitions.append(PartitionLag(
                tp.topic, tp.partition, behind.get(tp, 0),
                0.0 if not behind.get(tp) else None if stamp is None else round(max(0, now_ms - stamp) / 1000, 3),
                stamp, checkpoint.updated_ms if checkpoint is not None else None,
                len(checkpoint.gaps) if checkpoint is not None else 0, positions.get(tp, 0),
                checkpoint.member if checkpoint is not None else None))


def _first_timestamps(session: KafkaSession, positions: Mapping[TopicPartition, int],
                      timeout: float) -> dict[TopicPartition, int]:
    """The timestamp of the first committed record at or after each position (one fetch per partition)."""
    if not positions:
        return {}
    consumer = session.consumer(isolation_level="read_committed", max_partition_fetch_bytes=64 * 1024)
    found: dict[TopicPartition, int] = {}
    with translate_errors(session.cluster, "read the oldest uncopied records"):
        consumer.assign(list(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + max(5.0, timeout)
        while len(found) < len(positions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                if tp not in found and records:
                    found[tp] = records[0].timestamp
                    consumer.pause(tp)
    return found

