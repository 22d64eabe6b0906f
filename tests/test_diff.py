"""`kmc diff` against real sandbox clusters: test data is produced with confluent-kafka (librdkafka), then
one side is altered for each kind of difference."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kmc.errors import KafkaOperationError
from tests.helpers import BASE_TIMESTAMP, Rec, bootstrap, create_topic, kmc, produce

pytestmark = pytest.mark.kafka

# Recent timestamps: records older than the brokers' 7-day retention would be deleted mid-test.
DIFFERENCE_KEYS = ["kind", "topic", "target_topic", "partition", "key", "source", "target", "data"]


def sample(count: int, partitions: int = 1) -> list[Rec]:
    """Records with keys, values, duplicate headers and distinct timestamps, spread over partitions."""
    return [Rec(index % partitions, f"key-{index}".encode(), f"value-{index}".encode(),
                [("trace", f"t{index}".encode()), ("trace", b"again"), ("empty", b"")], BASE_TIMESTAMP + index)
            for index in range(count)]


def copy_topic(src, dst, topic: str, records: list[Rec], partitions: int = 1,  # noqa: ANN001
               target_topic: str | None = None, target_records: list[Rec] | None = None) -> None:
    """The same topic on both clusters, with ``records`` (or ``target_records`` on the target)."""
    create_topic(src, topic, partitions)
    create_topic(dst, target_topic or topic, partitions)
    produce(src, topic, records)
    produce(dst, target_topic or topic, records if target_records is None else target_records)


def diff_json(*args: str, expect: int) -> dict:
    result = kmc("diff", *args, "-o", "json", expect=expect)
    return result.json()


def kinds(report: dict) -> list[str]:
    return [difference["kind"] for difference in report["differences"]]


# --- equal ------------------------------------------------------------------------------------


def test_identical_topics_exit_0(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    copy_topic(src_cluster, dst_cluster, topic_name, sample(40, 3), partitions=3)
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=0)
    assert report["equal"] is True
    assert report["differences"] == []
    assert report["topics"] == [{
        "topic": topic_name, "target_topic": topic_name, "status": "equal",
        "partitions": {"source": 3, "target": 3}, "replication_factor": {"source": 1, "target": 1},
        "records": {"source": 40, "target": 40}}]
    summary = report["summary"]
    assert (summary["topics"], summary["equal_topics"], summary["differences"], summary["records_compared"]) \
        == (1, 1, 0, 40)
    assert summary["bytes_compared"] > 0


def test_identical_table_output_is_empty_and_summary_on_stderr(src_cluster, dst_cluster,  # noqa: ANN001
                                                               topic_name: str) -> None:
    copy_topic(src_cluster, dst_cluster, topic_name, sample(5))
    result = kmc("diff", "src", "dst", "--topics", topic_name, expect=0)
    assert result.stdout == ""
    assert "src -> dst: no differences in 1 topics" in result.stderr
    assert "warning" not in result.stderr


def test_a_selection_that_matches_nothing_is_no_silent_proof(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    typo = kmc("diff", "src", "dst", "--topics", f"{topic_name}-typo", "--data", expect=0)
    assert typo.stderr.splitlines() == [
        "kmc: warning: no topic matches the selection on either side (check --topics and --exclude)",
        "src -> dst: no differences in 0 topics"]
    assert kmc("diff", "src", "dst", "--topics", f"{topic_name}-typo", "-o", "json").json()["summary"]["topics"] == 0


# --- metadata differences ---------------------------------------------------------------------


def test_missing_and_extra_topics(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, f"{topic_name}-only-src")
    create_topic(dst_cluster, f"{topic_name}-only-dst")
    report = diff_json("src", "dst", "--topics", f"{topic_name}-.*", expect=1)
    assert report["differences"] == [
        {"kind": "extra_topic", "topic": f"{topic_name}-only-dst", "target_topic": f"{topic_name}-only-dst",
         "partition": None, "key": None, "source": None, "target": f"{topic_name}-only-dst", "data": None},
        {"kind": "missing_topic", "topic": f"{topic_name}-only-src", "target_topic": f"{topic_name}-only-src",
         "partition": None, "key": None, "source": f"{topic_name}-only-src", "target": None, "data": None},
    ]
    assert [topic["status"] for topic in report["topics"]] == ["extra", "missing"]
    assert (report["summary"]["missing_topics"], report["summary"]["extra_topics"]) == (1, 1)


def test_partition_count(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, partitions=2)
    create_topic(dst_cluster, topic_name, partitions=3)
    report = diff_json("src", "dst", "--topics", topic_name, expect=1)
    assert report["differences"] == [{"kind": "partitions", "topic": topic_name, "target_topic": topic_name,
                                      "partition": None, "key": None, "source": 2, "target": 3, "data": None}]


def test_replication_factor_is_shown_and_a_difference_only_with_strict(three_broker_cluster, dst_cluster,  # noqa: ANN001
                                                                       topic_name: str) -> None:
    create_topic(three_broker_cluster, topic_name, replication=3)
    create_topic(dst_cluster, topic_name, replication=1)
    relaxed = kmc("diff", three_broker_cluster.name, "dst", "--topics", topic_name, "-o", "json", expect=0)
    assert relaxed.json()["topics"][0]["replication_factor"] == {"source": 3, "target": 1}
    assert "replication factor 3 vs 1" in relaxed.stderr
    strict = diff_json(three_broker_cluster.name, "dst", "--topics", topic_name, "--strict", expect=1)
    assert strict["differences"] == [{"kind": "replication_factor", "topic": topic_name, "target_topic": topic_name,
                                      "partition": None, "key": None, "source": 3, "target": 1, "data": None}]


def test_topic_configs(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, config={"retention.ms": "3600000", "min.insync.replicas": "1",
                                                  "cleanup.policy": "compact"})
    create_topic(dst_cluster, topic_name, config={"retention.ms": "7200000", "cleanup.policy": "compact",
                                                  "max.message.bytes": "2000000"})
    report = diff_json("src", "dst", "--topics", topic_name, expect=1)
    assert [(d["kind"], d["key"], d["source"], d["target"]) for d in report["differences"]] == [
        ("config", "max.message.bytes", None, "2000000"),
        ("config", "retention.ms", "3600000", "7200000"),
    ]  # min.insync.replicas is cluster-specific: ignored unless named
    named = diff_json("src", "dst", "--topics", topic_name, "--configs", "min.insync.replicas,cleanup.policy",
                      expect=1)
    assert [(d["key"], d["source"], d["target"]) for d in named["differences"]] == [
        ("min.insync.replicas", "1", None)]
    diff_json("src", "dst", "--topics", topic_name, "--configs", "none", expect=0)


def test_record_counts_per_partition(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    records = sample(20, 2)
    copy_topic(src_cluster, dst_cluster, topic_name, records, partitions=2,
               target_records=records + [Rec(1, b"late", b"arrival")])
    report = diff_json("src", "dst", "--topics", topic_name, expect=1)
    assert report["differences"] == [{"kind": "records", "topic": topic_name, "target_topic": topic_name,
                                      "partition": 1, "key": None, "source": 10, "target": 11, "data": None}]
    assert report["topics"][0]["records"] == {"source": 20, "target": 21}


# --- content ----------------------------------------------------------------------------------


def test_data_detects_one_changed_byte_in_one_header(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    records = sample(30, 2)
    changed = list(records)
    changed[17] = replace(records[17], headers=[("trace", b"t18"), ("trace", b"again"), ("empty", b"")])
    assert records[17].partition == 1 and records[17].headers[0] == ("trace", b"t17")
    copy_topic(src_cluster, dst_cluster, topic_name, records, partitions=2, target_records=changed)

    diff_json("src", "dst", "--topics", topic_name, expect=0)  # counts and metadata are equal
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=1)
    assert report["differences"] == [{
        "kind": "data", "topic": topic_name, "target_topic": topic_name, "partition": 1, "key": None,
        "source": 15, "target": 15,
        "data": {"differing": 1, "missing": 0, "extra": 0,
                 "first_difference": {"index": 8, "source_offset": 8, "target_offset": 8, "fields": ["headers"]}},
    }]
    assert report["summary"]["records_compared"] == 30


def test_data_streams_partitions_longer_than_one_batch(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """25,000 records in one partition take several polls and queue batches per side; the one changed
    value deep inside is still found at its position."""
    records = [Rec(0, b"%d" % index, b"v%d" % index, timestamp=BASE_TIMESTAMP + index) for index in range(25_000)]
    changed = list(records)
    changed[21_000] = replace(records[21_000], value=b"v21001")
    copy_topic(src_cluster, dst_cluster, topic_name, records, target_records=changed)
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=1)
    assert [d["data"] for d in report["differences"]] == [{
        "differing": 1, "missing": 0, "extra": 0,
        "first_difference": {"index": 21_000, "source_offset": 21_000, "target_offset": 21_000, "fields": ["value"]}}]
    assert report["summary"]["records_compared"] == 25_000


def test_data_missing_and_extra_records(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    records = sample(10)
    copy_topic(src_cluster, dst_cluster, f"{topic_name}-short", records, target_records=records[:7])
    copy_topic(src_cluster, dst_cluster, f"{topic_name}-long", records, target_records=records + sample(12)[10:])
    report = diff_json("src", "dst", "--topics", f"{topic_name}-.*", "--data", expect=1)
    found = {(d["topic"], d["kind"]): d for d in report["differences"]}
    assert sorted(found) == [(f"{topic_name}-long", "data"), (f"{topic_name}-long", "records"),
                             (f"{topic_name}-short", "data"), (f"{topic_name}-short", "records")]
    assert found[(f"{topic_name}-short", "data")]["data"] == {
        "differing": 0, "missing": 3, "extra": 0,
        "first_difference": {"index": 7, "source_offset": 7, "target_offset": None, "fields": None}}
    assert found[(f"{topic_name}-long", "data")]["data"] == {
        "differing": 0, "missing": 0, "extra": 2,
        "first_difference": {"index": 10, "source_offset": None, "target_offset": 10, "fields": None}}
    assert (found[(f"{topic_name}-short", "records")]["source"], found[(f"{topic_name}-short", "records")]["target"]) \
        == (10, 7)
    assert report["summary"]["records_compared"] == 10 + 12  # per partition, the longer side


def test_data_compares_positions_not_offsets(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """A mirror's offsets differ from its source's: the target starts later here, the content is equal."""
    records = sample(8)
    create_topic(src_cluster, topic_name)
    create_topic(dst_cluster, topic_name)
    produce(src_cluster, topic_name, records)
    produce(dst_cluster, topic_name, [Rec(0, b"old", b"old")] * 5)
    admin = AdminClient({"bootstrap.servers": bootstrap(dst_cluster)})
    for future in admin.delete_records([TopicPartition(topic_name, 0, 5)]).values():
        future.result(30)
    produce(dst_cluster, topic_name, records)
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=0)
    assert report["summary"]["records_compared"] == 8  # positions 0-7 on both sides, not offsets 0-7 and 5-12


def test_null_keys_and_tombstones_compare_equal_to_an_exact_copy(src_cluster, dst_cluster,  # noqa: ANN001
                                                                 topic_name: str) -> None:
    records = [Rec(0, None, b"no key"), Rec(0, b"k1", None), Rec(0, None, None), Rec(0, b"", b""),
               Rec(0, b"k2", b"v", [("h", None)]), Rec(0, b"k1", None, timestamp=BASE_TIMESTAMP + 9)]
    copy_topic(src_cluster, dst_cluster, topic_name, records)
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=0)
    assert report["summary"]["records_compared"] == 6

    # ... and a null key is not an empty key
    other = f"{topic_name}-empty"
    copy_topic(src_cluster, dst_cluster, other, records,
               target_records=[replace(records[0], key=b"")] + records[1:])
    report = diff_json("src", "dst", "--topics", other, "--data", expect=1)
    assert report["differences"][0]["data"]["first_difference"]["fields"] == ["key"]
    assert report["summary"]["records_compared"] == 6


def test_kmc_headers_are_not_content(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    records = sample(6)
    mirrored = [replace(record, headers=record.headers + [("kmc-origin", b"some-cluster-id")]) for record in records]
    copy_topic(src_cluster, dst_cluster, topic_name, records, target_records=mirrored)
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=0)
    assert report["summary"]["records_compared"] == 6


def test_aborted_transactions_are_not_content(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """read_committed on both sides: an aborted transaction on the target is no difference, and the
    counts are records read, not offset spans (which transaction markers inflate)."""
    records = sample(6)
    copy_topic(src_cluster, dst_cluster, topic_name, records[:3], target_records=records[:3])
    producer = Producer({"bootstrap.servers": bootstrap(dst_cluster), "transactional.id": f"{topic_name}-tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic_name, value=b"aborted", key=b"x", partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for record in records[3:]:
        producer.produce(topic_name, value=record.value, key=record.key, partition=0, headers=record.headers,
                         timestamp=record.timestamp)
    producer.commit_transaction(30)
    produce(src_cluster, topic_name, records[3:])

    spans = diff_json("src", "dst", "--topics", topic_name, expect=1)
    assert kinds(spans) == ["records"]  # offset spans: 6 vs 6 records + 1 aborted + 2 markers
    report = diff_json("src", "dst", "--topics", topic_name, "--data", expect=0)
    assert report["topics"][0]["records"] == {"source": 6, "target": 6}
    assert report["summary"]["records_compared"] == 6


# --- rename -----------------------------------------------------------------------------------


def test_rename_template_maps_source_topics(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    records = sample(12, 2)
    copy_topic(src_cluster, dst_cluster, topic_name, records, partitions=2, target_topic=f"src.{topic_name}")
    create_topic(dst_cluster, f"src.{topic_name}-gone")  # a mirror of a source topic that no longer exists
    create_topic(dst_cluster, f"other.{topic_name}")  # another source's mirror: out of scope

    report = diff_json("src", "dst", "--topics", f"{topic_name}.*", "--rename", "{source}.{topic}", "--data",
                       expect=1)
    assert [(t["topic"], t["target_topic"], t["status"]) for t in report["topics"]] == [
        (topic_name, f"src.{topic_name}", "equal"),
        (f"{topic_name}-gone", f"src.{topic_name}-gone", "extra"),
    ]
    assert kinds(report) == ["extra_topic"]
    assert report["rename"] == "{source}.{topic}"
    assert report["summary"]["records_compared"] == 12  # the one pair's records; the extra topic is not read
    table = kmc("diff", "src", "dst", "--topics", f"{topic_name}.*", "--rename", "{source}.{topic}", expect=1)
    assert table.stdout.splitlines()[1].split() == [
        "+", f"src.{topic_name}-gone", "topic", "(absent)", f"src.{topic_name}-gone", "no", "source", "topic",
        f"{topic_name}-gone"]

    plain = diff_json("src", "dst", "--topics", topic_name, expect=1)
    assert kinds(plain) == ["missing_topic"]


# --- output -----------------------------------------------------------------------------------


def test_table_lists_differences_with_markers(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, f"{topic_name}-a", partitions=1, config={"retention.ms": "1000"})
    create_topic(dst_cluster, f"{topic_name}-a", partitions=2)
    create_topic(src_cluster, f"{topic_name}-b")
    result = kmc("diff", "src", "dst", "--topics", f"{topic_name}-.*", expect=1)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TOPIC", "KEY", "src", "dst", "DETAIL"]
    assert lines[1].split() == ["~", f"{topic_name}-a", "partitions", "1", "2"]
    assert lines[2].split() == ["~", f"{topic_name}-a", "config", "retention.ms", "1000", "(unset)"]
    assert lines[3].split() == ["-", f"{topic_name}-b", "topic", f"{topic_name}-b", "(absent)"]
    assert "3 differences in 2 of 2 topics" in result.stderr


def test_ndjson_gives_one_difference_per_line(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, f"{topic_name}-x")
    create_topic(src_cluster, f"{topic_name}-y")
    result = kmc("diff", "src", "dst", "--topics", f"{topic_name}-.*", "-o", "ndjson", expect=1)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(line) for line in lines] == [DIFFERENCE_KEYS, DIFFERENCE_KEYS]
    assert [line["topic"] for line in lines] == [f"{topic_name}-x", f"{topic_name}-y"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["nosuch", "dst"], "unknown cluster 'nosuch'"),
    (["src", "dst", "--topics", "("], "--topics: bad regex"),
    (["src", "dst", "--exclude", "a["], "--exclude: bad regex"),
    (["src", "dst", "--rename", "{source}"], "must contain {topic}"),
    (["src", "dst", "--rename", "{cluster}.{topic}"], "unknown placeholder"),
    (["src", "dst", "--configs", ","], "--configs"),
])
def test_usage_errors_exit_2(src_cluster, dst_cluster, args: list[str], message: str) -> None:  # noqa: ANN001
    result = kmc("diff", *args, expect=2)
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unreachable_cluster_exits_4(dst_cluster) -> None:  # noqa: ANN001
    result = kmc("diff", "127.0.0.1:1", "dst", "--timeout", "1", expect=4)
    assert result.stderr.startswith("kmc: error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_failed_comparison_exits_8_never_1(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """1 means "different" and nothing else: a read that fails is the error's own code (here a broker's
    refusal, 8), so a script can tell "different" from "could not tell"."""
    copy_topic(src_cluster, dst_cluster, topic_name, sample(3))

    def failing_read(*args: object, **kwargs: object) -> None:
        raise KafkaOperationError(f"src: read {topic_name}[0]: UnknownServerError")

    monkeypatch.setattr("kmc.diff.clusters.compare_partitions", failing_read)
    result = kmc("diff", "src", "dst", "--topics", topic_name, "--data", expect=8)
    assert result.stdout == "" and result.stderr.startswith(f"kmc: error: src: read {topic_name}[0]: ")


@pytest.mark.timeout(60)
def test_reader_process_failures_arrive_as_kmc_errors() -> None:
    """A reader process reports its error (class, message) to the comparing process, which raises it."""
    from kmc.client import KafkaSession
    from kmc.diff import ClusterSide, PartitionJob, compare_partitions
    from kmc.errors import UnreachableError
    from kmc.profiles import Cluster

    nowhere = Cluster("nowhere", ("127.0.0.1:1",))
    job = PartitionJob("t", "t", 0, (0, 5), (0, 5))
    with KafkaSession(nowhere, timeout=1) as session, pytest.raises(UnreachableError, match="nowhere"):
        compare_partitions(ClusterSide(session), ClusterSide(session), [job])
