"""The kafka-python internals the copy engine relies on, one test per assumption, against a real broker.

kafka-python is pinned to 3.0.x; an upgrade that changes one of these fails a named test here instead of a
copy somewhere else (kmc/mirror/producer_hooks.py, kmc/mirror/batchpath.py, kmc/mirror/copypath.py,
kmc/mirror/fetch.py, kmc/mirror/logreader.py).
"""

from __future__ import annotations

import inspect
import time

import kafka.errors as kafka_errors
import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.producer.producer_batch import FinalState, ProducerBatch
from kafka.producer.transaction_manager import TransactionManager

from kmc._kafka_internals import close_producer
from kmc.mirror import producer_hooks
from kmc.mirror.fetch import RawBatch, fetch_batches
from kmc.mirror.logreader import read_latest
from tests.helpers import bootstrap, create_topic, read_all, wait_for

pytestmark = pytest.mark.kafka


def test_flush_waits_until_no_batch_is_incomplete(dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(dst_cluster, topic_name, 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap(dst_cluster), linger_ms=60_000, batch_size=1 << 20)
    try:
        futures = [producer.send(topic_name, b"v%d" % i, partition=i % 2) for i in range(100)]
        assert producer._accumulator._incomplete.all()  # noqa: SLF001 - lingering for a minute
        producer_hooks.flush(producer, 30)
        assert not producer._accumulator._incomplete.all()  # noqa: SLF001
        assert all(future.is_done and future.exception is None for future in futures)
    finally:
        producer.close(5)


def test_failed_batches_sees_a_batch_that_failed(dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(dst_cluster, topic_name, 1, {"max.message.bytes": "2000"})
    producer = KafkaProducer(bootstrap_servers=bootstrap(dst_cluster), enable_idempotence=True)
    try:
        watch = producer_hooks.FailedBatches(producer)
        assert not watch
        producer.send(topic_name, b"x" * 10_000, partition=0)
        producer_hooks.flush(producer, 30)
        tp, error = watch.first()
        assert tp == TopicPartition(topic_name, 0) and "MessageSizeTooLarge" in type(error).__name__
        assert FinalState.FAILED  # the state the hook looks for exists under this name
    finally:
        producer.close(5)


def test_nothing_of_a_partition_is_sent_after_one_of_its_batches_failed(dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """A failed batch stops its partition in this producer: the batch queued behind it fails at once and is
    never sent (after an expiry kafka-python bumps the epoch and would send it: a later record landing
    where an earlier one was lost), the partition stays muted although the sender unmutes each partition
    whose batch completes, and what is queued for it later never leaves: a flush does not wait for it, the
    close fails it."""
    create_topic(dst_cluster, topic_name, 1, {"max.message.bytes": "2000"})
    producer = KafkaProducer(bootstrap_servers=bootstrap(dst_cluster), enable_idempotence=True, linger_ms=3000,
                             batch_size=1000, max_in_flight_requests_per_connection=5)
    tp = TopicPartition(topic_name, 0)
    try:
        watch = producer_hooks.FailedBatches(producer)
        too_large = producer.send(topic_name, b"x" * 10_000, partition=0)  # a batch of its own, ready at once
        behind = producer.send(topic_name, b"queued behind it", partition=0)  # lingers for 3 s
        wait_for(lambda: too_large.is_done, 30, "the too large batch to fail")
        assert too_large.exception is not None and watch.first()[0] == tp
        assert behind.is_done and behind.exception is not None  # failed with it, before its linger ended
        assert tp in producer._accumulator.muted  # noqa: SLF001 - and stays so
        producer._accumulator.muted.discard(tp)  # noqa: SLF001 - as the sender does after each batch
        assert tp in producer._accumulator.muted  # noqa: SLF001
        try:
            late = producer.send(topic_name, b"sent after the failure", partition=0)
        except kafka_errors.KafkaError:
            late = None  # (this failure is fatal to kafka-python's idempotent producer: it refuses at once)
        started = time.monotonic()
        producer_hooks.flush(producer, 30)  # does not wait for what the stopped partition holds
        assert time.monotonic() - started < 2
        assert late is None or not late.is_done or late.exception is not None  # never sent
    finally:
        close_producer(producer, 5)  # (producer.close would raise on the batch that never leaves)
    assert late is None or (late.is_done and late.exception is not None)
    assert read_all(dst_cluster, topic_name)[0] == []


def test_commit_transaction_commits_and_begins_the_next(dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(dst_cluster, topic_name, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap(dst_cluster), transactional_id=f"hooks-{topic_name}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        assert producer_hooks.transaction_manager(producer) is not None
        producer.send(topic_name, b"committed", partition=0)
        producer_hooks.flush(producer, 30)
        producer_hooks.commit_transaction(producer, 30)
        # the commit markers are written just after the commit returns
        wait_for(lambda: [r.value for r in read_all(dst_cluster, topic_name)[0]] == [b"committed"], 30,
                 "the commit to show")
        producer.send(topic_name, b"in the next transaction", partition=0)  # refused outside a transaction
        producer_hooks.flush(producer, 30)
        producer.abort_transaction()
    finally:
        producer.close(5)
    assert [r.value for r in read_all(dst_cluster, topic_name)[0]] == [b"committed"]


def test_a_transactional_producer_never_bumps_its_epoch_after_another_took_its_id_over(dst_cluster,  # noqa: ANN001
                                                                                       topic_name: str) -> None:
    """A run cut off past its timeouts comes back after another took its transactional id over, and its
    next batch is refused for its old epoch. kafka-python would bump the epoch (KIP-360: InitProducerId
    under its old id and epoch), and the coordinator, seeing the id's transaction open, fences the new
    owner's transaction before it checks the epoch: both runs end fenced. With FailedBatches installed the
    batch fails, no InitProducerId goes out (the producer keeps its id and epoch), and the new owner
    commits."""
    create_topic(dst_cluster, topic_name, 1)
    settings = {"bootstrap_servers": bootstrap(dst_cluster), "transactional_id": f"hooks-bump-{topic_name}"}
    old = KafkaProducer(**settings)
    new = None
    try:
        producer_hooks.FailedBatches(old)
        old.init_transactions()
        old.begin_transaction()
        old.send(topic_name, b"old-1", partition=0)
        producer_hooks.flush(old, 30)
        before = old._transaction_manager.producer_id_and_epoch  # noqa: SLF001
        new = KafkaProducer(**settings)
        new.init_transactions()  # fences the old one and aborts its transaction
        new.begin_transaction()
        new.send(topic_name, b"new-1", partition=0)
        producer_hooks.flush(new, 30)  # the new owner's transaction is open
        refused = old.send(topic_name, b"old-2", partition=0)
        producer_hooks.flush(old, 30)
        assert refused.exception is not None and "Epoch" in type(refused.exception).__name__, refused.exception
        time.sleep(2)  # (a bump would have gone out by now)
        manager = old._transaction_manager  # noqa: SLF001
        assert manager.producer_id_and_epoch == before and not manager.is_bumping_epoch()
        assert manager.has_abortable_error()  # (from IN_TRANSACTION, the state a refused batch leaves)
        producer_hooks.commit_transaction(new, 30)
    finally:
        close_producer(old, 5)
        if new is not None:
            close_producer(new, 5)
    wait_for(lambda: [r.value for r in read_all(dst_cluster, topic_name, isolation="read_committed")[0]]
             == [b"new-1"], 30, "the new owner's commit to show")


def test_the_accumulator_and_batch_internals_the_byte_path_writes_into(dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """kmc/mirror/batchpath.py appends to kafka-python's accumulator as its own ``append()`` does and fills
    the open batch's builder itself; kmc/mirror/copypath.py calls the accumulator and the sender directly.
    Every attribute they read or write, with the meaning they rely on: a release that renames or changes one
    fails here, by name, before any copy does."""
    create_topic(dst_cluster, topic_name, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap(dst_cluster), linger_ms=60_000, batch_size=1 << 20)
    tp = TopicPartition(topic_name, 0)
    try:
        future = producer.send(topic_name, b"v", partition=0, timestamp_ms=1_700_000_000_000)
        accumulator = producer._accumulator  # noqa: SLF001
        assert callable(accumulator.append) and callable(producer._sender.wakeup)  # noqa: SLF001 - copypath
        manager = producer._transaction_manager  # noqa: SLF001 - transactional or not (copypath asks which)
        assert manager is None or not manager.is_transactional()
        # what copypath calls on a transactional producer's manager before appending to a partition
        assert callable(TransactionManager.is_transactional)
        assert callable(TransactionManager.maybe_add_partition_to_transaction)
        assert {"message_version", "compression_attrs", "batch_size"} <= set(accumulator.config)
        # the append bookkeeping close() waits for, the partition's lock, the closed flag, the queues
        accumulator._appends_in_progress.increment()  # noqa: SLF001
        accumulator._appends_in_progress.decrement()  # noqa: SLF001
        with accumulator._tp_lock(tp):  # noqa: SLF001
            queue = accumulator._batches[tp]  # noqa: SLF001
        assert accumulator._closed is False and len(queue) == 1  # noqa: SLF001
        batch = queue[-1]
        assert batch in accumulator._incomplete.all()  # noqa: SLF001 - what flush and close wait for
        records = batch.records
        builder = records._builder  # noqa: SLF001
        # the builder's state the walk writes: the bytes so far, counts, offsets and timestamps
        assert isinstance(builder._buffer, bytearray) and builder._batch_size == 1 << 20  # noqa: SLF001
        assert (builder._num_records, builder._last_offset, records._next_offset) == (1, 0, 1)  # noqa: SLF001
        assert builder._first_timestamp == builder._max_timestamp == 1_700_000_000_000  # noqa: SLF001
        # one future per record, rebound by record index when kafka-python splits a batch
        assert len(batch._record_futures) == 1 and callable(batch._record_futures[0].rebind)  # noqa: SLF001
        assert list(inspect.signature(ProducerBatch).parameters) == ["tp", "records", "now"]
        producer_hooks.flush(producer, 30)
        assert future.get(10).offset == 0
    finally:
        producer.close(5)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_fetched_batches_arrive_whole_and_still_compressed(src_cluster, topic_name: str, codec: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, 1)
    client = Producer({"bootstrap.servers": bootstrap(src_cluster), "compression.type": codec, "linger.ms": 200})
    for index in range(500):
        client.produce(topic_name, value=b"value %d " % index * 20, partition=0)
    client.flush(30)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(src_cluster), enable_auto_commit=False,
                             isolation_level="read_committed")
    try:
        fetch_batches(consumer)
        tp = TopicPartition(topic_name, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        items = []
        while sum(item.count for item in items) < 500:
            items.extend(consumer.poll(timeout_ms=2000).get(tp, []))
        assert all(type(item) is RawBatch for item in items)
        codes = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
        assert {item.codec for item in items} == {codes[codec]}
        if codec != "none":  # still compressed: the raw batch is smaller than what it holds
            assert sum(len(item.raw) for item in items) < sum(len(item.body) for item in items)
        assert [item.base_offset for item in items][0] == 0 and items[-1].offset == 499
    finally:
        consumer.close()


def test_read_latest_applies_read_committed_past_an_open_transaction(dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(dst_cluster, topic_name, 1, {"cleanup.policy": "compact"})
    servers = bootstrap(dst_cluster)
    plain = Producer({"bootstrap.servers": servers})
    plain.produce(topic_name, key=b"a", value=b"a1", partition=0)
    plain.produce(topic_name, key=b"gone", value=b"x", partition=0)
    plain.flush(30)
    committed = Producer({"bootstrap.servers": servers, "transactional.id": f"c-{topic_name}"})
    aborted = Producer({"bootstrap.servers": servers, "transactional.id": f"a-{topic_name}"})
    still_open = Producer({"bootstrap.servers": servers, "transactional.id": f"o-{topic_name}"})
    for producer in (committed, aborted, still_open):
        producer.init_transactions(30)
        producer.begin_transaction()
    still_open.produce(topic_name, key=b"a", value=b"open", partition=0)  # before the others: holds the LSO
    still_open.flush(30)
    committed.produce(topic_name, key=b"b", value=b"b1", partition=0)
    aborted.produce(topic_name, key=b"a", value=b"aborted", partition=0)
    committed.commit_transaction(30)
    aborted.abort_transaction(30)
    plain.produce(topic_name, key=b"gone", value=None, partition=0)  # a tombstone
    plain.produce(topic_name, key=b"c", value=b"c1", partition=0)
    plain.flush(30)
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, isolation_level="read_uncommitted")
    try:
        latest = read_latest(consumer, topic_name, lambda key: True, stall=30)
    finally:
        consumer.close()
        still_open.abort_transaction(30)
    assert latest == {b"a": b"a1", b"b": b"b1", b"c": b"c1"}
