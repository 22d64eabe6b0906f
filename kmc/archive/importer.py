"""``kmc import``: an export (kmc/archive/format.py) into a cluster, batch by batch, resumable and exact.

Each exported batch goes to the same partition of the target topic, in order, through the copy engine's
byte path (kmc/mirror/batchpath.py): whole and still compressed where its offsets are dense, walked where
compaction left gaps. Progress is kept as the mirror keeps it (kmc/mirror/checkpoints.py), in the target's
``kmc.checkpoints`` under the export's *source* cluster id, with the offset map's anchors, so that
``kmc groups translate`` and a later ``kmc mirror`` from that cluster see an import as a mirror that ran;
and the import's producer announces itself in ``kmc.provenance`` with that cluster as its origin.

Resuming: records acknowledged after the last checkpoint (a ``kill -9``: once its last requests landed) are
in the target already. They are read back and matched against the export's next records one by one (key,
value, headers, timestamp: kmc.diff's record digest); the matching ones are not sent again, so an import
resumes exactly without transactions, and never drops a record the target does not have (a record that
does not match ends the matching: from there on everything is sent). With ``--exactly-once`` records and
checkpoints commit together; what followed the checkpoint was aborted, and nothing needs matching.

Why a loop of its own rather than the mirror's engine with another source: the engine's source is a
cluster throughout (plans, offsets, topic ids, provenance, gaps, rewinds while following); an import reads
files once, in order, and has none of those, and it must stop at the first damaged batch of a partition.
What the two share is below the loop: copy path, producer hooks, checkpoints, provenance, locks. No printing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.admin import OffsetSpec
from kafka.record.default_records import DefaultRecordBatch

from kmc.archive.format import HEADER, ArchiveError, Batch, Manifest, batch_tail
from kmc.archive.sources import Chunk, DirectorySource, PartEnd, StreamSource
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.diff.compare import record_digest
from kmc.errors import Interrupted, KafkaOperationError, UsageError
from kmc.metadata import (
    CLUSTER_SPECIFIC_CONFIGS,
    compile_patterns,
    describe_topics,
    list_offsets,
    matches,
    render_topic_name,
)
from kmc.mirror import producer_hooks
from kmc.mirror.batchpath import BatchCopyPath
from kmc.mirror.checkpoints import CHECKPOINT_TOPIC, MAX_ANCHORS, Checkpoint, CheckpointStore, ensure_checkpoint_topic
from kmc.mirror.fetch import RawBatch
from kmc.mirror.lock import hold_lock, lock_identity, lock_left_by_a_dead_run, settled_ends
from kmc.mirror.plan import DEFAULT_FLOW, Plan, TopicPlan, apply_plan, transaction_timeout_ms
from kmc.mirror.provenance import announce, ensure_provenance_topic
from kmc.profiles import NAME_RE, Cluster, validate_rename

MiB = 1024 * 1024
MAX_INFLIGHT_BYTES = 32 * MiB  # unacknowledged bytes before the import waits for the target
REAP_INTERVAL = 0.05

NoticeCallback = Callable[[str, str], None]
ProgressCallback = Callable[["ImportProgress"], None]


@dataclass(frozen=True)
class ImportOptions:
    topics: tuple[str, ...] = ()  # anchored regexes of exported (source) topic names; empty: all
    rename: str = "{topic}"  # {topic}, {source}: the exported cluster's profile name
    flow: str = DEFAULT_FLOW  # the checkpoints' flow: the default makes an import look like `kmc mirror`
    exactly_once: bool = False
    replication_factor: int | None = None
    checkpoint_interval: float = 1.0
    delivery_timeout: float = 300.0

    def validate(self) -> None:
        compile_patterns(self.topics, "--topics")
        validate_rename(self.rename, "--rename", error=UsageError)
        if not NAME_RE.match(self.flow):
            raise UsageError(f"--flow: invalid flow name '{self.flow}'", hint="use letters, digits, '.', '_' or '-'")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise UsageError("--replication-factor must be at least 1")


@dataclass
class ImportedTopic:
    source_topic: str
    target_topic: str
    partitions: int
    records: int = 0  # records sent to the target and acknowledged
    bytes: int = 0
    present: int = 0  # records the target already had (an earlier, interrupted run), not sent again

    def to_dict(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "target_topic": self.target_topic, "partitions": self.partitions,
                "records": self.records, "bytes": self.bytes, "present": self.present}


@dataclass
class ImportReport:
    """What :func:`import_archive` did (the ``kmc import -o json`` document, docs/export-format.md)."""

    source: str  # the exported cluster's profile name
    source_cluster_id: str
    target: str
    target_cluster_id: str
    flow: str
    parts: list[int]
    complete: bool  # every part read whole, no damage
    elapsed: float
    topics: list[ImportedTopic]
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # one line per damaged partition

    @property
    def records(self) -> int:
        return sum(topic.records for topic in self.topics)

    @property
    def bytes(self) -> int:
        return sum(topic.bytes for topic in self.topics)

    def failure(self) -> ArchiveError | None:
        """ArchiveError (exit 9) naming the first damage, when a partition stopped at one."""
        if not self.damaged:
            return None
        more = f" (and {len(self.damaged) - 1} more partition(s))" if len(self.damaged) > 1 else ""
        return ArchiveError(self.damaged[0] + more)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "source_cluster_id": self.source_cluster_id, "target": self.target,
                "target_cluster_id": self.target_cluster_id, "flow": self.flow, "parts": self.parts,
                "complete": self.complete, "elapsed_seconds": round(self.elapsed, 3), "records": self.records,
                "bytes": self.bytes, "present": sum(topic.present for topic in self.topics),
                "changes": self.changes, "warnings": self.warnings, "damaged": self.damaged,
                "topics": [topic.to_dict() for topic in self.topics]}

    def rows(self) -> list[dict[str, Any]]:
        return [topic.to_dict() for topic in self.topics]


@dataclass(frozen=True)
class ImportProgress:
    records: int
    bytes: int
    elapsed: float


def import_archive(source: Path | IO[bytes], target: Cluster, options: ImportOptions = ImportOptions(), *,
                   timeout: float = DEFAULT_TIMEOUT, stop_event: threading.Event | None = None,
                   notice_callback: NoticeCallback | None = None,
                   progress_callback: ProgressCallback | None = None) -> ImportReport:
    """Import the export ``source`` (a directory, or a binary stream of ``kmc export --to -``) into
    ``target``. UsageError for bad options or a target that cannot take the export (fewer partitions);
    ArchiveError for an export that cannot be read at all. Damage inside data files does not raise: each
    damaged partition stops at its last good batch and is listed in the report (:meth:`ImportReport.failure`)."""
    options.validate()
    reader = DirectorySource(source) if isinstance(source, Path) else StreamSource(source)
    manifests = reader.plan()
    started = time.monotonic()
    with KafkaSession(target, timeout) as session:
        importer = _Import(session, manifests, options, stop_event or threading.Event(),
                           notice_callback or (lambda level, text: None), progress_callback)
        for name in getattr(reader, "incomplete", []):
            importer.warn(f"{name} is incomplete (its export did not finish): not imported; run kmc export again")
        identity = lock_identity(importer.source_id, importer.target_id, options.topics, (), options.rename,
                                 options.flow)
        importer.after_crash = lock_left_by_a_dead_run(identity)  # (its last requests may still land)
        with hold_lock(identity, f"import into {target.name} (flow {options.flow})"):
            importer.identity = identity
            return importer.run(reader, started)


class _Partition:
    """One exported partition's import state (the engine's _Partition, for a source read once in order)."""

    __slots__ = ("source", "target", "stats", "position", "pending", "acked", "acked_target", "written", "anchors",
                 "anchor", "present", "damaged", "source_topic_id", "target_topic_id", "target_end")

    def __init__(self, source: tuple[str, int], target: TopicPartition, stats: ImportedTopic) -> None:
        self.source = source
        self.target = target
        self.stats = stats
        self.position = 0  # next source offset to import: batches ending before it are done
        self.pending: deque[tuple[int, Any, int, int]] = deque()  # (next offset, future or None, bytes, records)
        self.acked = self.acked_target = 0
        self.written: int | None = None
        self.anchors: list[list[int]] = []
        self.anchor: list[int] | None = None  # an anchor to write with the next checkpoint
        self.present: deque[bytes] = deque()  # digests of target records after the checkpoint, to match
        self.damaged = False
        self.source_topic_id: str | None = None
        self.target_topic_id: str | None = None
        self.target_end = 0  # the target partition's end offset when this run started

    def checkpoint(self, now_ms: int) -> Checkpoint:
        return Checkpoint(self.acked, self.target.topic, self.acked_target, now_ms, self.source_topic_id,
                          self.target_topic_id)


class _Import:
    def __init__(self, session: KafkaSession, manifests: list[Manifest], options: ImportOptions,
                 stop_event: threading.Event, notice: NoticeCallback, progress: ProgressCallback | None) -> None:
        self.session = session
        self.options = options
        self.stop_event = stop_event
        self.notice = notice
        self.progress = progress
        first = manifests[0]
        self.source_name = first.source_name
        self.source_id = first.source_cluster_id
        if any(manifest.source_cluster_id != self.source_id for manifest in manifests):
            raise ArchiveError("the export's parts come from different clusters")
        self.target_id = session.cluster_id()
        self.manifests = manifests
        self.warnings: list[str] = []
        self.changes: list[str] = []
        self.damaged: list[str] = []
        self.parts: dict[tuple[str, int], _Partition] = {}
        self.topics: dict[str, ImportedTopic] = {}
        self.inflight = 0
        self.identity: dict[str, object] = {}
        self.include = compile_patterns(options.topics, "--topics")

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            self.notice("warn", text)

    # ------------------------------------------------------------------------------------ set-up

    def _plan(self) -> Plan:
        """The target topics the export needs: missing ones created with the exported partition counts and
        configs; an existing one with fewer partitions is refused before anything is written."""
        wanted: dict[str, Any] = {}
        for manifest in self.manifests:  # the latest part says what a topic looked like last
            for topic in manifest.topics:
                if matches(topic.name, self.include):
                    wanted[topic.name] = topic
        if not wanted:
            self.warn("no exported topic matches the selection")
        names = {name: render_topic_name(self.options.rename, name, self.source_name) for name in wanted}
        existing = {info.name: info for info in describe_topics(self.session, with_offsets=False,
                                                                wanted=set(names.values()).__contains__)}
        brokers = len(self.session.describe().brokers)
        if self.options.replication_factor is not None and self.options.replication_factor > brokers:
            raise UsageError(f"--replication-factor {self.options.replication_factor}: {self.session.cluster.name} "
                             f"has only {brokers} broker(s)")
        plans, short = [], []
        for name, topic in wanted.items():
            target_name = names[name]
            configs = {key: value for key, value in topic.configs.items() if key not in CLUSTER_SPECIFIC_CONFIGS}
            info = existing.get(target_name)
            if info is None:
                rf = self.options.replication_factor or max(1, min(topic.replication_factor, brokers))
                plans.append(TopicPlan(name, target_name, topic.partitions, None, rf, configs, {}, ("create",),
                                       topic.max_message_bytes, topic.topic_id))
            else:
                if len(info.partitions) < topic.partitions:
                    short.append(f"{target_name} has {len(info.partitions)} partition(s), the export "
                                 f"{topic.partitions}")
                plans.append(TopicPlan(name, target_name, topic.partitions, len(info.partitions),
                                       info.replication_factor, configs, {}, (), topic.max_message_bytes,
                                       topic.topic_id, info.topic_id))
        if short:
            raise UsageError(f"{self.session.cluster.name}: {'; '.join(short)}: every batch goes to the partition "
                             "it came from", hint="import into new topics (--rename '{topic}.restored'), or add "
                                                  "partitions to the target topic first")
        return Plan(self.options.flow, self.source_name, self.session.cluster.name, self.source_id, self.target_id,
                    brokers, tuple(plans), False)

    def _new_producer(self, max_message_bytes: int) -> None:
        """The producer the mirror uses (kmc/mirror/engine.py), announced in kmc.provenance before it writes."""
        options = self.options
        transactional: dict[str, Any] = {}
        if options.exactly_once:
            digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
            transactional = {"transactional_id": f"kmc/{options.flow}/{digest}",
                             "transaction_timeout_ms": transaction_timeout_ms(options.delivery_timeout)}
        self.producer = self.session.producer(
            **transactional, acks="all", enable_idempotence=True, linger_ms=10, batch_size=512 * 1024,
            max_request_size=max(4 * MiB, max_message_bytes + 64 * 1024), compression_type="lz4",
            delivery_timeout_ms=int(options.delivery_timeout * 1000), retries=2**31 - 1,
            max_in_flight_requests_per_connection=5,
            request_timeout_ms=min(30000, int(options.delivery_timeout * 1000) // 2))
        self.failed_batches = producer_hooks.FailedBatches(self.producer)
        timeout = max(30.0, self.session.timeout)
        with translate_errors(self.session.cluster, "start the import's producer"):
            if options.exactly_once:
                self.producer.init_transactions()
                self.producer.begin_transaction()
                self.store.use_producer(self.producer)
            future = announce(self.producer, self.source_id, options.flow)
            producer_hooks.flush(self.producer, timeout)
            future.get(timeout=0)
            if options.exactly_once:
                producer_hooks.commit_transaction(self.producer, timeout)
        self.path = BatchCopyPath(self.producer, self.source_id, self.target_id, None, keep_codec=True, whole=True)
        with translate_errors(self.session.cluster, "load topic metadata"):
            for name in self.target_topics:
                self.path.prepare(name)

    def _start(self, plan: Plan) -> None:
        """Each exported partition's starting point: its checkpoint, or the export's first offset (pinned
        as the first checkpoint and anchor before anything is sent). Records the target got after the
        checkpoint are read back, to be matched (module docstring)."""
        loaded = self.store.load(self.warn)
        by_topic = {topic.source_topic: topic for topic in plan.topics}
        first_offsets: dict[tuple[str, int], int] = {}
        for manifest in self.manifests:
            for entry in manifest.partitions:
                if entry.topic in by_topic:
                    first_offsets.setdefault((entry.topic, entry.partition), entry.start_offset)
        targets = {key: TopicPartition(by_topic[key[0]].target_topic, key[1]) for key in first_offsets}
        ends = settled_ends(lambda: list_offsets(self.session, dict.fromkeys(targets.values(), OffsetSpec.LATEST)),
                            self.stop_event, 30.0 if self.after_crash else 0.0)
        target_ids = {info.name: info.topic_id for info in describe_topics(
            self.session, with_offsets=False, wanted={tp.topic for tp in targets.values()}.__contains__)}
        now_ms = int(time.time() * 1000)
        pins, anchors = [], []
        foreign: dict[str, tuple[str, int]] = {}  # source topic -> (the target topic its checkpoints are for, how many)
        for key, first in sorted(first_offsets.items()):
            topic = by_topic[key[0]]
            stats = self.topics.setdefault(key[0], ImportedTopic(key[0], topic.target_topic, topic.partitions))
            part = self.parts[key] = _Partition(key, targets[key], stats)
            part.source_topic_id = topic.source_topic_id
            part.target_topic_id = target_ids.get(topic.target_topic)
            part.anchors = list(self.store.anchors.get(key, []))
            end = part.target_end = ends[targets[key]]
            checkpoint = loaded.get(key)
            if checkpoint is not None and checkpoint.target_topic != topic.target_topic:
                foreign[key[0]] = (checkpoint.target_topic, foreign.get(key[0], ("", 0))[1] + 1)
                part.anchors = []  # that copy's offset map, not this one's: this copy starts a map of its own
                checkpoint = None
            if checkpoint is not None and checkpoint.target_topic_id and part.target_topic_id and \
                    checkpoint.target_topic_id != part.target_topic_id:
                self.warn(f"{topic.target_topic} was recreated since the last import: importing {key[0]}[{key[1]}] "
                          "again from the start")
                checkpoint = None
            if checkpoint is None or end < checkpoint.target_next_offset:
                part.position = part.acked = first
                part.acked_target = end
                part.anchor = [first, end, now_ms]
            else:
                part.position = part.acked = checkpoint.next_offset
                part.acked_target = checkpoint.target_next_offset
                part.written = checkpoint.next_offset
                if end > checkpoint.target_next_offset:
                    part.present = deque(self._read_back(part.target, checkpoint.target_next_offset, end))
                if not part.anchors:
                    part.anchor = [part.acked, part.acked_target, now_ms]
            if part.written is None or part.anchor is not None:
                pins.append((key[0], key[1], part.checkpoint(now_ms)))
                part.written = part.acked
            if part.anchor is not None:
                anchors.append((key[0], key[1], self._add_anchor(part)))
        for source_topic, (other, count) in foreign.items():
            self.warn(f"{source_topic}: ignoring the checkpoints of {count} partition(s), which are for "
                      f"{other}: importing into {by_topic[source_topic].target_topic} from the start (each copy of "
                      "a topic into one cluster needs its own --flow)")
        if pins or anchors:
            self.store.write(pins, anchors)
            if self.options.exactly_once:
                self._commit(force=True)
            else:
                self.store.flush(timeout=max(30.0, self.session.timeout))

    def _read_back(self, tp: TopicPartition, start: int, end: int) -> list[bytes]:
        """Digests of the target's committed records of ``tp`` in [start, end)."""
        consumer = self.session.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
        digests: list[bytes] = []
        deadline = time.monotonic() + max(60.0, 2 * self.session.timeout)
        try:
            with translate_errors(self.session.cluster, f"read back {tp.topic}[{tp.partition}]"):
                consumer.assign([tp])
                consumer.seek(tp, start)
                while (consumer.position(tp) or start) < end and time.monotonic() < deadline:
                    for record in consumer.poll(timeout_ms=500).get(tp, []):
                        if record.offset < end:
                            digests.append(record_digest(record.key, record.value, record.headers, record.timestamp))
        finally:
            consumer.close()
        return digests

    @staticmethod
    def _add_anchor(part: _Partition) -> list[list[int]]:
        if not part.anchors or part.anchors[-1][:2] != part.anchor[:2]:
            part.anchors.append(part.anchor)
        part.anchor = None
        del part.anchors[:-MAX_ANCHORS]
        return list(part.anchors)

    # ------------------------------------------------------------------------------------ the loop

    def run(self, reader: DirectorySource | StreamSource, started: float) -> ImportReport:
        plan = self._plan()
        self.changes.extend(apply_plan(self.session, plan))
        for change in self.changes:
            self.notice("info", change)
        ensure_checkpoint_topic(self.session)
        ensure_provenance_topic(self.session)
        self.store = CheckpointStore(self.session, self.options.flow, self.source_id)
        self.target_topics = sorted({topic.target_topic for topic in plan.topics})
        self._new_producer(max((topic.max_message_bytes for topic in plan.topics), default=0))
        self._start(plan)
        parts_seen: list[int] = []
        complete = False
        now = time.monotonic()
        next_reap, next_checkpoint, next_progress = now, now + self.options.checkpoint_interval, now + 1.0
        try:
            for item in reader.chunks():
                if self.stop_event.is_set():
                    break
                if isinstance(item, PartEnd):
                    parts_seen.append(item.manifest.part)
                    continue
                self._feed(item)
                now = time.monotonic()
                if now >= next_reap or self.inflight > MAX_INFLIGHT_BYTES:
                    self._reap()
                    while self.inflight > MAX_INFLIGHT_BYTES:
                        self._wait_for_oldest()
                        self._reap()
                    next_reap = now + REAP_INTERVAL
                if now >= next_checkpoint:
                    self._checkpoint()
                    next_checkpoint = now + self.options.checkpoint_interval
                if self.progress is not None and now >= next_progress:
                    self.progress(ImportProgress(self._records(), sum(t.bytes for t in self.topics.values()),
                                                 now - started))
                    next_progress = now + 1.0
            else:
                complete = not self.damaged
        except BaseException:
            with contextlib.suppress(Exception):
                self._finish()
            raise
        self._finish()
        if self.stop_event.is_set():
            raise Interrupted(f"import stopped after {self._records():,} records; the next run resumes from the "
                              "checkpoints")
        return ImportReport(self.source_name, self.source_id, self.session.cluster.name, self.target_id,
                            self.options.flow, parts_seen, complete, time.monotonic() - started,
                            list(self.topics.values()), self.changes, self.warnings, self.damaged)

    def _records(self) -> int:
        return sum(topic.records for topic in self.topics.values())

    def _feed(self, chunk: Chunk) -> None:
        part = self.parts.get((chunk.topic, chunk.partition))
        if part is None or part.damaged:
            return  # not selected, or stopped at damage
        for batch in chunk.batches:
            if batch.last_offset < part.position:
                continue  # imported by an earlier run
            self._send(part, batch)
        if chunk.damage is not None:
            part.damaged = True
            self.damaged.append(chunk.damage.message)
            self.notice("warn", chunk.damage.message)
        elif chunk.end is not None and chunk.end > part.position:
            part.position = chunk.end  # the part's remaining offsets held no committed record
            part.pending.append((chunk.end, None, 0, 0))

    def _send(self, part: _Partition, batch: Batch) -> None:
        raw = batch.raw
        count = batch.records
        if part.present:
            raw, count = self._unmatched(part, batch)
            if raw is None:
                part.position = batch.last_offset + 1
                part.pending.append((part.position, None, 0, 0))
                return
        attributes = HEADER.unpack_from(raw)[5]
        item = RawBatch(DefaultRecordBatch(raw), attributes)
        try:
            future, sent, _, size = self.path.send_batch(part.target, [item])
        except kafka_errors.KafkaError as exc:
            raise self._send_error(part, exc) from exc
        part.position = batch.last_offset + 1
        part.pending.append((part.position, future, size, sent))
        part.stats.records += sent
        part.stats.bytes += size
        self.inflight += size

    def _unmatched(self, part: _Partition, batch: Batch) -> tuple[bytearray | None, int]:
        """Match ``batch``'s records against the target's records after the checkpoint: (None, 0) when the
        target has them all; else the records from the first it does not have, as a batch of their own
        (uncompressed: walked by the copy path), and their count."""
        records = list(DefaultRecordBatch(bytes(batch.raw)))
        matched = 0
        for record in records:
            if not part.present:
                break
            if record_digest(record.key, record.value, record.headers, record.timestamp) != part.present[0]:
                self.warn(f"{part.target.topic}[{part.target.partition}]: {len(part.present)} record(s) after the "
                          "last checkpoint were not written by this import; importing from there on")
                part.present.clear()
                part.anchor = [records[matched].offset, part.target_end, int(time.time() * 1000)]
                break
            part.present.popleft()
            matched += 1
        part.stats.present += matched
        if matched == len(records):
            return None, 0
        if matched == 0:
            return batch.raw, batch.records
        return batch_tail(batch.raw, matched), len(records) - matched

    def _reap(self) -> None:
        failed = self.failed_batches
        for part in self.parts.values():
            pending = part.pending
            while pending:
                offset, future, size, sent = pending[0]
                if future is not None:
                    if not future.is_done:
                        break
                    if future.exception is not None:
                        raise self._send_error(part, future.exception)
                if failed and part.target in failed.failed:
                    raise self._send_error(part, failed.failed[part.target])
                if future is not None and future.value is not None:
                    part.acked_target = future.value.offset + 1
                part.acked = offset
                self.inflight -= size
                pending.popleft()

    def _drain(self, timeout: float) -> None:
        """Flush: every send acknowledged, or failed (a send neither acknowledged nor failed is no import)."""
        with translate_errors(self.session.cluster, "flush"):
            producer_hooks.flush(self.producer, timeout)
        self._reap()
        if part := next((part for part in self.parts.values() if part.pending), None):  # (behind a failed batch)
            raise self._send_error(part, self.failed_batches.failed.get(part.target) or kafka_errors.KafkaError())

    def _wait_for_oldest(self) -> None:
        for part in self.parts.values():
            if part.pending and part.pending[0][1] is not None and not part.pending[0][1].is_done:
                with contextlib.suppress(Exception):
                    part.pending[0][1].get(timeout=0.5)
                return

    def _send_error(self, part: _Partition, error: BaseException) -> KafkaOperationError:
        return KafkaOperationError(f"{self.session.cluster.name}: sending to {part.target.topic}"
                                   f"[{part.target.partition}] failed: {error}; the import resumes from its "
                                   "checkpoints when run again")

    def _checkpoint(self) -> None:
        if self.options.exactly_once:
            self._commit()
        else:
            self._write_checkpoints()

    def _write_checkpoints(self) -> bool:
        failures = self.store.take_failures()
        if failures and self.options.exactly_once:  # a checkpoint of the open transaction: it must not commit
            raise failures[0][1]
        if failures:
            self.warn(f"could not write {len(failures)} checkpoint(s) ({failures[0][1]}); retrying")
            for part in self.parts.values():
                part.written = None
        now_ms = int(time.time() * 1000)
        changed, anchors = [], []
        for part in self.parts.values():
            if part.anchor is not None and part.acked > part.anchor[0]:
                anchors.append((part.source[0], part.source[1], self._add_anchor(part)))
            if part.acked != part.written:
                changed.append((part.source[0], part.source[1], part.checkpoint(now_ms)))
                part.written = part.acked
        if changed or anchors:
            self.store.write(changed, anchors)
        return bool(changed or anchors)

    def _commit(self, force: bool = False) -> None:
        """--exactly-once: everything sent, and the checkpoints, in the open transaction; commit it."""
        timeout = max(30.0, self.session.timeout) + self.options.delivery_timeout
        self._drain(timeout)
        with translate_errors(self.session.cluster, f"write {CHECKPOINT_TOPIC}"):
            if not self._write_checkpoints() and not force:
                return
        with translate_errors(self.session.cluster, "commit the transaction"):
            producer_hooks.flush(self.producer, timeout)
            if failed := self.failed_batches.first():  # (an expired batch leaves the transaction committable)
                raise failed[1]
            producer_hooks.commit_transaction(self.producer, timeout)

    def _finish(self) -> None:
        if self.options.exactly_once:
            self._commit()
            return
        self._drain(self.options.delivery_timeout + 30)
        self._write_checkpoints()
        self.store.flush(timeout=max(30.0, self.session.timeout))

