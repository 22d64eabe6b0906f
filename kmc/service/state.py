"""What the service knows about the mirrors of one run, fed by their progress reports and notices and by the
source end offsets the service asks for itself (kmc/service/watch.py); metrics and health are computed from
it when asked (a scrape, a /healthz request), so the copy path pays one dictionary update per report.

How far behind, without reading a record: each partition keeps the end offsets it was seen to reach, with
the time each was first seen (strictly increasing ends, so a handful of entries). ``seconds_behind`` is the
time since the first end past the acknowledged offset was seen: how long the oldest record not yet in the
target has been waiting, to within one report (a second) while the mirror reports, one watch interval while
it does not. Record timestamps are not used: they are the producers' clocks, and a replay of old data would
look like hours of lag. ``checkpoint_age`` is the same for the checkpoint, counted from the later of its
last advance and that first sighting: it grows only while data waits, which is what /healthz checks.

Counters stay monotonic across the mirror's own corrections (records sent again after a failed send are
counted again, never uncounted) and across restarts of a job (a retried cluster, a new mirror process).
Library code: no printing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kmc.mirror.engine import MirrorProgress
from kmc.mirror.telemetry import EMPTY_LATENCY, LatencySnapshot

MAX_SAMPLES = 64  # end-offset sightings kept per partition (older ones thinned out, the first kept)
SILENT_AFTER = 15.0  # seconds without a progress report after which a mirror counts as not running
STALE_AFTER = 3.0  # seconds without a report after which the watcher asks the source for the mirror's ends

MirrorKey = tuple[str, str, str]  # flow, source, target


class _Monotonic:
    """A counter fed with a run's running totals, which may drop (uncounted sends, a new run): only rises
    count. ``new_run`` starts the next total from zero."""

    __slots__ = ("last", "total")

    def __init__(self) -> None:
        self.total = 0
        self.last = 0

    def feed(self, value: int) -> None:
        if value > self.last:
            self.total += value - self.last
        self.last = value


@dataclass
class PartitionState:
    topic: str
    partition: int
    acked: int = 0
    checkpointed: int = 0
    checkpoint_at: float = 0.0  # when the checkpoint last advanced (or the partition was first seen)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (first seen, end), ends increasing
    records: _Monotonic = field(default_factory=_Monotonic)
    bytes: _Monotonic = field(default_factory=_Monotonic)

    @property
    def end(self) -> int | None:
        return self.samples[-1][1] if self.samples else None

    def saw_end(self, end: int, now: float) -> None:
        if not self.samples or end > self.samples[-1][1]:
            self.samples.append((now, end))
            if len(self.samples) > MAX_SAMPLES:
                del self.samples[1:MAX_SAMPLES // 2:2]

    def first_seen_past(self, offset: int) -> float | None:
        """When an end past ``offset`` was first seen: the latest time the record at ``offset`` can have
        arrived by."""
        for seen, end in self.samples:
            if end > offset:
                return seen
        return None

    def forget_before(self) -> None:
        low = min(self.acked, self.checkpointed)
        while len(self.samples) > 1 and self.samples[0][1] <= low:
            self.samples.pop(0)

    def records_behind(self) -> int | None:
        return None if self.end is None else max(0, self.end - self.acked)

    def seconds_behind(self, now: float) -> float:
        seen = self.first_seen_past(self.acked)
        return 0.0 if seen is None else max(0.0, now - seen)

    def checkpoint_age(self, now: float) -> float:
        """Seconds the checkpoint has not moved while records past it were waiting (0 when none wait)."""
        seen = self.first_seen_past(self.checkpointed)
        return 0.0 if seen is None else max(0.0, now - max(seen, self.checkpoint_at))


@dataclass
class TopicState:
    target_topic: str
    records: _Monotonic = field(default_factory=_Monotonic)
    bytes: _Monotonic = field(default_factory=_Monotonic)
    redelivered: _Monotonic = field(default_factory=_Monotonic)
    skipped: _Monotonic = field(default_factory=_Monotonic)
    gaps: _Monotonic = field(default_factory=_Monotonic)
    rate: float = 0.0


@dataclass
class MirrorState:
    """One mirror (flow, source, target) as its reports told it."""

    key: MirrorKey
    mode: str = "follow"
    last_report: float | None = None
    elapsed: float = 0.0
    topics: dict[str, TopicState] = field(default_factory=dict)
    partitions: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    errors: dict[str, _Monotonic] = field(default_factory=dict)
    service_errors: Counter[str] = field(default_factory=Counter)  # counted from the runner's notices
    send_latency: LatencySnapshot = EMPTY_LATENCY  # of the runs before this one
    fetch_latency: LatencySnapshot = EMPTY_LATENCY
    run_send_latency: LatencySnapshot = EMPTY_LATENCY  # of this run
    run_fetch_latency: LatencySnapshot = EMPTY_LATENCY

    def running(self, now: float) -> bool:
        return self.last_report is not None and now - self.last_report <= SILENT_AFTER

    def error_counts(self) -> dict[str, int]:
        counts = Counter({kind: counter.total for kind, counter in self.errors.items()})
        counts.update(self.service_errors)
        return dict(counts)

    def latencies(self) -> tuple[LatencySnapshot, LatencySnapshot]:
        return self.send_latency + self.run_send_latency, self.fetch_latency + self.run_fetch_latency


@dataclass(frozen=True)
class Health:
    """/healthz's answer: ``ok`` unless some partition's checkpoint stood still for longer than the stall
    time while records were waiting."""

    ok: bool
    stalled: list[dict[str, Any]]
    mirrors: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "stalled", "stalled": self.stalled, "mirrors": self.mirrors}


class ServiceState:
    """Every mirror of the run; thread-safe (reports arrive from runner threads, scrapes from the server's)."""

    def __init__(self, keys: Iterable[MirrorKey] = (), clock: Any = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.started = clock()
        self.mirrors: dict[MirrorKey, MirrorState] = {key: MirrorState(key) for key in keys}

    def _mirror(self, key: MirrorKey) -> MirrorState:
        mirror = self.mirrors.get(key)
        if mirror is None:
            mirror = self.mirrors[key] = MirrorState(key)
        return mirror

    # ---------------------------------------------------------------------------------------- input

    def progress(self, event: MirrorProgress) -> None:
        """A progress report (a ``progress_callback``)."""
        now = self.clock()
        with self.lock:
            mirror = self._mirror((event.flow, event.source, event.target))
            if event.elapsed < mirror.elapsed:  # a new run of the job: its totals start again
                self._new_run(mirror)
            mirror.elapsed, mirror.mode, mirror.last_report = event.elapsed, event.mode, now
            for topic in event.topics:
                state = mirror.topics.get(topic.source_topic)
                if state is None:
                    state = mirror.topics[topic.source_topic] = TopicState(topic.target_topic)
                state.records.feed(topic.records)
                state.bytes.feed(topic.bytes)
                state.redelivered.feed(topic.redelivered)
                state.skipped.feed(topic.skipped)
                state.gaps.feed(topic.gaps)
                state.rate = topic.rate
            for part in event.partitions:
                key = (part.topic, part.partition)
                state = mirror.partitions.get(key)
                if state is None:
                    state = mirror.partitions[key] = PartitionState(part.topic, part.partition, part.acked,
                                                                    part.checkpointed, now)
                if part.acked < state.acked:  # rewound (a recreated topic, a lost target): ends start again
                    state.samples.clear()
                if part.checkpointed != state.checkpointed:
                    state.checkpoint_at = now
                state.acked, state.checkpointed = part.acked, part.checkpointed
                if part.end is not None:
                    state.saw_end(part.end, now)
                state.records.feed(part.records)
                state.bytes.feed(part.bytes)
                state.forget_before()
            for kind, count in event.errors:
                mirror.errors.setdefault(kind, _Monotonic()).feed(count)
            mirror.run_send_latency, mirror.run_fetch_latency = event.send_latency, event.fetch_latency

    @staticmethod
    def _new_run(mirror: MirrorState) -> None:
        mirror.send_latency, mirror.fetch_latency = mirror.latencies()
        mirror.run_send_latency = mirror.run_fetch_latency = EMPTY_LATENCY
        counters = [counter for topic in mirror.topics.values()
                    for counter in (topic.records, topic.bytes, topic.redelivered, topic.skipped, topic.gaps)]
        counters += [counter for part in mirror.partitions.values() for counter in (part.records, part.bytes)]
        counters += list(mirror.errors.values())
        for counter in counters:
            counter.last = 0

    def notice(self, key: MirrorKey, event: str | None) -> None:
        """A notice of the runner's own (not the engine's: those are counted in its reports)."""
        if event:
            with self.lock:
                self._mirror(key).service_errors[event] += 1

    def saw_ends(self, source: str, ends: dict[tuple[str, int], int]) -> None:
        """End offsets of ``source``'s partitions, asked by the service itself."""
        now = self.clock()
        with self.lock:
            for mirror in self.mirrors.values():
                if mirror.key[1] != source:
                    continue
                for key, end in ends.items():
                    state = mirror.partitions.get(key)
                    if state is not None:
                        state.saw_end(end, now)
                        state.forget_before()

    def silent_partitions(self) -> dict[str, set[tuple[str, int]]]:
        """Per source: the partitions of mirrors that have not reported for STALE_AFTER seconds."""
        now = self.clock()
        wanted: dict[str, set[tuple[str, int]]] = {}
        with self.lock:
            for mirror in self.mirrors.values():
                if mirror.partitions and (mirror.last_report is None or now - mirror.last_report > STALE_AFTER):
                    wanted.setdefault(mirror.key[1], set()).update(mirror.partitions)
        return wanted

    # ---------------------------------------------------------------------------------------- output

    def health(self, stall_timeout: float) -> Health:
        now = self.clock()
        stalled = []
        mirrors = []
        with self.lock:
            for mirror in self.mirrors.values():
                flow, source, target = mirror.key
                behind = 0
                for part in mirror.partitions.values():
                    behind += part.records_behind() or 0
                    age = part.checkpoint_age(now)
                    if age > stall_timeout:
                        stalled.append({"flow": flow, "source": source, "target": target, "topic": part.topic,
                                        "partition": part.partition, "checkpoint_age_seconds": round(age, 1),
                                        "records_behind": part.records_behind()})
                mirrors.append({"flow": flow, "source": source, "target": target, "running": mirror.running(now),
                                "records_behind": behind,
                                "last_report_seconds_ago": None if mirror.last_report is None
                                else round(now - mirror.last_report, 1)})
        return Health(not stalled, stalled, mirrors)
