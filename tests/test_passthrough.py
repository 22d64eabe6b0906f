"""Batch passthrough (the passthrough issue, #13): a batch of the source's own producers goes to the target
whole, still compressed; loop prevention goes by producer id (kmc.provenance), not by a header per record.

What arrived is read with confluent-kafka, and how it is stored is read from the brokers' log segment files
(tests/helpers.py log_batches), never through kmc.
"""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from tests.helpers import (
    ORIGIN,
    Rec,
    assert_exact_copy,
    bootstrap,
    cluster_id,
    count,
    create_topic,
    kmc,
    log_batches,
    mirror_json,
    numbered,
    produce,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.kafka
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def data_batches(cluster, topic: str, partition: int = 0) -> list:  # noqa: ANN001
    return [batch for batch in log_batches(cluster, topic, partition) if not batch.control]


@pytest.mark.parametrize("codec", list(CODECS))
def test_batches_arrive_whole_with_their_codec(src_cluster, dst_cluster, topic_name: str, codec: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    client = Producer({"bootstrap.servers": bootstrap(src_cluster), "compression.type": codec, "linger.ms": 100,
                       "batch.num.messages": 500, "enable.idempotence": True})
    for index in range(3000):
        client.produce(topic_name, key=b"key-%d" % index, value=b"value %d " % index * 10, partition=0,
                       headers=[("h", b"%d" % index)])
    client.flush(30)
    assert mirror_json("src", "dst", "--topics", topic_name, "--once")["records"] == 3000
    source, target = data_batches(src_cluster, topic_name), data_batches(dst_cluster, topic_name)
    assert len(source) > 1  # several batches, each forwarded as it is
    assert [(b.records, b.size, b.codec) for b in target] == [(b.records, b.size, b.codec) for b in source]
    assert {b.codec for b in target} == {CODECS[codec]}
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def test_a_compacted_source_is_walked_and_arrives_dense(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """Compaction leaves offset gaps inside batches, which a produced batch must not have: those batches are
    walked (offsets renumbered), the others still travel whole."""
    create_topic(src_cluster, topic_name, 1, {"cleanup.policy": "compact", "segment.ms": "100",
                                              "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100"})
    client = Producer({"bootstrap.servers": bootstrap(src_cluster), "linger.ms": 50})
    for round_ in range(4):
        for index in range(200):
            client.produce(topic_name, key=b"k%d" % (index % 50), value=b"r%d-%d" % (round_, index), partition=0)
        client.flush(30)
        time.sleep(0.3)  # a new segment per round
    client.produce(topic_name, key=b"last", value=b"x", partition=0)  # rolls the active segment
    client.flush(30)

    def compacted() -> bool:
        return any(batch.records < 200 and batch.records > 1 for batch in data_batches(src_cluster, topic_name))

    wait_for(compacted, 120, "the log cleaner to compact the source")
    source = read_all(src_cluster, topic_name)
    result = mirror_json("src", "dst", "--topics", topic_name, "--once")
    assert result["records"] == len(source[0])
    target = read_all(dst_cluster, topic_name)
    assert_exact_copy(source, target)
    assert [r.offset for r in target[0]] == list(range(len(source[0])))  # dense at the target


def test_a_ring_of_three_clusters_never_loops(src_cluster, dst_cluster, three_broker_cluster, topic_name: str,  # noqa: ANN001
                                              followers) -> None:
    """src -> dst -> trio -> src, every cluster writing the topic locally too: each record reaches the other
    two clusters once, and nothing comes back where it came from."""
    trio = three_broker_cluster.name
    clusters = {"src": src_cluster, "dst": dst_cluster, trio: three_broker_cluster}
    for name, cluster in clusters.items():
        create_topic(cluster, topic_name, 2)
        produce(cluster, topic_name, numbered(30, 2, prefix=name))
    running = [followers(a, b, "--topics", topic_name, "--flow", f"ring-{a}-{b}", "--refresh", "2")
               for a, b in (("src", "dst"), ("dst", trio), (trio, "src"))]
    for name, cluster in clusters.items():  # and more while the ring runs
        produce(cluster, topic_name, numbered(10, 2, start=30, prefix=name))
    wait_for(lambda: all(count(cluster, topic_name) == 120 for cluster in clusters.values()), 120,
             "every cluster to hold every cluster's records", *running)
    time.sleep(4)  # long enough for a loop to show
    assert all(count(cluster, topic_name) == 120 for cluster in clusters.values())
    for follower in running:
        assert follower.stop() == 0
    ids = {name: cluster_id(cluster) for name, cluster in clusters.items()}
    for name, cluster in clusters.items():
        values = [r.value.decode() for records in read_all(cluster, topic_name).values() for r in records]
        assert len(values) == len(set(values)) == 120
        for records in read_all(cluster, topic_name).values():
            for record in records:
                producer = record.value.decode().split("-")[0]
                origins = [value for key, value in record.headers if key == ORIGIN]
                # local records and the first hop's copies carry no stamp; a second hop's copies name the
                # cluster the record was produced in
                assert origins in ([], [ids[producer].encode()]), (name, record.value, origins)


def test_merged_records_are_stamped_with_their_origin(src_cluster, dst_cluster, three_broker_cluster,  # noqa: ANN001
                                                     topic_name: str) -> None:
    trio = three_broker_cluster.name
    for cluster, prefix in ((src_cluster, "a"), (three_broker_cluster, "b")):
        create_topic(cluster, topic_name, 1)
        produce(cluster, topic_name, numbered(20, 1, prefix=prefix))
    kmc("aggregate", "src", trio, "--into", "dst", "--merge", "--topics", topic_name)
    by_prefix = {"a": cluster_id(src_cluster).encode(), "b": cluster_id(three_broker_cluster).encode()}
    merged = read_all(dst_cluster, topic_name)[0]
    assert len(merged) == 40
    assert all(dict(r.headers)[ORIGIN] == by_prefix[r.value.decode()[0]] for r in merged)


def test_every_mirror_producer_is_announced_before_it_writes(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(10, 1))
    mirror_json("src", "dst", "--topics", topic_name, "--once")
    written_by = {batch.producer_id for batch in data_batches(dst_cluster, topic_name)}
    announced = {}
    for batch in log_batches(dst_cluster, "kmc.provenance", 0):
        announced.setdefault(batch.producer_id, batch.base_offset)
    assert written_by and written_by <= set(announced)
    values = [json.loads(r.value) for r in read_all(dst_cluster, "kmc.provenance")[0]]
    assert {value["source_cluster_id"] for value in values} >= {cluster_id(src_cluster)}


def test_the_record_paths_copy_exactly_what_the_whole_path_copies(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """KMC_COPY_PATH=walk and =records give the same records as the default (no stamp on local records)."""
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, [*numbered(40, 2), Rec(0, None, None, [("only", b"headers")])])
    source = read_all(src_cluster, topic_name)
    for path in ("walk", "records"):
        monkeypatch.setenv("KMC_COPY_PATH", path)
        renamed = f"{path}.{topic_name}"
        assert mirror_json("src", "dst", "--topics", topic_name, "--rename", f"{path}.{{topic}}", "--flow", path,
                           "--once")["records"] == 41
        assert_exact_copy(source, read_all(dst_cluster, renamed))


def test_dry_run_and_flow_check_say_which_copy_mode_and_why(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                             tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    plain = kmc("mirror", "src", "dst", "--topics", topic_name, "--dry-run", "-o", "json").json()
    assert plain["copy"]["mode"] == "whole"
    recompressed = kmc("mirror", "src", "dst", "--topics", topic_name, "--compression", "gzip", "--dry-run")
    assert "copy mode: walk: --compression gzip recompresses every batch" in recompressed.stderr
    config = tmp_path / "config.toml"
    config.write_text('[flows.merged]\nfrom = ["src", "dst"]\nto = "hub"\nrename = "{topic}"\n'
                      '[flows.plain]\nfrom = ["src"]\nto = "dst"\n[clusters.hub]\nbootstrap = ["127.0.0.1:1"]\n')
    monkeypatch.setenv("KMC_CONFIG", str(config))
    document = kmc("flow", "check", "--offline", "-o", "json").json()
    assert document["copy_modes"]["plain"]["mode"] == "whole"
    assert document["copy_modes"]["merged"]["mode"] == "walk"
    assert "stamped with its origin" in document["copy_modes"]["merged"]["why"]
