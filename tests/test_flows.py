"""`kmc flow` against real sandbox clusters: src, dst and a third sandbox (``hop``). Flows come from a
config file per test; data is produced and verified with confluent-kafka."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmc import sandbox
from tests.conftest import sandboxes
from tests.helpers import (
    Rec,
    assert_exact_copy,
    cluster_id,
    count,
    create_topic,
    kmc,
    numbered,
    produce,
    read_all,
    topics_of,
)

pytestmark = pytest.mark.kafka

STATUS_KEYS = {"flow", "source", "target", "source_topic", "target_topic", "partitions", "checkpointed_partitions",
               "records_behind", "seconds_behind", "oldest_uncopied_ms", "checkpoint_ms", "gaps", "error", "position"}


@pytest.fixture(scope="module")
def hop_cluster(src_cluster) -> Iterator[sandbox.SandboxCluster]:  # noqa: ANN001 - src/dst start first, together
    """A third single-broker sandbox, ``hop``."""
    with sandboxes(["hop"]) as clusters:
        yield clusters[0]


def flows_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "flows.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_fan_out_chain_arrives_unchanged_and_status_follows_it(src_cluster, dst_cluster, hop_cluster,  # noqa: ANN001
                                                                  topic_name: str, tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, [*numbered(90, 3),
                                      Rec(0, b"k0", None, [("dup", b"1"), ("dup", b"2")]),  # tombstone, repeated header
                                      Rec(1, None, b"no key", []), Rec(2, b"", b"", [("empty", b"")])])
    config = flows_config(tmp_path, f"""
        [flows.inbound]
        from = ["src"]
        to = "dst"
        topics = ['{re.escape(topic_name)}']
        rename = "{{source}}.{{topic}}"
        [flows.outbound]
        from = ["dst"]
        to = "hop"
        topics = ['src\\.{re.escape(topic_name)}']
    """)
    assert kmc("flow", "check", "--config", config).code == 0
    # both flows in one run: the mirror into dst finishes before the one out of dst starts
    result = kmc("flow", "run", "outbound", "inbound", "--once", "--config", config, "-o", "json").json()
    assert sorted((run["flow"], run["source"], run["target"], run["records"]) for run in result["runs"]) == [
        ("inbound", "src", "dst", 93), ("outbound", "dst", "hop", 93)]
    source = read_all(src_cluster, topic_name)
    # records, order per partition, keys, values, headers; kmc-origin still names src after two hops
    assert_exact_copy(source, read_all(hop_cluster, f"src.{topic_name}"), cluster_id(src_cluster))

    rows = kmc("flow", "status", "inbound", "outbound", "--config", config, "-o", "json").json()
    assert all(set(row) == STATUS_KEYS for row in rows)
    assert [(row["flow"], row["source_topic"], row["target_topic"], row["partitions"],
             row["checkpointed_partitions"], row["records_behind"], row["seconds_behind"], row["oldest_uncopied_ms"],
             row["error"]) for row in rows] == [
        ("inbound", topic_name, f"src.{topic_name}", 3, 3, 0, 0.0, None, None),
        ("outbound", f"src.{topic_name}", f"src.{topic_name}", 3, 3, 0, 0.0, None, None)]
    assert all(row["checkpoint_ms"] > time.time() * 1000 - 600_000 for row in rows)

    written = int(time.time() * 1000) - 120_000  # two minutes old
    produce(src_cluster, topic_name, [Rec(1, b"late", f"late-{index}".encode(), [], written + index)
                                      for index in range(4)])
    rows = kmc("flow", "status", "--config", config, "-o", "json").json()  # every flow
    inbound = next(row for row in rows if row["flow"] == "inbound")
    assert (inbound["records_behind"], inbound["oldest_uncopied_ms"]) == (4, written)
    assert 120 <= inbound["seconds_behind"] < 180
    assert next(row for row in rows if row["flow"] == "outbound")["records_behind"] == 0
    table = kmc("flow", "status", "inbound", "--config", config).stdout.splitlines()
    assert table[0].split() == ["FLOW", "SOURCE", "TARGET", "SOURCE", "TOPIC", "TARGET", "TOPIC", "RECORDS", "BEHIND",
                                "SECONDS", "BEHIND", "CHECKPOINTED"]
    assert table[1].split()[-3] == "4" and table[1].split()[-1] == "3/3"


def test_routing_by_pattern_sends_each_topic_only_where_its_flow_says(src_cluster, dst_cluster, hop_cluster,  # noqa: ANN001
                                                                      topic_name: str, tmp_path: Path) -> None:
    orders, clicks = f"{topic_name}-orders", f"{topic_name}-clicks"
    for name, records in ((orders, 25), (clicks, 15)):
        create_topic(src_cluster, name, 2)
        produce(src_cluster, name, numbered(records, 2, prefix=name))
    config = flows_config(tmp_path, f"""
        [flows.orders]
        from = ["src"]
        to = "dst"
        topics = ['{re.escape(topic_name)}-ord.*']
        [flows.clicks]
        from = ["src"]
        to = "hop"
        topics = ['{re.escape(topic_name)}-clicks']
    """)
    result = kmc("flow", "run", "--all", "--config", config, "-o", "json").json()
    assert sorted((run["flow"], run["target"], run["records"]) for run in result["runs"]) == [
        ("clicks", "hop", 15), ("orders", "dst", 25)]
    assert orders in topics_of(dst_cluster) and clicks not in topics_of(dst_cluster)
    assert clicks in topics_of(hop_cluster) and orders not in topics_of(hop_cluster)
    assert (count(dst_cluster, orders), count(hop_cluster, clicks)) == (25, 15)


def test_flow_check_with_the_real_topic_lists(src_cluster, hop_cluster, topic_name: str,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    shared = f"{topic_name}-a"
    create_topic(src_cluster, shared, 2)
    create_topic(hop_cluster, shared, 3)
    collide = flows_config(tmp_path, f"""
        [flows.x]
        from = ["hop"]
        to = "dst"
        topics = ['{re.escape(shared)}']
        [flows.y]
        from = ["src"]
        to = "dst"
        topics = ['{re.escape(topic_name)}-.*']
    """)
    assert kmc("flow", "check", "--offline", "--config", collide).code == 0  # y's pattern is not literal
    result = kmc("flow", "check", "--config", collide, expect=3)
    assert result.stderr.splitlines()[0] == (f"kmc: error: flows.x.topics, flows.y.topics: both write dst/{shared} "
                                             f"(x from hop '{shared}'; y from src '{shared}')")
    merge = tmp_path / "merge.toml"
    merge.write_text(textwrap.dedent(f"""
        [flows.m]
        from = ["src", "hop"]
        to = "dst"
        topics = ['{re.escape(shared)}']
    """))
    result = kmc("flow", "check", "--config", merge, expect=3)
    assert result.stderr.splitlines()[0] == (f"kmc: error: flows.m.partitioner: {shared} has differing partition "
                                             "counts: 2 in src, 3 in hop; merging maps partition i to partition i "
                                             "(set partitioner = \"key\" to rehash by key)")
    merge.write_text(merge.read_text() + 'partitioner = "key"\n')
    assert kmc("flow", "check", "--config", merge).code == 0


def test_status_of_a_source_that_cannot_be_asked(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                 tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 1)
    config = flows_config(tmp_path, f"""
        [clusters.dead]
        bootstrap = ["127.0.0.1:1"]
        [flows.alive]
        from = ["src"]
        to = "dst"
        topics = ['{re.escape(topic_name)}']
        [flows.gone]
        from = ["dead"]
        to = "dst"
    """)
    result = kmc("flow", "status", "--config", config, "--timeout", "2", "-o", "json", expect=6)
    rows = {row["flow"]: row for row in result.json()}
    assert rows["alive"]["records_behind"] == 0 and rows["alive"]["error"] is None
    assert rows["gone"]["source"] == "dead" and "cannot reach 127.0.0.1:1" in rows["gone"]["error"]
    assert rows["gone"]["records_behind"] is None
    assert "kmc: error: flow gone: dead -> dst: dead: " in result.stderr
