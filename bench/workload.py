"""The benchmark data: dataset definitions, generating them into the source cluster, counting records.

Everything here talks to Kafka through confluent-kafka (librdkafka): it is fast enough to generate millions
of records from Python, and it shares no code with kmc, so the checks of a copy do not trust kmc's client.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import asdict, dataclass

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

PARTITIONS = 12
KEY_FORMAT = b"key-%08d"  # 12 bytes
HEADER_NAME = "bench-trace"  # one header per record: 11-byte name, 16-byte value
VALUE_POOL = 1009  # distinct values, cycled (a prime, so partitions do not see the same few values)
TOPIC_CONFIG = {"none": "uncompressed", "lz4": "lz4", "zstd": "zstd", "gzip": "gzip"}


@dataclass(frozen=True)
class Dataset:
    name: str  # "100B-none"
    topic: str
    records: int
    value_size: int
    compression: str  # "none" | "lz4" | "zstd" | "gzip"
    zeros: bool = False  # values of zero bytes: compress ~250:1 (memory under compressible data)
    partitions: int = PARTITIONS  # the many-partitions dataset has 1,000

    @property
    def record_bytes(self) -> int:
        """Payload bytes of one record: value + key + header name and value."""
        return self.value_size + len(KEY_FORMAT % 0) + len(HEADER_NAME) + 16

    @property
    def total_bytes(self) -> int:
        return self.records * self.record_bytes

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "record_bytes": self.record_bytes, "bytes": self.total_bytes}


def datasets(quick: bool) -> list[Dataset]:
    """The throughput datasets: 100 B and 1 KB values, each uncompressed and lz4; 100 B values zstd- and
    gzip-compressed (batches kmc forwards as they are); and 10 KB values of zeros, lz4 (a topic that is tiny
    compressed and large decompressed: peak memory is the figure)."""
    sizes = [(100, 20_000), (1000, 5_000)] if quick else [(100, 2_000_000), (1000, 500_000)]
    return [
        *(Dataset(f"{'100B' if size == 100 else '1KB'}-{codec}", f"bench-{'100b' if size == 100 else '1kb'}-{codec}",
                  records, size, codec)
          for size, records in sizes
          for codec in ("none", "lz4")),
        *(Dataset(f"100B-{codec}", f"bench-100b-{codec}", sizes[0][1], 100, codec) for codec in ("zstd", "gzip")),
        Dataset("10KB-zeros-lz4", "bench-10kb-zeros-lz4", 2_000 if quick else 30_000, 10_000, "lz4", zeros=True),
        # many partitions: time to catch up on 1,000 partitions of 1,000 records (MM2 and kmc only)
        Dataset("100B-1000p", "bench-100b-1000p", 10_000 if quick else 1_000_000, 100, "lz4",
                partitions=100 if quick else 1000),
    ]  # fmt: skip


SMALL = Dataset("small-10k", "bench-small", 10_000, 100, "none")


QUIET = {"log_level": 4}  # librdkafka's notices (e.g. "Purging unserved events" on close) are noise here

# Security settings of clusters that are not plaintext (the SASL_SSL sandboxes), by bootstrap address.
CLIENT_SETTINGS: dict[str, dict[str, str]] = {}


def client_settings(bootstrap: str) -> dict[str, str]:
    """confluent-kafka settings that reach ``bootstrap`` (plaintext unless registered in CLIENT_SETTINGS)."""
    return {"bootstrap.servers": bootstrap, **CLIENT_SETTINGS.get(bootstrap, {}), **QUIET}


_admins: dict[str, AdminClient] = {}


def admin(bootstrap: str) -> AdminClient:
    """One admin client per cluster for the whole run (a client per call leaks: futures keep them alive)."""
    if bootstrap not in _admins:
        _admins[bootstrap] = AdminClient(client_settings(bootstrap))
    return _admins[bootstrap]


def close_clients() -> None:
    """Drop the admin clients, before the clusters stop (else they log connection errors until exit)."""
    _admins.clear()
    gc.collect()  # librdkafka handles are destroyed when collected; futures hold them in reference cycles


def create_topic(bootstrap: str, topic: str, compression: str, partitions: int = PARTITIONS) -> None:
    """Create ``topic`` (replication factor 1) and wait until it is there."""
    futures = admin(bootstrap).create_topics(
        [NewTopic(topic, partitions, 1, config={"compression.type": TOPIC_CONFIG[compression]})], operation_timeout=30
    )
    for future in futures.values():
        future.result()


def delete_topic(bootstrap: str, topic: str, timeout: float = 60) -> None:
    """Delete ``topic`` (if it exists) and wait until the cluster no longer lists it."""
    for future in admin(bootstrap).delete_topics([topic], operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
    deadline = time.monotonic() + timeout
    while topic in admin(bootstrap).list_topics(timeout=30).topics:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic} still listed {timeout:.0f}s after its deletion")
        time.sleep(0.2)


def generate(bootstrap: str, dataset: Dataset, seed: int = 7) -> float:
    """Create the dataset's topic and fill it; returns the seconds it took. Records go round-robin to the
    partitions, each with a key and one header; values are random capital letters, as Kafka's own
    ProducerPerformance makes them."""
    create_topic(bootstrap, dataset.topic, dataset.compression, dataset.partitions)
    rng = random.Random(seed)
    pool = ([bytes(dataset.value_size)] if dataset.zeros else
            [bytes(rng.choices(range(65, 91), k=dataset.value_size)) for _ in range(VALUE_POOL)])
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer({
        **client_settings(bootstrap),
        "compression.type": dataset.compression,
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
    })  # fmt: skip
    started = time.monotonic()
    produce = producer.produce
    topic = dataset.topic
    partitions = dataset.partitions
    for index in range(dataset.records):
        while True:
            try:
                produce(topic, value=pool[index % len(pool)], key=KEY_FORMAT % index, partition=index % partitions,
                        headers=[(HEADER_NAME, b"%016x" % index)], on_delivery=on_delivery)  # fmt: skip
                break
            except BufferError:  # local queue full: let librdkafka send
                producer.poll(0.05)
        if index % 20_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failures:
        raise RuntimeError(f"generating {dataset.topic}: {left} records unsent, {len(failures)} failed {failures[:1]}")
    counts = end_offsets(bootstrap, dataset.topic)
    if sum(counts.values()) != dataset.records:
        raise RuntimeError(f"generating {dataset.topic}: {sum(counts.values())} records landed, not {dataset.records}")
    return time.monotonic() - started


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Latest offset per partition of ``topic`` ({} while the topic does not exist yet).

    The topics are fresh and never see transactions, so the end offset of a partition is its record count.
    """
    client = admin(bootstrap)
    metadata = client.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        return {}
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in metadata.partitions}
    try:
        return {tp.partition: future.result().offset for tp, future in client.list_offsets(request).items()}
    except KafkaException:
        return {}


class Watcher:
    """Polls a target topic's end offsets against the source's."""

    def __init__(self, bootstrap: str, topic: str, expected: dict[int, int]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.expected = expected
        self.first_record: float | None = None  # time.monotonic() when the target first held a record

    def covered(self) -> bool:
        """True when every partition of the target holds at least as many records as the source."""
        offsets = end_offsets(self.bootstrap, self.topic)
        if self.first_record is None and any(offsets.values()):
            self.first_record = time.monotonic()
        return bool(offsets) and all(offsets.get(p, 0) >= n for p, n in self.expected.items())


def compare(source: dict[int, int], target: dict[int, int]) -> str | None:
    """None when every partition has the same count on both sides, else what differs (the first few)."""
    diffs = [
        f"p{p}: {source.get(p, 0)}→{target.get(p, 0)}"
        for p in sorted(set(source) | set(target))
        if source.get(p, 0) != target.get(p, 0)
    ]
    if not diffs:
        return None
    missing = sum(source.values()) - sum(target.values())
    what = f"{missing} records missing" if missing > 0 else f"{-missing} extra records" if missing else "misplaced"
    return f"{what} ({', '.join(diffs[:4])}{', …' if len(diffs) > 4 else ''})"
