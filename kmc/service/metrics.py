"""The Prometheus metrics of a running kmc, built from :class:`~kmc.service.state.ServiceState` at each scrape
(a custom collector: nothing is updated on the copy path). Names and labels are documented in
docs/operations.md; they are a contract for dashboards and alerting rules (examples/prometheus/kmc-rules.yml).

Label cardinality: per mirror (flow, source, target) and source topic by default; ``partitions=True``
(``--metrics-partitions``) adds a ``partition`` label to the five per-partition families, which at a
thousand partitions is five thousand series: opt in where that is affordable. Latency histograms and error
counters are per mirror only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kmc import __version__
from kmc.mirror.telemetry import LATENCY_BOUNDS, LatencySnapshot
from kmc.service.state import ServiceState

MIRROR_LABELS = ["flow", "source", "target"]
TOPIC_LABELS = [*MIRROR_LABELS, "topic"]
PARTITION_LABELS = [*TOPIC_LABELS, "partition"]


class MirrorCollector(Collector):
    """Every kmc_* metric, from the service state at the moment of the scrape."""

    def __init__(self, state: ServiceState, stall_timeout: float, partitions: bool = False) -> None:
        self.state = state
        self.stall_timeout = stall_timeout
        self.partitions = partitions

    def describe(self) -> list[Metric]:
        return []  # built at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        state = self.state
        per = PARTITION_LABELS if self.partitions else TOPIC_LABELS
        copied = CounterMetricFamily("kmc_records_copied", "Records sent to the target and acknowledged (records "
                                     "sent again after a failed send count again).", labels=per)
        copied_bytes = CounterMetricFamily("kmc_bytes_copied", "Key and value bytes of those records.", labels=per)
        behind = GaugeMetricFamily("kmc_records_behind", "Records at the source not yet acknowledged by the target.",
                                   labels=per)
        seconds = GaugeMetricFamily("kmc_seconds_behind", "Seconds the oldest record not yet in the target has "
                                    "been waiting (0 when caught up; the largest of the topic's partitions).",
                                    labels=per)
        age = GaugeMetricFamily("kmc_checkpoint_age_seconds", "Seconds the checkpoint has not advanced while records "
                                "were waiting (0 when none wait; the largest of the topic's partitions).", labels=per)
        redelivered = CounterMetricFamily("kmc_records_redelivered", "Records that reached the target after the last "
                                          "checkpoint of an earlier run or a failed send, copied again.",
                                          labels=TOPIC_LABELS)
        skipped = CounterMetricFamily("kmc_records_skipped", "Records not copied because they came from the target "
                                      "(kmc-origin: loop prevention).", labels=TOPIC_LABELS)
        gaps = CounterMetricFamily("kmc_data_gaps", "Data gaps found: records expired at the source before they were "
                                   "copied, topics recreated or truncated (docs/mirror.md, Faults).",
                                   labels=TOPIC_LABELS)
        errors = CounterMetricFamily("kmc_errors", "Failures the mirror recovered from or reported, by kind.",
                                     labels=[*MIRROR_LABELS, "kind"])
        up = GaugeMetricFamily("kmc_mirror_up", "1 while the mirror reports progress (at least every 15 s).",
                               labels=MIRROR_LABELS)
        send = HistogramMetricFamily("kmc_send_latency_seconds", "Round trip of the requests to the target (produce "
                                     "requests, mostly).", labels=MIRROR_LABELS)
        fetch = HistogramMetricFamily("kmc_fetch_latency_seconds", "Round trip of the fetches from the source (the "
                                      "broker's wait for new records, up to 0.2 s, included).", labels=MIRROR_LABELS)
        health = state.health(self.stall_timeout)
        now = state.clock()
        with state.lock:
            for mirror in state.mirrors.values():
                labels = list(mirror.key)
                up.add_metric(labels, 1.0 if mirror.running(now) else 0.0)
                for kind, count in sorted(mirror.error_counts().items()):
                    errors.add_metric([*labels, kind], count)
                send_latency, fetch_latency = mirror.latencies()
                send.add_metric(labels, *_buckets(send_latency))
                fetch.add_metric(labels, *_buckets(fetch_latency))
                for name, topic in mirror.topics.items():
                    redelivered.add_metric([*labels, name], topic.redelivered.total)
                    skipped.add_metric([*labels, name], topic.skipped.total)
                    gaps.add_metric([*labels, name], topic.gaps.total)
                    if not self.partitions:
                        copied.add_metric([*labels, name], topic.records.total)
                        copied_bytes.add_metric([*labels, name], topic.bytes.total)
                by_topic: dict[str, list[float]] = {}
                for part in mirror.partitions.values():
                    lag = part.records_behind()
                    values = [float(lag or 0), part.seconds_behind(now), part.checkpoint_age(now)]
                    if self.partitions:
                        where = [*labels, part.topic, str(part.partition)]
                        copied.add_metric(where, part.records.total)
                        copied_bytes.add_metric(where, part.bytes.total)
                        for family, value in zip((behind, seconds, age), values, strict=True):
                            family.add_metric(where, value)
                        continue
                    total = by_topic.setdefault(part.topic, [0.0, 0.0, 0.0])
                    total[0] += values[0]
                    total[1] = max(total[1], values[1])
                    total[2] = max(total[2], values[2])
                for name, (lag, wait, stood) in by_topic.items():
                    for family, value in zip((behind, seconds, age), (lag, wait, stood), strict=True):
                        family.add_metric([*labels, name], value)
        healthy = GaugeMetricFamily("kmc_healthy", "1 unless /healthz answers 503 (a checkpoint stood still longer "
                                    "than the stall time while records were waiting).")
        healthy.add_metric([], 1.0 if health.ok else 0.0)
        info = GaugeMetricFamily("kmc_build_info", "The running kmc's version.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield from (copied, copied_bytes, behind, seconds, age, redelivered, skipped, gaps, errors, up, send, fetch,
                    healthy, info)


def _buckets(latency: LatencySnapshot) -> tuple[list[tuple[str, float]], float]:
    cumulative = 0
    buckets: list[tuple[str, Any]] = []
    for bound, count in zip((*LATENCY_BOUNDS, float("inf")), latency.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return buckets, latency.total


def registry(state: ServiceState, stall_timeout: float, partitions: bool = False) -> CollectorRegistry:
    """A registry of kmc's metrics and the process's own (CPU, memory, open files: ``process_*``,
    ``python_info``)."""
    result = CollectorRegistry(auto_describe=False)
    result.register(MirrorCollector(state, stall_timeout, partitions))
    ProcessCollector(registry=result)
    PlatformCollector(registry=result)
    return result
