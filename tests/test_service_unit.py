"""The service layer's arithmetic without Kafka: lag and stall ages from progress reports, counters that never
go back, bounded label sets, the [service] config table, JSON log lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from kmc.errors import ConfigError
from kmc.mirror.engine import MirrorProgress, TopicProgress
from kmc.mirror.telemetry import EMPTY_LATENCY, Latency, Notice, PartitionProgress
from kmc.output import Messages
from kmc.profiles import build_config
from kmc.service.logs import KEYS, json_line
from kmc.service.metrics import registry
from kmc.service.state import MAX_SAMPLES, ServiceState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(elapsed: float, acked: int, checkpointed: int, end: int, records: int, partitions: int = 1,
           errors: tuple[tuple[str, int], ...] = ()) -> MirrorProgress:
    parts = tuple(PartitionProgress("orders", p, acked, acked, checkpointed, end, records, records * 10)
                  for p in range(partitions))
    topic = TopicProgress("orders", "orders", records * partitions, records * partitions * 10, 0.0,
                          (end - acked) * partitions, None)
    return MirrorProgress("f", "dc1", "central", "follow", elapsed, (topic,), None, parts, errors, EMPTY_LATENCY,
                          EMPTY_LATENCY)


def test_seconds_behind_and_checkpoint_age_count_from_when_records_were_first_seen_waiting() -> None:
    clock = Clock()
    state = ServiceState([("f", "dc1", "central")], clock=clock)
    state.progress(report(1, acked=100, checkpointed=100, end=100, records=100))
    part = state.mirrors[("f", "dc1", "central")].partitions[("orders", 0)]
    assert (part.records_behind(), part.seconds_behind(clock.now), part.checkpoint_age(clock.now)) == (0, 0, 0)
    clock.now += 60  # idle for a minute: nothing waits, nothing is late
    assert part.checkpoint_age(clock.now) == 0
    state.progress(report(61, acked=100, checkpointed=100, end=150, records=100))
    clock.now += 10
    state.saw_ends("dc1", {("orders", 0): 170})  # the mirror went silent; the service asked the source
    clock.now += 5
    assert part.records_behind() == 70
    assert part.seconds_behind(clock.now) == 15  # since 150 was first seen, not since the idle minute began
    assert part.checkpoint_age(clock.now) == 15
    assert state.health(stall_timeout=20).ok
    health = state.health(stall_timeout=14)
    assert not health.ok and health.stalled[0]["partition"] == 0 and health.stalled[0]["records_behind"] == 70
    state.progress(report(80, acked=150, checkpointed=150, end=170, records=150))  # caught up to 150
    assert part.seconds_behind(clock.now) == 5  # the records past 150 were first seen at 170's sighting
    assert state.health(stall_timeout=14).ok


def test_counters_never_go_back_across_uncounted_sends_and_new_runs() -> None:
    state = ServiceState(clock=Clock())
    state.progress(report(1, 10, 10, 10, records=10, errors=(("fetch", 2),)))
    state.progress(report(2, 10, 10, 10, records=7))  # a failed send uncounted 3
    state.progress(report(3, 12, 12, 12, records=12))  # ... and sent them again
    state.progress(report(0.5, 14, 14, 14, records=2, errors=(("fetch", 1),)))  # a new run: totals restart
    mirror = state.mirrors[("f", "dc1", "central")]
    assert mirror.topics["orders"].records.total == 10 + 5 + 2
    assert mirror.partitions[("orders", 0)].records.total == 17
    assert mirror.error_counts() == {"fetch": 3}


def test_end_sightings_stay_bounded_while_a_mirror_is_stuck() -> None:
    clock = Clock()
    state = ServiceState(clock=clock)
    state.progress(report(1, 0, 0, 1, records=0))
    for end in range(2, 1000):
        clock.now += 1
        state.saw_ends("dc1", {("orders", 0): end})
    part = state.mirrors[("f", "dc1", "central")].partitions[("orders", 0)]
    assert len(part.samples) <= MAX_SAMPLES
    assert part.seconds_behind(clock.now) == 998  # the first sighting is kept


def test_metrics_are_per_topic_unless_partition_labels_are_asked_for() -> None:
    state = ServiceState(clock=Clock())
    state.progress(report(1, 90, 80, 100, records=90, partitions=1000))
    per_topic = generate_latest(registry(state, 300)).decode()
    per_partition = generate_latest(registry(state, 300, partitions=True)).decode()
    assert per_topic.count("kmc_records_behind{") == 1
    assert 'kmc_records_behind{flow="f",source="dc1",target="central",topic="orders"} 10000.0' in per_topic
    assert 'kmc_records_copied_total{flow="f",source="dc1",target="central",topic="orders"} 90000.0' in per_topic
    assert per_partition.count("kmc_records_behind{") == 1000
    assert 'partition="999"' in per_partition
    for family in ("kmc_send_latency_seconds_bucket", "kmc_mirror_up", "process_cpu_seconds_total"):
        assert f"\n{family}" in per_topic
    assert "kmc_healthy 1.0" in per_topic


def test_latency_histogram_buckets() -> None:
    latency = Latency()
    for milliseconds in (0.5, 3, 3, 70_000):
        latency.observe_ms(milliseconds)
    snapshot = latency.snapshot()
    assert snapshot.count == 4 and snapshot.counts[0] == 1 and snapshot.counts[2] == 2 and snapshot.counts[-1] == 1
    assert (snapshot + snapshot).count == 8


def test_the_service_table_and_a_flows_metrics_addr(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config = build_config({"service": {"metrics_addr": ":9464", "stall_timeout": 60, "metrics_partitions": True},
                           "clusters": {"a": {"bootstrap": "a:9092"}},
                           "flows": {"x": {"from": "a", "to": "a", "metrics_addr": "[::1]:9465"}}}, path, environ={})
    assert (config.service.metrics_addr, config.service.stall_timeout, config.service.metrics_partitions) == (
        ":9464", 60.0, True)
    assert config.flows["x"].metrics_addr == "[::1]:9465"
    for bad in ({"service": {"metrics_addr": "9464"}}, {"service": {"stall_timeout": 0}},
                {"service": {"port": 1}}, {"flows": {"x": {"from": "a", "to": "a", "metrics_addr": "x"}}}):
        with pytest.raises(ConfigError):
            build_config(bad, path, environ={})


def test_json_lines_have_the_keys_in_order_and_a_notices_event() -> None:
    line = json.loads(json_line("warn", Notice("records expired", "gap", "orders", 3), flow="f", records=5))
    assert tuple(line)[:len(KEYS)] == KEYS and line["records"] == 5
    assert (line["level"], line["event"], line["topic"], line["partition"], line["flow"]) == (
        "warning", "gap", "orders", 3, "f")
    plain = json.loads(json_line("info", "hello"))
    assert plain["event"] == "message" and plain["partition"] is None and plain["source"] is None


def test_messages_in_json_are_one_object_per_line_and_never_interactive() -> None:
    class Terminal:
        lines: list[str] = []

        def write(self, text: str) -> None:
            self.lines.append(text)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return True

    err = Terminal()
    messages = Messages(err=err, log_format="json")
    assert messages.interactive is False
    messages.warn("careful", flow="f")
    messages.error("broken")
    first, second = (json.loads(text) for text in err.lines)
    assert (first["level"], first["message"], first["flow"]) == ("warning", "careful", "f")
    assert second["level"] == "error"
