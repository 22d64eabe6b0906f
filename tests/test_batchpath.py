"""The byte-level copy path (kmc/mirror/batchpath.py).

Unit tests of its record rewriting against kafka-python's own batch decoder (pure functions, no broker),
then what only the byte path can do, against real sandbox clusters and verified with confluent-kafka.
"""

from __future__ import annotations

import os

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from kmc.mirror.batchpath import encode_records, origin_header_bytes
from tests.helpers import (
    BASE_TIMESTAMP,
    ORIGIN,
    Rec,
    assert_exact_copy,
    create_topic,
    kmc,
    numbered,
    produce,
    read_all,
    without_origin,
)

SOURCE_ID, TARGET_ID = "source-cluster-id", "target-cluster-id"
HEADER_SIZE = DefaultRecordBatchBuilder.HEADER_STRUCT.size


def source_batch(records: list[tuple[int, int, bytes | None, bytes | None, list]]) -> DefaultRecordBatch:
    """A v2 batch built by kafka-python from (offset, timestamp, key, value, headers), decompressed."""
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 30)
    for offset, timestamp, key, value, headers in records:
        builder.append(offset, timestamp, key, value, headers)
    batch = DefaultRecordBatch(bytes(builder.build()))
    batch._maybe_uncompress()
    return batch


def body_of(batch: DefaultRecordBatch) -> bytes:
    return bytes(batch._buffer[batch._pos:])


def rewrite(batch: DefaultRecordBatch, limit: int = 1 << 30) -> list[tuple[list, int, int, int]]:
    """Run encode_records over a whole source batch into as many target batches as ``limit`` makes;
    returns per target batch (decoded records, written, skipped, payload)."""
    body, position, out = body_of(batch), 0, []
    origin = origin_header_bytes(SOURCE_ID)
    while position < len(body):
        builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, limit)
        position, written, skipped, payload, base, highest = encode_records(
            builder._buffer, body, position, batch.first_timestamp, None, 0, limit, origin, TARGET_ID.encode(),
            ORIGIN.encode() in body)
        if written:
            builder._first_timestamp, builder._max_timestamp = base, highest
            builder._num_records, builder._last_offset = written, written - 1
        decoded = DefaultRecordBatch(bytes(builder.build())) if written else []
        assert not written or decoded.validate_crc()
        records = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decoded]
        assert not written or decoded.max_timestamp == max(r[1] for r in records)
        out.append((records, written, skipped, payload))
    return out


def test_records_are_rewritten_exactly_with_an_origin_header_and_renumbered_offsets() -> None:
    now = BASE_TIMESTAMP
    records = [
        (10, now, b"k", b"v", []),
        (11, now + 5, None, b"null key", [("h", b"1")]),
        (12, now - 86_400_000, b"tombstone", None, []),  # an older timestamp: a negative delta
        (15, now + 9, None, None, [("a", b"1"), ("a", b"1"), ("null", None), ("empty", b"")]),  # a compaction gap
        (16, now + 10, b"big", b"x" * 300_000, [("n", b"3")]),  # a value whose length needs a 3-byte varint
        (17, now + 4_000_000, b"", b"", []),  # a timestamp delta past the lookup table
    ]
    [(got, written, skipped, payload)] = rewrite(source_batch(records))
    assert (written, skipped) == (6, 0)
    assert payload == sum(len(r[2] or b"") + len(r[3] or b"") for r in records)
    origin = (ORIGIN, SOURCE_ID.encode())
    assert got == [(index, ts, key, value, [*headers, origin])
                   for index, (_, ts, key, value, headers) in enumerate(records)]


def test_an_existing_origin_is_kept_and_the_targets_own_records_are_skipped() -> None:
    now = BASE_TIMESTAMP
    records = [
        (0, now, b"a", b"from dc1", [("x", b"1"), (ORIGIN, b"dc1")]),
        (1, now + 1, b"b", b"from the target", [(ORIGIN, TARGET_ID.encode())]),
        (2, now + 2, b"c", b"no origin yet", [("x", b"2")]),
        (3, now + 3, b"d", b"a null origin counts as none", [(ORIGIN, None)]),
    ]
    [(got, written, skipped, _)] = rewrite(source_batch(records))
    assert (written, skipped) == (3, 1)
    origin = (ORIGIN, SOURCE_ID.encode())
    assert got == [
        (0, now, b"a", b"from dc1", [("x", b"1"), (ORIGIN, b"dc1")]),
        (1, now + 2, b"c", b"no origin yet", [("x", b"2"), origin]),
        (2, now + 3, b"d", b"a null origin counts as none", [(ORIGIN, None), origin]),
    ]


def test_a_full_target_batch_continues_in_the_next_one() -> None:
    records = [(i, BASE_TIMESTAMP + i, f"k{i}".encode(), b"v" * 50, [("i", str(i).encode())]) for i in range(100)]
    batches = rewrite(source_batch(records), limit=HEADER_SIZE + 1000)
    assert len(batches) > 5
    assert sum(written for _, written, _, _ in batches) == 100
    got = [record for decoded, _, _, _ in batches for record in decoded]
    assert [(ts, key) for _, ts, key, _, _ in got] == [(ts, key) for _, ts, key, _, _ in records]
    assert all([r[0] for r in decoded] == list(range(len(decoded))) for decoded, _, _, _ in batches)


def test_a_batch_of_only_skipped_records_writes_nothing() -> None:
    records = [(i, BASE_TIMESTAMP, b"k", b"v", [(ORIGIN, TARGET_ID.encode())]) for i in range(3)]
    [(got, written, skipped, payload)] = rewrite(source_batch(records))
    assert (got, written, skipped, payload) == ([], 0, 3, 0)


# ------------------------------------------------------------------------------------ real clusters


@pytest.mark.kafka
def test_null_header_values_arrive_null_on_the_byte_path_and_empty_on_the_record_path(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [Rec(0, b"k", b"v", [("nothing", None), ("something", b"1")], BASE_TIMESTAMP)]
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, records)
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "-o", "json")
    assert result.json()["records"] == 1 and "null values" not in result.stderr
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))
    # the record path (KMC_COPY_PATH=records) can only send them as empty values, and says so
    renamed = f"{topic_name}-records"
    monkeypatch.setenv("KMC_COPY_PATH", "records")
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--rename", "{topic}-records", "--flow", "records",
                 "-o", "json")
    assert "null values" in result.stderr
    [copied] = read_all(dst_cluster, renamed)[0]
    assert copied.headers[:2] == [("nothing", b""), ("something", b"1")]


@pytest.mark.kafka
def test_a_start_in_the_middle_of_a_batch_copies_exactly_the_records_after_it(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str) -> None:
    """--from TIMESTAMP lands inside a source batch: that batch is cut record by record, the rest go as
    bytes; the target holds exactly the records from that timestamp on."""
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(300, 1), **{"linger.ms": 200})  # one or a few big batches
    produce(src_cluster, topic_name, numbered(300, 1, start=300), **{"linger.ms": 200})
    start = BASE_TIMESTAMP + 150
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--from", str(start), "-o", "json")
    assert result.json()["records"] == 450
    source, target = read_all(src_cluster, topic_name)[0], read_all(dst_cluster, topic_name)[0]
    assert [without_origin(r) for r in target] == [without_origin(r) for r in source[150:]]


@pytest.mark.kafka
def test_both_copy_paths_write_the_same_records(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, numbered(3000, 3), **{"compression.type": "lz4", "linger.ms": 20})
    kmc("mirror", "src", "dst", "--topics", topic_name, "--rename", "{topic}-batches")
    monkeypatch.setenv("KMC_COPY_PATH", "records")
    kmc("mirror", "src", "dst", "--topics", topic_name, "--rename", "{topic}-records", "--flow", "records")
    batches, records = read_all(dst_cluster, f"{topic_name}-batches"), read_all(dst_cluster, f"{topic_name}-records")
    assert sum(map(len, batches.values())) == 3000
    assert {p: [(r.key, r.value, r.headers, r.timestamp) for r in rs] for p, rs in batches.items()} == \
        {p: [(r.key, r.value, r.headers, r.timestamp) for r in rs] for p, rs in records.items()}


@pytest.mark.kafka
def test_an_unknown_copy_path_is_a_usage_error(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    create_topic(src_cluster, topic_name, 1)
    monkeypatch.setenv("KMC_COPY_PATH", "fast")
    result = kmc("mirror", "src", "dst", "--topics", topic_name, expect=2)
    assert "KMC_COPY_PATH" in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr


@pytest.mark.kafka
def test_a_batch_too_large_for_the_target_topic_is_split_and_arrives_whole(src_cluster, dst_cluster,  # noqa: ANN001
                                                                         topic_name: str) -> None:
    """The target topic takes batches of at most 20 kB; kmc builds bigger ones from the source's batch:
    kafka-python splits them on MESSAGE_TOO_LARGE, and the byte path's futures follow the split."""
    create_topic(src_cluster, topic_name, 1)
    create_topic(dst_cluster, topic_name, 1, {"max.message.bytes": "20000"})
    records = [Rec(0, f"k{i}".encode(), os.urandom(1000), [("i", str(i).encode())], BASE_TIMESTAMP + i)
               for i in range(300)]
    produce(src_cluster, topic_name, records, **{"linger.ms": 200})
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--compression", "none", "-o", "json").json()
    assert result["records"] == 300
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


@pytest.mark.kafka
@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_record_too_large_for_the_target_is_one_error_line(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                             delivery: str) -> None:
    create_topic(src_cluster, topic_name, 1)
    create_topic(dst_cluster, topic_name, 1, {"max.message.bytes": "20000"})
    produce(src_cluster, topic_name, [Rec(0, b"big", os.urandom(50_000), [], BASE_TIMESTAMP)])
    extra = ["--exactly-once"] if delivery == "exactly-once" else []
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--compression", "none", *extra, expect=8)
    errors = [line for line in result.stderr.splitlines() if line.startswith("kmc: error:")]
    assert len(errors) == 1 and "MessageSizeTooLarge" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
