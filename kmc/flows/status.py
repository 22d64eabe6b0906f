"""``kmc flow status``: how far each flow is behind, per source and topic, from its checkpoints in the
target. Reads only. Library code: no printing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.admin import OffsetSpec

from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import KmcError
from kmc.flows.jobs import flow_clusters, flow_spec
from kmc.metadata import compile_patterns, describe_topics, list_offsets, render_topic_name
from kmc.mirror import CHECKPOINT_TOPIC, Checkpoint, CheckpointStore
from kmc.profiles import Cluster, Config, Flow

STATUS_KEYS = ("flow", "source", "target", "source_topic", "target_topic", "partitions", "checkpointed_partitions",
               "records_behind", "seconds_behind", "oldest_uncopied_ms", "checkpoint_ms", "gaps", "position", "error")


@dataclass
class FlowStatus:
    rows: list[dict[str, Any]]  # keys: STATUS_KEYS
    sources: int  # (flow, source) pairs asked
    errors: list[KmcError] = field(default_factory=list)  # one per pair that could not be asked


def flow_status(config: Config, flows: Sequence[Flow], timeout: float = DEFAULT_TIMEOUT,
                now_ms: int | None = None) -> FlowStatus:
    """Per flow, source and source topic: how far the copy is behind, from the checkpoints in the target.

    ``records_behind`` is the source's end offset (last stable offset) minus the checkpoint's next offset,
    summed over partitions (a partition without a checkpoint counts from its earliest offset);
    ``seconds_behind`` is now minus the timestamp of the oldest record not copied yet (0 when caught up),
    the largest over the partitions. A source or target that cannot be asked gives one row with ``error``.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    work: list[tuple[Flow, Cluster, Cluster]] = []
    for flow in flows:
        sources, target = flow_clusters(config, flow)
        work.extend((flow, source, target) for source in sources)

    def one(item: tuple[Flow, Cluster, Cluster]) -> tuple[list[dict[str, Any]], KmcError | None]:
        flow, source, target = item
        try:
            return _source_status(flow, source, target, timeout, now_ms), None
        except KmcError as exc:
            return [dict.fromkeys(STATUS_KEYS) | {"flow": flow.name, "source": source.name, "target": target.name,
                                                  "error": exc.one_line()}], exc

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(work)))) as pool:
        answers = list(pool.map(one, work))
    return FlowStatus([row for rows, _ in answers for row in rows], len(work),
                      [error for _, error in answers if error is not None])


def _source_status(flow: Flow, source: Cluster, target: Cluster, timeout: float, now_ms: int) -> list[dict[str, Any]]:
    spec = flow_spec(flow)
    include, exclude = compile_patterns(spec.topics, "topics"), compile_patterns(spec.exclude, "exclude")
    with KafkaSession(source, timeout) as source_session, KafkaSession(target, timeout) as target_session:
        source_id = source_session.cluster_id()
        topics = describe_topics(source_session, include, exclude, with_offsets=False)
        with translate_errors(target, "list topics"):
            has_checkpoints = CHECKPOINT_TOPIC in set(target_session.admin.list_topics())
        # load() only when the topic exists: asking a consumer about a missing topic may auto-create it
        checkpoints = CheckpointStore(target_session, flow.name, source_id).load() if has_checkpoints else {}
        # offline partitions (no leader) cannot be asked for offsets: they count as not behind
        tps = [TopicPartition(topic.name, part.partition) for topic in topics for part in topic.partitions
               if part.online]
        earliest, latest = _offsets(source_session, tps)
        positions: dict[TopicPartition, int] = {}
        for tp in tps:
            checkpoint = checkpoints.get((tp.topic, tp.partition))
            start = earliest.get(tp, 0)
            positions[tp] = max(start, checkpoint.next_offset) if checkpoint is not None else start
        behind = {tp: max(0, latest.get(tp, 0) - positions[tp]) for tp in tps}
        oldest = _first_timestamps(source_session, {tp: positions[tp] for tp in tps if behind[tp] > 0}, timeout)
    rows = []
    for topic in topics:
        parts = [TopicPartition(topic.name, part.partition) for part in topic.partitions]
        found: list[Checkpoint] = [checkpoints[(tp.topic, tp.partition)] for tp in parts
                                   if (tp.topic, tp.partition) in checkpoints]
        stamps = [oldest[tp] for tp in parts if tp in oldest]
        lagging = any(behind.get(tp) for tp in parts)
        oldest_ms = min(stamps) if stamps else None
        rows.append({
            "flow": flow.name, "source": source.name, "target": target.name,
            "source_topic": topic.name, "target_topic": render_topic_name(flow.rename, topic.name, source.name),
            "partitions": len(parts), "checkpointed_partitions": len(found),
            "records_behind": sum(behind.get(tp, 0) for tp in parts),
            "seconds_behind": (0.0 if not lagging else
                               None if oldest_ms is None else round(max(0, now_ms - oldest_ms) / 1000, 3)),
            "oldest_uncopied_ms": oldest_ms,
            "checkpoint_ms": max((checkpoint.updated_ms for checkpoint in found), default=None),
            # data gaps recorded in the checkpoints (the most recent ones per partition; docs/mirror.md)
            "gaps": sum(len(checkpoint.gaps) for checkpoint in found),
            # the next offsets to copy, summed: what `--watch` turns into records/s between two looks
            "position": sum(positions.get(tp, 0) for tp in parts),
            "error": None,
        })
    return rows


def _offsets(session: KafkaSession, tps: Sequence[TopicPartition]) -> tuple[dict[TopicPartition, int],
                                                                              dict[TopicPartition, int]]:
    """Earliest offsets, and the last stable offsets (what a read_committed mirror copies up to)."""
    return (list_offsets(session, dict.fromkeys(tps, OffsetSpec.EARLIEST)),
            list_offsets(session, dict.fromkeys(tps, OffsetSpec.LATEST), "read_committed"))


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
