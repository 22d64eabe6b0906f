"""The copy engine: source consumer -> copy path -> target producer, with checkpoints in the target.

One thread does the loop: poll a batch from the source, hand each partition's records to the copy path
(which appends them to the producer's accumulator and returns the future of the last one), remember
``(next source offset, that future)`` per partition, and every second or so turn the futures that are
done into checkpoints. Fetching (the consumer's prefetch), sending (the producer's sender thread) and
checkpointing (asynchronous writes) overlap; the loop never waits for an acknowledgement unless more
than :data:`MAX_INFLIGHT_BYTES` or :data:`MAX_INFLIGHT_RECORDS` are unacknowledged.

Faults (docs/mirror.md, "Faults"): a send that fails for good rewinds to what was acknowledged (with
``--exactly-once``, to the checkpoints committed in the target, read again); records the source deleted
before they were copied, and topics recreated or truncated on either side, are found by offsets and topic
ids and reported as :class:`Gap` entries, never skipped silently. Library code: it reports through
callbacks and returns a :class:`MirrorResult`; it never prints.

Longer than 600 lines: the loop, its recovery from send failures and the transaction handling share one
:class:`_Engine`'s per-partition state; the faults issue (10) is reshaping it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec, OffsetTimestamp

from kmc._kafka_internals import close_producer
from kmc.acls import explain_mirror_denials
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, authorization_error, is_transient, translate_errors
from kmc.errors import (
    AuthorizationError,
    DataGapError,
    FencedError,
    KafkaOperationError,
    KmcError,
    UnreachableError,
    UsageError,
)
from kmc.errors import describe_exception as _describe
from kmc.metadata import describe_topics, list_offsets
from kmc.mirror import producer_hooks
from kmc.mirror.batchpath import BatchCopyPath
from kmc.mirror.checkpoints import (
    ANCHOR_INTERVAL,
    MAX_ANCHORS,
    MAX_GAPS,
    Checkpoint,
    CheckpointStore,
    ensure_checkpoint_topic,
)
from kmc.mirror.copypath import ORIGIN_HEADER, KeyedCopyPath, RecordCopyPath
from kmc.mirror.fetch import fetch_batches
from kmc.mirror.lock import hold_lock, lock_identity, lock_left_by_a_dead_run, settled_ends
from kmc.mirror.membership import Member
from kmc.mirror.plan import KEEP_CODEC, MirrorSpec, Plan, TopicPlan, apply_plan, copy_mode, parse_start, plan_mirror
from kmc.mirror.provenance import PROVENANCE_TOPIC, ProvenanceMap, announce, ensure_provenance_topic
from kmc.mirror.telemetry import EMPTY_LATENCY, ERROR_KINDS, LatencySnapshot, Notice, PartitionProgress, Telemetry
from kmc.profiles import Cluster

MODES = ("once", "follow")
# Unacknowledged payload and records before the loop waits for the target. Each record in flight also
# costs a future (a few hundred bytes), which is why records are capped as well as bytes.
MAX_INFLIGHT_BYTES = 16 * 1024 * 1024
MAX_INFLIGHT_RECORDS = 50_000
# A poll's items are handed to the copy path this many at a time, with the in-flight limits checked in
# between: a batch is decompressed only as it is copied, so memory stays bounded by the limits above plus
# this many decompressed batches, however compressible the data.
SEND_CHUNK = 16
REAP_INTERVAL = 0.05  # seconds between looks at which sends are acknowledged
POLL_TIMEOUT_MS = 200  # the longest a stop request waits for the loop to notice it
MiB = 1024 * 1024

GAP_KINDS = ("expired", "source-recreated", "source-truncated", "target-recreated", "target-truncated")


ProgressCallback = Callable[["MirrorProgress"], None]
NoticeCallback = Callable[[str, str], None]  # (level: "info" | "warn", message)


@dataclass(frozen=True)
class Gap:
    """Records of one source partition that the target will never get from this mirror, or a divergence.

    ``first_offset``/``end_offset`` are the source offsets concerned (end exclusive; None where unknown):

    - ``expired``: the source deleted them (retention, delete-records) before they were copied;
    - ``source-recreated``: the source topic was deleted and created again; what the old topic held from
      ``first_offset`` on was not copied; copying goes on from the new topic's beginning;
    - ``source-truncated``: the source lost records the target already has (an unclean leader election);
      the source's new records at those offsets are copied after them;
    - ``target-recreated``: the target topic was deleted and created again; kmc copies everything the
      source still holds again, and records before ``end_offset`` (the source's start) are gone;
    - ``target-truncated``: the target lost records it had acknowledged; kmc copies them again, and those
      before ``end_offset`` that the source no longer holds are gone.
    """

    source_topic: str
    partition: int
    kind: str
    first_offset: int | None
    end_offset: int | None
    target_topic: str = ""
    detected_ms: int = 0

    @property
    def records(self) -> int | None:
        if self.first_offset is None or self.end_offset is None:
            return None
        return max(0, self.end_offset - self.first_offset)

    def to_dict(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "partition": self.partition, "kind": self.kind,
                "first_offset": self.first_offset, "end_offset": self.end_offset, "records": self.records,
                "target_topic": self.target_topic, "detected_ms": self.detected_ms}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Gap:
        return cls(str(data["source_topic"]), int(data["partition"]), str(data["kind"]),
                   data.get("first_offset"), data.get("end_offset"), str(data.get("target_topic", "")),
                   int(data.get("detected_ms", 0)))

    def describe(self) -> str:
        where = f"{self.source_topic}[{self.partition}]"
        span = _span(self.first_offset, self.end_offset)
        if self.kind == "expired":
            return f"{where}: records {span} expired at the source before they were copied"
        if self.kind == "source-recreated":
            return (f"{where}: the source topic was recreated; records {span} of the old topic were not copied; "
                    "copying the new topic from its beginning")
        if self.kind == "source-truncated":
            return (f"{where}: the source lost records {span} after they were copied (unclean leader election?); "
                    f"{self.target_topic} keeps them and gets the source's new records after them")
        gone = f"; records {span} of {where} are no longer at the source" if self.end_offset is not None else ""
        if self.kind == "target-recreated":
            return f"{self.target_topic}[{self.partition}] was recreated: copying {where} again from the start{gone}"
        return f"{self.target_topic}[{self.partition}] lost records it had acknowledged: copying them again{gone}"


def _span(first: int | None, end: int | None) -> str:
    low = "?" if first is None else f"{first:,}"
    high = "?" if end is None else f"{end - 1:,}"
    return f"{low} to {high}"


@dataclass
class TopicResult:
    """What one source topic gave in this run."""

    source_topic: str
    target_topic: str
    partitions: int
    records: int = 0  # records sent to the target (and acknowledged, when the run ended cleanly)
    bytes: int = 0  # key + value bytes of those records
    skipped: int = 0  # records not sent because their kmc-origin is the target cluster (loop prevention)
    redelivered: int = 0  # records written after the last checkpoint by an earlier run, copied again
    lag: int | None = None  # records left to copy when the run ended (None: unknown)
    gaps: int = 0  # data gaps found in this run (MirrorResult.gaps has them)

    def to_dict(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "target_topic": self.target_topic,
                "partitions": self.partitions, "records": self.records, "bytes": self.bytes,
                "skipped": self.skipped, "redelivered": self.redelivered, "lag": self.lag, "gaps": self.gaps}


@dataclass
class MirrorResult:
    flow: str
    source: str
    target: str
    source_cluster_id: str
    target_cluster_id: str
    mode: str
    complete: bool  # --once: every partition reached the end offsets seen at the start
    elapsed: float
    topics: list[TopicResult]
    changes: list[str] = field(default_factory=list)  # what was done to the target's topics
    warnings: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)  # found in this run, in the order found
    # --sync-groups: the last round's kmc.mirror.offsets.TranslationReport (the runner adds it; None without)
    group_sync: Any = None

    @property
    def records(self) -> int:
        return sum(topic.records for topic in self.topics)

    @property
    def bytes(self) -> int:
        return sum(topic.bytes for topic in self.topics)

    @property
    def redelivered(self) -> int:
        return sum(topic.redelivered for topic in self.topics)

    @property
    def skipped(self) -> int:
        return sum(topic.skipped for topic in self.topics)

    def gap_error(self) -> DataGapError | None:
        """The error a ``--once`` run exits with when it found data gaps (exit 7), else None."""
        if not self.gaps:
            return None
        lost = sum(gap.records or 0 for gap in self.gaps)
        where = sorted({f"{gap.source_topic}[{gap.partition}]" for gap in self.gaps})
        return DataGapError(f"mirror {self.source} -> {self.target}: {len(self.gaps)} data gap(s) in "
                            f"{', '.join(where[:5])}{' ...' if len(where) > 5 else ''}"
                            + (f" ({lost:,} records not copied)" if lost else ""))

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc mirror -o json`` document (keys documented in docs/mirror.md)."""
        return {
            "flow": self.flow, "source": self.source, "target": self.target,
            "source_cluster_id": self.source_cluster_id, "target_cluster_id": self.target_cluster_id,
            "mode": self.mode, "complete": self.complete, "elapsed_seconds": round(self.elapsed, 3),
            "records": self.records, "bytes": self.bytes, "skipped": self.skipped,
            "redelivered": self.redelivered, "changes": list(self.changes), "warnings": list(self.warnings),
            "gaps": [gap.to_dict() for gap in self.gaps],
            "topics": [topic.to_dict() for topic in self.topics],
            "group_sync": None if self.group_sync is None else self.group_sync.to_dict(),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per source topic (``-o ndjson`` and ``-o csv``): the ``topics`` of :meth:`to_dict`."""
        return [topic.to_dict() for topic in self.topics]


@dataclass(frozen=True)
class TopicProgress:
    source_topic: str
    target_topic: str
    records: int
    bytes: int
    rate: float  # records/s since the previous report
    lag: int | None  # records still to copy (once: to the end offsets seen at start; follow: to the end)
    total: int | None  # once: records to copy in this run (for a progress bar); follow: None
    redelivered: int = 0
    skipped: int = 0
    gaps: int = 0


@dataclass(frozen=True)
class MirrorProgress:
    flow: str
    source: str
    target: str
    mode: str
    elapsed: float
    topics: tuple[TopicProgress, ...]
    shard: tuple[int, int] | None = None  # the reporting worker's MirrorSpec.shard (kmc mirror --workers)
    # for the service layer (kmc/mirror/telemetry.py): each partition, errors by kind, latencies
    partitions: tuple[PartitionProgress, ...] = ()
    errors: tuple[tuple[str, int], ...] = ()
    send_latency: LatencySnapshot = EMPTY_LATENCY
    fetch_latency: LatencySnapshot = EMPTY_LATENCY

    @property
    def records(self) -> int:
        return sum(topic.records for topic in self.topics)

    @property
    def rate(self) -> float:
        return sum(topic.rate for topic in self.topics)

    @property
    def lag(self) -> int | None:
        lags = [topic.lag for topic in self.topics if topic.lag is not None]
        return sum(lags) if lags else None


class _SendFailed(Exception):
    """A send (or, with --exactly-once, a transaction: ``part`` None) failed for good."""

    def __init__(self, part: _Partition | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.part = part
        self.error = error


class _TargetLost(Exception):
    """The target acknowledged a record at an offset below one it had acknowledged before: the target
    partition was truncated or its topic recreated under the mirror."""

    def __init__(self, part: _Partition) -> None:
        super().__init__(f"{part.target.topic}[{part.target.partition}] went back")
        self.part = part


class _Partition:
    """One source partition's copy state. ``pending`` holds (next source offset, future of the last record
    sent up to it or None, payload bytes, records) per send, in send order; ``acked`` is the next offset
    whose predecessors are all acknowledged, ``acked_target`` the target end offset right after the last
    of them."""

    __slots__ = ("source", "target", "stats", "start", "position", "end", "done", "pending", "acked",
                 "acked_target", "written", "committed", "committed_target", "txn_records", "txn_bytes",
                 "source_topic_id", "target_topic_id", "gaps", "anchors", "anchor_due", "anchor_at", "records",
                 "bytes")

    def __init__(self, source: TopicPartition, target: TopicPartition, stats: TopicResult, start: int,
                 end: int | None, acked_target: int, written: int | None, source_topic_id: str | None,
                 target_topic_id: str | None, gaps: tuple[dict[str, Any], ...]) -> None:
        self.source = source
        self.target = target
        self.stats = stats
        self.start = start
        self.position = start  # next offset to send (everything before it is sent or skipped)
        self.end = end  # --once: stop here
        self.done = end is not None and start >= end
        self.pending: deque[tuple[int, Any, int, int]] = deque()
        self.acked = start
        self.acked_target = acked_target
        self.written = written  # next_offset of the last checkpoint sent for it
        # --exactly-once: where the last committed transaction left it, and what the open one holds
        self.committed = start
        self.committed_target = acked_target
        self.txn_records = 0
        self.txn_bytes = 0
        self.source_topic_id = source_topic_id
        self.target_topic_id = target_topic_id
        self.gaps = gaps  # the checkpoint's recent gaps (dicts), newest last
        # the offset map's anchors (checkpoints.py): [[next_offset, target_next_offset, ms]], oldest first;
        # anchor_due: the copy restarted (or rewound) since the last, so the next checkpoint is an anchor too
        self.anchors: list[list[int]] = []
        self.anchor_due = True
        self.anchor_at = time.monotonic()
        self.records = self.bytes = 0  # sent from this partition in this run (telemetry; resends count again)

    def checkpoint(self, now_ms: int) -> Checkpoint:
        return Checkpoint(self.acked, self.target.topic, self.acked_target, now_ms, self.source_topic_id,
                          self.target_topic_id, self.gaps)

    def take_anchor(self, now: float, now_ms: int) -> list[list[int]] | None:
        """The anchor list to write when this checkpoint must be an anchor (the copy restarted or rewound
        since the last one, or ANCHOR_INTERVAL passed while it moved); None when nothing changes."""
        if not self.anchor_due and (self.acked == self.written or now - self.anchor_at < ANCHOR_INTERVAL):
            return None
        self.anchor_due = False
        self.anchor_at = now
        point = [self.acked, self.acked_target, now_ms]
        if self.anchors and self.anchors[-1][:2] == point[:2]:
            return None
        self.anchors.append(point)
        del self.anchors[:-MAX_ANCHORS]
        return list(self.anchors)


@dataclass
class _Start:
    """Where a partition starts (or restarts) and what was found on the way."""

    offset: int
    target_end: int
    redelivered: int = 0
    gaps: list[Gap] = field(default_factory=list)
    repin: bool = False  # the checkpoint must be written again before copying


def mirror_identity(source_cluster_id: str, target_cluster_id: str, spec: MirrorSpec) -> dict[str, object]:
    """What makes two runs "the same mirror" (the lock, and the transactional id of --exactly-once): the
    clusters by id, the flow, the topic selection and rename as a set (however the options were spelled),
    and the shard."""
    return lock_identity(source_cluster_id, target_cluster_id, spec.topics, spec.exclude, spec.rename, spec.flow,
                         spec.shard)


@contextlib.contextmanager
def mirror_lock(source_cluster: Cluster, target_cluster: Cluster, spec: MirrorSpec,
                timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold ``spec``'s (unsharded) mirror lock: what ``kmc mirror --workers`` holds around its workers.
    Connects to both clusters for their ids. LockedError (exit 75) when another run holds it."""
    with KafkaSession(source_cluster, timeout) as source, KafkaSession(target_cluster, timeout) as target:
        ids = (source.cluster_id(), target.cluster_id())
    identity = mirror_identity(*ids, dataclasses.replace(spec, shard=None))
    with hold_lock(identity, f"mirror {source_cluster.name} -> {target_cluster.name} (flow {spec.flow})"):
        yield


def run_mirror(
    source_cluster: Cluster,
    target_cluster: Cluster,
    spec: MirrorSpec,
    *,
    mode: str = "once",
    stop_event: threading.Event | None = None,
    progress_callback: ProgressCallback | None = None,
    notice_callback: NoticeCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    member: Member | None = None,
) -> MirrorResult:
    """Mirror ``spec``'s topics from ``source_cluster`` into ``target_cluster``.

    ``mode="once"`` copies up to the end offsets seen at the start and returns; ``"follow"`` runs until
    ``stop_event`` is set. Either way a set ``stop_event`` stops cleanly: in-flight sends are finished and
    checkpoints written. Raises LockedError when another run of the same mirror holds its lock. Data gaps
    do not raise: they are in the result (``gaps``; :meth:`MirrorResult.gap_error`).

    ``member``: this run is one generation of a ``--group`` member (kmc/mirror/member.py): it copies only
    the partitions Kafka's group coordinator gave it, takes no lock (the group decides who copies what, on
    every host), and under ``--exactly-once`` fences the members that copied its partitions before.
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    spec.validate()
    copy_mode(spec)  # a bad KMC_COPY_PATH is a usage error before any connection
    stop_event = stop_event or threading.Event()
    with KafkaSession(source_cluster, timeout) as source, KafkaSession(target_cluster, timeout) as target, \
            explain_mirror_denials(source, target, spec):  # a denial names the missing ACL (kmc.acls)
        identity = mirror_identity(source.cluster_id(), target.cluster_id(), spec)
        if member is not None:
            # Its partitions may have been a dead member's, whose last produce requests may still land.
            return _Engine(source, target, spec, mode, stop_event, identity,
                           progress_callback or (lambda progress: None),
                           notice_callback or (lambda level, text: None), after_crash=True, member=member).run()
        # A clean run removes its lock file: one left with a holder in it means the last run died (kill -9,
        # a lost host) and its last produce requests may still reach the target after this one starts.
        after_crash = lock_left_by_a_dead_run(identity)
        with hold_lock(identity, f"mirror {source_cluster.name} -> {target_cluster.name} (flow {spec.flow})"):
            engine = _Engine(source, target, spec, mode, stop_event, identity,
                             progress_callback or (lambda progress: None),
                             notice_callback or (lambda level, text: None), after_crash)
            return engine.run()


class _Engine:
    def __init__(self, source: KafkaSession, target: KafkaSession, spec: MirrorSpec, mode: str,
                 stop_event: threading.Event, identity: dict[str, object], progress: ProgressCallback,
                 notice: NoticeCallback, after_crash: bool = False, member: Member | None = None) -> None:
        self.after_crash = after_crash
        # --exactly-once: the open transaction failed for good (the run ends on it): never commit it
        self.transaction_failed = False
        self.member = member
        self.source = source
        self.target = target
        self.spec = spec
        self.identity = identity
        self.copy_path = copy_mode(spec)[0]
        self.once = mode == "once"
        self.mode = mode
        self.stop_event = stop_event
        self.progress = progress
        self.notice = notice
        self.parts: dict[TopicPartition, _Partition] = {}
        self.topics: dict[str, TopicResult] = {}
        self.warnings: list[str] = []
        self.changes: list[str] = []
        self.gaps: list[Gap] = []
        self.inflight_bytes = 0
        self.inflight_records = 0
        self.started = time.monotonic()
        self._seen_warnings: set[str] = set()
        self._rates: dict[str, tuple[float, int]] = {}
        self.telemetry = Telemetry()

    # ------------------------------------------------------------------------------------ set-up

    def _warn(self, message: str, event: str = "warning") -> None:
        """Say ``message`` once; ``event`` (one of ERROR_KINDS) is counted every time."""
        if event in ERROR_KINDS:
            self.telemetry.errors[event] += 1
        if message not in self._seen_warnings:
            self._seen_warnings.add(message)
            self.warnings.append(message)
            self.notice("warn", Notice(message, event))

    def _gap(self, gap: Gap) -> None:
        """Report a gap now (a warning) and keep it for the result and the partition's checkpoint."""
        self.gaps.append(gap)
        self.telemetry.errors["gap"] += 1
        self.notice("warn", Notice(gap.describe(), "gap", gap.source_topic, gap.partition))
        stats = self.topics.get(gap.source_topic)
        if stats is not None:
            stats.gaps += 1

    def run(self) -> MirrorResult:
        plan = plan_mirror(self.source, self.target, self.spec)
        self.plan = plan
        for warning in plan.warnings:
            self._warn(warning)
        # which of the source's producers are kmc mirrors, and from where (loop prevention by batch)
        self.provenance = ProvenanceMap(self.source, self._warn)
        # The source's side of the start (its kmc.provenance, the consumer) runs beside the target's: over a
        # long link between the two sites each of its round trips counts. Neither is used before the copy.
        with ThreadPoolExecutor(1, thread_name_prefix="kmc-source-start") as pool:
            source_start = pool.submit(self._start_source)
            ready = self._start_target(plan, source_start.result)
        if not ready:
            return self._result(False)  # stopped before the target answered: nothing was copied
        self.consumer = source_start.result()
        try:
            self._add_partitions(plan.topics, self.spec.start)
        except _SendFailed as failure:  # --exactly-once: the starting points did not commit
            raise self._send_error(failure) from failure.error
        try:
            complete = self._loop()
        except Exception:
            # Checkpoint what is acknowledged, then report the original error. (A KeyboardInterrupt, the
            # second Ctrl-C, means "stop waiting": it passes straight through.)
            with contextlib.suppress(Exception):
                self._finish()
            raise
        self._finish()
        lag = self._lags()
        for name, topic in self.topics.items():
            topic.lag = lag.get(name)
        return self._result(complete)

    def _start_source(self) -> KafkaConsumer:
        """Read the source's kmc.provenance and connect the consumer (on a thread of its own: run())."""
        self.provenance.load()
        consumer = self.source.consumer(
            isolation_level="read_committed",
            # never jump silently: an offset out of range (records deleted before they were copied, a topic
            # recreated or truncated) raises, and the loop reports it as a gap (_out_of_range)
            auto_offset_reset="none",
            fetch_max_bytes=16 * MiB,
            max_partition_fetch_bytes=max(2 * MiB, self.plan.max_message_bytes),
            max_poll_records=2000,
            fetch_max_wait_ms=200,
            metrics_enabled=not self.once,  # the fetch latency the service serves (kmc.client.CLIENT_METRICS)
        )
        fetch_batches(consumer, raw=self.copy_path != "records")
        self.telemetry.watch_consumer(consumer)
        return consumer

    def _start_target(self, plan: Plan, source_ready: Callable[[], object]) -> bool:
        """Make the target ready: kmc's topics, the producer, the checkpoints, the topics to copy into
        (only once ``source_ready()`` returned: a source that failed to start changes no topic there).
        False: stopped while waiting for it (a service whose target is away)."""
        if ensure_checkpoint_topic(self.target):
            self.notice("info", "created kmc.checkpoints")
        if ensure_provenance_topic(self.target):
            self.notice("info", f"created {PROVENANCE_TOPIC}")
        self.store = CheckpointStore(self.target, self.spec.flow, plan.source_cluster_id,
                                     self.member.label if self.member else None,
                                     self._transactional_id() if self.member and self.spec.exactly_once else None)
        # With --exactly-once the producer's init_transactions() fences an earlier run and aborts its open
        # transaction before the checkpoints are read. A service (--follow) that starts while the target is
        # away (a broker restarting, its transaction coordinator moving) waits for it; --once fails (exit 4).
        if self.once:
            self._new_producer()
        elif self._until_target_answers(lambda: self._new_producer() or True, False) is False:
            return False
        # (a service waits for the checkpoints too: the target may go away again between the two)
        loaded = self.store.load(self._warn) if self.once else \
            self._until_target_answers(lambda: self.store.load(self._warn), None)
        if loaded is None:
            return False
        self.loaded = loaded
        if self.member is not None and self.spec.exactly_once:
            self.loaded = self._fence_earlier_owners(self.loaded)
        # refused before the target changes: the same topics already copied under another name (exit 2)
        self._other_copies([(topic, p) for topic in plan.topics for p in range(topic.partitions)])
        source_ready()  # (raises the source side's error)
        self.changes.extend(apply_plan(self.target, plan))
        for change in self.changes:
            self.notice("info", change)
        return True

    def _result(self, complete: bool) -> MirrorResult:
        plan = self.plan
        return MirrorResult(
            flow=self.spec.flow, source=plan.source, target=plan.target,
            source_cluster_id=plan.source_cluster_id, target_cluster_id=plan.target_cluster_id,
            mode=self.mode, complete=complete, elapsed=time.monotonic() - self.started,
            topics=list(self.topics.values()), changes=self.changes, warnings=self.warnings, gaps=self.gaps,
        )

    def _transactional_id(self) -> str:
        """Stable for one mirror (its identity: cluster ids, selection, rename, flow, shard), so a restarted
        run fences the one before it, and two different mirrors never fence each other."""
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
        if self.member is not None:  # one per member and generation: fencing an earlier one spares the living
            return f"kmc/{self.spec.flow}/{digest}/{self.member.transactional_suffix}"
        return f"kmc/{self.spec.flow}/{digest}"

    def _owns(self, topic: str, partition: int) -> bool:
        """Whether this run copies the source partition: its shard's (--workers), its member's (--group)."""
        return self.spec.owns(partition) and (self.member is None or self.member.owns(topic, partition))

    def _fence_earlier_owners(self, loaded: dict[tuple[str, int], Checkpoint]) -> dict[tuple[str, int], Checkpoint]:
        """--group --exactly-once: a member that copied one of this member's partitions before may still
        run (a zombie: paused past its session timeout, then resumed). Initialising the transactional ids
        its checkpoints name fences it (its next commit fails) and aborts its open transaction; then the
        checkpoints are read again, now final for those writers."""
        own = self._transactional_id()
        fenced: set[str] = set()
        while True:
            writers = {checkpoint.writer for (topic, p), checkpoint in loaded.items()
                       if checkpoint.writer and checkpoint.writer != own and self._owns(topic, p)} - fenced
            if not writers:
                return loaded
            for writer in sorted(writers):
                # a producer's init_transactions() bumps the id's epoch and aborts its open transaction
                producer = self.target.producer(transactional_id=writer)
                try:
                    with translate_errors(self.target.cluster, f"fence the transactional id {writer}"):
                        producer.init_transactions()
                finally:
                    close_producer(producer, 0)
            fenced |= writers
            self.notice("info", f"fenced {len(writers)} earlier owner(s) of these partitions")
            loaded = self.store.load(self._warn)

    def _new_producer(self) -> None:
        spec = self.spec
        transactional: dict[str, Any] = {}
        if spec.exactly_once:
            transactional = {
                "transactional_id": self._transactional_id(),
                "transaction_timeout_ms": spec.transaction_timeout_ms,
            }
        keep_codec = spec.compression == KEEP_CODEC
        self.producer = self.target.producer(
            **transactional,
            acks="all",
            enable_idempotence=True,  # keeps each partition's order across retries
            linger_ms=10,
            batch_size=512 * 1024,
            max_request_size=max(4 * MiB, self.plan.max_message_bytes + 64 * 1024),
            # with "keep", records the byte path cannot forward as batches (and split batches) use lz4
            compression_type="lz4" if keep_codec else spec.compression,
            delivery_timeout_ms=int(spec.delivery_timeout * 1000),
            retries=2**31 - 1,
            max_in_flight_requests_per_connection=5,
            # kafka-python wants delivery_timeout_ms > linger_ms + request_timeout_ms
            request_timeout_ms=min(30000, int(spec.delivery_timeout * 1000) // 2),
            metrics_enabled=not self.once,  # the send latency the service serves (kmc.client.CLIENT_METRICS)
        )
        self.failed_batches = producer_hooks.FailedBatches(self.producer)
        self.telemetry.watch_producer(self.producer)
        if spec.exactly_once:
            try:
                with translate_errors(self.target.cluster, "start a transaction"):
                    self.producer.init_transactions()
                    self.producer.begin_transaction()
            except KmcError:
                close_producer(self.producer, 0)
                raise
            self.store.use_producer(self.producer)
        self._announce()
        ids = (self.plan.source_cluster_id, self.plan.target_cluster_id)
        if self.copy_path != "records":
            self.path = BatchCopyPath(self.producer, *ids, self.provenance, keep_codec=keep_codec,
                                      whole=self.copy_path == "whole", stamp_records=spec.stamp_records)
        else:
            path_class = KeyedCopyPath if spec.partitioner == "key" else RecordCopyPath
            self.path = path_class(self.producer, *ids, self.provenance, spec.stamp_records)
        with translate_errors(self.target.cluster, "load topic metadata"):
            for name in {part.target.topic for part in self.parts.values()}:
                self.path.prepare(name)

    def _announce(self) -> None:
        """Announce the new producer in the target's kmc.provenance (kmc/mirror/provenance.py) before it
        writes any record: acknowledged, or with --exactly-once committed in a transaction of its own."""
        timeout = max(30.0, self.target.timeout)
        try:
            with translate_errors(self.target.cluster, f"write {PROVENANCE_TOPIC}"):
                future = announce(self.producer, self.plan.source_cluster_id, self.spec.flow)
                producer_hooks.flush(self.producer, timeout)
                future.get(timeout=0)
                if self.spec.exactly_once:
                    producer_hooks.commit_transaction(self.producer, timeout)
        except KmcError:
            close_producer(self.producer, 0)
            raise

    def _add_partitions(self, topics: tuple[TopicPlan, ...] | list[TopicPlan], start_from: str | int) -> None:
        """Start copying the given topics' partitions that are not being copied yet. They join the copy
        only once their starting points are written to the target: a failure leaves them unknown, to be
        added again by the next look (a new partition must never be known but not copied)."""
        fresh = [(topic, p) for topic in topics for p in range(topic.partitions)
                 if self._owns(topic.source_topic, p) and TopicPartition(topic.source_topic, p) not in self.parts]
        if not fresh:
            return
        source_tps = [TopicPartition(topic.source_topic, p) for topic, p in fresh]
        with translate_errors(self.target.cluster, "load topic metadata"):
            target_tps = [TopicPartition(topic.target_topic, self.path.target_partition(topic.target_topic, p))
                          for topic, p in fresh]
        earliest = self._offsets(self.source, {tp: OffsetSpec.EARLIEST for tp in source_tps})
        # read_committed: the last stable offset, so an open transaction does not hold --once up forever
        latest = self._offsets(self.source, {tp: OffsetSpec.LATEST for tp in source_tps}, "read_committed")
        target_end = self._settled_ends(target_tps)
        target_ids = self._target_topic_ids({topic.target_topic for topic, _ in fresh
                                             if topic.target_topic_id is None})
        start_from = parse_start(start_from)
        by_time: dict[TopicPartition, int] = {}
        if isinstance(start_from, int):
            by_time = self._offsets(self.source, {tp: OffsetTimestamp(start_from) for tp in source_tps})
        self._other_copies(fresh, warn=True)
        new_parts: dict[TopicPartition, _Partition] = {}
        found_gaps: list[Gap] = []
        initial: list[tuple[str, int, Checkpoint]] = []
        redelivered: dict[str, int] = {}
        now_ms = int(time.time() * 1000)
        new_topics: dict[str, TopicResult] = {}
        for (topic, p), source_tp, target_tp in zip(fresh, source_tps, target_tps, strict=True):
            stats = self.topics.get(topic.source_topic) or new_topics.get(topic.source_topic)
            if stats is None:
                stats = new_topics[topic.source_topic] = TopicResult(topic.source_topic, topic.target_topic,
                                                                     topic.partitions)
            stats.partitions = max(stats.partitions, topic.partitions)
            first, last = earliest[source_tp], latest[source_tp]
            target_id = topic.target_topic_id or target_ids.get(topic.target_topic)
            checkpoint = self.loaded.get((topic.source_topic, p))
            other_copy = checkpoint is not None and checkpoint.target_topic != topic.target_topic
            if other_copy:
                checkpoint = None  # a copy under another name that is gone (_other_copies): start afresh
            if checkpoint is not None:
                found = self._resume(topic, p, checkpoint, first, last, target_end[target_tp], target_id, now_ms)
                if not self.spec.exactly_once:  # with it, what follows the checkpoint was aborted: unseen
                    stats.redelivered += found.redelivered
                    redelivered[topic.source_topic] = redelivered.get(topic.source_topic, 0) + found.redelivered
            else:
                if start_from == "earliest":
                    start = first
                elif start_from == "latest":
                    start = last
                else:
                    at = by_time.get(source_tp, -1)
                    start = last if at is None or at < 0 else max(first, at)
                found = _Start(start, target_end[target_tp], repin=True)
            gaps = (checkpoint.gaps if checkpoint is not None else ()) + tuple(gap.to_dict() for gap in found.gaps)
            part = _Partition(source_tp, target_tp, stats, found.offset, last if self.once else None,
                              found.target_end, found.offset, topic.source_topic_id, target_id, gaps[-MAX_GAPS:])
            # (the anchors of a former copy under another name describe that copy, not this one)
            part.anchors = [] if other_copy else list(self.store.anchors.get((topic.source_topic, p), []))
            # a clean resume continues the copy the last anchor describes; anything else starts a new stretch
            part.anchor_due = not part.anchors or found.repin or bool(found.gaps) or checkpoint is None
            new_parts[source_tp] = part
            found_gaps.extend(found.gaps)
            # A group member re-pins every partition it gets: its checkpoint then names it (the member, and
            # the writer the next owner fences) before it copies anything.
            if found.repin or found.gaps or checkpoint is None or self.member is not None or (
                    checkpoint.source_topic_id, checkpoint.target_topic_id) != (part.source_topic_id, target_id):
                # Re-pin before copying: the records past target_next_offset are counted now, so a crash of
                # this run must not count them a second time at the next start; gaps and ids are recorded.
                initial.append((topic.source_topic, p, part.checkpoint(now_ms)))
        if initial:
            # Pin the starting points before copying: a crash before the first regular checkpoint then
            # resumes from here (not from a new "latest"), and duplicates stay countable.
            now = time.monotonic()
            anchors = [(part.source.topic, part.source.partition, points) for part in new_parts.values()
                       if (points := part.take_anchor(now, now_ms)) is not None]
            self._store_write(initial, anchors)
            if self.spec.exactly_once:
                self._commit(force=True, parts=new_parts)  # the open transaction must not stay open
            else:
                self.store.flush(timeout=max(30.0, self.target.timeout))
        # Only now do the partitions join the copy.
        self.topics.update(new_topics)
        self.parts.update(new_parts)
        for gap in found_gaps:
            self._gap(gap)
        for name, count in redelivered.items():
            if count:
                self.notice("info", f"resuming {name}: {count} records written to {self.topics[name].target_topic} "
                                    "after the last checkpoint will be copied again (redelivered)")
        with translate_errors(self.source.cluster, "assign partitions"):
            active = [tp for tp, part in self.parts.items() if not part.done]
            self.consumer.assign(active)
            for tp in source_tps:
                part = self.parts[tp]
                if not part.done:
                    self.consumer.seek(tp, part.position)
        with translate_errors(self.target.cluster, "load topic metadata"):
            for name in {tp.topic for tp in target_tps}:
                self.path.prepare(name)

    def _other_copies(self, fresh: list[tuple[TopicPlan, int]], warn: bool = False) -> None:
        """Source topics whose checkpoints (this flow's) are for another target topic: the same topics copied
        under another rename with the same flow name. Checkpoints are kept per flow and source topic, so two
        such copies would take each other's checkpoints for foreign ones and copy everything again, each
        run, and mix their offset maps: refused (exit 2) while that other target topic exists; when it is
        gone (renamed on purpose), this copy starts afresh, said once per topic."""
        others: dict[str, str] = {}
        for topic, p in fresh:
            checkpoint = self.loaded.get((topic.source_topic, p))
            if checkpoint is not None and checkpoint.target_topic != topic.target_topic:
                others.setdefault(topic.source_topic, checkpoint.target_topic)
        if not others:
            return
        existing = self._target_topic_ids(set(others.values()))
        alive = sorted(source for source, target in others.items() if target in existing)
        if alive:
            source = alive[0]
            raise UsageError(
                f"flow '{self.spec.flow}' already copies {self.source.cluster.name}'s {source} to "
                f"{others[source]} on {self.target.cluster.name}"
                + (f" (and {len(alive) - 1} more topic(s))" if len(alive) > 1 else "")
                + ": a second copy under the same flow name would take over its checkpoints",
                hint=f"give this copy a flow name of its own (--flow NAME), or delete {others[source]} first")
        targets = {topic.source_topic: topic.target_topic for topic, _ in fresh}
        for source, target in sorted(others.items()) if warn else ():
            self._warn(f"{source}: its checkpoints are for {target}, which is gone; copying to {targets[source]} "
                       "from the start")

    def _settled_ends(self, target_tps: list[TopicPartition], settle: bool = False) -> dict[TopicPartition, int]:
        """The target partitions' end offsets; after a crash of the previous run (or, ``settle``, after this
        run gave up on sends) once they stay put (:func:`kmc.mirror.lock.settled_ends`)."""
        specs = {tp: OffsetSpec.LATEST for tp in target_tps}
        if not (settle or self.after_crash) or not specs:
            return self._offsets(self.target, specs)
        self.after_crash = False
        return settled_ends(lambda: self._offsets(self.target, specs), self.stop_event)

    def _resume(self, topic: TopicPlan, p: int, checkpoint: Checkpoint, first: int, last: int, target_end: int,
                target_id: str | None, now_ms: int) -> _Start:
        """Where a partition with a checkpoint goes on, checked against both sides' topic ids and offsets."""
        where = (topic.source_topic, p, topic.target_topic)
        start = checkpoint.next_offset
        if checkpoint.source_topic_id and topic.source_topic_id and checkpoint.source_topic_id != topic.source_topic_id:
            gap = Gap(*where[:2], "source-recreated", start, None, where[2], now_ms)
            return _Start(first, target_end, gaps=[gap], repin=True)
        if checkpoint.target_topic_id and target_id and checkpoint.target_topic_id != target_id:
            gaps = [Gap(*where[:2], "target-recreated", None, first or None, where[2], now_ms)]
            return _Start(first, target_end, gaps=gaps, repin=True)
        gaps: list[Gap] = []
        if start > last:
            # The source ends before the checkpoint with the same topic (or one without an id): the source
            # lost records that were copied. Its new records at those offsets are copied after them.
            gaps.append(Gap(*where[:2], "source-truncated", last, start, where[2], now_ms))
            start = last
        if target_end < checkpoint.target_next_offset:
            lost = checkpoint.target_next_offset - target_end
            start, missing = self._before_target_loss(TopicPartition(topic.source_topic, p), start, lost, first)
            gaps.append(Gap(*where[:2], "target-truncated", None, first if missing else None, where[2], now_ms))
            return _Start(start, target_end, gaps=gaps, repin=True)
        if start < first:
            gaps.append(Gap(*where[:2], "expired", start, first, where[2], now_ms))
            start = first
        return _Start(start, target_end, redelivered=target_end - checkpoint.target_next_offset, gaps=gaps,
                      repin=start != checkpoint.next_offset or target_end != checkpoint.target_next_offset)

    def _before_target_loss(self, source_tp: TopicPartition, before: int, lost: int, first: int) -> tuple[int, int]:
        """The source offset to copy again from when the target lost its last ``lost`` records copied from
        before ``before``: the offset of the ``lost``-th copyable record counted back from ``before``.
        Returns (offset, records that would be needed but are no longer at the source)."""
        target_origin = self.plan.target_cluster_id.encode()
        window = max(2 * lost, 100)
        deadline = time.monotonic() + max(60.0, 2 * self.source.timeout)
        consumer = self.source.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
        try:
            with translate_errors(self.source.cluster, "read back"):
                consumer.assign([source_tp])
                while True:
                    low = max(first, before - window)
                    consumer.seek(source_tp, low)
                    offsets = []
                    while consumer.position(source_tp) < before:
                        if time.monotonic() > deadline:
                            raise kafka_errors.KafkaTimeoutError(f"reading {source_tp.topic}[{source_tp.partition}] "
                                                                 f"back from {low} to {before} took too long")
                        for record in consumer.poll(timeout_ms=500).get(source_tp, []):
                            if record.offset >= before:
                                break
                            origins = [value for name, value in record.headers if name == ORIGIN_HEADER]
                            if not origins or origins[0] != target_origin:
                                offsets.append(record.offset)
                    if len(offsets) >= lost:
                        return offsets[-lost], 0
                    if low == first:
                        return first, lost - len(offsets)
                    window *= 4
        finally:
            consumer.close()

    def _target_topic_ids(self, names: set[str]) -> dict[str, str]:
        if not names:
            return {}
        with translate_errors(self.target.cluster, "describe topics"):
            return {topic.name: topic.topic_id for topic in describe_topics(
                self.target, with_offsets=False, include_internal=True, wanted=names.__contains__)
                if topic.topic_id}

    def _offsets(self, session: KafkaSession, specs: dict[TopicPartition, Any],
                 isolation: str = "read_uncommitted") -> dict[TopicPartition, int]:
        """Offsets by spec; asked again while partitions have no leader that answers yet (topics just
        created, a broker restarting), for up to 3 × --timeout (at least a minute), or until a stop."""
        deadline = time.monotonic() + max(60.0, 3 * session.timeout)
        while True:
            try:
                return list_offsets(session, specs, isolation)
            except KmcError as exc:
                if not is_transient(exc.__cause__) or time.monotonic() > deadline or self.stop_event.is_set():
                    raise
                self.stop_event.wait(1.0)

    # ------------------------------------------------------------------------------------ the loop

    def _loop(self) -> bool:
        """Copy until done (--once) or stopped; True when --once reached its end offsets."""
        spec = self.spec
        poll = self.consumer.poll
        parts = self.parts
        now = time.monotonic()
        next_reap = now + REAP_INTERVAL
        next_checkpoint = now + spec.checkpoint_interval
        next_progress = now + spec.progress_interval
        next_refresh = now + spec.refresh_interval
        while True:
            if self.stop_event.is_set():
                return False
            try:
                if self.once and all(part.done for part in parts.values()):
                    self._drain()  # may raise _SendFailed: then the rewound partitions are not done any more
                    if all(part.done for part in parts.values()):
                        return True
                    continue
                moved: Exception | None = None
                try:
                    with translate_errors(self.source.cluster, "fetch"):
                        try:
                            batch = poll(timeout_ms=POLL_TIMEOUT_MS)
                        except (kafka_errors.OffsetOutOfRangeError, kafka_errors.LogTruncationError) as exc:
                            moved, batch = exc, {}
                except KmcError as exc:
                    if not _retriable(exc.__cause__):
                        raise
                    self._warn(f"{self.source.cluster.name}: fetch failed, retrying: {exc}", "fetch")
                    self.stop_event.wait(1.0)
                    continue
                if moved is not None:
                    self._source_moved(moved)
                for tp, records in batch.items():
                    part = parts[tp]
                    if part.done:
                        continue
                    end = part.end
                    if end is not None and records[-1].offset + 1 >= end:
                        records = [record for record in records if record.offset < end]
                        part.done = True
                        self.consumer.pause(tp)
                        position = end
                    else:
                        position = records[-1].offset + 1
                    for at in range(0, max(1, len(records)), SEND_CHUNK):  # an empty chunk marks the end
                        chunk = records[at:at + SEND_CHUNK]
                        upto = position if at + SEND_CHUNK >= len(records) else chunk[-1].offset + 1
                        self._send(part, chunk, upto)
                        if self._over_limit():
                            self._wait_for_room()
                if self.once and not batch:
                    self._finish_idle_partitions()
                now = time.monotonic()
                if now >= next_reap:
                    self._reap()
                    next_reap = now + REAP_INTERVAL
                if now >= next_checkpoint:
                    self._checkpoint()
                    next_checkpoint = now + spec.checkpoint_interval
                if now >= next_progress:
                    self._report(now)
                    next_progress = now + spec.progress_interval
                if not self.once and now >= next_refresh:
                    self._refresh()
                    next_refresh = time.monotonic() + spec.refresh_interval
            except _SendFailed as failure:
                self._recover(failure)
            except _TargetLost as lost:
                self._recover(_SendFailed(lost.part, lost), target_lost=True)

    def _send(self, part: _Partition, records: list[Any], position: int) -> None:
        try:
            future, sent, skipped, size = self.path.send_batch(part.target, records)
        except kafka_errors.KafkaError as exc:  # the producer refuses new sends after an earlier failure
            raise _SendFailed(part, _cause(exc)) from exc
        stats = part.stats
        stats.records += sent
        stats.skipped += skipped
        stats.bytes += size
        part.position = position
        part.txn_records += sent
        part.txn_bytes += size
        part.pending.append((position, future, size, sent))
        part.records += sent
        part.bytes += size
        self.inflight_bytes += size
        self.inflight_records += sent

    def _wait_for_room(self) -> None:
        self._reap()
        while self._over_limit() and not self.stop_event.is_set():
            self._wait_for_oldest()
            self._reap()

    def _finish_idle_partitions(self) -> None:
        """--once: partitions whose remaining offsets were only transaction markers or aborted records
        reach their end without returning a record; the consumer's position shows it."""
        with translate_errors(self.source.cluster, "read positions"):
            for tp, part in self.parts.items():
                if part.done or part.end is None:
                    continue
                position = self.consumer.position(tp)
                if position is not None and position >= part.end:
                    part.done = True
                    part.position = part.end
                    part.pending.append((part.end, None, 0, 0))
                    self.consumer.pause(tp)

    def _source_moved(self, error: Exception) -> None:
        """The consumer's position is out of the source's range (records deleted before they were copied,
        a topic recreated) or the source log was truncated below it (KIP-320): report the gap, go on from
        where the source's data now is."""
        if isinstance(error, kafka_errors.LogTruncationError):
            where = {tp: (meta.offset if meta is not None else None) for tp, meta in error.divergent_offsets.items()}
        else:
            where = {tp: None for tp in (error.args[0] if error.args and isinstance(error.args[0], dict) else {})}
        tps = [tp for tp in where if tp in self.parts]
        if not tps:
            return
        earliest = self._offsets(self.source, {tp: OffsetSpec.EARLIEST for tp in tps})
        latest = self._offsets(self.source, {tp: OffsetSpec.LATEST for tp in tps})
        ids = self._source_topic_ids({tp.topic for tp in tps})
        now_ms = int(time.time() * 1000)
        for tp in tps:
            part = self.parts[tp]
            position = part.position
            first, end = earliest[tp], latest[tp]
            new_id = ids.get(tp.topic)
            if new_id and part.source_topic_id and new_id != part.source_topic_id:
                part.source_topic_id = new_id
                self._record_gap(part, Gap(tp.topic, tp.partition, "source-recreated", position, None,
                                           part.target.topic, now_ms))
                self._restart_at(part, first, end)
                continue
            if position < first:
                gap, resume = Gap(tp.topic, tp.partition, "expired", position, first, part.target.topic,
                                  now_ms), first
            else:
                diverged = where[tp] if where[tp] is not None else end
                resume = min(max(first, diverged), position)
                if resume == position:  # in range after all (a stale answer): fetch again from here
                    self._rewind(part, position)
                    continue
                gap = Gap(tp.topic, tp.partition, "source-truncated", resume, position, part.target.topic, now_ms)
            self._record_gap(part, gap)
            if part.end is not None and part.end > end:
                part.end = max(resume, end)  # --once: the end seen at the start no longer exists
            self._rewind(part, resume, forward=True)

    def _record_gap(self, part: _Partition, gap: Gap) -> None:
        part.anchor_due = True
        part.gaps = (part.gaps + (gap.to_dict(),))[-MAX_GAPS:]
        part.written = None  # the next checkpoint carries it
        self._gap(gap)

    def _source_topic_ids(self, names: set[str]) -> dict[str, str]:
        with translate_errors(self.source.cluster, "describe topics"):
            return {topic.name: topic.topic_id for topic in describe_topics(
                self.source, with_offsets=False, wanted=names.__contains__) if topic.topic_id}

    def _reap(self, failures: bool = True) -> None:
        """Advance each partition's acknowledged offset past the sends that are done. A failed send raises
        _SendFailed, or (``failures=False``) just stops that partition's advance. A batch that failed
        anywhere (FailedBatches) counts as a failure of every send that is not acknowledged yet."""
        for part in self.parts.values():
            pending = part.pending
            while pending:
                offset, future, size, sent = pending[0]
                if future is not None:
                    if not future.is_done:
                        break
                    if future.exception is not None:
                        if failures:
                            raise _SendFailed(part, future.exception)
                        break
                # Checked after the future: a batch of this partition that failed before this send's last
                # batch succeeded is recorded by now (a partition's batches complete in order). A keyed
                # send reaches many target partitions: any failure stops it.
                if self._partition_failed(part):
                    if failures:
                        raise self._batch_failure()
                    break
                if future is not None and future.value is not None:  # None: a keyed batch sent nothing there
                    acked = future.value.offset + 1
                    if acked <= part.acked_target and sent:
                        raise _TargetLost(part)
                    part.acked_target = acked
                part.acked = offset
                self.inflight_bytes -= size
                self.inflight_records -= sent
                pending.popleft()

    def _partition_failed(self, part: _Partition) -> bool:
        """A batch of ``part``'s target partition failed (any batch, with a keyed send: it reaches many)."""
        failed = self.failed_batches
        return bool(failed) and (self.spec.partitioner == "key" or part.target in failed.failed)

    def _batch_failure(self) -> _SendFailed:
        tp, error = self.failed_batches.first()
        part = next((part for part in self.parts.values() if part.target == tp and part.pending),
                    next((part for part in self.parts.values() if part.pending), None))
        return _SendFailed(part, error)

    def _over_limit(self) -> bool:
        return self.inflight_bytes > MAX_INFLIGHT_BYTES or self.inflight_records > MAX_INFLIGHT_RECORDS

    def _wait_for_oldest(self) -> None:
        for part in self.parts.values():
            if part.pending and part.pending[0][1] is not None and not part.pending[0][1].is_done:
                with contextlib.suppress(Exception):  # a failure surfaces in the next _reap
                    part.pending[0][1].get(timeout=0.5)
                return

    def _drain(self) -> None:
        """Wait for every send to be acknowledged (or fail). A send neither acknowledged nor failed after the
        flush is a failed send, never a done one: kafka-python fails the batches queued behind a failed one
        a moment after the flush stops waiting for them (its partition stopped), or holds them back."""
        with translate_errors(self.target.cluster, "flush"):
            producer_hooks.flush(self.producer, self.spec.delivery_timeout + 30)
        self._reap()
        for part in self.parts.values():
            if part.pending:  # held back behind a failed batch of its partition (whose failure it is), or lost
                if self._partition_failed(part):
                    raise self._batch_failure()
                raise _SendFailed(part, kafka_errors.KafkaTimeoutError(
                    f"{part.target.topic}[{part.target.partition}]: a send was neither acknowledged nor failed"))

    def _checkpoint(self) -> None:
        if self.spec.exactly_once:
            self._commit()
            return
        self._write_checkpoints()

    def _write_checkpoints(self, parts: dict[TopicPartition, _Partition] | None = None) -> int:
        if self.path.null_header_records:
            self._warn("some records have headers with null values, which kafka-python cannot send: "
                       "they arrive with empty values")
        failures = self.store.take_failures()
        if failures and self.spec.exactly_once:  # a checkpoint of the open transaction: it cannot commit
            raise _SendFailed(None, failures[0][1])
        if failures:
            self._warn(f"could not write {len(failures)} checkpoint(s) ({failures[0][1]}); retrying", "checkpoint")
            for part in self.parts.values():
                part.written = None
        now_ms = int(time.time() * 1000)
        now = time.monotonic()
        changed = []
        anchors = []
        for part in self.parts.values():
            points = part.take_anchor(now, now_ms)
            if points is not None:
                anchors.append((part.source.topic, part.source.partition, points))
            if part.acked != part.written:
                changed.append((part.source.topic, part.source.partition, part.checkpoint(now_ms)))
                part.written = part.acked
        if changed or anchors:
            self._store_write(changed, anchors)
            self.telemetry.wrote(changed)
        return len(changed) + len(parts or ())

    def _store_write(self, checkpoints: list[tuple[str, int, Checkpoint]],
                     anchors: list[tuple[str, int, list[list[int]]]]) -> None:
        """Send checkpoints. With --exactly-once they go through the transactional producer, which refuses
        every send once a request of its transaction failed (fenced, say): the transaction cannot commit,
        _SendFailed (:meth:`_abort_transaction` decides what follows), not a failed run."""
        try:
            self.store.write(checkpoints, anchors)
        except KmcError as exc:
            if self.spec.exactly_once and isinstance(exc.__cause__, kafka_errors.KafkaError):
                raise _SendFailed(None, _cause(exc.__cause__)) from exc
            raise

    def _commit(self, force: bool = False, parts: dict[TopicPartition, _Partition] | None = None) -> None:
        """--exactly-once: wait for every record sent in the open transaction, add the checkpoints of all
        partitions to it, commit, and begin the next. Raises _SendFailed (part None) if it cannot commit:
        then nothing of it is visible to read_committed readers and :meth:`_recover` starts again from
        the checkpoints committed in the target. ``parts``: partitions being added (their starting points
        are already in the transaction)."""
        try:
            self._drain()  # raises _SendFailed for a failed send
        except KmcError as exc:  # the flush timed out
            raise _SendFailed(None, exc.__cause__ or exc) from exc
        if not self._write_checkpoints(parts) and not force:
            return  # nothing was sent or skipped since the last commit: the open transaction is empty
        if self.member is not None and self.member.still_member is not None and not self.member.still_member():
            self._abandon_transaction(max(10.0, self.target.timeout))
            raise _SendFailed(None, kafka_errors.ProducerFencedError("this group member may have been replaced"))
        timeout = max(30.0, self.target.timeout) + self.spec.delivery_timeout
        try:
            producer_hooks.flush(self.producer, timeout)
            # any batch of the transaction that failed, its checkpoints' included (a batch that expired
            # leaves kafka-python's transaction committable): the transaction must not commit without it
            failed = self.failed_batches.first()
            if failed is None:
                producer_hooks.commit_transaction(self.producer, timeout)
        except kafka_errors.KafkaError as exc:
            raise _SendFailed(None, exc) from exc
        if failed is not None:
            raise _SendFailed(None, failed[1])
        for part in [*self.parts.values(), *(parts or {}).values()]:
            part.committed, part.committed_target = part.acked, part.acked_target
            part.txn_records = part.txn_bytes = 0

    def _lags(self) -> dict[str, int | None]:
        """Records left to copy per topic; None where the source's end is not known yet (follow)."""
        lags: dict[str, int] = {}
        unknown: set[str] = set()
        assigned = self.consumer.assignment()
        for tp, part in self.parts.items():
            if part.end is not None:
                lags[tp.topic] = lags.get(tp.topic, 0) + max(0, part.end - part.position)
                continue
            highwater = self.consumer.highwater(tp) if tp in assigned else None
            if highwater is None:
                unknown.add(tp.topic)
            else:
                lags[tp.topic] = lags.get(tp.topic, 0) + max(0, highwater - part.position)
        return {name: None if name in unknown else lags.get(name, 0) for name in self.topics}

    def _report(self, now: float) -> None:
        lags = self._lags()
        totals: dict[str, int] = {}
        if self.once:
            for part in self.parts.values():
                totals[part.source.topic] = totals.get(part.source.topic, 0) + max(0, (part.end or 0) - part.start)
        topics = []
        for name, stats in self.topics.items():
            then, before = self._rates.get(name, (self.started, 0))
            rate = (stats.records - before) / max(now - then, 1e-6)
            self._rates[name] = (now, stats.records)
            topics.append(TopicProgress(name, stats.target_topic, stats.records, stats.bytes, rate, lags.get(name),
                                        totals.get(name) if self.once else None, stats.redelivered, stats.skipped,
                                        stats.gaps))
        telemetry = self.telemetry
        self.progress(MirrorProgress(self.spec.flow, self.plan.source, self.plan.target, self.mode,
                                     now - self.started, tuple(topics), self.spec.shard, self._partition_progress(),
                                     telemetry.error_counts(), telemetry.send_latency.snapshot(),
                                     telemetry.fetch_latency.snapshot()))

    def _partition_progress(self) -> tuple[PartitionProgress, ...]:
        checkpointed = self.telemetry.checkpointed
        assigned = self.consumer.assignment()
        return tuple(
            PartitionProgress(tp.topic, tp.partition, part.position, part.acked,
                              checkpointed.get((tp.topic, tp.partition), part.start),
                              part.end if part.end is not None else
                              self.consumer.highwater(tp) if tp in assigned else None, part.records, part.bytes)
            for tp, part in self.parts.items())

    # ------------------------------------------------------------------------------------ follow

    def _refresh(self) -> None:
        """Pick up new matching topics and partitions (and config changes with --sync-configs), and notice
        source topics recreated under the mirror; a cluster that does not answer now is asked again at the
        next refresh."""
        try:
            self._refresh_now()
        except KmcError as exc:
            if isinstance(exc, UsageError):
                raise
            self._warn(f"looking for new topics failed, trying again in {self.spec.refresh_interval:g}s: {exc}",
                       "refresh")

    def _refresh_now(self) -> None:
        plan = plan_mirror(self.source, self.target, self.spec)
        for warning in plan.warnings:
            self._warn(warning)
        changes = apply_plan(self.target, plan)
        for change in changes:
            self.notice("info", change)
        self.changes.extend(changes)
        self.plan = plan
        self._check_recreated(plan.topics)
        new = [topic for topic in plan.topics
               if any(self._owns(topic.source_topic, p) and TopicPartition(topic.source_topic, p) not in self.parts
                      for p in range(topic.partitions))]
        if new:
            # Partitions that appear while following start at their beginning whatever --from says:
            # everything written to them so far was written after this run started watching.
            self._add_partitions(new, "earliest")
            for topic in new:
                self.notice("info", f"now mirroring {topic.source_topic} -> {topic.target_topic} "
                                    f"({topic.partitions} partitions)")

    def _check_recreated(self, topics: tuple[TopicPlan, ...]) -> None:
        """A source topic whose id changed was deleted and created again while following: its partitions
        start over at the new topic's beginning (records of the new topic copied before this look are
        copied again; the old topic's uncopied records are a gap)."""
        now_ms = int(time.time() * 1000)
        for topic in topics:
            parts = [part for part in self.parts.values() if part.source.topic == topic.source_topic]
            if not parts or not topic.source_topic_id or parts[0].source_topic_id in (None, topic.source_topic_id):
                continue
            earliest = self._offsets(self.source, {part.source: OffsetSpec.EARLIEST for part in parts})
            for part in parts:
                part.source_topic_id = topic.source_topic_id
                self._record_gap(part, Gap(topic.source_topic, part.source.partition, "source-recreated",
                                           part.position, None, part.target.topic, now_ms))
                self._restart_at(part, earliest[part.source], None)

    # ------------------------------------------------------------------------------------ failures

    def _recover(self, failure: _SendFailed, target_lost: bool = False) -> None:
        """A send failed for good (e.g. the target was down longer than the delivery timeout), or the
        target went back: rewind every partition with unacknowledged sends to its last acknowledged offset
        (with --exactly-once, to the committed checkpoints) and go on with a new producer. A target that
        lost acknowledged records has them copied again."""
        if self.spec.exactly_once:
            self._abort_transaction(failure)
            return
        if not target_lost and not _retriable(failure.error):
            with contextlib.suppress(Exception):
                self._checkpoint()
                self.store.flush(timeout=10)
            raise self._send_error(failure)
        if target_lost:
            self._warn(f"{self.target.cluster.name}: {failure.error}; checking what the target lost", "target-lost")
        else:
            self._warn(f"{self.target.cluster.name}: sending failed ({_describe(failure.error)}); "
                       "resending from the last acknowledged offsets", "send")
        close_producer(self.producer, 5)  # (never left sending: its retries would land after the resends)
        self._reap(failures=False)
        rewound = self._forget_unacknowledged()
        if target_lost and failure.part is not None and failure.part not in rewound:
            rewound.append(failure.part)
        ends = self._until_target_answers(lambda: self._settled_ends([part.target for part in rewound], True), {})
        self._until_target_answers(self._new_producer, None)
        with translate_errors(self.source.cluster, "rewind"):
            for part in rewound:
                end = ends.get(part.target)
                if end is not None and end < part.acked_target:
                    self._target_went_back(part, end)
                    continue
                # Whatever reached the target after the last acknowledgement is sent again.
                if end is not None and end > part.acked_target:
                    again = end - part.acked_target
                    part.stats.redelivered += again
                    part.acked_target = end
                    self.notice("info", f"resending {part.source.topic}[{part.source.partition}]: {again} records "
                                        f"that reached {part.target.topic} unacknowledged will be copied again "
                                        "(redelivered)")
                part.anchor_due = True
                self._rewind(part, part.acked)

    def _target_went_back(self, part: _Partition, end: int) -> None:
        """The target partition ends below what it acknowledged: recreated (a new topic id) or truncated.
        Copy again what it lost, from the source where the source still has it."""
        now_ms = int(time.time() * 1000)
        ids = self._target_topic_ids({part.target.topic})
        new_id = ids.get(part.target.topic)
        first = self._offsets(self.source, {part.source: OffsetSpec.EARLIEST})[part.source]
        if new_id and part.target_topic_id and new_id != part.target_topic_id:
            part.target_topic_id = new_id
            gap = Gap(part.source.topic, part.source.partition, "target-recreated", None, first or None,
                      part.target.topic, now_ms)
            start = first
        else:
            start, missing = self._before_target_loss(part.source, part.acked, part.acked_target - end, first)
            gap = Gap(part.source.topic, part.source.partition, "target-truncated", None,
                      first if missing else None, part.target.topic, now_ms)
        part.acked_target = part.committed_target = end
        part.acked = part.committed = start
        self._record_gap(part, gap)
        self._rewind(part, start)

    def _abandon_transaction(self, timeout: float) -> None:
        """Abort the open transaction that will not commit, where the target still answers (best effort):
        left open it holds back every read_committed reader of its partitions until the next run fences
        it, or its timeout; a group member's next generation has another transactional id, and the next
        owner fences only the ids its checkpoints name. Fenced already: the fence aborted it."""
        with contextlib.suppress(Exception):
            producer_hooks.abort_transaction(self.producer, timeout)

    def _abort_transaction(self, failure: _SendFailed) -> None:
        """--exactly-once: a send or a commit failed. The open transaction is abandoned (the next producer's
        init_transactions() aborts it, or completes a commit that was in fact written) and every partition
        goes back to its checkpoint as committed in the target, read again: another run may have committed
        meanwhile (this one was cut off), and a commit that timed out may have been written."""
        # (a fenced producer must never be replaced by one with the same transactional id: that would undo
        # the fence, and a zombie group member could commit again)
        failure = _SendFailed(failure.part, producer_hooks.transaction_error(self.producer, failure.error))
        # (the run ends here, or goes on with a new producer and a new transaction)
        self.transaction_failed = True
        if isinstance(failure.error, _FATAL_IN_TRANSACTION):
            error_class = FencedError if isinstance(failure.error, _FENCED) else AuthorizationError
            raise error_class(f"{self.target.cluster.name}: the transaction failed: {_describe(failure.error)}",
                              hint=_FATAL_IN_TRANSACTION_HINT)
        if failure.part is not None and not isinstance(failure.error, _TargetLost) and not _retriable(failure.error):
            # e.g. a record too large: sending it again cannot help; the open transaction is aborted by the
            # next run (or its timeout)
            raise self._send_error(failure)
        self._warn(f"{self.target.cluster.name}: the transaction failed ({_describe(failure.error)}); aborting it "
                   "and copying again from the last commit", "transaction")
        close_producer(self.producer, 5)
        self.store.take_failures()  # the abandoned transaction's checkpoints: written again from the loaded ones
        self._uncount_open_transaction()
        self.inflight_bytes = self.inflight_records = 0
        for part in self.parts.values():
            part.pending.clear()
            # nothing of the abandoned transaction counts, even if this ends before the checkpoints are
            # read again (a stop while the target is away): the run's last commit never carries any of it
            part.acked, part.acked_target, part.written = part.committed, part.committed_target, part.committed
        self._until_target_answers(self._new_producer, None)
        loaded = self._until_target_answers(lambda: self.store.load(self._warn), None)
        if loaded is None:
            return  # stopped while the target was away: nothing more is copied
        parts = list(self.parts.values())
        ends = self._until_target_answers(
            lambda: self._offsets(self.target, {part.target: OffsetSpec.LATEST for part in parts}), {})
        with translate_errors(self.source.cluster, "rewind"):
            for part in parts:
                checkpoint = loaded.get((part.source.topic, part.source.partition))
                if checkpoint is not None and checkpoint.target_topic == part.target.topic:
                    part.committed, part.committed_target = checkpoint.next_offset, checkpoint.target_next_offset
                part.acked, part.acked_target, part.written = part.committed, part.committed_target, part.committed
                end = ends.get(part.target)
                if end is not None and end < part.committed_target:
                    self._target_went_back(part, end)
                    continue
                part.anchor_due = True
                self._rewind(part, part.committed)
        self.transaction_failed = False  # the next transaction starts afresh, from the committed checkpoints

    def _rewind(self, part: _Partition, offset: int, forward: bool = False) -> None:
        """Copy ``part`` again from source offset ``offset`` (a partition --once had finished resumes).
        ``forward``: the offset may lie ahead of what was sent (the source moved): records before it are
        treated as done."""
        part.position = offset
        if forward:  # once what was sent before is acknowledged, everything before ``offset`` is done
            part.pending.append((offset, None, 0, 0))
        if part.end is not None:
            done = offset >= part.end
            if part.done and not done:
                self.consumer.resume(part.source)
            elif done and not part.done:
                part.pending.append((part.end, None, 0, 0))
                self.consumer.pause(part.source)
            part.done = done
        if part.source in self.consumer.assignment():
            self.consumer.seek(part.source, offset)

    def _restart_at(self, part: _Partition, offset: int, end: int | None) -> None:
        """The source topic was recreated: its offsets start again, and nothing sent from the old topic
        matters for where the partition stands (its checkpoint must never pair the new topic's id with the
        old topic's offsets)."""
        for _, _, size, sent in part.pending:
            self.inflight_bytes -= size
            self.inflight_records -= sent
        part.pending.clear()
        part.acked = part.committed = offset
        part.written = None
        if part.end is not None:
            part.end = max(offset, end if end is not None else offset)
        self._rewind(part, offset)

    def _uncount_open_transaction(self) -> None:
        """--exactly-once: the records of the open transaction were not delivered after all."""
        for part in self.parts.values():
            part.stats.records -= part.txn_records
            part.stats.bytes -= part.txn_bytes
            part.txn_records = part.txn_bytes = 0

    def _send_error(self, failure: _SendFailed) -> KmcError:
        """The error that ends the run when a send failed for a reason that resending cannot mend."""
        where = f" to {failure.part.target.topic}[{failure.part.target.partition}]" if failure.part else ""
        if isinstance(failure.error, kafka_errors.AuthorizationError):  # exit 5, the missing ACL named (kmc.acls)
            return authorization_error(f"{self.target.cluster.name}: sending{where}: ", failure.error)
        error_class = FencedError if isinstance(failure.error, _FENCED) else KafkaOperationError
        return error_class(f"{self.target.cluster.name}: sending{where} failed: {_describe(failure.error)}")

    def _forget_unacknowledged(self) -> list[_Partition]:
        """Drop the sends not acknowledged (after a failure); their records no longer count as copied.
        Returns the partitions that had any."""
        dropped = []
        for part in self.parts.values():
            if part.pending:
                for _, _, size, sent in part.pending:
                    part.stats.records -= sent
                    part.stats.bytes -= size
                part.pending.clear()
                dropped.append(part)
        self.inflight_bytes = self.inflight_records = 0
        return dropped

    def _until_target_answers(self, work: Callable[[], Any], stopped: Any) -> Any:
        """Retry ``work`` every 2 s while the target cannot be reached; ``stopped`` if a stop comes first."""
        while not self.stop_event.is_set():
            try:
                return work()
            except KmcError as exc:
                if not isinstance(exc, UnreachableError) and not _retriable(exc.__cause__):
                    raise
                self._warn(f"{self.target.cluster.name}: not reachable yet; retrying every 2 s ({exc})",
                           "target-unreachable")
                self.stop_event.wait(2.0)
        return stopped

    # ------------------------------------------------------------------------------------ the end

    def _finish(self) -> None:
        """Flush what is in flight and write the final checkpoints (also after a failure)."""
        if self.spec.exactly_once:
            try:
                if not self.transaction_failed:  # (a run ending on its transaction's failure never commits it)
                    self._commit()
            except _SendFailed as failure:
                self._warn(f"the last transaction did not commit ({_describe(failure.error)}); the next run "
                           "copies its records again", "flush")
                self.transaction_failed = True
            if self.transaction_failed:
                self._uncount_open_transaction()
                self._abandon_transaction(5.0)
            self._report(time.monotonic())
            return
        try:
            self._drain()
        except (_SendFailed, _TargetLost) as failure:
            self._warn(f"some records were not acknowledged ({_describe(getattr(failure, 'error', failure))}); "
                       "the next run copies them again", "flush")
            self._reap(failures=False)
            self._forget_unacknowledged()
        except KmcError as exc:
            self._warn(f"could not flush the last records ({exc}); the next run copies them again", "flush")
            self._reap(failures=False)
            self._forget_unacknowledged()
        self._checkpoint()
        self.store.flush(timeout=max(30.0, self.target.timeout))
        self._report(time.monotonic())


# Errors after which starting the transaction again cannot help.
# Fenced by another run with the same transactional id (kafka-python may report it as a send refused in the
# wrong transaction state once the fence broke its transaction)
_FENCED = (kafka_errors.ProducerFencedError, kafka_errors.InvalidProducerEpochError, kafka_errors.IllegalStateError)
_FATAL_IN_TRANSACTION = (
    *_FENCED,
    kafka_errors.TransactionalIdAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TopicAuthorizationFailedError,
)
_FATAL_IN_TRANSACTION_HINT = ("another run with the same flow, clusters and topics took over (fenced), this run was "
                              "cut off longer than its transaction timeout (--delivery-timeout + 60 s), or the target "
                              "denies transactions: kmc needs WRITE and DESCRIBE on its transactional id (kmc/...)")


def _cause(error: BaseException) -> BaseException:
    """The error behind kafka-python's "Cannot perform send because at least one previous transactional or
    idempotent request has failed" (it carries the earlier error as its second argument)."""
    inner = error.args[1] if len(error.args) > 1 else None
    return inner if isinstance(inner, BaseException) else error


def _retriable(error: BaseException | None) -> bool:
    """Sending again can mend it: a timeout (here: the target did not answer in time) or a transient error."""
    return isinstance(error, kafka_errors.KafkaTimeoutError) or is_transient(error)
