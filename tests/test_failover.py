"""Consumer-group failover and failback (`kmc groups translate`, `kmc mirror --sync-groups`), against real
sandbox clusters, verified with confluent-kafka.

Each test has a consumer group consume part of the source's topics and commit, mirrors, translates, and then
has a consumer with the same group id on the target read to the end: it must receive exactly the records
the group had not consumed on the source (none lost: every record the source still holds at or after the
group's offset arrives; none repeated: no record the group consumed arrives again). Records are told apart
by their values, which are unique in every test.
"""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import Consumer

from tests.helpers import (
    BASE_TIMESTAMP,
    Got,
    Rec,
    bootstrap,
    commit,
    committed_offsets,
    consume_as_group,
    count,
    create_topic,
    delete_records,
    failover_counts,
    kmc,
    mirror_json,
    numbered,
    produce,
    produce_slowly,
    producer,
    read_all,
    receive_as_group,
    wait_for,
    without_origin,
)

pytestmark = pytest.mark.kafka

TRANSLATE_KEYS = {"source", "target", "flow", "source_cluster_id", "target_cluster_id", "commit", "committed",
                  "groups"}
GROUP_KEYS = {"group", "target_state", "target_members", "refused", "partitions"}
PARTITION_KEYS = {"source_topic", "partition", "source_offset", "behind", "target_topic", "target_offset", "status",
                  "previous_target_offset", "committed"}


def translate(*args: str, expect: int = 0) -> dict:
    return kmc("groups", "translate", *args, "-o", "json", expect=expect).json()


def statuses(document: dict) -> dict[tuple[str, str, int], str]:
    return {(group["group"], partition["source_topic"], partition["partition"]): partition["status"]
            for group in document["groups"] for partition in group["partitions"]}


def lost_and_repeated(source, target, group: str, consumed: dict[str, dict[int, list[Got]]],  # noqa: ANN001
                      renamed: dict[str, str] | None = None, in_order: bool = True) -> tuple[int, int]:
    """Have ``group`` read the target to the end; count the records it lost (records the source holds at or
    after the group's committed offset that did not arrive) and repeated (records it had consumed on the
    source that arrived again, or that arrived twice). ``in_order``: also assert that it received exactly
    the source's records from its offset on, in order (not with a source compacted after the copy, whose
    target keeps the older values)."""
    renamed = renamed or {topic: topic for topic in consumed}
    received = receive_as_group(target, group, sorted(renamed.values()))
    lost = repeated = 0
    for topic, by_partition in consumed.items():
        offsets = committed_offsets(source, group, topic)
        now = read_all(source, topic)
        for partition, records in now.items():
            got = received[(renamed[topic], partition)]
            counts = failover_counts(records, offsets[partition],
                                     {record.value for record in by_partition.get(partition, [])}, got)
            lost, repeated = lost + counts[0], repeated + counts[1]
            if in_order:
                expected = [record for record in records if record.offset >= offsets[partition]]
                assert [without_origin(r) for r in got] == [without_origin(r) for r in expected], \
                    f"{topic}[{partition}]"
    return lost, repeated


def distinct(count: int, partitions: int, keys: int | None = None, start: int = 0, prefix: str = "v") -> list[Rec]:
    """Records with unique values ``<prefix>-<index>``; keys ``k<index % keys>`` (repeated keys for compaction)."""
    return [Rec(index % partitions, f"k{index % keys if keys else index}".encode(), f"{prefix}-{index}".encode(),
                [], BASE_TIMESTAMP + index) for index in range(start, start + count)]


# ------------------------------------------------------------------------------------ translate


def test_translate_plain_topics(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    a, b = f"{topic_name}-a", f"{topic_name}-b"
    create_topic(src_cluster, a, 3)
    create_topic(src_cluster, b, 2)
    produce(src_cluster, a, numbered(900, 3))
    produce(src_cluster, b, numbered(400, 2, prefix="b"))
    group, other = f"g-{topic_name}", f"h-{topic_name}"
    consumed = {a: consume_as_group(src_cluster, group, a, {0: 100, 1: 300, 2: 0}),
                b: consume_as_group(src_cluster, group, b, {0: 199, 1: 1})}
    commit(src_cluster, group, {(a, 2): 0})  # subscribed, nothing consumed yet
    consume_as_group(src_cluster, other, a, {0: 50, 1: 50, 2: 50})
    mirror_json("src", "dst", "--topics", f"{topic_name}-.*")

    # without --commit nothing changes on the target
    document = translate("src", "dst", "--group", f"[gh]-{topic_name}")
    assert set(document) == TRANSLATE_KEYS and document["commit"] is False and document["committed"] == 0
    assert [group_doc["group"] for group_doc in document["groups"]] == [group, other]
    assert all(set(group_doc) == GROUP_KEYS for group_doc in document["groups"])
    rows = {(row["source_topic"], row["partition"]): row for row in document["groups"][0]["partitions"]}
    assert all(set(row) == PARTITION_KEYS for row in rows.values())
    assert {(key, row["source_offset"], row["target_offset"], row["behind"], row["status"])
            for key, row in rows.items()} == {
        ((a, 0), 100, 100, 200, "exact"), ((a, 1), 300, 300, 0, "exact"), ((a, 2), 0, 0, 300, "exact"),
        ((b, 0), 199, 199, 1, "exact"), ((b, 1), 1, 1, 199, "exact")}
    assert committed_offsets(dst_cluster, group, a) == {}

    document = translate("src", "dst", "--group", group, "--commit")
    assert document["committed"] == 5 and document["groups"][0]["refused"] is None
    assert committed_offsets(dst_cluster, group, a) == {0: 100, 1: 300, 2: 0}
    assert committed_offsets(dst_cluster, other, a) == {}  # not selected by --group
    assert lost_and_repeated(src_cluster, dst_cluster, group, consumed) == (0, 0)

    # --topics narrows the partitions; the table and csv carry the same rows
    table = kmc("groups", "translate", "src", "dst", "--group", group, "--topics", b).stdout
    assert "GROUP" in table and a not in table and table.count(b) == 4  # two rows: source and target topic
    csv_lines = kmc("groups", "translate", "src", "dst", "--group", group, "-o", "csv").stdout.splitlines()
    assert len(csv_lines) == 6


def test_translate_compacted_source_with_gaps(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """Gaps compacted away before the copy, and records compacted away at the source after they were copied
    (the target, not compacted, still has them): both translate exactly."""
    compact = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
               "min.compaction.lag.ms": "0", "delete.retention.ms": "100"}
    create_topic(src_cluster, topic_name, 2, compact)
    create_topic(dst_cluster, topic_name, 2)  # the target keeps what it got: only the source compacts

    def records_below(end: int) -> list[int]:
        return [sum(1 for r in records if r.offset < end) for records in read_all(src_cluster, topic_name).values()]

    def roll(round_index: int) -> None:
        """A record in a new segment, so the segment before can be cleaned: the broker rolls by record time,
        once a record is segment.ms newer than the segment's first."""
        produce(src_cluster, topic_name, [Rec(p, f"roll-{p}".encode(), f"roll-{round_index}-{p}".encode(), [],
                                              int(time.time() * 1000)) for p in (0, 1)])

    produce(src_cluster, topic_name, distinct(400, 2, keys=40))  # 10 values per key
    roll(0)
    wait_for(lambda: max(records_below(200)) < 200, 90, "the source's first compaction")
    mirror_json("src", "dst", "--topics", topic_name)  # copies the compacted log, gaps and all
    produce(src_cluster, topic_name, distinct(400, 2, keys=40, start=400))
    roll(1)
    mirror_json("src", "dst", "--topics", topic_name)  # copies these before the source compacts them
    wait_for(lambda: max(records_below(402)) < 100, 90, "the source's second compaction")
    group = f"g-{topic_name}"
    consumed = {topic_name: consume_as_group(src_cluster, group, topic_name, {0: 10, 1: 15})}
    document = translate("src", "dst", "--group", group, "--commit")
    assert set(statuses(document).values()) == {"exact"}
    # the target still has the values the source compacted away after the copy: the group gets those that
    # come after its offset (newer than what it consumed), never one it consumed, and every current one
    assert lost_and_repeated(src_cluster, dst_cluster, group, consumed, in_order=False) == (0, 0)


def test_translate_transactional_source_with_aborted_transactions(src_cluster, dst_cluster,  # noqa: ANN001
                                                                  topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 2)
    txn = producer(src_cluster, **{"transactional.id": f"tx-{topic_name}"})
    txn.init_transactions(30)
    for round_index in range(6):
        txn.begin_transaction()
        for record in distinct(40, 2, start=round_index * 40):
            txn.produce(topic_name, key=record.key, value=record.value, partition=record.partition,
                        timestamp=record.timestamp)
        if round_index in (1, 4):
            txn.abort_transaction(30)
        else:
            txn.commit_transaction(30)
    group = f"g-{topic_name}"
    consumed = {topic_name: consume_as_group(src_cluster, group, topic_name, {0: 30, 1: 65})}
    mirror_json("src", "dst", "--topics", topic_name)
    document = translate("src", "dst", "--group", group, "--commit")
    rows = {partition["partition"]: partition for partition in document["groups"][0]["partitions"]}
    # the source's offsets count the aborted records and markers, the target's do not
    assert rows[0]["status"] == rows[1]["status"] == "exact"
    assert rows[1]["source_offset"] > rows[1]["target_offset"] == 65
    assert lost_and_repeated(src_cluster, dst_cluster, group, consumed) == (0, 0)


def test_translate_source_trimmed_by_delete_records(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """The source's start moved before the copy (the mirror starts there), and after it (the target keeps
    what the source deleted); a group behind the source's start goes on where the source would restart it."""
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, distinct(600, 3))
    delete_records(src_cluster, topic_name, {0: 50, 1: 50, 2: 50})
    mirror_json("src", "dst", "--topics", topic_name)
    produce(src_cluster, topic_name, distinct(300, 3, start=600))
    mirror_json("src", "dst", "--topics", topic_name)
    group = f"g-{topic_name}"
    consume_as_group(src_cluster, group, topic_name, {0: 70, 1: 100, 2: 100})  # from 50: to 120, 150, 150
    delete_records(src_cluster, topic_name, {1: 120, 2: 270})  # after the copy; 2: past the group's offset
    document = translate("src", "dst", "--group", group, "--commit")
    rows = {partition["partition"]: partition for partition in document["groups"][0]["partitions"]}
    assert [(rows[p]["source_offset"], rows[p]["target_offset"], rows[p]["status"]) for p in range(3)] == [
        (120, 70, "exact"), (150, 100, "exact"), (150, 220, "exact")]  # 2: the source restarts it at 270
    received = receive_as_group(dst_cluster, group, [topic_name])
    source = read_all(src_cluster, topic_name)
    for partition, start in ((0, 120), (1, 150), (2, 270)):
        expected = [record.value for record in source[partition] if record.offset >= start]
        assert [record.value for record in received[(topic_name, partition)]] == expected


def test_translate_renamed_target(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, distinct(300, 2))
    group = f"g-{topic_name}"
    consumed = {topic_name: consume_as_group(src_cluster, group, topic_name, {0: 40, 1: 110})}
    mirror_json("src", "dst", "--topics", topic_name, "--rename", "{source}.{topic}", "--flow", "renamed")
    # the checkpoints name the target topic; --rename, when given, must agree with them
    wrong = translate("src", "dst", "--group", group, "--flow", "renamed", "--rename", "x.{topic}")
    assert set(statuses(wrong).values()) == {"no-checkpoint"}
    assert translate("src", "dst", "--group", group)["groups"][0]["partitions"][0]["status"] == "no-checkpoint"
    document = translate("src", "dst", "--group", group, "--flow", "renamed", "--rename", "{source}.{topic}",
                         "--commit")
    assert {partition["target_topic"] for partition in document["groups"][0]["partitions"]} == {f"src.{topic_name}"}
    assert lost_and_repeated(src_cluster, dst_cluster, group, consumed, {topic_name: f"src.{topic_name}"}) == (0, 0)


def test_translate_target_written_with_exactly_once(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """The target's offsets include a commit marker per transaction; several runs, several anchors."""
    create_topic(src_cluster, topic_name, 2)
    group = f"g-{topic_name}"
    consumed: dict[int, list[Got]] = {0: [], 1: []}
    for round_index in range(3):
        produce(src_cluster, topic_name, distinct(200, 2, start=round_index * 200))
        kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "--checkpoint-interval", "0.1")
        for partition, records in consume_as_group(src_cluster, group, topic_name, {0: 30, 1: 70}).items():
            consumed[partition] += records
    document = translate("src", "dst", "--group", group, "--commit")
    rows = document["groups"][0]["partitions"]
    assert {row["status"] for row in rows} == {"exact"}
    assert any(row["target_offset"] != row["source_offset"] for row in rows)  # the markers shift the target
    assert lost_and_repeated(src_cluster, dst_cluster, group, {topic_name: consumed}) == (0, 0)


def test_translate_commit_refuses_a_group_active_on_the_target(src_cluster, dst_cluster,  # noqa: ANN001
                                                               topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, distinct(100, 1))
    busy, idle = f"busy-{topic_name}", f"idle-{topic_name}"
    consume_as_group(src_cluster, busy, topic_name, {0: 10})
    consume_as_group(src_cluster, idle, topic_name, {0: 20})
    mirror_json("src", "dst", "--topics", topic_name)
    member = Consumer({"bootstrap.servers": bootstrap(dst_cluster), "group.id": busy, "auto.offset.reset": "earliest",
                       "enable.auto.commit": False})
    try:
        member.subscribe([topic_name])
        wait_for(lambda: bool(member.consume(1, 0.5) or member.assignment()), 60, "the member to join")
        result = kmc("groups", "translate", "src", "dst", "--group", f".*-{topic_name}", "--commit", "-o", "json",
                     expect=6)
        document = result.json()
        refused = [group for group in document["groups"] if group["refused"]]
        assert [group["group"] for group in refused] == [busy] and refused[0]["target_members"] == 1
        assert re.search(rf"group {busy}: not committed: 1 active member", result.stderr)
        assert f"1 of 2 group(s) not committed on dst, active there: {busy}" in result.stderr
        assert committed_offsets(dst_cluster, idle, topic_name) == {0: 20}
    finally:
        member.close()
    assert committed_offsets(dst_cluster, busy, topic_name).get(0) != 10  # never committed by kmc


def test_translate_group_ahead_of_the_mirror(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, distinct(100, 1))
    mirror_json("src", "dst", "--topics", topic_name)
    produce(src_cluster, topic_name, distinct(50, 1, start=100))  # not mirrored yet
    group = f"g-{topic_name}"
    consumed = consume_as_group(src_cluster, group, topic_name, {0: 120})
    document = translate("src", "dst", "--group", group, "--commit")
    [row] = document["groups"][0]["partitions"]
    assert (row["source_offset"], row["behind"], row["target_offset"], row["status"]) == (120, 30, 100, "ahead")
    received = receive_as_group(dst_cluster, group, [topic_name])[(topic_name, 0)]
    assert received == [] and consumed[0][-1].value == b"v-119"  # nothing it consumed comes again


# ------------------------------------------------------------------------------------ failover and failback


def test_failover_then_failback_round_trip(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """dc1 (src) -> dr (dst); the group fails over to dst, consumes there while new records arrive there;
    src comes back: a reverse mirror copies the new records home (not the originals) and the group goes
    home exactly: the original records it had not consumed, then the new ones."""
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, distinct(400, 2))
    group = f"g-{topic_name}"
    consume_as_group(src_cluster, group, topic_name, {0: 50, 1: 150})
    mirror_json("src", "dst", "--topics", topic_name)
    translate("src", "dst", "--group", group, "--commit")
    # failover: the group runs on dst; the application writes there
    on_dst = consume_as_group(dst_cluster, group, topic_name, {0: 150, 1: 20})
    produce(dst_cluster, topic_name, distinct(100, 2, start=1000, prefix="dr"))
    more = consume_as_group(dst_cluster, group, topic_name, {0: 10, 1: 0})
    # failback: dst -> src copies only what dst's applications wrote (loop prevention keeps the originals)
    back = mirror_json("dst", "src", "--topics", topic_name, "--flow", "failback")
    assert (back["records"], back["skipped"]) == (100, 400)
    document = translate("dst", "src", "--group", group, "--flow", "failback", "--commit")
    rows = {row["partition"]: row for row in document["groups"][0]["partitions"]}
    # partition 0: past the originals, 10 of the new records consumed; 1: in the originals (170 of 200)
    assert [(rows[p]["source_offset"], rows[p]["target_offset"], rows[p]["status"]) for p in (0, 1)] == [
        (210, 210, "exact"), (170, 170, "exact")]
    received = receive_as_group(src_cluster, group, [topic_name])
    home = read_all(src_cluster, topic_name)
    for partition in (0, 1):
        got = [record.value for record in received[(topic_name, partition)]]
        consumed = {record.value for record in on_dst[partition] + more[partition]}
        assert not consumed & set(got)
        assert got == [record.value for record in home[partition] if record.offset >= rows[partition]["target_offset"]]
    assert len(received[(topic_name, 1)]) == 30 + 50 and received[(topic_name, 0)][0].value == b"dr-1020"


# ------------------------------------------------------------------------------------ --sync-groups


def test_sync_groups_in_follow_mode(src_cluster, dst_cluster, topic_name: str, followers) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, distinct(200, 2))
    group, unselected = f"billing-{topic_name}", f"other-{topic_name}"
    follower = followers("src", "dst", "--topics", topic_name, "--sync-groups", f"billing-{topic_name}",
                         "--sync-interval", "1", "--checkpoint-interval", "0.2")
    consumed = {0: [], 1: []}
    for _ in range(3):  # the application consumes while the mirror runs
        for partition, records in consume_as_group(src_cluster, group, topic_name, {0: 20, 1: 30}).items():
            consumed[partition] += records
        produce(src_cluster, topic_name, distinct(40, 2, start=1000 + len(consumed[0]) * 10))
    consume_as_group(src_cluster, unselected, topic_name, {0: 5, 1: 5})
    wait_for(lambda: count(dst_cluster, topic_name) == 320, 60, "the mirror to copy everything", follower)
    wait_for(lambda: committed_offsets(dst_cluster, group, topic_name) == {0: 60, 1: 90}, 60,
             "the group's offsets on the target", follower)
    assert follower.stop() == 0
    assert committed_offsets(dst_cluster, unselected, topic_name) == {}
    assert lost_and_repeated(src_cluster, dst_cluster, group, {topic_name: consumed}) == (0, 0)


def test_sync_groups_once_at_the_end(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, distinct(100, 1))
    group = f"g-{topic_name}"
    consume_as_group(src_cluster, group, topic_name, {0: 40})
    result = mirror_json("src", "dst", "--topics", topic_name, "--sync-groups", f"g-{topic_name}")
    assert result["group_sync"]["committed"] == 1
    assert committed_offsets(dst_cluster, group, topic_name) == {0: 40}
    # the target's group moved on (it consumed there): a sync never moves it back
    consume_as_group(dst_cluster, group, topic_name, {0: 10})
    again = mirror_json("src", "dst", "--topics", topic_name, "--sync-groups", f"g-{topic_name}")
    [row] = again["group_sync"]["groups"][0]["partitions"]
    assert (row["target_offset"], row["previous_target_offset"], row["committed"]) == (40, 50, False)
    assert committed_offsets(dst_cluster, group, topic_name) == {0: 50}


def test_flow_with_sync_groups_passes_flow_check(tmp_path, monkeypatch, src_cluster, dst_cluster,  # noqa: ANN001
                                                 topic_name: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[flows.dr]\nfrom = ["src"]\nto = "dst"\ntopics = ["{topic_name}"]\n'
                      f'sync_groups = ["g-{topic_name}"]\n')
    monkeypatch.setenv("KMC_CONFIG", str(config))
    kmc("flow", "check", "--offline")
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, distinct(30, 1))
    consume_as_group(src_cluster, f"g-{topic_name}", topic_name, {0: 12})
    document = kmc("flow", "run", "dr", "-o", "json").json()
    assert document["runs"][0]["group_sync"]["committed"] == 1
    assert committed_offsets(dst_cluster, f"g-{topic_name}", topic_name) == {0: 12}


# ------------------------------------------------------------------------------------ lag alarms


def test_mirror_status_lag_alarm(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, distinct(100, 2))
    mirror_json("src", "dst", "--topics", topic_name)
    produce(src_cluster, topic_name, [Rec(0, b"k", f"late-{index}".encode(), [], int(time.time() * 1000) - 120_000)
                                      for index in range(30)])
    rows = kmc("mirror", "status", "src", "dst", "--topics", topic_name, "-o", "json").json()
    assert [(row["records_behind"], row["checkpointed_partitions"]) for row in rows] == [(30, 2)]
    assert rows[0]["seconds_behind"] >= 120
    kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--max-lag", "30", "--max-lag-seconds", "600")
    alarm = kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--max-lag", "29", expect=1)
    assert f"src -> dst: {topic_name}[0]: 30 records behind (max 29)" in alarm.stderr
    assert f"{topic_name}[1]" not in alarm.stderr
    seconds = kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--max-lag-seconds", "60", expect=1)
    assert re.search(rf"{topic_name}\[0\]: 1\d\d\.\ds behind \(max 60s\)", seconds.stderr)
    mirror_json("src", "dst", "--topics", topic_name)
    kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--max-lag", "0", "--max-lag-seconds", "0")
    kmc("mirror", "status", "src", "dst", "--max-lag", "-1", expect=2)


def test_mirror_status_of_another_rename_is_not_caught_up(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """The checkpoints of `--rename 'a.{topic}'` say nothing about a copy into '{topic}' (the same flow, the
    same source topic): the mirror would start that one over, so its status is all behind, none checkpointed."""
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, distinct(40, 2))
    mirror_json("src", "dst", "--topics", topic_name, "--rename", "a.{topic}")
    assert count(dst_cluster, f"a.{topic_name}") == 40
    renamed = kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--rename", "a.{topic}", "-o", "json")
    assert [(row["target_topic"], row["records_behind"], row["checkpointed_partitions"])
            for row in renamed.json()] == [(f"a.{topic_name}", 0, 2)]
    other = kmc("mirror", "status", "src", "dst", "--topics", topic_name, "-o", "json").json()
    assert [(row["target_topic"], row["records_behind"], row["checkpointed_partitions"])
            for row in other] == [(topic_name, 40, 0)]
    kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--max-lag", "19", expect=1)


def test_flow_status_lag_alarm(tmp_path, monkeypatch, src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    config = tmp_path / "config.toml"
    config.write_text(f'[flows.alarm]\nfrom = ["src"]\nto = "dst"\ntopics = ["{topic_name}"]\n')
    monkeypatch.setenv("KMC_CONFIG", str(config))
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, distinct(10, 1))
    alarm = kmc("flow", "status", "alarm", "--max-lag", "5", expect=1)
    assert f"lag: flow alarm: src -> dst: {topic_name}[0]: 10 records behind (max 5)" in alarm.stderr
    kmc("flow", "run", "alarm")
    kmc("flow", "status", "alarm", "--max-lag", "0", "--max-lag-seconds", "1")


def test_translate_skips_other_writers_records(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """Records another producer writes into the target topic between the mirror's copies are not the mirror's:
    they never count as copies, and the group goes on at the copy of its next record."""
    create_topic(src_cluster, topic_name, 1)
    create_topic(dst_cluster, topic_name, 1)
    for round_index in range(3):
        produce(src_cluster, topic_name, distinct(50, 1, start=round_index * 50))
        produce(dst_cluster, topic_name, distinct(7, 1, start=round_index * 7, prefix="local"))
        mirror_json("src", "dst", "--topics", topic_name)
    group = f"g-{topic_name}"
    consumed = consume_as_group(src_cluster, group, topic_name, {0: 120})
    document = translate("src", "dst", "--group", group, "--commit")
    [row] = document["groups"][0]["partitions"]
    assert (row["source_offset"], row["target_offset"], row["status"]) == (120, 7 + 50 + 7 + 50 + 7 + 20, "exact")
    received = receive_as_group(dst_cluster, group, [topic_name])[(topic_name, 0)]
    assert [record.value for record in received] == [f"v-{index}".encode() for index in range(120, 150)]
    assert not {record.value for record in received} & {record.value for record in consumed[0]}


@pytest.mark.slow
@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly-once", "at-least-once"])
def test_translate_after_mirrors_killed(src_cluster, dst_cluster, topic_name: str, followers,  # noqa: ANN001
                                        exactly_once: bool) -> None:
    """kill -9 of the mirror while it copies, three times, and groups whose offsets fall anywhere in between:
    with --exactly-once every group fails over exactly; at least once, none loses a record (a group can only
    be given again what the mirror itself wrote twice)."""
    partitions, total = 3, 3000
    create_topic(src_cluster, topic_name, partitions)
    done = produce_slowly(src_cluster, topic_name, total, partitions, pause=0.3)
    options = ["--exactly-once"] if exactly_once else []
    for interval in ("0.3", "5", "1"):
        before = count(dst_cluster, topic_name)
        follower = followers("src", "dst", "--topics", topic_name, "--checkpoint-interval", interval, *options)
        wait_for(lambda before=before: count(dst_cluster, topic_name) > before or done.is_set(), 60,
                 "copying to start", follower)
        time.sleep(1.0)
        follower.kill()
    assert done.wait(120)
    kmc("mirror", "src", "dst", "--topics", topic_name, *options)
    groups = {f"g{index}-{topic_name}": per_partition for index, per_partition in enumerate((0, 130, 420, 777, 999))}
    consumed = {group: consume_as_group(src_cluster, group, topic_name, dict.fromkeys(range(partitions), n))
                for group, n in groups.items() if n}
    for group in groups:
        if not groups[group]:
            commit(src_cluster, group, {(topic_name, p): 0 for p in range(partitions)})
    document = translate("src", "dst", "--group", f"g[0-9]-{topic_name}", "--commit")
    assert set(statuses(document).values()) == {"exact"}
    for group in groups:
        lost, repeated = lost_and_repeated(src_cluster, dst_cluster, group, {topic_name: consumed.get(group, {})},
                                           in_order=exactly_once)
        assert lost == 0, group
        if exactly_once:
            assert repeated == 0, group
