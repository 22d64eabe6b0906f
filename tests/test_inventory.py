"""`kmc inventory` against real sandbox clusters; test data is made with confluent-kafka (librdkafka),
which shares no code with kmc. Each test restricts the inventory to its own topics (--topics), since
the session's clusters are shared with other tests."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from kmc import sandbox
from kmc.cli.inventory import _exit_status, human_bytes
from kmc.client import KafkaSession, Outcome
from kmc.errors import PartialFailure, UnreachableError
from kmc.inventory import ClusterInventory, cluster_rows, group_rows, inventory_cluster, version_label
from kmc.profiles import adhoc_cluster
from tests.helpers import admin, bootstrap, cluster_id, commit, create_topic, filled, kmc, produce, wait_for

CLUSTER_KEYS = ["cluster", "status", "error", "cluster_id", "controller", "brokers", "fenced_brokers",
                "kafka_version", "topics", "partitions", "under_replicated", "offline", "under_min_isr", "bytes",
                "records", "groups", "lag"]
TOPIC_KEYS = ["topic", "clusters", "present", "missing", "unknown"]
CELL_KEYS = ["partitions", "records", "bytes"]
BROKER_KEYS = ["cluster", "status", "error", "broker", "host", "port", "rack", "fenced", "controller",
               "kafka_version", "leaders", "replicas", "bytes", "log_dirs", "disk_total", "disk_usable"]
GROUP_KEYS = ["cluster", "status", "error", "group", "state", "protocol_type", "members", "topics", "lag"]
# --- helpers ----------------------------------------------------------------------------------


def segment_bytes(cluster, topic: str) -> int:  # noqa: ANN001
    """What the brokers hold of ``topic``: the size of its .log segment files in every node's log.dirs."""
    return sum(path.stat().st_size for broker in cluster.brokers
               for path in Path(broker.log_dir).glob(f"{topic}-*/*.log"))


def inventory_json(*args: str, expect: int | None = 0) -> list[dict]:
    return kmc("inventory", *args, "-o", "json", expect=expect).json()


# --- pure functions ---------------------------------------------------------------------------


def test_error_row_has_the_same_keys_as_a_cluster_row() -> None:
    cluster = adhoc_cluster("127.0.0.1:1")
    [row] = cluster_rows([Outcome(cluster, error=UnreachableError("127.0.0.1:1: cannot reach it"))])
    assert list(row) == CLUSTER_KEYS
    assert row["status"] == "error"
    assert row["error"].startswith("127.0.0.1:1: cannot reach it")
    assert all(row[key] is None for key in CLUSTER_KEYS if key not in ("cluster", "status", "error"))


def _partial_inventory() -> ClusterInventory:
    return ClusterInventory(cluster_id="id", controller=1, kafka_version="4.3+", brokers=(), topics=(), groups=None,
                            problems=("records unknown: NotLeaderForPartitionError",))


def test_a_cluster_gathered_in_part_is_partial_with_the_same_keys() -> None:
    outcome = Outcome(adhoc_cluster("127.0.0.1:9"), value=_partial_inventory())
    [row] = cluster_rows([outcome])
    assert list(row) == CLUSTER_KEYS
    assert (row["status"], row["error"]) == ("partial", "records unknown: NotLeaderForPartitionError")
    assert (row["cluster_id"], row["groups"], row["lag"]) == ("id", None, None)
    [group_row] = group_rows([outcome])  # groups unknown: one error row, not an empty list
    assert list(group_row) == GROUP_KEYS
    assert (group_row["status"], group_row["group"]) == ("error", None)


def test_exit_status_partial_and_failed_clusters() -> None:
    partial = Outcome(adhoc_cluster("127.0.0.1:9"), value=_partial_inventory())
    failed = Outcome(adhoc_cluster("127.0.0.1:1"), error=UnreachableError("127.0.0.1:1: cannot reach"))
    with pytest.raises(PartialFailure, match=r"^1 of 1 clusters gathered in part: 127.0.0.1:9 \(records unknown"):
        _exit_status([partial])
    with pytest.raises(PartialFailure, match=r"^1 of 2 clusters failed: 127.0.0.1:1; 1 of 2 clusters gathered"):
        _exit_status([partial, failed])
    with pytest.raises(UnreachableError):
        _exit_status([failed])


@pytest.mark.parametrize(("version", "label"), [((4, 2), "4.2"), ((3, 9), "3.9"), ((0, 10, 2), "0.10.2")])
def test_version_label_is_exact_below_the_newest_version_kafka_python_knows(version: tuple, label: str) -> None:
    assert version_label(version) == label


def test_version_label_marks_the_newest_known_version_as_a_lower_bound() -> None:
    from kafka.protocol.broker_version_data import BROKER_API_VERSIONS

    newest = max(BROKER_API_VERSIONS)
    assert version_label(newest) == ".".join(map(str, newest)) + "+"


@pytest.mark.parametrize(("value", "text"), [(None, None), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                             (5 * 1024**3, "5.0 GiB"), (3 * 1024**4, "3.0 TiB")])
def test_human_bytes(value: int | None, text: str | None) -> None:
    assert human_bytes(value) == text


# --- one cluster: counts equal what the test produced -----------------------------------------


@pytest.mark.kafka
def test_counts_equal_what_was_produced(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    group = f"{topic_name}-group"
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, filled({0: 10, 1: 7, 2: 0}, value_size=100))
    commit(src_cluster, group, {(topic_name, 0): 4, (topic_name, 1): 7})

    result = kmc("inventory", "src", "--topics", topic_name, "-o", "json")
    assert result.stderr == ""  # no spinner or messages when stderr is not a terminal
    [row] = result.json()
    assert list(row) == CLUSTER_KEYS
    assert row["cluster"] == "src"
    assert row["status"] == "ok" and row["error"] is None
    assert row["cluster_id"] == cluster_id(src_cluster)
    assert row["controller"] == 1
    assert (row["brokers"], row["fenced_brokers"]) == (1, 0)
    assert re.fullmatch(r"\d+\.\d+\+?", row["kafka_version"])
    assert (row["topics"], row["partitions"]) == (1, 3)
    assert (row["under_replicated"], row["offline"], row["under_min_isr"]) == (0, 0, 0)
    assert row["records"] == 17
    assert row["bytes"] == segment_bytes(src_cluster, topic_name) > 17 * 100
    assert row["groups"] == 1
    assert row["lag"] == 6  # partition 0: 10 - 4; partition 1: 7 - 7; partition 2: nothing committed

    [group_row] = inventory_json("src", "--topics", topic_name, "--view", "groups")
    assert list(group_row) == GROUP_KEYS
    assert group_row == {"cluster": "src", "status": "ok", "error": None, "group": group, "state": "Empty",
                         "protocol_type": group_row["protocol_type"], "members": 0, "topics": [topic_name], "lag": 6}

    [broker_row] = inventory_json("src", "--topics", topic_name, "--view", "brokers")
    assert list(broker_row) == BROKER_KEYS
    assert broker_row["broker"] == 1 and broker_row["controller"] is True and broker_row["fenced"] is False
    assert f"{broker_row['host']}:{broker_row['port']}" == src_cluster.bootstrap[0]
    assert (broker_row["leaders"], broker_row["replicas"]) == (3, 3)
    assert broker_row["bytes"] == row["bytes"]
    assert broker_row["log_dirs"] == 1
    assert 0 < broker_row["disk_usable"] <= broker_row["disk_total"]
    assert broker_row["kafka_version"] == row["kafka_version"]


@pytest.mark.kafka
def test_topics_filter_and_internal_topics(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, f"{topic_name}-a", 2)
    create_topic(src_cluster, f"{topic_name}-b", 1)
    [row] = inventory_json("src", "--topics", f"{topic_name}-.*")
    assert (row["topics"], row["partitions"]) == (2, 3)
    [row] = inventory_json("src", "--topics", f"{topic_name}-a")  # anchored: -a only
    assert (row["topics"], row["partitions"]) == (1, 2)
    [row] = inventory_json("src", "--topics", "__consumer_offsets")
    assert row["topics"] == 0
    [row] = inventory_json("src", "--topics", "__consumer_offsets", "--include-internal")
    assert row["topics"] == 1


@pytest.mark.kafka
def test_requests_do_not_grow_with_topics_or_partitions(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    for index in range(12):
        create_topic(src_cluster, f"{topic_name}-{index}", 4)
    cluster = adhoc_cluster(bootstrap(src_cluster))

    def inventory(pattern: str) -> ClusterInventory:
        with KafkaSession(cluster) as session:  # each its own: the group coordinator is cached per client
            return inventory_cluster(session, [re.compile(pattern)])

    # new partitions may answer "not leader" at first, and new topics reach the metadata a moment later
    wait_for(lambda: len(inventory(f"{topic_name}-.*").topics) == 12, 60, "the new topics in the metadata")
    one = inventory(f"{topic_name}-0")
    many = inventory(f"{topic_name}-.*")
    assert (len(one.topics), len(many.topics)) == (1, 12)
    assert many.requests == one.requests
    # one broker: one DescribeConfigs, one DescribeLogDirs, one ListOffsets per offset spec (and per
    # group partitions outside the selected topics), never one per partition
    assert many.requests["DescribeConfigs"] == 1
    assert many.requests["DescribeLogDirs"] == 1
    assert many.requests["ListOffsets"] <= 3


# --- several clusters -------------------------------------------------------------------------


@pytest.mark.kafka
def test_topics_view_shows_where_a_topic_is_missing(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    both, only_src = f"{topic_name}-both", f"{topic_name}-src"
    create_topic(src_cluster, both, 2)
    create_topic(src_cluster, only_src, 1)
    create_topic(dst_cluster, both, 3)
    produce(src_cluster, both, filled({0: 5, 1: 1}, value_size=100))
    produce(src_cluster, only_src, filled({0: 2}, value_size=100))

    rows = inventory_json("src", "dst", "--view", "topics", "--topics", f"{topic_name}-.*")
    assert [row["topic"] for row in rows] == [both, only_src]
    for row in rows:
        assert list(row) == TOPIC_KEYS
    both_row, src_row = rows
    assert list(both_row["clusters"]) == ["src", "dst"]
    assert list(both_row["clusters"]["src"]) == CELL_KEYS
    assert both_row["clusters"]["src"] == {"partitions": 2, "records": 6, "bytes": segment_bytes(src_cluster, both)}
    assert both_row["clusters"]["dst"] == {"partitions": 3, "records": 0, "bytes": 0}
    assert (both_row["present"], both_row["missing"], both_row["unknown"]) == (["src", "dst"], [], [])
    assert src_row["clusters"]["dst"] is None
    assert (src_row["present"], src_row["missing"], src_row["unknown"]) == (["src"], ["dst"], [])

    table = kmc("inventory", "src", "dst", "--view", "topics", "--topics", f"{topic_name}-.*").stdout
    lines = table.splitlines()
    assert lines[0].split() == ["TOPIC", "SRC", "DST"]
    assert lines[2].split()[0] == only_src and lines[2].split()[-1] == "missing"


@pytest.mark.kafka
def test_unreachable_cluster_is_an_error_row_and_exit_6(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name)
    result = kmc("inventory", "src", "--bootstrap", "127.0.0.1:1", "--timeout", "2", "--topics", topic_name,
                 "-o", "json", expect=6)
    ok, failed = result.json()
    assert list(ok) == list(failed) == CLUSTER_KEYS
    assert (ok["cluster"], ok["status"], ok["error"], ok["topics"]) == ("src", "ok", None, 1)
    assert (failed["cluster"], failed["status"]) == ("127.0.0.1:1", "error")
    assert "127.0.0.1:1" in failed["error"]
    assert all(failed[key] is None for key in CLUSTER_KEYS if key not in ("cluster", "status", "error"))
    assert result.stderr.startswith("kmc: error: 1 of 2 clusters failed: 127.0.0.1:1")
    assert len(result.stderr.strip().splitlines()) == 1

    table = kmc("inventory", "src", "127.0.0.1:1", "--timeout", "2", "--topics", topic_name, expect=6).stdout
    assert table.splitlines()[0].split()[-1] == "ERROR"
    assert "cannot reach 127.0.0.1:1" in table

    for view, keys in (("brokers", BROKER_KEYS), ("groups", GROUP_KEYS)):
        rows = inventory_json("src", "127.0.0.1:1", "--timeout", "2", "--topics", topic_name, "--view", view,
                              expect=6)
        assert all(list(row) == keys for row in rows)
        assert [row["cluster"] for row in rows if row["status"] == "error"] == ["127.0.0.1:1"]


@pytest.mark.kafka
def test_no_cluster_named_means_every_configured_one(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(dst_cluster, topic_name)
    # other sandboxes of the test session may be stopped (error rows, exit 6): only src and dst matter here
    for args in ((), ("--all",)):
        rows = {row["cluster"]: row for row in kmc("inventory", *args, "--topics", topic_name, "-o", "json",
                                                   expect=None).json()}
        assert (rows["src"]["status"], rows["src"]["topics"]) == ("ok", 0)
        assert (rows["dst"]["status"], rows["dst"]["topics"]) == ("ok", 1)
    rows = inventory_json("--all", "--bootstrap", bootstrap(src_cluster), "--topics", topic_name, expect=None)
    assert {"src", "dst", bootstrap(src_cluster)} <= {row["cluster"] for row in rows}


def test_every_cluster_unreachable_exits_4() -> None:
    result = kmc("inventory", "--bootstrap", "127.0.0.1:1", "--timeout", "1", "-o", "json", expect=4)
    [row] = result.json()
    assert (row["status"], list(row)) == ("error", CLUSTER_KEYS)
    assert result.stderr.startswith("kmc: error: 127.0.0.1:1: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["127.0.0.1:1", "--topics", "("], "--topics: bad regex"),
    (["no-such-cluster"], "no-such-cluster"),
    (["127.0.0.1:1", "--view", "nope"], "--view"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = kmc("inventory", *args, expect=2)
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- replication health -----------------------------------------------------------------------


@pytest.mark.kafka
def test_stopped_broker_shows_under_replicated_offline_and_under_min_isr(three_broker_cluster,  # noqa: ANN001
                                                                          topic_name: str) -> None:
    name = three_broker_cluster.name
    default_rf3, strict_rf3, default_rf2, single = (f"{topic_name}-{suffix}" for suffix in "abcd")
    new_topics = [
        NewTopic(default_rf3, 2, 3),  # min.insync.replicas 2 (the sandbox's broker default)
        NewTopic(strict_rf3, 2, 3, config={"min.insync.replicas": "3"}),  # the topic's own setting
        NewTopic(default_rf2, 2, replica_assignment=[[3, 1], [1, 3]]),  # broker default 2 with RF 2
        # its only replica on the broker to stop (min.insync.replicas 1, or it is under min ISR from the start)
        NewTopic(single, 1, replica_assignment=[[3]], config={"min.insync.replicas": "1"}),
    ]
    for future in admin(three_broker_cluster).create_topics(new_topics).values():
        future.result(30)
    selection = ("--topics", f"{topic_name}-.*")
    [healthy] = inventory_json(name, *selection)
    assert (healthy["brokers"], healthy["topics"], healthy["partitions"]) == (3, 4, 7)
    assert (healthy["under_replicated"], healthy["offline"], healthy["under_min_isr"]) == (0, 0, 0)

    sandbox.stop_broker(name, 3)
    try:
        deadline = time.monotonic() + 60
        while True:
            [row] = inventory_json(name, *selection)
            if row["under_replicated"] >= 6 and row["offline"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert row["status"] == "ok"
        assert (row["brokers"], row["fenced_brokers"]) == (3, 1)
        assert row["under_replicated"] == 6  # the online partitions with a replica on broker 3
        assert row["offline"] == 1
        assert row["under_min_isr"] == 4  # strict_rf3 (ISR 2 < 3) and default_rf2 (ISR 1 < 2)

        brokers = {broker["broker"]: broker for broker in inventory_json(name, *selection, "--view", "brokers")}
        assert brokers[3]["fenced"] is True and brokers[3]["bytes"] is None
        assert brokers[1]["fenced"] is False and brokers[1]["bytes"] is not None
        assert sum(broker["controller"] for broker in brokers.values()) == 1
    finally:
        sandbox.start_broker(name, 3)
