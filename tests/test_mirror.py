"""`kmc mirror` against real sandbox clusters. Test data is produced, and every copy verified, with
confluent-kafka (librdkafka), which shares no code with kmc's copy path."""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)

from kmc import sandbox
from tests.helpers import (
    BASE_TIMESTAMP,
    ORIGIN,
    PLAN_KEYS,
    PLAN_TOPIC_KEYS,
    RESULT_KEYS,
    RESULT_TOPIC_KEYS,
    Rec,
    admin,
    assert_exact_copy,
    cluster_id,
    count,
    create_topic,
    kmc,
    log_batches,
    mirror_json,
    numbered,
    produce,
    produce_slowly,
    producer,
    read_all,
    topics_of,
    wait_for,
)

pytestmark = pytest.mark.kafka


# ------------------------------------------------------------------------------------ plan


def test_dry_run_prints_the_plan_and_changes_nothing(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(dst_cluster, topic_name, 3, {"retention.ms": "3600000"})
    produce(dst_cluster, topic_name, numbered(5, 3))
    before = topics_of(src_cluster)
    plan = mirror_json("dst", "src", "--topics", topic_name, "--dry-run")
    assert set(plan) == PLAN_KEYS
    assert plan["checkpoint_topic"] == {"name": "kmc.checkpoints", "exists": "kmc.checkpoints" in before}
    assert plan["acls"] is None and plan["permissions"]  # no authorizer: everything is granted
    assert {row["status"] for row in plan["permissions"]} == {"granted"}
    [topic] = plan["topics"]
    assert set(topic) == PLAN_TOPIC_KEYS
    assert topic == {"source_topic": topic_name, "target_topic": topic_name, "partitions": 3,
                     "target_partitions": None, "replication_factor": 1, "configs": {"retention.ms": "3600000"},
                     "config_drift": {}, "actions": ["create"]}
    assert plan["source_cluster_id"] == cluster_id(dst_cluster)
    assert topics_of(src_cluster) == before  # no topic created, not even kmc.checkpoints
    table = kmc("mirror", "dst", "src", "--topics", topic_name, "--dry-run")
    assert topic_name in table.stdout and "create" in table.stdout
    assert "dry run: nothing changed" in table.stderr
    assert topics_of(src_cluster) == before


def test_created_topics_get_partitions_and_configs_and_drift_is_synced(src_cluster, dst_cluster,  # noqa: ANN001
                                                                        topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 3, {"retention.ms": "3600000", "cleanup.policy": "compact",
                                              "min.insync.replicas": "1"})
    produce(src_cluster, topic_name, numbered(6, 3))
    result = mirror_json("src", "dst", "--topics", topic_name)
    assert result["changes"] == [f"created {topic_name} (3 partitions, replication factor 1)"]
    configs = _topic_configs(dst_cluster, topic_name)
    assert configs["retention.ms"] == "3600000" and configs["cleanup.policy"] == "compact"
    assert "min.insync.replicas" not in configs  # cluster-specific: never copied
    # the source gains a partition and changes a config
    admin(src_cluster).create_partitions([NewPartitions(topic_name, 4)])[topic_name].result(30)
    _alter(src_cluster, topic_name, {"retention.ms": "7200000", "cleanup.policy": "compact",
                                     "min.insync.replicas": "1"})
    produce(src_cluster, topic_name, [Rec(3, b"k", b"on-the-new-partition")])
    result = mirror_json("src", "dst", "--topics", topic_name)
    assert f"added partitions to {topic_name} (now 4)" in result["changes"]
    assert any("retention.ms" in warning and "--sync-configs" in warning for warning in result["warnings"])
    assert _topic_configs(dst_cluster, topic_name)["retention.ms"] == "3600000"  # drift reported, not fixed
    assert [r.value for r in read_all(dst_cluster, topic_name)[3]] == [b"on-the-new-partition"]
    result = mirror_json("src", "dst", "--topics", topic_name, "--sync-configs")
    assert result["changes"] == [f"synced configs of {topic_name} (retention.ms)"]
    # brokers apply a config change from the metadata log shortly after the controller accepts it
    wait_for(lambda: _topic_configs(dst_cluster, topic_name)["retention.ms"] == "7200000", 15, "the synced config")
    plan = mirror_json("src", "dst", "--topics", topic_name, "--dry-run")
    assert plan["topics"][0]["config_drift"] == {} and plan["topics"][0]["actions"] == []


@pytest.mark.parametrize(("args", "message"), [
    (["src", "dst", "--rename", "kmc.{topic}"], "reserved for kmc's internal topics"),
    (["src", "src"], "the same cluster"),
    (["src", "nowhere"], "unknown cluster 'nowhere'"),
    (["src", "dst", "--replication-factor", "3"], "has only 1 broker"),
])
def test_usage_errors_exit_2_and_change_nothing(src_cluster, dst_cluster, topic_name: str, args: list[str],  # noqa: ANN001
                                                message: str) -> None:
    create_topic(src_cluster, topic_name, 1)
    before = topics_of(dst_cluster)
    result = kmc("mirror", *args, "--topics", topic_name, expect=2)
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert topics_of(dst_cluster) == before


def _topic_configs(cluster, topic: str) -> dict[str, str]:  # noqa: ANN001
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin(cluster).describe_configs([resource])[resource].result(30)
    return {name: entry.value for name, entry in entries.items()
            if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value}


def _alter(cluster, topic: str, configs: dict[str, str]) -> None:  # noqa: ANN001
    entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in configs.items()]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    admin(cluster).incremental_alter_configs([resource])[resource].result(30)


# ------------------------------------------------------------------------------------ fidelity


def test_every_property_of_a_record_survives(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    records = [
        Rec(0, b"plain", b"value", [], BASE_TIMESTAMP + 1),
        Rec(0, None, b"null key", [("h", b"1")], BASE_TIMESTAMP + 2),
        Rec(0, b"tombstone", None, [], BASE_TIMESTAMP + 3),
        Rec(0, None, None, [("only", b"headers")], BASE_TIMESTAMP + 4),  # kafka-python's send() refuses this
        Rec(1, b"headers", b"v", [("a", b"1"), ("b", b"2"), ("a", b"3"), ("a", b"1"), ("empty", b"")],
            BASE_TIMESTAMP - 86_400_000),  # an old CreateTime, a day back
        Rec(1, b"", b"", [], BASE_TIMESTAMP + 6),  # empty (not null) key and value
        Rec(1, b"bin\x00\xff", bytes(range(256)) * 40, [("bin", b"\x00\xff")], BASE_TIMESTAMP + 7),
        Rec(2, b"k", b"x" * 300_000, [], BASE_TIMESTAMP + 8),  # a large value
    ] + [Rec(2, f"k{i}".encode(), f"v{i}".encode(), [("i", str(i).encode())], BASE_TIMESTAMP + 10 + i)
         for i in range(200)]
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, records)
    result = mirror_json("src", "dst", "--topics", topic_name)
    assert set(result) == RESULT_KEYS
    assert set(result["topics"][0]) == RESULT_TOPIC_KEYS
    # the source's own batches travel whole: bytes counts them as stored, and the target stores the same
    stored = sum(batch.size for p in range(3) for batch in log_batches(src_cluster, topic_name, p))
    assert result["topics"][0] == {"source_topic": topic_name, "target_topic": topic_name, "partitions": 3,
                                   "records": len(records), "bytes": stored, "skipped": 0, "redelivered": 0, "lag": 0,
                                   "gaps": 0}
    assert [(b.records, b.size, b.codec) for p in range(3) for b in log_batches(dst_cluster, topic_name, p)] == [
        (b.records, b.size, b.codec) for p in range(3) for b in log_batches(src_cluster, topic_name, p)]
    assert (result["mode"], result["complete"], result["flow"]) == ("once", True, "mirror")
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    assert_exact_copy(source, target)
    assert all(r.timestamp[0] == TIMESTAMP_CREATE_TIME for rs in target.values() for r in rs)
    assert target[0][3].key is None and target[0][3].value is None
    assert target[0][2].value is None and target[0][1].key is None


def test_every_compression_codec_is_read(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    codecs = ["gzip", "snappy", "lz4", "zstd"]
    create_topic(src_cluster, topic_name, len(codecs))
    for partition, codec in enumerate(codecs):
        produce(src_cluster, topic_name, [Rec(partition, f"{codec}-{i}".encode(), (codec * 50).encode(),
                                              [("codec", codec.encode())], BASE_TIMESTAMP + i) for i in range(50)],
                **{"compression.type": codec, "linger.ms": 50})
    result = mirror_json("src", "dst", "--topics", topic_name)
    assert result["records"] == 200
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def test_aborted_transactions_never_arrive(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 2)
    txn = producer(src_cluster, **{"transactional.id": f"tx-{topic_name}"})
    txn.init_transactions(30)
    for label, commit in (("first", True), ("aborted", False), ("last", True)):
        txn.begin_transaction()
        for i in range(6):
            txn.produce(topic_name, key=f"{label}-{i}".encode(), value=label.encode(), partition=i % 2)
        txn.flush(30)
        if commit:
            txn.commit_transaction(30)
        else:
            txn.abort_transaction(30)
    # the source ends with a commit marker: --once must still see its partitions as finished
    result = mirror_json("src", "dst", "--topics", topic_name)
    assert result["records"] == 12 and result["complete"]
    target = read_all(dst_cluster, topic_name)
    for partition in (0, 1):
        assert [r.value for r in target[partition]] == [b"first"] * 3 + [b"last"] * 3
        assert [r.offset for r in target[partition]] == list(range(6))  # no markers, no gaps
    assert mirror_json("src", "dst", "--topics", topic_name)["records"] == 0


# ------------------------------------------------------------------------------------ checkpoints


def test_once_is_idempotent_and_resumes_exactly_from_checkpoints(src_cluster, dst_cluster,  # noqa: ANN001
                                                                 topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 4)
    produce(src_cluster, topic_name, numbered(100, 4))
    assert mirror_json("src", "dst", "--topics", topic_name)["records"] == 100
    again = mirror_json("src", "dst", "--topics", topic_name)
    assert (again["records"], again["redelivered"], again["changes"]) == (0, 0, [])
    assert count(dst_cluster, topic_name) == 100
    produce(src_cluster, topic_name, numbered(50, 4, start=100))
    assert mirror_json("src", "dst", "--topics", topic_name)["records"] == 50
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    assert_exact_copy(source, target)  # each record exactly once, in order
    # the checkpoints, as a foreign reader sees them
    checkpoints = {r.key.decode(): json.loads(r.value) for rs in read_all(dst_cluster, "kmc.checkpoints").values()
                   for r in rs if r.key.decode().startswith(f"mirror/{cluster_id(src_cluster)}/{topic_name}/")}
    latest = {key: value for key, value in checkpoints.items()}  # the last value per key wins
    assert sorted(latest) == [f"mirror/{cluster_id(src_cluster)}/{topic_name}/{p}" for p in range(4)]
    for partition in range(4):
        value = latest[f"mirror/{cluster_id(src_cluster)}/{topic_name}/{partition}"]
        assert set(value) == {"next_offset", "target_topic", "target_next_offset", "updated_ms", "source_topic_id",
                              "target_topic_id"}
        assert value["next_offset"] == len(source[partition]) == 150 // 4 + (partition < 2)
        assert value["target_next_offset"] == len(target[partition])
        assert value["target_topic"] == topic_name
    # Kafka's topic ids, one per topic: a topic recreated under the mirror is told from the one copied
    assert len({(value["source_topic_id"], value["target_topic_id"]) for value in latest.values()}) == 1
    assert len({value["source_topic_id"], value["target_topic_id"]}) == 2


def test_from_latest_and_from_a_timestamp_apply_only_without_a_checkpoint(src_cluster, dst_cluster,  # noqa: ANN001
                                                                          topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, [Rec(0, None, f"old-{i}".encode(), [], BASE_TIMESTAMP + i * 1000)
                                      for i in range(10)])
    latest = mirror_json("src", "dst", "--topics", topic_name, "--from", "latest", "--flow", "latest")
    assert latest["records"] == 0
    produce(src_cluster, topic_name, [Rec(0, None, b"new", [], BASE_TIMESTAMP + 20_000)])
    assert mirror_json("src", "dst", "--topics", topic_name, "--from", "latest", "--flow", "latest")["records"] == 1
    assert [r.value for r in read_all(dst_cluster, topic_name)[0]] == [b"new"]
    # another flow into another topic, from the 7th record's timestamp (ISO-8601)
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((BASE_TIMESTAMP + 7000) / 1000))
    millis = (BASE_TIMESTAMP + 7000) % 1000
    since = mirror_json("src", "dst", "--topics", topic_name, "--rename", "{topic}.since", "--flow", "since",
                        "--from", f"{moment}.{millis:03d}+00:00")
    assert since["records"] == 4
    assert [r.value for r in read_all(dst_cluster, f"{topic_name}.since")[0]] == [b"old-7", b"old-8", b"old-9",
                                                                                 b"new"]
    # --from is ignored where a checkpoint exists
    assert mirror_json("src", "dst", "--topics", topic_name, "--rename", "{topic}.since", "--flow", "since",
                       "--from", "earliest")["records"] == 0


def test_a_second_copy_under_the_same_flow_name_is_refused_until_the_first_is_gone(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str) -> None:
    """Found by trying the README as a new user: two copies of the same topics under two renames and one flow
    name took each other's checkpoints for foreign ones, so each run copied everything again (2,100 records
    became 4,200) and their offset maps mixed."""
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(10, 2))
    first = mirror_json("src", "dst", "--topics", topic_name, "--rename", "{source}.{topic}", "--flow", "renamed")
    assert first["topics"][0]["target_topic"] == f"src.{topic_name}" and first["records"] == 10
    refused = kmc("mirror", "src", "dst", "--topics", topic_name, "--rename", "{topic}.b", "--flow", "renamed",
                  "--once", expect=2)
    assert refused.stderr.count("\n") == 1
    assert f"already copies src's {topic_name} to src.{topic_name}" in refused.stderr
    assert "--flow NAME" in refused.stderr and "Traceback" not in refused.stderr
    assert f"{topic_name}.b" not in topics_of(dst_cluster)  # refused before the target changed
    # the first copy's own runs go on from its checkpoints, copying nothing again
    assert mirror_json("src", "dst", "--topics", topic_name, "--rename", "{source}.{topic}",
                       "--flow", "renamed")["records"] == 0
    # a flow name of its own: a copy of its own
    own = mirror_json("src", "dst", "--topics", topic_name, "--rename", "{topic}.b", "--flow", "renamed-b")
    assert own["records"] == 10 and count(dst_cluster, f"{topic_name}.b") == 10
    # once the first copy's topic is gone (renamed on purpose), the new name starts afresh, said once
    admin(dst_cluster).delete_topics([f"src.{topic_name}"])[f"src.{topic_name}"].result(30)
    wait_for(lambda: f"src.{topic_name}" not in topics_of(dst_cluster), 30, "the topic to be deleted")
    moved = mirror_json("src", "dst", "--topics", topic_name, "--rename", "{topic}.c", "--flow", "renamed")
    assert moved["records"] == 10 and count(dst_cluster, f"{topic_name}.c") == 10
    assert [w for w in moved["warnings"] if "which is gone" in w] == [
        f"{topic_name}: its checkpoints are for src.{topic_name}, which is gone; copying to {topic_name}.c "
        "from the start"]


# ------------------------------------------------------------------------------------ follow


def test_follow_picks_up_new_topics_and_partitions_holds_its_lock_and_stops_on_signals(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str, followers) -> None:
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(20, 2))
    selection = ["src", "dst", "--topics", f"{topic_name}(-.*)?", "--refresh", "1", "-o", "json"]
    follower = followers(*selection)
    wait_for(lambda: count(dst_cluster, topic_name) == 20, 60, "the first records", follower)
    # the lock: a second run of the same mirror exits 75 and changes nothing
    locked = kmc("mirror", *selection[:-2], "--once", expect=75)
    assert "another run holds the lock" in locked.stderr
    # new records, a new matching topic and a new partition are all picked up
    produce(src_cluster, topic_name, numbered(10, 2, start=20))
    create_topic(src_cluster, f"{topic_name}-new", 2)
    produce(src_cluster, f"{topic_name}-new", numbered(8, 2))
    admin(src_cluster).create_partitions([NewPartitions(topic_name, 3)])[topic_name].result(30)
    produce(src_cluster, topic_name, [Rec(2, b"p2", b"on-partition-2")])
    wait_for(lambda: count(dst_cluster, f"{topic_name}-new") == 8, 60, "the new topic", follower)
    wait_for(lambda: count(dst_cluster, topic_name) == 31, 60, "the new records and partition", follower)
    follower.ensure_running()
    assert follower.stop(signal.SIGTERM) == 0
    result = json.loads(follower.stdout)
    assert set(result) == RESULT_KEYS and result["mode"] == "follow" and not result["complete"]
    assert {t["source_topic"]: t["records"] for t in result["topics"]} == {topic_name: 31, f"{topic_name}-new": 8}
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))
    # SIGINT: a clean stop too, exit 130, everything copied so far checkpointed
    follower = followers(*selection)
    produce(src_cluster, topic_name, numbered(5, 3, start=40))
    wait_for(lambda: count(dst_cluster, topic_name) == 36, 60, "the records after the restart", follower)
    time.sleep(1.5)  # a checkpoint interval
    assert follower.stop(signal.SIGINT) == 130
    assert "interrupted" in follower.stderr
    assert json.loads(follower.stdout)["records"] == 5
    assert mirror_json(*selection[:-2], "--once")["records"] == 0


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_counts_what_it_repeats(src_cluster, dst_cluster,  # noqa: ANN001
                                                                           topic_name: str, followers) -> None:
    partitions, total = 3, 9000
    create_topic(src_cluster, topic_name, partitions)
    produced = produce_slowly(src_cluster, topic_name, total, partitions)
    rng = random.Random(5)
    stderr = []
    # The middle run checkpoints rarely, so it certainly dies with copied records after its checkpoint.
    for interval in ("0.3", "30", "1"):
        before = count(dst_cluster, topic_name)
        follower = followers("src", "dst", "--topics", topic_name, "--checkpoint-interval", interval)
        wait_for(lambda before=before: count(dst_cluster, topic_name) > before, 60, "copying to start", follower)
        time.sleep(rng.uniform(0.3, 2.0))
        follower.ensure_running()
        follower.kill()
        stderr.append(follower.stderr)
    assert produced.wait(120)
    final = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", "-o", "json")
    stderr.append(final.stderr)
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    duplicates = 0
    for partition in range(partitions):
        wanted = [r.value for r in source[partition]]
        got = [r.value for r in target[partition]]
        index_of = {value: index for index, value in enumerate(wanted)}
        positions = [index_of[value] for value in got]  # every copied record is a source record
        # in order, except for restarts from an earlier point (a checkpoint): a repeat is a contiguous run
        for before, after in zip(positions, positions[1:], strict=False):
            assert after == before + 1 or after <= before, f"partition {partition}: {before} then {after}"
        assert sorted(set(positions)) == list(range(len(wanted))), f"partition {partition}: records lost"
        duplicates += len(got) - len(wanted)
    reported = sum(int(n) for text in stderr for n in re.findall(r"resuming \S+: (\d+) records", text))
    assert duplicates > 0 and reported == duplicates
    assert final.json()["redelivered"] == int((re.findall(r"resuming \S+: (\d+) records", final.stderr) or [0])[0])


def test_two_way_mirror_does_not_loop(src_cluster, dst_cluster, topic_name: str, followers) -> None:  # noqa: ANN001
    for cluster, name in ((src_cluster, "a"), (dst_cluster, "b")):
        create_topic(cluster, topic_name, 2)
        produce(cluster, topic_name, numbered(30, 2, prefix=name))
    forth = followers("src", "dst", "--topics", topic_name, "-o", "json", "--flow", "a-to-b")
    back = followers("dst", "src", "--topics", topic_name, "-o", "json", "--flow", "b-to-a")
    wait_for(lambda: count(dst_cluster, topic_name) == 60 and count(src_cluster, topic_name) == 60, 60,
             "both sides to have both sides' records", forth, back)
    time.sleep(3)  # long enough for a loop to show
    assert count(dst_cluster, topic_name) == 60 and count(src_cluster, topic_name) == 60
    assert forth.stop() == 0 and back.stop() == 0
    forth_result, back_result = json.loads(forth.stdout), json.loads(back.stdout)
    assert (forth_result["records"], back_result["records"]) == (30, 30)
    # each side's copies of the other side's records, seen on their way back
    assert (forth_result["skipped"], back_result["skipped"]) == (30, 30)
    a_id, b_id = cluster_id(src_cluster), cluster_id(dst_cluster)
    for cluster in (src_cluster, dst_cluster):
        for records in read_all(cluster, topic_name).values():
            for record in records:
                origins = [value for name, value in record.headers if name == ORIGIN]
                expected = a_id if record.value.startswith(b"a-") else b_id
                assert origins in ([], [expected.encode()])  # the original has none, a copy its first cluster


@pytest.mark.slow
def test_broker_restarts_during_follow_lose_nothing(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                    followers) -> None:
    """The target's only broker stops for longer than the delivery timeout (so sends fail for good and kmc
    rewinds to what was acknowledged), then the source's only broker restarts; records keep arriving."""
    partitions = 2
    create_topic(src_cluster, topic_name, partitions)
    produce(src_cluster, topic_name, numbered(100, partitions))
    follower = followers("src", "dst", "--topics", topic_name, "--delivery-timeout", "3", "--checkpoint-interval",
                         "0.5", "-o", "json")
    wait_for(lambda: count(dst_cluster, topic_name) == 100, 60, "the first records", follower)
    sandbox.stop_broker(dst_cluster.name, 1)
    try:
        produce(src_cluster, topic_name, numbered(100, partitions, start=100))
        time.sleep(6)  # twice the delivery timeout
        follower.ensure_running()
    finally:
        sandbox.start_broker(dst_cluster.name, 1)
    wait_for(lambda: count(dst_cluster, topic_name) >= 200, 90, "the records sent while the target was down", follower)
    sandbox.stop_broker(src_cluster.name, 1)
    try:
        time.sleep(2)
        follower.ensure_running()
    finally:
        sandbox.start_broker(src_cluster.name, 1)
    produce(src_cluster, topic_name, numbered(100, partitions, start=200))
    wait_for(lambda: count(dst_cluster, topic_name) >= 300, 90, "the records after the source restart", follower)
    assert follower.stop() == 0
    assert "resending from the last acknowledged offsets" in follower.stderr  # the delivery timeout passed
    result = json.loads(follower.stdout)
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    duplicates = 0
    for partition in range(partitions):
        wanted = [r.value for r in source[partition]]
        got = [r.value for r in target[partition]]
        first_seen = list(dict.fromkeys(got))
        assert first_seen == wanted, f"partition {partition}: lost or reordered"
        duplicates += len(got) - len(wanted)
    assert (result["records"], result["redelivered"]) == (300, duplicates)


def _leader(cluster, topic: str, partition: int) -> int:  # noqa: ANN001
    return admin(cluster).list_topics(topic, timeout=30).topics[topic].partitions[partition].leader


def _fully_replicated(cluster) -> bool:  # noqa: ANN001
    """Every partition of every topic has all its replicas in sync (a restarted broker caught up)."""
    topics = admin(cluster).list_topics(timeout=30).topics.values()
    return all(len(p.isrs) == len(p.replicas) for t in topics for p in t.partitions.values())


# The three-broker sandbox is the target (its topic's leader stops: kmc's producer must follow the new
# leader), then the source (kmc's consumer must follow it). Topics on trio get RF 3, the target one through
# --replication-factor 3: with RF 1 (the default for an RF-1 source) a stopped leader only makes a partition
# offline until the restart, which the single-broker test above already covers; RF 3 with min.insync.replicas 2
# keeps every partition writable with one broker down, so this tests the leader fail-over a real cluster has.
@pytest.mark.parametrize(("source", "target", "options"), [
    ("src", "trio", ("--replication-factor", "3")),
    ("trio", "dst", ()),
], ids=["target-leader", "source-leader"])
@pytest.mark.slow
def test_a_leader_restart_in_a_three_broker_cluster_during_follow_loses_nothing(  # noqa: ANN001
        src_cluster, dst_cluster, three_broker_cluster, topic_name: str, followers, source: str, target: str,
        options: tuple[str, ...]) -> None:
    clusters = {c.name: c for c in (src_cluster, dst_cluster, three_broker_cluster)}
    source_cluster, target_cluster = clusters[source], clusters[target]
    trio = three_broker_cluster.name
    partitions = 3
    replication = 3 if source == trio else 1
    admin(source_cluster).create_topics([NewTopic(topic_name, partitions, replication)])[topic_name].result(30)
    stop_writing, unflushed = threading.Event(), []

    def produce_until_stopped() -> None:  # records keep arriving before, while and after the broker is down
        client = producer(source_cluster)
        start = 0
        while not stop_writing.is_set():
            for record in numbered(30, partitions, start=start):
                client.produce(topic_name, key=record.key, value=record.value, partition=record.partition,
                               headers=record.headers, timestamp=record.timestamp)
            start += 30
            client.flush(30)
            time.sleep(0.05)
        unflushed.append(client.flush(30))

    writer = threading.Thread(target=produce_until_stopped, daemon=True)
    writer.start()
    try:
        follower = followers(source, target, "--topics", topic_name, *options, "--checkpoint-interval", "0.5",
                             "-o", "json")
        wait_for(lambda: count(target_cluster, topic_name) > 0, 60, "the first records", follower)
        leader = _leader(three_broker_cluster, topic_name, 0)
        sandbox.stop_broker(trio, leader)
        try:
            before, down_since = count(target_cluster, topic_name), time.monotonic()
            wait_for(lambda: count(target_cluster, topic_name) > before + 300, 30,
                     f"records copied while broker {leader} of {trio} is down", follower)
            time.sleep(max(0.0, 3 - (time.monotonic() - down_since)))
            follower.ensure_running()
        finally:
            sandbox.start_broker(trio, leader)
        time.sleep(2)  # and some more records after the restart
    finally:
        stop_writing.set()
        writer.join(60)
    assert unflushed == [0]
    wanted = {p: [r.value for r in records] for p, records in read_all(source_cluster, topic_name).items()}

    def all_arrived() -> bool:
        got = read_all(target_cluster, topic_name)
        return all({r.value for r in got[p]} >= set(values) for p, values in wanted.items())

    wait_for(all_arrived, 60, "every source record", follower)
    assert follower.stop() == 0
    result = json.loads(follower.stdout)
    copied = read_all(target_cluster, topic_name)
    duplicates = 0
    for partition in range(partitions):
        got = [r.value for r in copied[partition]]
        assert list(dict.fromkeys(got)) == wanted[partition], f"partition {partition}: lost or reordered"
        duplicates += len(got) - len(wanted[partition])
    total = sum(len(values) for values in wanted.values())
    assert (result["records"], result["redelivered"]) == (total, duplicates)
    wait_for(lambda: _fully_replicated(three_broker_cluster), 60, f"broker {leader} of {trio} to catch up")
