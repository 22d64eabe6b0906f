"""kmc export and kmc import (issue 16): lossless round trips through files and pipes, incremental parts,
resuming after kill -9, damaged exports, a full disk. Data is made and checked with confluent-kafka
(tests/helpers.py), never with kmc's own reading code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.helpers import (
    Rec,
    admin,
    assert_exact_copy,
    bootstrap,
    count,
    create_topic,
    kmc,
    log_batches,
    numbered,
    produce,
    producer,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.kafka
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
Y2001 = 978_307_200_000 + 12_345  # 2001-01-01T00:00:12.345Z
KMC = [sys.executable, "-m", "kmc"]


def export_json(*args: str, expect: int = 0) -> dict:
    return kmc("export", *args, "-o", "json", expect=expect).json()


def import_json(*args: str, expect: int = 0) -> dict:
    return kmc("import", *args, "-o", "json", expect=expect).json()


def configs(cluster, topic: str) -> dict[str, str]:  # noqa: ANN001
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource("topic", topic)
    found = admin(cluster).describe_configs([resource])[resource].result(30)
    return {key: entry.value for key, entry in found.items() if not entry.is_default}


def hard_data(cluster, topic: str) -> None:  # noqa: ANN001
    """One partition per codec, each with the records a pipe of kcat would lose."""
    create_topic(cluster, topic, len(CODECS), {"retention.ms": "-1", "max.message.bytes": "2000000"})
    for partition, codec in enumerate(CODECS):
        records = [
            Rec(partition, b"plain", b"value", [], Y2001),  # a timestamp from 2001 (retention: forever)
            Rec(partition, None, b"null key", [("h", b"1")], Y2001 + 1),
            Rec(partition, b"tombstone", None, [], Y2001 + 2),
            Rec(partition, None, None, [("only", b"headers")], Y2001 + 3),
            Rec(partition, b"dup", b"v", [("a", b"1"), ("b", b"2"), ("a", b"3"), ("a", b"1"), ("empty", b""),
                                          ("null", None)], Y2001 + 4),
            Rec(partition, b"bin\x00\xff\x80", bytes(range(256)) * 4, [("bin", b"\x00\xff")], Y2001 + 5),
            Rec(partition, b"", b"", [], Y2001 + 6),
            *(Rec(partition, f"k{i}".encode(), f"{codec}-{i}".encode() * 20, [("i", str(i).encode())],
                  Y2001 + 10 + i) for i in range(300)),
        ]
        if partition == 0:
            records.append(Rec(partition, b"big", os.urandom(900 * 1024), [], Y2001 + 400))  # a 900 KB record
        produce(cluster, topic, records, **{"compression.type": codec, "linger.ms": 20,
                                            "message.max.bytes": 2_000_000})


def transactional_data(cluster, topic: str) -> None:  # noqa: ANN001
    create_topic(cluster, topic, 2)
    txn = producer(cluster, **{"transactional.id": f"tx-{topic}"})
    txn.init_transactions(30)
    for label, commit in (("first", True), ("aborted", False), ("last", True), ("again-aborted", False)):
        txn.begin_transaction()
        for i in range(6):
            txn.produce(topic, key=f"{label}-{i}".encode(), value=label.encode(), partition=i % 2)
        txn.flush(30)
        if commit:
            txn.commit_transaction(30)
        else:
            txn.abort_transaction(30)
    produce(cluster, topic, numbered(10, 2, prefix="plain"))


def compacted_data(cluster, topic: str) -> None:  # noqa: ANN001
    """A compacted topic whose batches have offset gaps (the cleaner ran)."""
    create_topic(cluster, topic, 1, {"cleanup.policy": "compact", "segment.ms": "100",
                                     "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100"})
    client = Producer({"bootstrap.servers": bootstrap(cluster), "linger.ms": 50})
    for round_ in range(4):
        for index in range(200):
            client.produce(topic, key=b"k%d" % (index % 50), value=b"r%d-%d" % (round_, index), partition=0)
        client.flush(30)
        time.sleep(0.3)
    client.produce(topic, key=b"last", value=b"x", partition=0)
    client.flush(30)
    wait_for(lambda: any(1 < b.records < 200 for b in log_batches(cluster, topic, 0) if not b.control), 120,
             "the log cleaner to compact the topic")


@pytest.fixture(scope="module")
def hard_topics(src_cluster) -> dict[str, str]:  # noqa: ANN001
    """The round trip's source topics, made once for the module: {kind: topic name}."""
    suffix = os.urandom(3).hex()
    names = {kind: f"arch-{kind}-{suffix}" for kind in ("hard", "txn", "compacted")}
    hard_data(src_cluster, names["hard"])
    transactional_data(src_cluster, names["txn"])
    compacted_data(src_cluster, names["compacted"])
    return names


def assert_same_topics(source_cluster, target_cluster, names: dict[str, str], rename: str = "{}") -> None:  # noqa: ANN001
    for kind, name in names.items():
        source, target = read_all(source_cluster, name), read_all(target_cluster, rename.format(name))
        assert sum(map(len, source.values())) > 0
        if kind == "compacted":
            # both sides' cleaners compact on their own schedules (the copy has the source's configs):
            # what compaction keeps is each key's last value, and that must be the same on both
            for partition, records in source.items():
                latest = {r.key: (r.value, r.headers, r.timestamp) for r in records}
                assert {r.key: (r.value, r.headers, r.timestamp) for r in target[partition]} == latest, partition
        else:
            assert_exact_copy(source, target)
        assert set(target) == set(source)  # the same partition count


def test_round_trip_through_a_directory_keeps_every_record_config_and_codec(src_cluster, dst_cluster,  # noqa: ANN001
                                                                           hard_topics, tmp_path: Path) -> None:
    selection = [arg for name in hard_topics.values() for arg in ("--topics", name)]
    exported = export_json("src", *selection, "--to", tmp_path / "backup")
    assert exported["part"] == 1 and exported["complete"]
    by_topic = {topic["topic"]: topic for topic in exported["topics"]}
    source = {name: read_all(src_cluster, name) for name in hard_topics.values()}
    for name, records in source.items():
        assert by_topic[name]["records"] == sum(map(len, records.values()))
    # batches are stored as the source broker stored them: same sizes and codecs, compressed ones compressed
    manifest = json.loads((tmp_path / "backup" / "part-00001" / "manifest.json").read_text())
    hard = hard_topics["hard"]
    for partition, codec in enumerate(CODECS):
        stored = [b for b in log_batches(src_cluster, hard, partition) if not b.control]
        entry = next(p for p in manifest["partitions"] if p["topic"] == hard and p["partition"] == partition)
        assert entry["bytes"] == sum(b.size for b in stored) and entry["batches"] == len(stored)
        assert {b.codec for b in stored} == {CODECS.index(codec)}
    imported = import_json(tmp_path / "backup", "dst", "--rename", "{topic}.restored")
    assert imported["records"] == exported["records"] and imported["complete"]
    assert_same_topics(src_cluster, dst_cluster, hard_topics, "{}.restored")
    assert configs(dst_cluster, f"{hard}.restored")["max.message.bytes"] == "2000000"
    assert configs(dst_cluster, f"{hard_topics['compacted']}.restored")["cleanup.policy"] == "compact"
    # aborted records never arrive; the target holds no gaps and no markers of the source
    txn = read_all(dst_cluster, f"{hard_topics['txn']}.restored")
    assert sorted({r.value for rs in txn.values() for r in rs}) == [b"first", b"last"] + sorted(
        {r.value for rs in txn.values() for r in rs} - {b"first", b"last"})
    assert not any(r.value.startswith(b"aborted") or r.value == b"again-aborted" for rs in txn.values() for r in rs)
    # idempotent: a second import copies nothing
    again = import_json(tmp_path / "backup", "dst", "--rename", "{topic}.restored")
    assert (again["records"], again["changes"]) == (0, [])
    assert_same_topics(src_cluster, dst_cluster, hard_topics, "{}.restored")
    # kmc diff proves it, with the export on either side
    kmc("diff", tmp_path / "backup", "dst", "--rename", "{topic}.restored", "--data", *selection)
    kmc("diff", "src", tmp_path / "backup", *selection, "--data")


def test_round_trip_through_a_pipe(src_cluster, dst_cluster, hard_topics) -> None:  # noqa: ANN001
    selection = [arg for name in hard_topics.values() for arg in ("--topics", name)]
    env = {**os.environ}
    exporter = subprocess.Popen([*KMC, "export", "src", *selection, "--to", "-"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
    importer = subprocess.run([*KMC, "import", "-", "dst", "--rename", "{topic}.piped", "-o", "json"],
                              stdin=exporter.stdout, capture_output=True, env=env, timeout=300)
    exporter.stdout.close()
    assert exporter.wait(60) == 0, exporter.stderr.read()
    assert importer.returncode == 0, importer.stderr
    assert json.loads(importer.stdout)["complete"]
    assert_same_topics(src_cluster, dst_cluster, hard_topics, "{}.piped")


def test_incremental_parts_continue_where_the_last_one_ended(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, numbered(90, 3))
    backup = tmp_path / "nightly"
    first = export_json("src", "--topics", topic_name, "--to", backup)
    assert (first["part"], first["records"]) == (1, 90)
    assert import_json(backup, "dst")["records"] == 90
    produce(src_cluster, topic_name, numbered(30, 3, start=90))
    second = export_json("src", "--topics", topic_name, "--to", backup)
    assert (second["part"], second["records"]) == (2, 30)
    one, two = (json.loads((backup / f"part-0000{n}" / "manifest.json").read_text()) for n in (1, 2))
    ends = {p["partition"]: p["end_offset"] for p in one["partitions"]}
    assert {p["partition"]: p["start_offset"] for p in two["partitions"]} == ends == {0: 30, 1: 30, 2: 30}
    assert export_json("src", "--topics", topic_name, "--to", backup)["records"] == 0  # part 3: nothing new
    imported = import_json(backup, "dst")
    assert (imported["records"], imported["parts"]) == (30, [1, 2, 3])
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


@pytest.mark.slow
def test_kill_9_during_an_import_then_resume_is_exact(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 4)
    for start in range(0, 200_000, 20_000):  # librdkafka's queue holds 100,000 records
        produce(src_cluster, topic_name, [Rec(i % 4, b"k%d" % i, os.urandom(200), [("i", b"%d" % i)])
                                          for i in range(start, start + 20_000)], **{"linger.ms": 20})
    backup = tmp_path / "big"
    export_json("src", "--topics", topic_name, "--to", backup)
    # checkpoints rarely: the killed run certainly leaves acknowledged records after its last checkpoint
    run = subprocess.Popen([*KMC, "import", str(backup), "dst", "--checkpoint-interval", "20"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _written(dst_cluster, topic_name) > 20_000 or run.poll() is not None, 120, "importing")
        assert run.poll() is None, "the import finished before it could be killed"
        run.kill()
    finally:
        with contextlib.suppress(Exception):
            run.kill()
        run.wait(30)
    # the killed run's last produce requests may still be in the broker's hands: count once they all landed
    # (the target's ends unchanged for 2 s, as the resuming run itself waits after a crash)
    ends, still = _written(dst_cluster, topic_name), 0
    while still < 2:
        time.sleep(1)
        now = _written(dst_cluster, topic_name)
        ends, still = now, (still + 1 if now == ends else 0)
    before = count(dst_cluster, topic_name)
    # (on a loaded machine the import may have written its last batch, not yet exited, when killed)
    assert 0 < before <= 200_000
    resumed = import_json(backup, "dst")
    # nothing the killed run wrote is sent again: what it wrote after its last checkpoint is found in the
    # target ("present"); on a loaded machine it may have written every batch and its final checkpoint
    # before the kill landed, and then the resumed run finds nothing to do
    assert resumed["records"] == 200_000 - before
    assert resumed["present"] == before or (before == 200_000 and resumed["present"] == 0), (resumed, before)
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def _written(cluster, topic: str) -> int:  # noqa: ANN001
    """The sum of the topic's end offsets (0 while it does not exist): cheap enough to ask every 0.3 s."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap(cluster), "group.id": "end-offsets"})
    try:
        topics = consumer.list_topics(topic, timeout=10).topics
        if topic not in topics or topics[topic].error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in topics[topic].partitions)
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------ bad input


@pytest.fixture
def small_export(src_cluster, topic_name: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:  # noqa: ANN001
    """A topic of 3 partitions, 600 records in batches of 20, exported."""
    create_topic(src_cluster, topic_name, 3)
    for chunk in range(10):
        produce(src_cluster, topic_name, numbered(60, 3, start=60 * chunk))
    backup = tmp_path / "export"
    export_json("src", "--topics", topic_name, "--to", backup)
    yield topic_name, backup


def _data_file(backup: Path, topic: str, partition: int) -> Path:
    return next((backup / "part-00001" / "data" / topic / str(partition)).glob("*.batches"))


def _batch_starts(path: Path) -> list[tuple[int, int]]:
    """(position, base offset) of each batch in a data file (its own framing: base offset, length)."""
    data, found, position = path.read_bytes(), [], 0
    while position < len(data):
        base, length = int.from_bytes(data[position:position + 8], "big"), int.from_bytes(
            data[position + 8:position + 12], "big")
        found.append((position, base))
        position += 12 + length
    return found


def test_one_flipped_byte_is_found_and_nothing_past_it_is_imported(src_cluster, dst_cluster,  # noqa: ANN001
                                                                     small_export) -> None:
    topic, backup = small_export
    path = _data_file(backup, topic, 1)
    starts = _batch_starts(path)
    assert len(starts) >= 5
    position, damaged_offset = starts[3]
    data = bytearray(path.read_bytes())
    data[position + 70] ^= 0x01  # inside the 4th batch's records
    path.write_bytes(bytes(data))
    result = kmc("import", backup, "dst", "--rename", "{topic}.flipped", expect=9)
    lines = [line for line in result.stderr.splitlines() if line.startswith("kmc: error:")]
    assert len(lines) == 1
    assert str(path) in lines[0] and f"{topic}[1]" in lines[0] and f"offset {damaged_offset}" in lines[0]
    assert "CRC" in lines[0]
    source, target = read_all(src_cluster, topic), read_all(dst_cluster, f"{topic}.flipped")
    assert [r.value for r in target[1]] == [r.value for r in source[1] if r.offset < damaged_offset]
    assert_exact_copy({0: source[0], 2: source[2]}, {0: target[0], 2: target[2]})  # the others: whole


def test_a_truncated_file_an_unknown_version_and_a_checksum_mismatch_are_refused(src_cluster, dst_cluster,  # noqa: ANN001
                                                                                  small_export) -> None:
    topic, backup = small_export
    path = _data_file(backup, topic, 2)
    starts = _batch_starts(path)
    position, offset = starts[-2]
    path.write_bytes(path.read_bytes()[:position + 30])  # ends inside the second-to-last batch
    truncated = kmc("import", backup, "dst", "--rename", "{topic}.cut", expect=9)
    assert f"{topic}[2] damaged from offset {offset}" in truncated.stderr and "truncated" in truncated.stderr
    source = read_all(src_cluster, topic)
    assert [r.value for r in read_all(dst_cluster, f"{topic}.cut")[2]] == [
        r.value for r in source[2] if r.offset < offset]
    # a byte outside what any batch's CRC covers (the leader epoch): only the SHA-256 tells
    other = _data_file(backup, topic, 0)
    data = bytearray(other.read_bytes())
    data[_batch_starts(other)[2][0] + 13] ^= 0x40
    other.write_bytes(bytes(data))
    mismatch = kmc("import", backup, "dst", "--rename", "{topic}.sum", "--topics", topic, expect=9)
    assert "checksum mismatch" in mismatch.stderr and str(other) in mismatch.stderr
    assert read_all(dst_cluster, f"{topic}.sum")[0] == []  # none of that file
    manifest_path = backup / "part-00001" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    unknown = kmc("import", backup, "dst", "--rename", "{topic}.v99", expect=9)
    assert "format version 99" in unknown.stderr and "reads version 1" in unknown.stderr
    assert f"{topic}.v99" not in admin(dst_cluster).list_topics(timeout=30).topics


def test_a_target_topic_with_fewer_partitions_is_refused(dst_cluster, small_export) -> None:  # noqa: ANN001
    topic, backup = small_export
    create_topic(dst_cluster, f"{topic}.small", 2)
    refused = kmc("import", backup, "dst", "--rename", "{topic}.small", expect=2)
    assert f"{topic}.small has 2 partition(s), the export 3" in refused.stderr
    assert count(dst_cluster, f"{topic}.small") == 0


def test_a_truncated_stream_is_refused_after_its_last_whole_member(src_cluster, dst_cluster, small_export,  # noqa: ANN001
                                                                   tmp_path: Path) -> None:
    topic, _ = small_export
    stream = subprocess.run([*KMC, "export", "src", "--topics", topic, "--to", "-"], capture_output=True,
                            check=True).stdout
    cut = subprocess.run([*KMC, "import", "-", "dst", "--rename", "{topic}.halfpipe"], input=stream[:len(stream) // 2],
                         capture_output=True)
    assert cut.returncode == 9
    assert "the stream" in cut.stderr.decode() and "truncated" in cut.stderr.decode()
    assert count(dst_cluster, f"{topic}.halfpipe") < 600


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_leaves_the_part_incomplete_and_the_next_export_writes_it_again(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str, tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, [Rec(i % 2, b"%d" % i, os.urandom(1000)) for i in range(4000)])
    with small_disk(tmp_path / "disk", "1m") as disk:
        full = kmc("export", "src", "--topics", topic_name, "--to", disk / "backup", expect=8)
        assert "disk full" in full.stderr and "part-00001 is incomplete" in full.stderr
        manifest = json.loads((disk / "backup" / "part-00001" / "manifest.json").read_text())
        assert manifest["complete"] is False
        assert kmc("import", disk / "backup", "dst", expect=9).stderr.count("no complete part") == 1
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        again = export_json("src", "--topics", topic_name, "--to", disk / "backup")
        assert (again["part"], again["records"], again["complete"]) == (1, 4000, True)
        assert import_json(disk / "backup", "dst")["records"] == 4000
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def test_an_export_of_another_cluster_is_not_continued(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                       tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 1)
    export_json("src", "--topics", topic_name, "--to", tmp_path / "x")
    refused = kmc("export", "dst", "--to", tmp_path / "x", expect=2)
    assert re.search(r"holds an export of cluster \S+ \(src\)", refused.stderr)


def test_exactly_once_import_is_exact_and_idempotent(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                     tmp_path: Path) -> None:
    transactional_data(src_cluster, topic_name)
    export_json("src", "--topics", topic_name, "--to", tmp_path / "x")
    first = import_json(tmp_path / "x", "dst", "--exactly-once", "--rename", "{topic}.eos")
    assert first["records"] == 22  # first and last: 6 each, 10 plain
    assert import_json(tmp_path / "x", "dst", "--exactly-once", "--rename", "{topic}.eos")["records"] == 0
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, f"{topic_name}.eos"))


def test_the_standard_library_reader_of_the_docs_reads_an_export(src_cluster, topic_name: str,  # noqa: ANN001
                                                                 tmp_path: Path) -> None:
    """docs/export-format.md's example, run as it is written, prints every record the source holds."""
    import base64

    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(40, 2), **{"compression.type": "gzip"})
    produce(src_cluster, topic_name, [Rec(1, None, None, [("a", b"1"), ("a", None)], Y2001)])
    export_json("src", "--topics", topic_name, "--to", tmp_path / "x")
    text = (Path(__file__).parent.parent / "docs" / "export-format.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "reader.py").write_text(code)
    printed = subprocess.run([sys.executable, str(tmp_path / "reader.py"), str(tmp_path / "x")], capture_output=True,
                             text=True, check=True).stdout.splitlines()

    def decoded(value: str | None) -> bytes | None:
        return None if value is None else base64.b64decode(value)

    got: dict[int, list[tuple]] = {0: [], 1: []}
    for line in printed:
        record = json.loads(line)
        got[record["partition"]].append((record["offset"], decoded(record["key"]), decoded(record["value"]),
                                         [(name, decoded(value)) for name, value in record["headers"]],
                                         record["timestamp"]))
    source = read_all(src_cluster, topic_name)
    assert got == {p: [(r.offset, r.key, r.value, r.headers, r.timestamp[1]) for r in rs] for p, rs in source.items()}


def test_the_offset_map_moves_the_exported_groups_exactly(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                         tmp_path: Path) -> None:
    """The import keeps the offset map as a mirror does (kmc.checkpoints under the exported cluster's id, with
    anchors): from it and the manifest's group offsets, each group's next record is found in the target
    exactly, though the target topic held other records before (its offsets are not the source's). Read
    with confluent-kafka only. (`kmc groups translate` reads the same map.)"""
    from tests.helpers import cluster_id, commit

    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(60, 2))
    commit(src_cluster, "billing", {(topic_name, 0): 7, (topic_name, 1): 25})
    export_json("src", "--topics", topic_name, "--to", tmp_path / "x")
    manifest = json.loads((tmp_path / "x" / "part-00001" / "manifest.json").read_text())
    assert {(g["topic"], g["partition"], g["offset"]) for g in manifest["groups"]["billing"]} == {
        (topic_name, 0, 7), (topic_name, 1, 25)}
    create_topic(dst_cluster, topic_name, 2)
    produce(dst_cluster, topic_name, [Rec(p, b"other", b"writer") for p in (0, 1) for _ in range(5)])
    import_json(tmp_path / "x", "dst")
    prefix = f"mirror/{cluster_id(src_cluster)}/{topic_name}/"
    stored = {r.key.decode(): json.loads(r.value) for rs in read_all(dst_cluster, "kmc.checkpoints").values()
              for r in rs}
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    for entry in manifest["groups"]["billing"]:
        partition, committed = entry["partition"], entry["offset"]
        checkpoint = stored[f"{prefix}{partition}"]
        assert (checkpoint["next_offset"], checkpoint["target_next_offset"]) == (30, 35)
        anchor_source, anchor_target, _ = stored[f"anchors/{prefix}{partition}"][-1]
        assert (anchor_source, anchor_target) == (0, 5)
        copied_before = sum(anchor_source <= r.offset < committed for r in source[partition])
        translated = anchor_target + copied_before
        wanted = next(r for r in source[partition] if r.offset >= committed)
        got = next(r for r in target[partition] if r.offset == translated)
        assert (got.key, got.value, got.headers) == (wanted.key, wanted.value, wanted.headers)


def test_a_second_copy_under_another_name_starts_an_offset_map_of_its_own(src_cluster, dst_cluster,  # noqa: ANN001
                                                                           topic_name: str, tmp_path: Path) -> None:
    """Importing the same export again under another --rename (same flow) ignores the first copy's checkpoints,
    in one warning per topic, and its anchors: the second copy's offset map holds only its own stretch (a stale
    anchor of the first copy would pair the source's offsets with the wrong target offsets)."""
    from tests.helpers import cluster_id

    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(20, 2))
    export_json("src", "--topics", topic_name, "--to", tmp_path / "x")
    import_json(tmp_path / "x", "dst", "--rename", "{topic}.a")
    create_topic(dst_cluster, f"{topic_name}.b", 2)
    produce(dst_cluster, f"{topic_name}.b", [Rec(p, b"other", b"writer") for p in (0, 1) for _ in range(5)])
    second = kmc("import", tmp_path / "x", "dst", "--rename", "{topic}.b")
    warnings = [line for line in second.stderr.splitlines() if line.startswith("kmc: warning:")]
    assert warnings == [f"kmc: warning: {topic_name}: ignoring the checkpoints of 2 partition(s), which are for "
                        f"{topic_name}.a: importing into {topic_name}.b from the start (each copy of a topic into "
                        "one cluster needs its own --flow)"]
    assert count(dst_cluster, f"{topic_name}.b") == 30
    stored = {r.key.decode(): json.loads(r.value) for rs in read_all(dst_cluster, "kmc.checkpoints").values()
              for r in rs}
    prefix = f"mirror/{cluster_id(src_cluster)}/{topic_name}/"
    for partition in (0, 1):
        assert stored[f"{prefix}{partition}"]["target_topic"] == f"{topic_name}.b"
        assert [anchor[:2] for anchor in stored[f"anchors/{prefix}{partition}"]] == [[0, 5]]
