"""The copy engine: source consumer -> copy path -> target producer, with checkpoints in the target.

One thread does the loop: poll a batch from the source, hand each partition's records to the copy path
(which appends them to the producer's accumulator and returns the future of the last one), remember
``(next source offset, that future)`` per partition, and every second or so turn the futures that are
done into checkpoints. Fetching (the consumer's prefetch), sending (the producer's sender thread) and
checkpointing (asynchronous writes) overlap; the loop never waits for an acknowledgement unless more
than :data:`MAX_INFLIGHT_BYTES` or :data:`MAX_INFLIGHT_RECORDS` are unacknowledged. Library code: it
reports through callbacks and returns a :class:`MirrorResult`; it never prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.admin import OffsetSpec, OffsetTimestamp

from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import AuthorizationError, KafkaOperationError, KmcError, UnreachableError, UsageError
from kmc.mirror.batchpath import BatchCopyPath, fetch_batches
from kmc.mirror.checkpoints import Checkpoint, CheckpointStore, ensure_checkpoint_topic
from kmc.mirror.copypath import KeyedCopyPath, RecordCopyPath
from kmc.mirror.lock import hold_lock, lock_identity
from kmc.mirror.plan import MirrorSpec, TopicPlan, apply_plan, parse_start, plan_mirror
from kmc.profiles import Cluster

MODES = ("once", "follow")
# Unacknowledged payload and records before the loop waits for the target. Each record in flight also
# costs a future (a few hundred bytes), which is why records are capped as well as bytes.
MAX_INFLIGHT_BYTES = 16 * 1024 * 1024
MAX_INFLIGHT_RECORDS = 50_000
REAP_INTERVAL = 0.05  # seconds between looks at which sends are acknowledged
POLL_TIMEOUT_MS = 200  # the longest a stop request waits for the loop to notice it
MiB = 1024 * 1024
# KMC_COPY_PATH=records turns the byte-level path off (decoded records only): for comparisons and as an
# escape hatch; see docs/mirror.md.
COPY_PATHS = ("batches", "records")


def _byte_path(spec: MirrorSpec) -> bool:
    """Whether this mirror forwards record batches as bytes (kmc/mirror/batchpath.py): yes unless records
    are re-partitioned by key (each record's key must be read) or KMC_COPY_PATH=records."""
    chosen = os.environ.get("KMC_COPY_PATH", "batches").strip().lower() or "batches"
    if chosen not in COPY_PATHS:
        raise UsageError(f"KMC_COPY_PATH={chosen!r}: expected one of {', '.join(COPY_PATHS)}")
    return chosen == "batches" and spec.partitioner != "key"

ProgressCallback = Callable[["MirrorProgress"], None]
NoticeCallback = Callable[[str, str], None]  # (level: "info" | "warn", message)


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

    def to_dict(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "target_topic": self.target_topic,
                "partitions": self.partitions, "records": self.records, "bytes": self.bytes,
                "skipped": self.skipped, "redelivered": self.redelivered, "lag": self.lag}


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

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc mirror -o json`` document (keys documented in docs/mirror.md)."""
        return {
            "flow": self.flow, "source": self.source, "target": self.target,
            "source_cluster_id": self.source_cluster_id, "target_cluster_id": self.target_cluster_id,
            "mode": self.mode, "complete": self.complete, "elapsed_seconds": round(self.elapsed, 3),
            "records": self.records, "bytes": self.bytes, "skipped": self.skipped,
            "redelivered": self.redelivered, "changes": list(self.changes), "warnings": list(self.warnings),
            "topics": [topic.to_dict() for topic in self.topics],
        }


@dataclass(frozen=True)
class TopicProgress:
    source_topic: str
    target_topic: str
    records: int
    bytes: int
    rate: float  # records/s since the previous report
    lag: int | None  # records still to copy (once: to the end offsets seen at start; follow: to the end)
    total: int | None  # once: records to copy in this run (for a progress bar); follow: None


@dataclass(frozen=True)
class MirrorProgress:
    flow: str
    source: str
    target: str
    mode: str
    elapsed: float
    topics: tuple[TopicProgress, ...]
    shard: tuple[int, int] | None = None  # the reporting worker's MirrorSpec.shard (kmc mirror --workers)

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


class _Partition:
    """One source partition's copy state. ``pending`` holds (next source offset, future of the last record
    sent up to it or None, payload bytes, records) per send_batch, in send order; ``acked`` is the next
    offset whose predecessors are all acknowledged, ``acked_target`` the target end offset right after the
    last of them."""

    __slots__ = ("source", "target", "stats", "start", "position", "end", "done", "pending", "acked",
                 "acked_target", "written", "committed", "committed_target", "txn_records", "txn_bytes")

    def __init__(self, source: TopicPartition, target: TopicPartition, stats: TopicResult, start: int,
                 end: int | None, acked_target: int, written: int | None) -> None:
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
) -> MirrorResult:
    """Mirror ``spec``'s topics from ``source_cluster`` into ``target_cluster``.

    ``mode="once"`` copies up to the end offsets seen at the start and returns; ``"follow"`` runs until
    ``stop_event`` is set. Either way a set ``stop_event`` stops cleanly: in-flight sends are finished and
    checkpoints written. Raises LockedError when another run of the same mirror holds its lock.
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    spec.validate()
    _byte_path(spec)  # a bad KMC_COPY_PATH is a usage error before any connection
    stop_event = stop_event or threading.Event()
    identity = lock_identity(source_cluster, target_cluster, spec.topics, spec.exclude, spec.rename, spec.flow,
                             spec.shard)
    with hold_lock(identity, f"mirror {source_cluster.name} -> {target_cluster.name} (flow {spec.flow})"), \
            KafkaSession(source_cluster, timeout) as source, KafkaSession(target_cluster, timeout) as target:
        engine = _Engine(source, target, spec, mode, stop_event,
                         progress_callback or (lambda progress: None), notice_callback or (lambda level, text: None))
        return engine.run()


class _Engine:
    def __init__(self, source: KafkaSession, target: KafkaSession, spec: MirrorSpec, mode: str,
                 stop_event: threading.Event, progress: ProgressCallback, notice: NoticeCallback) -> None:
        self.source = source
        self.target = target
        self.spec = spec
        self.byte_path = _byte_path(spec)
        self.once = mode == "once"
        self.mode = mode
        self.stop_event = stop_event
        self.progress = progress
        self.notice = notice
        self.parts: dict[TopicPartition, _Partition] = {}
        self.topics: dict[str, TopicResult] = {}
        self.warnings: list[str] = []
        self.changes: list[str] = []
        self.inflight_bytes = 0
        self.inflight_records = 0
        self.started = time.monotonic()
        self._seen_warnings: set[str] = set()
        self._rates: dict[str, tuple[float, int]] = {}

    # ------------------------------------------------------------------------------------ set-up

    def _warn(self, message: str) -> None:
        if message not in self._seen_warnings:
            self._seen_warnings.add(message)
            self.warnings.append(message)
            self.notice("warn", message)

    def run(self) -> MirrorResult:
        plan = plan_mirror(self.source, self.target, self.spec)
        self.plan = plan
        for warning in plan.warnings:
            self._warn(warning)
        self.changes.extend(apply_plan(self.target, plan))
        for change in self.changes:
            self.notice("info", change)
        if ensure_checkpoint_topic(self.target):
            self.notice("info", "created kmc.checkpoints")
        self.store = CheckpointStore(self.target, self.spec.flow, plan.source_cluster_id)
        # With --exactly-once the producer's init_transactions() fences an earlier run and aborts its open
        # transaction, whose checkpoints (read_committed) must not count and must not hold the reader up.
        self._new_producer()
        self.loaded = self.store.load(self._warn)
        self.consumer = self.source.consumer(
            isolation_level="read_committed",
            fetch_max_bytes=16 * MiB,
            max_partition_fetch_bytes=max(2 * MiB, plan.max_message_bytes),
            max_poll_records=2000,
            fetch_max_wait_ms=200,
        )
        if self.byte_path:
            fetch_batches(self.consumer)
        self._add_partitions(plan.topics, self.spec.start)
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
        return MirrorResult(
            flow=self.spec.flow, source=plan.source, target=plan.target,
            source_cluster_id=plan.source_cluster_id, target_cluster_id=plan.target_cluster_id,
            mode=self.mode, complete=complete, elapsed=time.monotonic() - self.started,
            topics=list(self.topics.values()), changes=self.changes, warnings=self.warnings,
        )

    def _transactional_id(self) -> str:
        """Stable for one mirror (the lock's identity: clusters, selection, rename, flow, shard), so a
        restarted run fences the one before it, and two different mirrors never fence each other."""
        spec = self.spec
        identity = lock_identity(self.source.cluster, self.target.cluster, spec.topics, spec.exclude, spec.rename,
                                 spec.flow, spec.shard)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return f"kmc/{spec.flow}/{digest}"

    def _new_producer(self) -> None:
        spec = self.spec
        transactional: dict[str, Any] = {}
        if spec.exactly_once:
            transactional = {
                "transactional_id": self._transactional_id(),
                # longer than a batch may be retried, within the brokers' default maximum (15 min)
                "transaction_timeout_ms": min(900_000, int(spec.delivery_timeout * 1000) + 60_000),
            }
        self.producer = self.target.producer(
            **transactional,
            acks="all",
            enable_idempotence=True,  # keeps each partition's order across retries
            linger_ms=10,
            batch_size=512 * 1024,
            max_request_size=max(4 * MiB, self.plan.max_message_bytes + 64 * 1024),
            compression_type=spec.compression,
            delivery_timeout_ms=int(spec.delivery_timeout * 1000),
            retries=2**31 - 1,
            max_in_flight_requests_per_connection=5,
            # kafka-python wants delivery_timeout_ms > linger_ms + request_timeout_ms
            request_timeout_ms=min(30000, int(spec.delivery_timeout * 1000) // 2),
        )
        if spec.exactly_once:
            with translate_errors(self.target.cluster, "start a transaction"):
                self.producer.init_transactions()
                self.producer.begin_transaction()
            self.store.use_producer(self.producer)
        # (the byte path is never on with --partitioner key: see _byte_path)
        path_class = BatchCopyPath if self.byte_path else KeyedCopyPath if spec.partitioner == "key" else RecordCopyPath
        self.path = path_class(self.producer, self.plan.source_cluster_id, self.plan.target_cluster_id)
        with translate_errors(self.target.cluster, "load topic metadata"):
            for name in {part.target.topic for part in self.parts.values()}:
                self.path.prepare(name)

    def _add_partitions(self, topics: tuple[TopicPlan, ...] | list[TopicPlan], start_from: str | int) -> None:
        """Start copying the given topics' partitions that are not being copied yet."""
        fresh = [(topic, p) for topic in topics for p in range(topic.partitions)
                 if self.spec.owns(p) and TopicPartition(topic.source_topic, p) not in self.parts]
        if not fresh:
            return
        source_tps = [TopicPartition(topic.source_topic, p) for topic, p in fresh]
        with translate_errors(self.target.cluster, "load topic metadata"):
            target_tps = [TopicPartition(topic.target_topic, self.path.target_partition(topic.target_topic, p))
                          for topic, p in fresh]
        earliest = self._offsets(self.source, {tp: OffsetSpec.EARLIEST for tp in source_tps})
        # read_committed: the last stable offset, so an open transaction does not hold --once up forever
        latest = self._offsets(self.source, {tp: OffsetSpec.LATEST for tp in source_tps}, "read_committed")
        target_end = self._offsets(self.target, {tp: OffsetSpec.LATEST for tp in target_tps})
        start_from = parse_start(start_from)
        by_time: dict[TopicPartition, int] = {}
        if isinstance(start_from, int):
            by_time = self._offsets(self.source, {tp: OffsetTimestamp(start_from) for tp in source_tps})
        initial: list[tuple[str, int, Checkpoint]] = []
        redelivered: dict[str, int] = {}
        now_ms = int(time.time() * 1000)
        for (topic, p), source_tp, target_tp in zip(fresh, source_tps, target_tps, strict=True):
            stats = self.topics.get(topic.source_topic)
            if stats is None:
                stats = self.topics[topic.source_topic] = TopicResult(topic.source_topic, topic.target_topic,
                                                                      topic.partitions)
            stats.partitions = max(stats.partitions, topic.partitions)
            first, last, end_now = earliest[source_tp], latest[source_tp], target_end[target_tp]
            where = f"{topic.source_topic}[{p}]"
            checkpoint = self.loaded.get((topic.source_topic, p))
            if checkpoint is not None and checkpoint.target_topic != topic.target_topic:
                self._warn(f"{where}: ignoring its checkpoint, which is for target topic {checkpoint.target_topic}, "
                           f"not {topic.target_topic}")
                checkpoint = None
            if checkpoint is not None and checkpoint.next_offset > last:
                self._warn(f"{where}: its checkpoint (offset {checkpoint.next_offset}) is beyond the source's end "
                           f"({last}); was the topic recreated? starting from --from")
                checkpoint = None
            if checkpoint is not None:
                start = checkpoint.next_offset
                if start < first:
                    self._warn(f"{where}: {first - start} records expired at the source before they were copied")
                    start = first
                if end_now < checkpoint.target_next_offset:
                    self._warn(f"{where}: {topic.target_topic}[{p}] ends before its checkpoint says "
                               f"({end_now} < {checkpoint.target_next_offset}); was it recreated?")
                elif not self.spec.exactly_once:  # with it, what follows the checkpoint was aborted: unseen
                    stats.redelivered += end_now - checkpoint.target_next_offset
                    redelivered[topic.source_topic] = (redelivered.get(topic.source_topic, 0)
                                                       + end_now - checkpoint.target_next_offset)
                written = start
                if start != checkpoint.next_offset or end_now != checkpoint.target_next_offset:
                    # Re-pin before copying: the records past target_next_offset are counted now, so a
                    # crash of this run must not count them a second time at the next start.
                    initial.append((topic.source_topic, p, Checkpoint(start, topic.target_topic, end_now, now_ms)))
            else:
                if start_from == "earliest":
                    start = first
                elif start_from == "latest":
                    start = last
                else:
                    found = by_time.get(source_tp, -1)
                    start = last if found is None or found < 0 else max(first, found)
                written = start
                initial.append((topic.source_topic, p, Checkpoint(start, topic.target_topic, end_now, now_ms)))
            part = _Partition(source_tp, target_tp, stats, start, last if self.once else None, end_now, written)
            self.parts[source_tp] = part
        if initial:
            # Pin the starting points before copying: a crash before the first regular checkpoint then
            # resumes from here (not from a new "latest"), and duplicates stay countable.
            self.store.write(initial)
            if self.spec.exactly_once:
                self._commit(force=True)  # these are in the open transaction now: it must not stay open
            else:
                self.store.flush(timeout=max(30.0, self.target.timeout))
        for name, count in redelivered.items():
            if count:
                self.notice("info", f"resuming {name}: {count} records written to {self.topics[name].target_topic} "
                                    "after the last checkpoint will be copied again (redelivered)")
        with translate_errors(self.source.cluster, "assign partitions"):
            active = [tp for tp, part in self.parts.items() if not part.done]
            if active:
                self.consumer.assign(active)
            for tp in source_tps:
                part = self.parts[tp]
                if not part.done:
                    self.consumer.seek(tp, part.position)
        with translate_errors(self.target.cluster, "load topic metadata"):
            for name in {tp.topic for tp in target_tps}:
                self.path.prepare(name)

    def _offsets(self, session: KafkaSession, specs: dict[TopicPartition, Any],
                 isolation: str = "read_uncommitted") -> dict[TopicPartition, int]:
        if not specs:
            return {}
        with translate_errors(session.cluster, "list offsets"):
            answer = session.admin.list_partition_offsets(specs, isolation_level=isolation)
        return {tp: value.offset for tp, value in answer.items()}

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
        remaining = sum(1 for part in parts.values() if not part.done) if self.once else -1
        while True:
            if self.stop_event.is_set():
                return False
            try:
                if self.once and remaining == 0:
                    self._drain()  # may raise _SendFailed: then the rewound partitions are not done any more
                    return True
                try:
                    with translate_errors(self.source.cluster, "fetch"):
                        batch = poll(timeout_ms=POLL_TIMEOUT_MS)
                except KmcError as exc:
                    if not _retriable(exc.__cause__):
                        raise
                    self._warn(f"{self.source.cluster.name}: fetch failed, retrying: {exc}")
                    self.stop_event.wait(1.0)
                    continue
                send_batch = self.path.send_batch
                for tp, records in batch.items():
                    part = parts[tp]
                    if part.done:
                        continue
                    position = records[-1].offset + 1
                    end = part.end
                    if end is not None and position >= end:
                        if position > end:
                            records = [record for record in records if record.offset < end]
                        position = end
                        part.done = True
                        remaining -= 1
                        self.consumer.pause(tp)
                    future, sent, skipped, size = send_batch(part.target, records)
                    stats = part.stats
                    stats.records += sent
                    stats.skipped += skipped
                    stats.bytes += size
                    part.position = position
                    part.txn_records += sent
                    part.txn_bytes += size
                    part.pending.append((position, future, size, sent))
                    self.inflight_bytes += size
                    self.inflight_records += sent
                if self.once and not batch:
                    remaining -= self._finish_idle_partitions()
                now = time.monotonic()
                if now >= next_reap or self._over_limit():
                    self._reap()
                    while self._over_limit() and not self.stop_event.is_set():
                        self._wait_for_oldest()
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
                if self.once:
                    remaining = sum(1 for part in parts.values() if not part.done)

    def _finish_idle_partitions(self) -> int:
        """--once: partitions whose remaining offsets were only transaction markers or aborted records
        reach their end without returning a record; the consumer's position shows it."""
        finished = 0
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
                    finished += 1
        return finished

    def _reap(self, failures: bool = True) -> None:
        """Advance each partition's acknowledged offset past the sends that are done. A failed send raises
        _SendFailed, or (``failures=False``) just stops that partition's advance."""
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
                    if future.value is not None:  # None: a keyed batch sent nothing to part.target
                        part.acked_target = future.value.offset + 1
                part.acked = offset
                self.inflight_bytes -= size
                self.inflight_records -= sent
                pending.popleft()

    def _over_limit(self) -> bool:
        return self.inflight_bytes > MAX_INFLIGHT_BYTES or self.inflight_records > MAX_INFLIGHT_RECORDS

    def _wait_for_oldest(self) -> None:
        for part in self.parts.values():
            if part.pending and part.pending[0][1] is not None and not part.pending[0][1].is_done:
                with contextlib.suppress(Exception):  # a failure surfaces in the next _reap
                    part.pending[0][1].get(timeout=0.5)
                return

    def _drain(self) -> None:
        """Wait for every send to be acknowledged (or fail)."""
        with translate_errors(self.target.cluster, "flush"):
            _flush(self.producer, self.spec.delivery_timeout + 30)
        self._reap()

    def _checkpoint(self) -> None:
        if self.spec.exactly_once:
            self._commit()
            return
        self._write_checkpoints()

    def _write_checkpoints(self) -> int:
        if self.path.null_header_records:
            self._warn("some records have headers with null values, which kafka-python cannot send: "
                       "they arrive with empty values")
        failures = self.store.take_failures()
        if failures:
            self._warn(f"could not write {len(failures)} checkpoint(s) ({failures[0][1]}); retrying")
            for part in self.parts.values():
                part.written = None
        now_ms = int(time.time() * 1000)
        changed = []
        for part in self.parts.values():
            if part.acked != part.written:
                changed.append((part.source.topic, part.source.partition,
                                Checkpoint(part.acked, part.target.topic, part.acked_target, now_ms)))
                part.written = part.acked
        if changed:
            self.store.write(changed)
        return len(changed)

    def _commit(self, force: bool = False) -> None:
        """--exactly-once: wait for every record sent in the open transaction, add the checkpoints of all
        partitions to it, commit, and begin the next. Raises _SendFailed (part None) if it cannot commit:
        then nothing of it is visible to read_committed readers and :meth:`_recover` starts again from
        the last commit."""
        try:
            self._drain()  # raises _SendFailed for a failed send
        except KmcError as exc:  # the flush timed out
            raise _SendFailed(None, exc.__cause__ or exc) from exc
        if not self._write_checkpoints() and not force:
            return  # nothing was sent or skipped since the last commit: the open transaction is empty
        manager = self.producer._transaction_manager  # noqa: SLF001 - commit_transaction() cannot time out
        timeout_ms = int(max(30.0, self.target.timeout) * 1000) + int(self.spec.delivery_timeout * 1000)
        try:
            _flush(self.producer, timeout_ms / 1000)
            result = manager.begin_commit()
            self.producer._sender.wakeup()  # noqa: SLF001
            if not result.wait(timeout_ms=timeout_ms):
                raise kafka_errors.KafkaTimeoutError(f"the transaction did not commit within {timeout_ms / 1000:g}s")
            self.producer.begin_transaction()
        except kafka_errors.KafkaError as exc:
            raise _SendFailed(None, exc) from exc
        for part in self.parts.values():
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
                                        totals.get(name) if self.once else None))
        self.progress(MirrorProgress(self.spec.flow, self.plan.source, self.plan.target, self.mode,
                                     now - self.started, tuple(topics), self.spec.shard))

    # ------------------------------------------------------------------------------------ follow

    def _refresh(self) -> None:
        """Pick up new matching topics and partitions (and config changes with --sync-configs); a cluster
        that does not answer now is asked again at the next refresh."""
        try:
            self._refresh_now()
        except KmcError as exc:
            if isinstance(exc, UsageError):
                raise
            self._warn(f"looking for new topics failed, trying again in {self.spec.refresh_interval:g}s: {exc}")

    def _refresh_now(self) -> None:
        plan = plan_mirror(self.source, self.target, self.spec)
        for warning in plan.warnings:
            self._warn(warning)
        changes = apply_plan(self.target, plan)
        for change in changes:
            self.notice("info", change)
        self.changes.extend(changes)
        new = [topic for topic in plan.topics
               if any(self.spec.owns(p) and TopicPartition(topic.source_topic, p) not in self.parts
                      for p in range(topic.partitions))]
        self.plan = plan
        if new:
            # Partitions that appear while following start at their beginning whatever --from says:
            # everything written to them so far was written after this run started watching.
            self._add_partitions(new, "earliest")
            for topic in new:
                self.notice("info", f"now mirroring {topic.source_topic} -> {topic.target_topic} "
                                    f"({topic.partitions} partitions)")

    # ------------------------------------------------------------------------------------ failures

    def _recover(self, failure: _SendFailed) -> None:
        """A send failed for good (e.g. the target was down longer than the delivery timeout): rewind every
        partition with unacknowledged sends to its last acknowledged offset and go on with a new producer."""
        if self.spec.exactly_once:
            self._abort_transaction(failure)
            return
        if not _retriable(failure.error):
            with contextlib.suppress(Exception):
                self._checkpoint()
                self.store.flush(timeout=10)
            raise self._send_error(failure)
        self._warn(f"{self.target.cluster.name}: sending failed ({_describe(failure.error)}); "
                   "resending from the last acknowledged offsets")
        with contextlib.suppress(Exception):
            self.producer.close(timeout=5)
        self._reap(failures=False)
        rewound = self._forget_unacknowledged()
        ends = self._until_target_answers(
            lambda: self._offsets(self.target, {part.target: OffsetSpec.LATEST for part in rewound}), {})
        self._until_target_answers(self._new_producer, None)
        with translate_errors(self.source.cluster, "rewind"):
            for part in rewound:
                # Whatever reached the target after the last acknowledgement is sent again.
                if part.target in ends and ends[part.target] > part.acked_target:
                    part.stats.redelivered += ends[part.target] - part.acked_target
                    part.acked_target = ends[part.target]
                self._rewind(part, part.acked)

    def _abort_transaction(self, failure: _SendFailed) -> None:
        """--exactly-once: a send or a commit failed. The open transaction is abandoned (the next producer's
        init_transactions() aborts it) and every partition goes back to its last committed checkpoint."""
        if isinstance(failure.error, _FATAL_IN_TRANSACTION):
            error_class = (KafkaOperationError if isinstance(failure.error, kafka_errors.ProducerFencedError)
                           else AuthorizationError)
            raise error_class(f"{self.target.cluster.name}: the transaction failed: {_describe(failure.error)}",
                              hint=_FATAL_IN_TRANSACTION_HINT)
        if failure.part is not None and not _retriable(failure.error):  # e.g. a record too large: sending it
            # again cannot help; the open transaction is aborted by the next run (or its timeout)
            raise self._send_error(failure)
        self._warn(f"{self.target.cluster.name}: the transaction failed ({_describe(failure.error)}); aborting it "
                   "and copying again from the last commit")
        with contextlib.suppress(Exception):
            self.producer.close(timeout=5)
        self._uncount_open_transaction()
        for part in self.parts.values():
            part.pending.clear()
            part.acked = part.written = part.committed
            part.acked_target = part.committed_target
        self.inflight_bytes = self.inflight_records = 0
        self._until_target_answers(self._new_producer, None)
        with translate_errors(self.source.cluster, "rewind"):
            for part in self.parts.values():
                if part.position != part.committed:
                    self._rewind(part, part.committed)

    def _rewind(self, part: _Partition, offset: int) -> None:
        """Copy ``part`` again from source offset ``offset`` (a partition --once had finished resumes)."""
        part.position = offset
        if part.done and part.end is not None and offset < part.end:
            part.done = False
            self.consumer.resume(part.source)
        self.consumer.seek(part.source, offset)

    def _uncount_open_transaction(self) -> None:
        """--exactly-once: the records of the open transaction were not delivered after all."""
        for part in self.parts.values():
            part.stats.records -= part.txn_records
            part.stats.bytes -= part.txn_bytes
            part.txn_records = part.txn_bytes = 0

    def _send_error(self, failure: _SendFailed) -> KafkaOperationError:
        """The error that ends the run when a send failed for a reason that resending cannot mend."""
        return KafkaOperationError(f"{self.target.cluster.name}: sending to {failure.part.target.topic}"
                                   f"[{failure.part.target.partition}] failed: {_describe(failure.error)}")

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
                self._warn(f"{self.target.cluster.name}: not reachable yet; retrying every 2 s ({exc})")
                self.stop_event.wait(2.0)
        return stopped

    # ------------------------------------------------------------------------------------ the end

    def _finish(self) -> None:
        """Flush what is in flight and write the final checkpoints (also after a failure)."""
        if self.spec.exactly_once:
            try:
                self._commit()
            except _SendFailed as failure:
                self._warn(f"the last transaction did not commit ({_describe(failure.error)}); the next run "
                           "copies its records again")
                self._uncount_open_transaction()
            self._report(time.monotonic())
            return
        try:
            self._drain()
        except _SendFailed as failure:
            self._warn(f"some records were not acknowledged ({_describe(failure.error)}); the next run "
                       "copies them again")
            self._reap(failures=False)
            self._forget_unacknowledged()
        except KmcError as exc:
            self._warn(f"could not flush the last records ({exc}); the next run copies them again")
            self._reap(failures=False)
            self._forget_unacknowledged()
        self._checkpoint()
        self.store.flush(timeout=max(30.0, self.target.timeout))
        self._report(time.monotonic())


# Errors after which starting the transaction again cannot help.
_FATAL_IN_TRANSACTION = (
    kafka_errors.ProducerFencedError,
    kafka_errors.TransactionalIdAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TopicAuthorizationFailedError,
)
_FATAL_IN_TRANSACTION_HINT = ("another run with the same flow, clusters and topics took over (fenced), or the target "
                              "denies transactions: kmc needs WRITE and DESCRIBE on its transactional id (kmc/...)")


def _flush(producer: Any, timeout: float) -> None:
    """Send everything the producer holds now and wait until no batch is incomplete.

    Not ``producer.flush()``: kafka-python's flush waits on a snapshot of the incomplete batches, and a
    batch split after MESSAGE_TOO_LARGE stays in that snapshot while its records move to the halves; its
    latch is only set when a record future moves with them, and the byte path's batches have futures for
    their last records only. Waiting for the set of incomplete batches to empty has no such hole."""
    accumulator = producer._accumulator  # noqa: SLF001
    deadline = time.monotonic() + timeout
    accumulator.begin_flush()  # every batch is ready now, whatever its linger
    try:
        producer._sender.wakeup()  # noqa: SLF001
        while True:
            pending = accumulator._incomplete.all()  # noqa: SLF001
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise kafka_errors.KafkaTimeoutError(f"the target did not acknowledge within {timeout:g}s")
            pending[0].produce_future.wait(timeout=0.05)
    finally:
        accumulator._flushes_in_progress.decrement()  # noqa: SLF001


def _retriable(error: BaseException | None) -> bool:
    return isinstance(error, (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError)) or bool(
        getattr(error, "retriable", False))


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    name = type(error).__name__
    return name if not text or text == name else f"{name}: {text}"
