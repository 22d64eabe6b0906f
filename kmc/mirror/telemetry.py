"""What a running mirror says about itself beyond its counts, for the service layer (kmc/service/): each
partition's positions and checkpoint, send and fetch latencies, errors by kind, and notices that name their
event.

Pure data, no Prometheus: the engine fills a :class:`Telemetry`, :class:`~kmc.mirror.engine.MirrorProgress`
carries what it holds (across the worker pipe too: everything here pickles), and kmc.service turns it into
metrics, health and log lines. Nothing here costs the copy loop more than a counter: latencies are recorded
by kafka-python's own sensors (:func:`kmc._kafka_internals.observe_sensor`), positions are read when a
progress report is made.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any, NamedTuple

from kmc._kafka_internals import observe_sensor

# Upper bounds (seconds) of the latency histograms' buckets; a last, unbounded bucket follows.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The kinds of trouble a mirror counts (MirrorProgress.errors), each also a notice's event.
ERROR_KINDS = (
    "fetch",  # a fetch from the source failed; retried
    "send",  # a send to the target failed for good; rewound and sent again
    "transaction",  # --exactly-once: a transaction failed; aborted and copied again from the last commit
    "target-lost",  # the target lost records it had acknowledged (truncated or recreated)
    "target-unreachable",  # the target did not answer; retried every 2 s
    "checkpoint",  # checkpoints could not be written; retried
    "refresh",  # looking for new topics failed; retried at the next refresh
    "flush",  # the last records of a run were not acknowledged; the next run copies them again
    "gap",  # a data gap (records expired, a topic recreated or truncated)
    "source-unreachable",  # a source could not be reached; the runner tries the job again
)
RUNNER_EVENTS = frozenset({"source-unreachable"})  # the kinds the runner notices (the engine counts the others)


class Notice(str):
    """A notice's text that also says what happened (``event``) and where (``topic``, ``partition``; None
    when not about one). It is a str, so every notice callback that prints text works unchanged; the
    service's JSON log lines read the attributes (``getattr(text, "event", None)``)."""

    event: str
    topic: str | None
    partition: int | None

    def __new__(cls, text: str, event: str, topic: str | None = None, partition: int | None = None) -> Notice:
        notice = super().__new__(cls, text)
        notice.event, notice.topic, notice.partition = event, topic, partition
        return notice

    def __reduce__(self) -> tuple[Any, ...]:
        return Notice, (str(self), self.event, self.topic, self.partition)


class LatencySnapshot(NamedTuple):
    """A latency histogram at one moment: ``counts[i]`` observations up to ``LATENCY_BOUNDS[i]`` seconds
    (not cumulative; the last entry counts those above every bound) and their ``total`` seconds."""

    counts: tuple[int, ...]
    total: float

    def __add__(self, other: object) -> LatencySnapshot:  # type: ignore[override]
        if not isinstance(other, LatencySnapshot):
            return NotImplemented
        return LatencySnapshot(tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
                               self.total + other.total)

    @property
    def count(self) -> int:
        return sum(self.counts)


EMPTY_LATENCY = LatencySnapshot((0,) * (len(LATENCY_BOUNDS) + 1), 0.0)


class Latency:
    """A cumulative latency histogram, recorded in milliseconds by a kafka-python sensor (from its network
    thread) and read as a :class:`LatencySnapshot` by the copy loop."""

    __slots__ = ("_counts", "_total")

    def __init__(self) -> None:
        self._counts = [0] * (len(LATENCY_BOUNDS) + 1)
        self._total = 0.0

    def observe_ms(self, milliseconds: float) -> None:
        seconds = milliseconds / 1000.0
        self._counts[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self._total += seconds

    def snapshot(self) -> LatencySnapshot:
        return LatencySnapshot(tuple(self._counts), self._total)


class PartitionProgress(NamedTuple):
    """One source partition at a progress report: ``position`` the next offset to send, ``acked`` the next
    offset whose records the target acknowledged, ``checkpointed`` the next offset of the last checkpoint
    written, ``end`` the source's end offset as the last fetch saw it (None before the first), ``records``
    and ``bytes`` sent from it in this run."""

    topic: str
    partition: int
    position: int
    acked: int
    checkpointed: int
    end: int | None
    records: int
    bytes: int


class Telemetry:
    """The engine's side: errors by kind, latencies, and the offsets of the checkpoints it wrote."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self.send_latency = Latency()
        self.fetch_latency = Latency()
        self.checkpointed: dict[tuple[str, int], int] = {}

    def watch_producer(self, producer: Any) -> None:
        """Record the target's answer time of every request of ``producer`` (produce requests, mostly)."""
        observe_sensor(producer, "request-latency", self.send_latency.observe_ms)

    def watch_consumer(self, consumer: Any) -> None:
        """Record the round trip of every fetch of ``consumer`` (the broker's wait for new data included)."""
        observe_sensor(consumer, "fetch-latency", self.fetch_latency.observe_ms)

    def wrote(self, checkpoints: list[tuple[str, int, Any]]) -> None:
        """Checkpoints were written: (topic, partition, Checkpoint) each."""
        for topic, partition, checkpoint in checkpoints:
            self.checkpointed[(topic, partition)] = checkpoint.next_offset

    def error_counts(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.errors.items()))
