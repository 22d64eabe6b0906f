"""`kmc mirror --workers N`: one mirror's partitions sharded over N processes, against real sandboxes.
Data is produced and every copy verified with confluent-kafka (the helpers of tests/helpers.py)."""

from __future__ import annotations

import json
import signal

import pytest

from kmc.mirror import MirrorResult, MirrorSpec, TopicResult, hold_lock, mirror_identity
from kmc.mirror.runner import merge_results
from tests.helpers import (
    RESULT_KEYS,
    RESULT_TOPIC_KEYS,
    assert_exact_copy,
    cluster_id,
    count,
    create_topic,
    kmc,
    mirror_json,
    numbered,
    produce,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.kafka


def test_two_workers_copy_every_partition_exactly_once_in_the_single_worker_shape(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 6)
    produce(src_cluster, topic_name, numbered(120, 6))
    sharded = mirror_json("src", "dst", "--topics", topic_name, "--workers", "2")
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    assert_exact_copy(source, target)  # every record, per-partition order, headers
    assert sum(len(records) for records in target.values()) == 120
    # the same document as one worker's: same keys, and the topic's counts summed over the workers
    single = mirror_json("src", "dst", "--topics", topic_name, "--rename", "{topic}.one", "--flow", "one")
    assert set(sharded) == set(single) == RESULT_KEYS
    assert [set(topic) for topic in sharded["topics"]] == [set(topic) for topic in single["topics"]] \
        == [RESULT_TOPIC_KEYS]
    for key in ("records", "bytes", "skipped", "redelivered", "complete", "mode"):
        assert sharded[key] == single[key], key
    [topic] = sharded["topics"]
    assert (topic["partitions"], topic["records"], topic["lag"]) == (6, 120, 0)
    assert topic["bytes"] == single["topics"][0]["bytes"] > 0
    assert sharded["changes"] == [f"created {topic_name} (6 partitions, replication factor 1)"]  # said once
    # a second run copies nothing: each worker resumed from its partitions' checkpoints
    again = mirror_json("src", "dst", "--topics", topic_name, "--workers", "2")
    assert (again["records"], again["redelivered"], again["changes"], again["complete"]) == (0, 0, [], True)
    produce(src_cluster, topic_name, numbered(30, 6, start=120))
    assert mirror_json("src", "dst", "--topics", topic_name, "--workers", "3")["records"] == 30
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def test_the_run_holds_the_unsharded_lock(src_cluster, dst_cluster, topic_name: str, followers) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(40, 2))
    selection = ["src", "dst", "--topics", topic_name]
    # an unsharded run holds the lock: a sharded one exits 75 and copies nothing
    identity = mirror_identity(cluster_id(src_cluster), cluster_id(dst_cluster), MirrorSpec(topics=(topic_name,)))
    with hold_lock(identity, "test"):
        locked = kmc("mirror", *selection, "--once", "--workers", "2", expect=75)
    assert "another run holds the lock" in locked.stderr
    assert count(dst_cluster, topic_name) == 0
    # a sharded run holds it: an unsharded run, and a run with another number of workers, exit 75
    # (3 workers for 2 partitions: the third follows with nothing to copy)
    follower = followers(*selection, "--workers", "3", "-o", "json", "--refresh", "1")
    wait_for(lambda: count(dst_cluster, topic_name) == 40, 60, "the records", follower)
    assert "another run holds the lock" in kmc("mirror", *selection, "--once", expect=75).stderr
    kmc("mirror", *selection, "--once", "--workers", "2", expect=75)
    produce(src_cluster, topic_name, numbered(10, 2, start=40))
    wait_for(lambda: count(dst_cluster, topic_name) == 50, 60, "the records produced while following", follower)
    follower.ensure_running()
    assert follower.stop(signal.SIGTERM) == 0
    result = json.loads(follower.stdout)
    assert set(result) == RESULT_KEYS and result["mode"] == "follow" and result["records"] == 50
    assert [topic["records"] for topic in result["topics"]] == [50]
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def test_merged_results_sum_per_topic_and_an_unknown_lag_stays_unknown() -> None:
    def result(shard: int, records: int, lag: int | None, warnings: list[str]) -> MirrorResult:
        topics = [TopicResult("a", "a", 4, records, records * 10, 1, shard, lag)]
        if shard == 0:
            topics.append(TopicResult("b", "b", 1, 5, 50, 0, 0, 0))  # one partition: only shard 0 has it
        return MirrorResult("mirror", "src", "dst", "S", "D", "follow", False, 1.0, topics, ["created a"], warnings)

    merged = merge_results([result(0, 7, 3, ["w1"]), result(1, 2, None, ["w1", "w2"])], 2.5)
    assert [topic.to_dict() for topic in merged.topics] == [
        {"source_topic": "a", "target_topic": "a", "partitions": 4, "records": 9, "bytes": 90, "skipped": 2,
         "redelivered": 1, "lag": None, "gaps": 0},
        {"source_topic": "b", "target_topic": "b", "partitions": 1, "records": 5, "bytes": 50, "skipped": 0,
         "redelivered": 0, "lag": 0, "gaps": 0}]
    assert (merged.records, merged.changes, merged.warnings, merged.elapsed) == (14, ["created a"], ["w1", "w2"], 2.5)


def test_workers_must_be_at_least_one(src_cluster, dst_cluster) -> None:  # noqa: ANN001, ARG001
    assert "--workers" in kmc("mirror", "src", "dst", "--workers", "0", expect=2).stderr
