"""`kmc mirror --exactly-once` against real sandbox clusters, verified with confluent-kafka.

Records and their checkpoints are committed in one target transaction per checkpoint interval; a run
killed with an open transaction leaves records in the target's log that read_committed readers never
see, and the next run copies them again inside a transaction of its own.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import OffsetSpec

from kmc import sandbox
from tests.helpers import (
    admin,
    assert_exact_copy,
    count,
    create_topic,
    kmc,
    numbered,
    produce,
    produce_slowly,
    read_all,
    wait_for,
)

pytestmark = pytest.mark.kafka


def uncommitted(cluster, topic: str) -> int:  # noqa: ANN001
    """Records in the target's log, aborted and open transactions included."""
    try:
        return sum(map(len, read_all(cluster, topic, timeout=30, isolation="read_uncommitted").values()))
    except KeyError:
        return 0


def assert_no_open_transaction(cluster, *topics: str) -> None:  # noqa: ANN001
    """The last stable offset is the end offset in every partition of ``topics``: no transaction of kmc's is
    left open (which would hold read_committed readers of kmc.checkpoints up until it timed out)."""
    client = admin(cluster)
    partitions = [TopicPartition(topic, p) for topic in topics
                  for p in client.list_topics(topic, timeout=10).topics[topic].partitions]

    def ends(isolation: IsolationLevel) -> dict:
        futures = client.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, isolation_level=isolation)
        return {(tp.topic, tp.partition): future.result(30).offset for tp, future in futures.items()}

    assert ends(IsolationLevel.READ_COMMITTED) == ends(IsolationLevel.READ_UNCOMMITTED)


def test_once_with_exactly_once_copies_each_record_once(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 3)
    produce(src_cluster, topic_name, numbered(3000, 3))
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "-o", "json").json()
    assert (result["records"], result["redelivered"], result["complete"]) == (3000, 0, True)
    source = read_all(src_cluster, topic_name)
    assert_exact_copy(source, read_all(dst_cluster, topic_name))
    # the checkpoints were committed with the records: a second run has nothing to copy
    again = kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "-o", "json").json()
    assert again["records"] == 0
    produce(src_cluster, topic_name, numbered(30, 3, start=3000))
    assert kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "-o", "json").json()["records"] == 30
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))
    assert_no_open_transaction(dst_cluster, topic_name, "kmc.checkpoints")


@pytest.mark.slow
def test_kill_9_with_exactly_once_shows_read_committed_readers_each_record_once(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str, followers) -> None:
    partitions, total = 3, 6000
    create_topic(src_cluster, topic_name, partitions)
    done = produce_slowly(src_cluster, topic_name, total, partitions, pause=0.03)
    rng = random.Random(11)
    killed_with_open_transaction = False
    # The middle run commits rarely: it certainly dies with records in an open transaction.
    for interval in ("0.3", "30", "1"):
        before = uncommitted(dst_cluster, topic_name)
        follower = followers("src", "dst", "--topics", topic_name, "--exactly-once", "--checkpoint-interval", interval)
        wait_for(lambda before=before: uncommitted(dst_cluster, topic_name) > before, 60, "copying to start",
                 follower)
        time.sleep(rng.uniform(0.3, 1.5))
        follower.ensure_running()
        if interval == "30":
            killed_with_open_transaction = uncommitted(dst_cluster, topic_name) > count(dst_cluster, topic_name)
        follower.kill()
    assert done.wait(120) and killed_with_open_transaction
    final_run = kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "-o", "json")
    final = final_run.json()
    assert final["redelivered"] == 0
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    assert sum(map(len, source.values())) == total
    assert_exact_copy(source, target)  # once each, in order, for read_committed
    # the aborted copies are still in the log, invisible to read_committed readers
    assert uncommitted(dst_cluster, topic_name) > total
    assert_no_open_transaction(dst_cluster, topic_name, "kmc.checkpoints")


def test_an_aggregate_flow_with_exactly_once_runs(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                  tmp_path) -> None:
    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(200, 2))
    config = tmp_path / "flows.toml"
    config.write_text(f'[flows.eos]\nfrom = ["src"]\nto = "dst"\ntopics = ["{topic_name}"]\n'
                      f'rename = "{{source}}.{{topic}}"\nexactly_once = true\n')
    assert kmc("flow", "check", "--config", str(config)).code == 0
    kmc("flow", "run", "eos", "--once", "--config", str(config))
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, f"src.{topic_name}"))


def test_workers_with_exactly_once_each_commit_their_own_shard(src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 4)
    produce(src_cluster, topic_name, numbered(2000, 4))
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "--workers", "2", "-o", "json")
    assert result.json()["records"] == 2000
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))
    assert_no_open_transaction(dst_cluster, topic_name, "kmc.checkpoints")


@pytest.mark.slow
def test_a_target_outage_aborts_the_transaction_and_loses_nothing(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                                  followers) -> None:
    """The target's only broker stops for longer than the delivery timeout: the open transaction fails,
    kmc aborts it and copies again from the last commit; read_committed readers see each record once."""
    partitions = 2
    create_topic(src_cluster, topic_name, partitions)
    produce(src_cluster, topic_name, numbered(100, partitions))
    follower = followers("src", "dst", "--topics", topic_name, "--exactly-once", "--delivery-timeout", "3",
                         "--checkpoint-interval", "0.5", "-o", "json")
    wait_for(lambda: count(dst_cluster, topic_name) == 100, 60, "the first records", follower)
    sandbox.stop_broker(dst_cluster.name, 1)
    try:
        produce(src_cluster, topic_name, numbered(100, partitions, start=100))
        time.sleep(8)  # well past the delivery timeout
        follower.ensure_running()
    finally:
        sandbox.start_broker(dst_cluster.name, 1)
    produce(src_cluster, topic_name, numbered(100, partitions, start=200))
    wait_for(lambda: count(dst_cluster, topic_name) >= 300, 120, "the records sent during and after the outage",
             follower)
    assert follower.stop() == 0
    assert "aborting it and copying again from the last commit" in follower.stderr
    result = json.loads(follower.stdout)
    source = read_all(src_cluster, topic_name)
    assert_exact_copy(source, read_all(dst_cluster, topic_name))
    assert (result["records"], result["redelivered"]) == (300, 0)
    assert_no_open_transaction(dst_cluster, topic_name, "kmc.checkpoints")


def test_a_recovery_cut_short_never_commits_what_the_aborted_transaction_held(src_cluster, dst_cluster,  # noqa: ANN001
                                                                               topic_name: str, monkeypatch) -> None:  # noqa: ANN001
    """A send fails (retriably) while records acknowledged in the open transaction wait for its commit: the
    transaction is aborted, and the run reads the committed checkpoints again. If that read ends the run
    (an error, or a stop while the target is away), the run's way out must not commit a checkpoint past
    the aborted records with the new producer (a reviewer's finding: it did, and the next run resumed after
    500 records that no read_committed reader ever saw)."""
    import threading

    import kafka.errors as kafka_errors

    from kmc.errors import KafkaOperationError
    from kmc.mirror.batchpath import BatchCopyPath
    from kmc.mirror.checkpoints import CheckpointStore
    from kmc.mirror.engine import run_mirror
    from kmc.mirror.plan import MirrorSpec
    from kmc.profiles import adhoc_cluster
    from tests.helpers import bootstrap

    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(500, 1))
    send_batch, load = BatchCopyPath.send_batch, CheckpointStore.load
    second_half, failed = threading.Event(), threading.Event()

    def send_failing(path, target, items):  # noqa: ANN001, ANN202
        if second_half.is_set() and not failed.is_set():
            failed.set()
            raise kafka_errors.KafkaTimeoutError("injected: a send timed out")  # retriable: the transaction aborts
        return send_batch(path, target, items)

    def load_failing(store, *args, **kwargs):  # noqa: ANN001, ANN202
        if failed.is_set():  # reading the committed checkpoints again, after the abort
            raise KafkaOperationError("injected: reading kmc.checkpoints failed")
        return load(store, *args, **kwargs)

    monkeypatch.setattr(BatchCopyPath, "send_batch", send_failing)
    monkeypatch.setattr(CheckpointStore, "load", load_failing)
    stop = threading.Event()
    outcome: list[BaseException | None] = []

    def follow() -> None:
        try:
            run_mirror(adhoc_cluster(bootstrap(src_cluster)), adhoc_cluster(bootstrap(dst_cluster)),
                       MirrorSpec(topics=(topic_name,), exactly_once=True, checkpoint_interval=300),
                       mode="follow", stop_event=stop)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    runner = threading.Thread(target=follow)
    runner.start()
    try:
        # the first 500 are sent and acknowledged in the open transaction (no commit for 300 s)
        wait_for(lambda: uncommitted(dst_cluster, topic_name) >= 500, 60, "the first 500 records in the target's log")
        time.sleep(1)  # (acknowledged: the loop looks every 50 ms)
        second_half.set()
        produce(src_cluster, topic_name, numbered(500, 1, start=500))
        runner.join(90)
    finally:
        stop.set()
        runner.join(30)
    assert failed.is_set() and len(outcome) == 1 and isinstance(outcome[0], KafkaOperationError), outcome
    assert count(dst_cluster, topic_name) == 0  # the aborted transaction: nothing visible
    monkeypatch.undo()
    result = kmc("mirror", "src", "dst", "--topics", topic_name, "--exactly-once", "-o", "json").json()
    assert result["records"] == 1000  # from the last committed checkpoint: the start
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


def test_a_fence_met_while_writing_checkpoints_is_reported_as_a_fence(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                                       monkeypatch) -> None:  # noqa: ANN001
    """A run fenced by another with its transactional id (a group member paused past its session, resumed)
    can first meet the fence when it sends its checkpoints: the transactional producer then refuses the
    send at once. That is the fence (FencedError: a group member joins again, a single run says "fenced",
    exit 8), never a failed write of kmc.checkpoints. (The fence is injected at the worst moment: the
    engine's checkpoint write, with its producer already fenced by a real second producer.)"""
    import threading

    from kafka import KafkaProducer

    from kmc.errors import FencedError
    from kmc.mirror import producer_hooks
    from kmc.mirror.checkpoints import CheckpointStore
    from kmc.mirror.engine import run_mirror
    from kmc.mirror.plan import MirrorSpec
    from kmc.profiles import adhoc_cluster
    from tests.helpers import bootstrap

    create_topic(src_cluster, topic_name, 1)
    produce(src_cluster, topic_name, numbered(100, 1))
    write, fenced = CheckpointStore.write, threading.Event()

    def fence_then_write(store: CheckpointStore, checkpoints, anchors=()):  # noqa: ANN001, ANN202
        checkpoints = list(checkpoints)
        if not fenced.is_set() and any(checkpoint.next_offset == 100 for _, _, checkpoint in checkpoints):
            engine_producer = store._producer  # noqa: SLF001 - the engine's transactional producer
            fence = KafkaProducer(bootstrap_servers=bootstrap(dst_cluster),
                                  transactional_id=engine_producer.config["transactional_id"])
            fence.init_transactions()  # bumps the epoch: the engine's producer is fenced
            fence.close(5)
            engine_producer.send(topic_name, b"meets the fence")
            manager = producer_hooks.transaction_manager(engine_producer)
            # (the refusal makes the transaction abortable: kmc never lets kafka-python bump the epoch)
            wait_for(manager.has_error, 30, "the engine's producer to learn of the fence")
            fenced.set()
        return write(store, checkpoints, anchors)

    monkeypatch.setattr(CheckpointStore, "write", fence_then_write)
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)  # a run that misses the fence ends (and the test fails below)
    timer.start()
    try:
        with pytest.raises(FencedError) as raised:
            run_mirror(adhoc_cluster(bootstrap(src_cluster)), adhoc_cluster(bootstrap(dst_cluster)),
                       MirrorSpec(topics=(topic_name,), exactly_once=True), mode="follow", stop_event=stop)
    finally:
        timer.cancel()
    assert fenced.is_set()
    assert type(raised.value) is FencedError, raised.value  # not its parent, a failed Kafka operation
    assert "fenced" in str(raised.value).lower() or "Fenced" in repr(raised.value), raised.value
    # nothing of the fenced transaction is visible: the copy stays for the run that fenced it
    assert count(dst_cluster, topic_name) == 0
