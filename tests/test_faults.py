"""The copy engine under faults: each defect of the faults issue (#10) pinned by a test against real brokers.

Records are produced and every copy verified with confluent-kafka, which shares no code with kmc. Faults
are made the way they happen in production: records deleted by the broker before they were copied, topics
deleted and created again, a transaction left open, a target that refuses a record, a paused process.
The long randomized runs (kill -9 of kmc and of brokers for minutes) are in tests/test_chaos.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from kmc import sandbox
from kmc.mirror import lock_dir
from tests.helpers import (
    ORIGIN,
    admin,
    bootstrap,
    cluster_id,
    count,
    create_topic,
    delete_records,
    kmc,
    log_batches,
    mirror_json,
    numbered,
    produce,
    produce_slowly,
    read_all,
    topics_of,
    wait_for,
)

pytestmark = pytest.mark.kafka


def values(records_by_partition: dict) -> dict[int, list[bytes]]:
    return {partition: [record.value for record in records] for partition, records in records_by_partition.items()}


def delete_topic(cluster, topic: str) -> None:  # noqa: ANN001
    admin(cluster).delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 30
    while topic in topics_of(cluster):
        assert time.monotonic() < deadline, f"{topic} was not deleted"
        time.sleep(0.2)
    time.sleep(1)  # metadata of the deletion reaching every client path


def alter_topic(cluster, topic: str, configs: dict[str, str]) -> None:  # noqa: ANN001
    resource_ = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in configs.items()])
    for future in admin(cluster).incremental_alter_configs([resource_]).values():
        future.result(30)


def gaps_of(result: dict) -> list[tuple[str, int, str, int | None, int | None]]:
    return [(gap["source_topic"], gap["partition"], gap["kind"], gap["first_offset"], gap["end_offset"])
            for gap in result["gaps"]]


# ------------------------------------------------------------------------------------ 1: two-way, byte path


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_two_way_mirror_keeps_running_with_traffic_on_both_sides(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                                    followers, delivery: str) -> None:
    """Defect 1: B's copies of A's records come back to B -> A in batches of their own, every record skipped
    by loop prevention; the byte path used to leave an empty batch behind, which the broker rejects."""
    extra = ["--exactly-once"] if delivery == "exactly-once" else []
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(40, 2, prefix="a"))
    first = mirror_json("src", "dst", "--topics", topic_name, "--once", "--flow", "a-to-b", *extra)
    assert first["records"] == 40
    back = followers("dst", "src", "--topics", topic_name, "--flow", "b-to-a", "-o", "json", *extra)
    forth = followers("src", "dst", "--topics", topic_name, "--flow", "a-to-b", "-o", "json", *extra)
    for round_ in range(3):
        produce(dst_cluster, topic_name, numbered(20, 2, start=100 * round_, prefix="b"))
        produce(src_cluster, topic_name, numbered(20, 2, start=40 + 100 * round_, prefix="a"))
        time.sleep(0.5)
    wanted = 40 + 60 + 60
    wait_for(lambda: count(src_cluster, topic_name) == wanted and count(dst_cluster, topic_name) == wanted, 90,
             "both sides to hold both sides' records", forth, back)
    time.sleep(3)  # long enough for a loop or a stop to show
    back.ensure_running()
    forth.ensure_running()
    assert count(src_cluster, topic_name) == wanted and count(dst_cluster, topic_name) == wanted
    assert back.stop() == 0 and forth.stop() == 0
    for cluster in (src_cluster, dst_cluster):
        got = [value for records in values(read_all(cluster, topic_name)).values() for value in records]
        assert len(got) == len(set(got)) == wanted  # each record once on each side
    assert json.loads(back.stdout)["skipped"] >= 40 + 60  # A's records, seen on their way back


# ------------------------------------------------------------------------------------ 2: deleted before copied


def test_records_deleted_before_they_were_copied_are_a_reported_gap_and_exit_7(src_cluster, dst_cluster,  # noqa: ANN001
                                                                              topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(100, 2))
    assert mirror_json("src", "dst", "--topics", topic_name, "--once")["records"] == 100
    produce(src_cluster, topic_name, numbered(100, 2, start=100))
    delete_records(src_cluster, topic_name, {0: 80, 1: 70})  # 30 and 20 records were never copied
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", "-o", "json", expect=7)
    document = result.json()
    assert sorted(gaps_of(document)) == [(topic_name, 0, "expired", 50, 80), (topic_name, 1, "expired", 50, 70)]
    assert document["records"] == 20 + 30 and document["topics"][0]["gaps"] == 2
    assert "records 50 to 79 expired at the source before they were copied" in result.stderr
    assert "kmc: error:" in result.stderr and "2 data gap(s)" in result.stderr
    target = values(read_all(dst_cluster, topic_name))
    assert [v.decode() for v in target[0][50:]] == [f"r-{i}" for i in range(160, 200, 2)]
    # the gap is recorded once: the next run finds nothing new
    again = mirror_json("src", "dst", "--topics", topic_name, "--once")
    assert (again["records"], again["gaps"]) == (0, [])


def test_a_target_outage_longer_than_the_source_retention_is_a_reported_gap(src_cluster, dst_cluster,  # noqa: ANN001
                                                                            topic_name: str, followers) -> None:
    """The target is down longer than the source keeps data: the source's retention deletes records kmc has
    not copied. The consumer used to reset the out-of-range position to the log start without a word."""
    create_topic(src_cluster, topic_name, 1, {"segment.ms": "1000"})
    produce(src_cluster, topic_name, numbered(100, 1))
    follower = followers("src", "dst", "--topics", topic_name, "--delivery-timeout", "3", "-o", "json")
    wait_for(lambda: count(dst_cluster, topic_name) == 100, 60, "the first records", follower)
    sandbox.stop_broker(dst_cluster.name, 1)
    try:
        for burst in range(5):  # records a second apart, so each burst is a segment of its own
            produce(src_cluster, topic_name, numbered(20, 1, start=100 + 20 * burst))
            time.sleep(1.2)
        alter_topic(src_cluster, topic_name, {"retention.ms": "1"})  # the broker deletes closed segments
        wait_for(lambda: low_watermark(src_cluster, topic_name) > 100, 60, "retention to delete records")
        alter_topic(src_cluster, topic_name, {"retention.ms": str(7 * 86_400_000)})
        deleted_to = low_watermark(src_cluster, topic_name)
        follower.ensure_running()
    finally:
        sandbox.start_broker(dst_cluster.name, 1)
    produce(src_cluster, topic_name, numbered(10, 1, start=200))
    wait_for(lambda: b"r-209" in values(read_all(dst_cluster, topic_name))[0], 90, "the newest records", follower)
    assert follower.stop() == 0
    document = json.loads(follower.stdout)
    assert gaps_of(document) == [(topic_name, 0, "expired", 100, deleted_to)]
    assert f"records 100 to {deleted_to - 1} expired at the source" in follower.stderr
    got = values(read_all(dst_cluster, topic_name))[0]
    first_seen = list(dict.fromkeys(v.decode() for v in got))
    assert first_seen == [f"r-{i}" for i in [*range(100), *range(deleted_to, 210)]]  # nothing else lost


def low_watermark(cluster, topic: str, partition: int = 0) -> int:  # noqa: ANN001
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap(cluster), "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(CTopicPartition(topic, partition), timeout=10)[0]
    finally:
        consumer.close()


def test_a_gap_shows_in_flow_status(src_cluster, dst_cluster, topic_name: str, tmp_path: Path,  # noqa: ANN001
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[flows.gappy]\nfrom = "src"\nto = "dst"\ntopics = ["{topic_name}"]\n')
    monkeypatch.setenv("KMC_CONFIG", str(config))
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(10, 1))
    kmc("flow", "run", "gappy", "--once")
    produce(src_cluster, topic_name, numbered(10, 1, start=10))
    delete_records(src_cluster, topic_name, {0: 15})
    assert kmc("flow", "run", "gappy", "--once", expect=7).code == 7
    [row] = kmc("flow", "status", "gappy", "-o", "json").json()
    assert (row["source_topic"], row["gaps"]) == (topic_name, 1)


# ------------------------------------------------------------------------------------ 3: open transactions


def test_an_open_transaction_in_the_checkpoint_topic_hides_no_checkpoint(src_cluster, dst_cluster,  # noqa: ANN001
                                                                        topic_name: str) -> None:
    """Defect 3: the checkpoints were read read_committed up to the last stable offset, which an open
    transaction of another writer holds back: --exactly-once then resumed from an older checkpoint."""
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(50, 1))
    assert mirror_json("src", "dst", "--topics", topic_name, "--once", "--exactly-once")["records"] == 50
    stranger = Producer({"bootstrap.servers": bootstrap(dst_cluster), "transactional.id": f"other-{topic_name}"})
    stranger.init_transactions(30)
    stranger.begin_transaction()
    for partition in range(3):  # every partition of kmc.checkpoints
        stranger.produce("kmc.checkpoints", key=b"another-flow/x/y/0", value=b"{}", partition=partition)
    stranger.flush(30)  # sent, never committed
    try:
        for batch in range(2):
            produce(src_cluster, topic_name, numbered(50, 1, start=50 * (batch + 1)))
            result = mirror_json("src", "dst", "--topics", topic_name, "--once", "--exactly-once")
            assert (result["records"], result["redelivered"]) == (50, 0)
        committed = values(read_all(dst_cluster, topic_name, isolation="read_committed"))[0]
        assert [v.decode() for v in committed] == [f"r-{i}" for i in range(150)]
    finally:
        stranger.abort_transaction(30)


# ------------------------------------------------------------------------------------ 4: zombies


def test_a_paused_exactly_once_mirror_that_resumes_copies_nothing_twice(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    """Defect 4: host A is cut off in the middle of copying (SIGSTOP past its timeouts), host B takes over
    and commits, A comes back while B runs. Whichever goes on must not copy again what the other committed
    (A used to rewind to its own last commit, as it remembered it). The two "hosts" have their own state
    directories, so the local lock does not keep B out: only Kafka's transactional fencing separates them."""
    create_topic(src_cluster, topic_name, 2)
    writing = produce_slowly(src_cluster, topic_name, 4000, 2, pause=0.2)  # ~150 records/s for ~30 s
    procs: dict[str, subprocess.Popen] = {}

    def start(host: str) -> None:
        state = tmp_path / host
        state.mkdir(exist_ok=True)
        env = {**os.environ, "XDG_STATE_HOME": str(state)}
        with open(tmp_path / f"{host}.err", "wb") as err:
            procs[host] = subprocess.Popen(
                [sys.executable, "-m", "kmc", "mirror", "src", "dst", "--topics", topic_name, "--follow",
                 "--exactly-once", "--delivery-timeout", "4", "--checkpoint-interval", "0.3"],
                env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)

    def committed() -> int:
        return sum(len(records) for records in read_all(dst_cluster, topic_name, isolation="read_committed").values())

    try:
        start("a")
        wait_for(lambda: committed() > 300, 120, "A to copy")
        procs["a"].send_signal(signal.SIGSTOP)  # mid-copy: requests in flight, a transaction open
        before = committed()
        start("b")
        try:
            wait_for(lambda: committed() > before + 300, 120, "B to take over")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {(tmp_path / 'b.err').read_text()}") from None
        time.sleep(6)  # A's requests and its transaction are long past their timeouts
        procs["a"].send_signal(signal.SIGCONT)  # A comes back while B runs: one fences the other
        assert writing.wait(120)
        time.sleep(8)
        for host, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0, (tmp_path / f"{host}.err").read_text()
            else:  # fenced by the other: one line, exit 8 (a Kafka operation failed)
                stderr = (tmp_path / f"{host}.err").read_text()
                assert proc.returncode == 8 and "fenced" in stderr, stderr
                assert "Traceback" not in stderr and "report it" not in stderr, stderr
        survived = any(proc.returncode == 0 for proc in procs.values())
        mirror_json("src", "dst", "--topics", topic_name, "--once", "--exactly-once")  # whatever is left
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(30)
    source = values(read_all(src_cluster, topic_name))
    target = values(read_all(dst_cluster, topic_name, isolation="read_committed"))
    assert sum(len(v) for v in source.values()) == 4000
    assert target == source  # every record once, in order, per partition
    # One of them goes on. (Both used to end fenced about 1 run in 4: the one fenced first answered the
    # refusal of its next batch with a KIP-360 epoch bump under its old epoch, and the coordinator, seeing the
    # id's transaction open, fenced the other's transaction before it checked the epoch; producer_hooks
    # now makes that refusal abortable, tests/test_engine_internals.py has the exact sequence.)
    assert survived, {host: (tmp_path / f"{host}.err").read_text()[-400:] for host in procs}


# ------------------------------------------------------------------------------------ 5: partly failed sends


def a_large_record_among_small_ones(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """One source batch: small-0..59, a 300 KB record, small-60..119; the target topic takes 200 KB at most."""
    create_topic(src_cluster, topic_name, 1, {"max.message.bytes": str(4 * 1024 * 1024)})
    create_topic(dst_cluster, topic_name, 1, {"max.message.bytes": str(200 * 1024)})
    client = Producer({"bootstrap.servers": bootstrap(src_cluster), "linger.ms": 500, "batch.size": 4_000_000,
                       "message.max.bytes": 4_000_000, "compression.type": "none"})
    for index in range(60):
        client.produce(topic_name, key=b"k", value=b"small-%d" % index, partition=0)
    client.produce(topic_name, key=b"k", value=random.randbytes(300 * 1024), partition=0)
    for index in range(60, 120):
        client.produce(topic_name, key=b"k", value=b"small-%d" % index, partition=0)
    client.flush(30)


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_failed_batch_before_an_acknowledged_one_is_never_counted_as_copied(src_cluster, dst_cluster,  # noqa: ANN001
                                                                             topic_name: str, delivery: str) -> None:
    """Defect 5: one source batch, a record in its middle too large for the target. kafka-python splits the
    target batch; the half with that record fails, the last half succeeds. Only the last record's future
    used to be checked: the run reported success without the large record."""
    extra = ["--exactly-once"] if delivery == "exactly-once" else []
    a_large_record_among_small_ones(src_cluster, dst_cluster, topic_name)
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", *extra, expect=None)
    assert result.code == 8, result.stderr
    assert "MessageSizeTooLarge" in result.stderr and "Traceback" not in result.stderr
    # nothing claims the large record was copied: the next run fails on it again, never "complete"
    again = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", *extra, expect=None)
    assert again.code == 8 and "MessageSizeTooLarge" in again.stderr


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_send_behind_a_failed_batch_is_failed_before_kafka_python_completes_it(src_cluster, dst_cluster,  # noqa: ANN001
                                                                                  topic_name: str, delivery: str,
                                                                                  monkeypatch) -> None:  # noqa: ANN001
    """The race behind a CI failure of the test above (about 1 run in 6 on a loaded machine): the record too
    large for the target fails, kmc stops its partition, and only then are the batches queued behind it
    failed. A flush (which does not wait for a stopped partition's queued batches) that ended in between
    found the send of the last records neither failed nor acknowledged, and the run called itself complete
    (exit 0, "121 records") without the large record. The window is widened here to 1.5 s on the producer's
    own thread: a send left unfinished behind a failed batch takes that batch's failure, never taken as done."""
    import threading

    from kmc.errors import KafkaOperationError
    from kmc.mirror import producer_hooks
    from kmc.mirror.engine import run_mirror
    from kmc.mirror.plan import MirrorSpec
    from kmc.profiles import adhoc_cluster

    a_large_record_among_small_ones(src_cluster, dst_cluster, topic_name)
    stop_partition, stopped = producer_hooks._stop_partition, threading.Event()  # noqa: SLF001

    def slowly(accumulator, tp, error) -> None:  # noqa: ANN001
        accumulator.muted.stop(tp, error)  # stopped: a flush no longer waits for its queued batches ...
        stopped.set()
        time.sleep(1.5)  # ... which are failed only now
        stop_partition(accumulator, tp, error)

    monkeypatch.setattr(producer_hooks, "_stop_partition", slowly)
    spec = MirrorSpec(topics=(topic_name,), exactly_once=delivery == "exactly-once")
    with pytest.raises(KafkaOperationError, match="MessageSizeTooLarge"):
        run_mirror(adhoc_cluster(bootstrap(src_cluster)), adhoc_cluster(bootstrap(dst_cluster)), spec, mode="once",
                   stop_event=threading.Event())
    assert stopped.is_set()  # the window was there
    # and nothing claims the large record was copied: the next run (the race gone) fails on it again
    again = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", *(
        ["--exactly-once"] if delivery == "exactly-once" else []), expect=None)
    assert again.code == 8 and "MessageSizeTooLarge" in again.stderr, again.stderr
    landed = [record.value for records in read_all(dst_cluster, topic_name).values() for record in records]
    # nothing past the large record ever landed (at-least-once: only what precedes it, at most once per run;
    # exactly-once: nothing, both transactions were aborted)
    assert not {b"small-%d" % index for index in range(60, 120)} & set(landed), landed
    assert set(landed) <= {b"small-%d" % index for index in range(60)}
    if delivery == "exactly-once":
        assert landed == []


# ------------------------------------------------------------------------------------ 6: recreated topics


def test_a_source_topic_recreated_and_refilled_is_copied_from_its_start(src_cluster, dst_cluster,  # noqa: ANN001
                                                                        topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(300, 1, prefix="old"))
    assert mirror_json("src", "dst", "--topics", topic_name, "--once")["records"] == 300
    delete_topic(src_cluster, topic_name)
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(800, 1, prefix="new"))
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", "-o", "json", expect=7)
    document = result.json()
    assert gaps_of(document) == [(topic_name, 0, "source-recreated", 300, None)]
    assert document["records"] == 800  # it used to copy the last 500 and say nothing
    assert "the source topic was recreated" in result.stderr
    got = [v.decode() for v in values(read_all(dst_cluster, topic_name))[0]]
    assert got == [f"old-{i}" for i in range(300)] + [f"new-{i}" for i in range(800)]


def test_a_target_topic_recreated_under_the_mirror_is_filled_again(src_cluster, dst_cluster,  # noqa: ANN001
                                                                    topic_name: str) -> None:
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(200, 2))
    assert mirror_json("src", "dst", "--topics", topic_name, "--once")["records"] == 200
    delete_topic(dst_cluster, topic_name)
    create_topic(dst_cluster, topic_name, 2)
    produce(dst_cluster, topic_name, numbered(3, 2, prefix="local"))  # the new topic is not empty either
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--once", "-o", "json", expect=7)
    document = result.json()
    assert sorted(gaps_of(document)) == [(topic_name, 0, "target-recreated", None, None),
                                         (topic_name, 1, "target-recreated", None, None)]
    assert document["records"] == 200  # it used to warn and copy nothing
    source, target = values(read_all(src_cluster, topic_name)), values(read_all(dst_cluster, topic_name))
    for partition in range(2):
        copied = [v for v in target[partition] if not v.startswith(b"local")]
        assert copied == source[partition]


# ------------------------------------------------------------------------------------ 7: new partitions


def test_partitions_found_while_checkpoints_cannot_be_written_are_copied_later(src_cluster, dst_cluster,  # noqa: ANN001
                                                                               topic_name: str, followers) -> None:
    """Defect 7: a new topic's partitions used to be marked known before their first checkpoint was written;
    when that write failed, they were never copied. kmc.checkpoints refuses the writes here because its
    max.message.bytes is lowered below a checkpoint's size for a while."""
    first, late = f"{topic_name}-a", f"{topic_name}-b"
    create_topic(src_cluster, first, 1)
    produce(src_cluster, first, numbered(10, 1))
    follower = followers("src", "dst", "--topics", f"{topic_name}-.*", "--refresh", "1", "--timeout", "2",
                         "-o", "json")
    wait_for(lambda: count(dst_cluster, first) == 10, 60, "the first topic", follower)
    alter_topic(dst_cluster, "kmc.checkpoints", {"max.message.bytes": "64"})
    try:
        create_topic(src_cluster, late, 2)
        produce(src_cluster, late, numbered(20, 2))
        wait_for(lambda: "looking for new topics failed" in follower.stderr, 90,
                 "the first checkpoint of the new topic to fail", follower)
    finally:
        alter_topic(dst_cluster, "kmc.checkpoints", {"max.message.bytes": "1048588"})
    wait_for(lambda: late in topics_of(dst_cluster) and count(dst_cluster, late) == 20, 120,
             "the new topic to be copied", follower)
    assert follower.stop() == 0


# ------------------------------------------------------------------------------------ 8: memory


def test_memory_stays_bounded_on_very_compressible_data(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                        tmp_path: Path) -> None:
    """Defect 8: 300 MB of zeros, lz4-compressed to a few MB at the source. Batches used to be decompressed a
    whole poll at a time (2,000 of them) before anything was sent: gigabytes for a large topic."""
    records, size = 30_000, 10_000
    create_topic(src_cluster, topic_name, 1)
    client = Producer({"bootstrap.servers": bootstrap(src_cluster), "compression.type": "lz4", "linger.ms": 100,
                       "batch.size": 1_000_000, "queue.buffering.max.kbytes": 2_000_000})
    zeros = bytes(size)
    for _ in range(records):
        while True:
            try:
                client.produce(topic_name, value=zeros, partition=0)
                break
            except BufferError:
                client.poll(0.1)
    client.flush(120)
    probe = tmp_path / "rss.py"
    probe.write_text("import resource, subprocess, sys\n"
                     "code = subprocess.run(sys.argv[1:]).returncode\n"
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n")
    run = subprocess.run([sys.executable, str(probe), sys.executable, "-m", "kmc", "mirror", "src", "dst",
                          "--topics", topic_name, "--once", "-q"], capture_output=True, text=True, timeout=600)
    peak_kib, code = (int(word) for word in run.stdout.split()[-2:])
    assert code == 0, run.stderr
    assert count(dst_cluster, topic_name) == records
    print(f"peak RSS {peak_kib // 1024} MiB for {records * size // 10**6} MB of data")  # noqa: T201 - with -s
    assert peak_kib < 320 * 1024, f"peak RSS {peak_kib // 1024} MiB for {records * size // 10**6} MB of data"


# ------------------------------------------------------------------------------------ 9: codecs kept


def test_a_record_that_fits_compressed_at_the_source_fits_at_the_target(src_cluster, dst_cluster,  # noqa: ANN001
                                                                         topic_name: str) -> None:
    """Defect 9: 4 MB of data that zstd compresses below the topic's 1 MB limit but lz4 does not (its window
    is 64 KB, the repeats are 200 KB apart). kmc recompressed with lz4 and every run failed on it."""
    create_topic(src_cluster, topic_name, 1)
    block = random.Random(9).randbytes(200 * 1024)
    client = Producer({"bootstrap.servers": bootstrap(src_cluster), "compression.type": "zstd",
                       "message.max.bytes": 8_000_000})
    client.produce(topic_name, key=b"big", value=block * 20, partition=0)
    client.produce(topic_name, key=b"small", value=b"x", partition=0)
    client.flush(30)
    result = mirror_json("src", "dst", "--topics", topic_name, "--once")
    assert result["records"] == 2
    [big, small] = read_all(dst_cluster, topic_name)[0]
    assert (big.value, small.value) == (block * 20, b"x")
    # each batch compressed as at the source (librdkafka leaves a batch that compression would not shrink
    # uncompressed: the one with "x")
    codecs = [batch.codec for batch in log_batches(dst_cluster, topic_name, 0)]
    assert codecs == [batch.codec for batch in log_batches(src_cluster, topic_name, 0)] and 4 in codecs  # zstd


# ------------------------------------------------------------------------------------ 11: identity


def test_the_lock_follows_what_is_copied_not_how_it_was_spelled(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                                followers) -> None:
    one, two = f"{topic_name}-1", f"{topic_name}-2"
    for name in (one, two):
        create_topic(src_cluster, name, 1)
        produce(src_cluster, name, numbered(5, 1))
    follower = followers("src", "dst", "--topics", one, "--topics", two)
    wait_for(lambda: count(dst_cluster, two) == 5 and count(dst_cluster, one) == 5, 60, "copying", follower)
    reverse_bootstrap = ",".join(reversed([bootstrap(dst_cluster), bootstrap(dst_cluster)]))
    for args in (["--topics", two, "--topics", one], ["--topics", two, "--topics", one, "--topics", two]):
        locked = kmc("mirror", "src", reverse_bootstrap, *args, "--once", expect=75)
        assert "another run holds the lock" in locked.stderr
    assert follower.stop() == 0
    assert not list(lock_dir().glob("*.lock"))  # a finished run leaves no lock file behind
    assert kmc("mirror", "src", "dst", "--topics", two, "--topics", one, "--once").code == 0
    assert not list(lock_dir().glob("*.lock"))


def test_the_source_is_never_written(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """Every fault path above reads the source only: no kmc.checkpoints, no group offsets, no records."""
    before = topics_of(src_cluster)
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(5, 1))
    mirror_json("src", "dst", "--topics", topic_name, "--once")
    assert topics_of(src_cluster) - before == {topic_name}
    records = read_all(src_cluster, topic_name)[0]
    assert len(records) == 5 and all(ORIGIN not in dict(record.headers) for record in records)


def test_peak_rss_probe_measures_the_child(tmp_path: Path) -> None:
    """The memory test's probe reports its child's peak, not its own: a child that allocates 200 MB shows."""
    probe = tmp_path / "rss.py"
    probe.write_text("import resource, subprocess, sys\n"
                     "code = subprocess.run(sys.argv[1:]).returncode\n"
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n")
    run = subprocess.run([sys.executable, str(probe), sys.executable, "-c", "x = bytearray(200 * 1024 * 1024)"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert int(run.stdout.split()[0]) > 200 * 1024


# ------------------------------------------------------------------------------------ 6b: a target truncated


def test_records_a_target_lost_in_an_unclean_election_are_copied_again(src_cluster, three_broker_cluster,  # noqa: ANN001
                                                                       topic_name: str) -> None:
    """Defect 6, the target side: the target partition's leader accepts records while its only follower is
    away, then dies; the stale follower is elected (unclean.leader.election.enable) and the records kmc had
    acknowledged are gone. kmc used to warn and never copy them again."""
    trio = three_broker_cluster.name
    create_topic(src_cluster, topic_name, 1)
    target_admin = admin(three_broker_cluster)
    unclean = {"unclean.leader.election.enable": "true", "min.insync.replicas": "1"}
    target_admin.create_topics([NewTopic(topic_name, 1, 2, config=unclean)])[topic_name].result(30)
    produce(src_cluster, topic_name, numbered(100, 1))
    assert mirror_json("src", trio, "--topics", topic_name, "--once")["records"] == 100
    partition = target_admin.list_topics(topic_name, timeout=30).topics[topic_name].partitions[0]
    leader, follower = partition.leader, next(r for r in partition.replicas if r != partition.leader)
    wait_for(lambda: _isr(three_broker_cluster, topic_name) == sorted([leader, follower]), 60, "replicas in sync")
    sandbox.stop_broker(trio, follower)  # the follower leaves: the leader alone holds what comes next
    try:
        produce(src_cluster, topic_name, numbered(50, 1, start=100))
        assert mirror_json("src", trio, "--topics", topic_name, "--once")["records"] == 50
        sandbox.stop_broker(trio, leader)  # the leader with records 100-149 dies
        sandbox.start_broker(trio, follower)  # the stale follower comes back and is elected, unclean
        wait_for(lambda: _leader_of(three_broker_cluster, topic_name) == follower, 90,
                 f"broker {follower} to lead, unclean")
    finally:
        sandbox.start_broker(trio, leader)  # it truncates its log to the new leader's
        sandbox.start_broker(trio, follower)
    wait_for(lambda: count(three_broker_cluster, topic_name) == 100, 60, "the target to show its loss")
    result = kmc("mirror", "src", trio, "--topics", topic_name, "--once", "-o", "json", expect=7)
    document = result.json()
    assert gaps_of(document) == [(topic_name, 0, "target-truncated", None, None)]  # the source still had them
    assert document["records"] == 50
    got = [v.decode() for v in values(read_all(three_broker_cluster, topic_name))[0]]
    assert got == [f"r-{i}" for i in range(150)]


def _isr(cluster, topic: str) -> list[int]:  # noqa: ANN001
    return sorted(admin(cluster).list_topics(topic, timeout=30).topics[topic].partitions[0].isrs)


def _leader_of(cluster, topic: str) -> int:  # noqa: ANN001
    return admin(cluster).list_topics(topic, timeout=30).topics[topic].partitions[0].leader


# ------------------------------------------------------------------------------------ the offset map's anchors


def test_anchors_mark_where_each_stretch_of_the_copy_starts(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """A clean resume continues the last stretch (no new anchor); a gap starts a new one at the new start."""
    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(10, 1))
    mirror_json("src", "dst", "--topics", topic_name, "--once")
    produce(src_cluster, topic_name, numbered(10, 1, start=10))
    mirror_json("src", "dst", "--topics", topic_name, "--once")  # a clean resume
    produce(src_cluster, topic_name, numbered(10, 1, start=20))
    delete_records(src_cluster, topic_name, {0: 25})
    kmc("mirror", "src", "dst", "--topics", topic_name, "--once", expect=7)  # a gap: 20-24 never copied
    key = f"anchors/mirror/{cluster_id(src_cluster)}/{topic_name}/0".encode()
    records = [r for rs in read_all(dst_cluster, "kmc.checkpoints").values() for r in rs if r.key == key]
    anchors = json.loads(records[-1].value)
    assert [anchor[:2] for anchor in anchors] == [[0, 0], [25, 20]]  # source 25 went to target offset 20
    assert [v.decode() for v in values(read_all(dst_cluster, topic_name))[0]][20] == "r-25"


def test_a_service_waits_for_the_checkpoints_when_the_target_goes_away_at_start(src_cluster, dst_cluster,  # noqa: ANN001
                                                                               topic_name: str, monkeypatch) -> None:  # noqa: ANN001
    """`--follow` waits for a target that is away when it starts (the producer waits); the target can also
    go away between that and the read of the checkpoints, as a chaos run found (a broker SIGKILLed then:
    the service exited 4). The target's broker is stopped at that exact moment, and started again 6 s
    later: the service waits, then copies everything."""
    import threading

    from kmc.mirror.checkpoints import CheckpointStore
    from kmc.mirror.engine import run_mirror
    from kmc.mirror.plan import MirrorSpec
    from kmc.profiles import adhoc_cluster

    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(50, 2))
    load, stopped = CheckpointStore.load, threading.Event()

    def target_away_then_load(store: CheckpointStore, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not stopped.is_set():
            stopped.set()
            sandbox.stop_broker(dst_cluster.name, 1)
            threading.Timer(6, sandbox.start_broker, (dst_cluster.name, 1)).start()
        return load(store, *args, **kwargs)

    monkeypatch.setattr(CheckpointStore, "load", target_away_then_load)
    stop, notices = threading.Event(), []
    outcome: dict[str, object] = {}

    def follow() -> None:
        try:
            outcome["result"] = run_mirror(adhoc_cluster(bootstrap(src_cluster)), adhoc_cluster(bootstrap(dst_cluster)),
                                           MirrorSpec(topics=(topic_name,)), mode="follow", stop_event=stop,
                                           notice_callback=lambda level, text: notices.append(str(text)), timeout=5)
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    def copied() -> int:
        try:
            return count(dst_cluster, topic_name)
        except KafkaException:  # (the target is still away)
            return -1

    runner = threading.Thread(target=follow, daemon=True)
    runner.start()
    try:
        wait_for(lambda: "error" in outcome or (stopped.is_set() and copied() == 50), 120,
                 "the service to copy after the target came back")
    finally:
        stop.set()
        runner.join(60)
        sandbox.start_broker(dst_cluster.name, 1)  # (a no-op when it runs; the timer's start may have failed)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].records == 50
    assert any("not reachable yet" in notice for notice in notices), notices
