"""What the tests share: running the kmc CLI in-process (as httpie's test helper does), and the Kafka helpers
that make and check test data with confluent-kafka (librdkafka), which shares no code with kmc.

The fixtures built on these (``followers``, the admin-client clean-up) are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from kmc.cli.main import main

# ------------------------------------------------------------------------------------ the CLI


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def client_settings(cluster: Any, user: str = "admin") -> dict[str, str]:
    """confluent-kafka settings that reach a sandbox (a kmc.sandbox.SandboxCluster): plaintext, or a secure
    one as its ``admin`` (or ``mirror``) user, over SASL_SSL (SCRAM-SHA-512) or with a client certificate."""
    settings = {"bootstrap.servers": bootstrap(cluster)}
    directory = cluster.data_dir / "security"
    if cluster.security == "sasl_ssl":
        settings.update({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                         "sasl.password": (directory / f"{user}.password").read_text().strip(),
                         "ssl.ca.location": str(directory / "ca.pem")})
    elif cluster.security == "mtls":
        settings.update({"security.protocol": "SSL", "ssl.ca.location": str(directory / "ca.pem"),
                         "ssl.certificate.location": str(directory / f"{user}.pem"),
                         "ssl.key.location": str(directory / f"{user}.key"),
                         "ssl.key.password": (directory / f"{user}.keypass").read_text().strip()})
    return settings


def kmc(*args: str, expect: int | None = 0) -> Result:
    """Run ``kmc ARGS``; fail loudly on an unexpected exit status unless ``expect`` is None."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    result = Result(code, out.getvalue(), err.getvalue())
    if expect is not None and code != expect:
        raise AssertionError(
            f"kmc {' '.join(map(str, args))} exited {code}, expected {expect}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


# ------------------------------------------------------------------------------------ Kafka (confluent-kafka)

# Recent timestamps: records older than the brokers' 7-day retention would be deleted mid-test.
BASE_TIMESTAMP = int(time.time() * 1000) - 3_600_000
ORIGIN = "kmc-origin"
RESULT_KEYS = {"flow", "source", "target", "source_cluster_id", "target_cluster_id", "mode", "complete",
               "elapsed_seconds", "records", "bytes", "skipped", "redelivered", "changes", "warnings", "gaps",
               "topics", "group_sync"}
RESULT_TOPIC_KEYS = {"source_topic", "target_topic", "partitions", "records", "bytes", "skipped", "redelivered",
                     "lag", "gaps"}
PLAN_KEYS = {"flow", "source", "target", "source_cluster_id", "target_cluster_id", "checkpoint_topic", "copy", "topics",
             "acls", "permissions", "warnings"}
PLAN_TOPIC_KEYS = {"source_topic", "target_topic", "partitions", "target_partitions", "replication_factor",
                   "configs", "config_drift", "actions"}


@dataclass(frozen=True)
class Rec:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp: int = BASE_TIMESTAMP


@dataclass(frozen=True)
class Got:
    """One record as confluent-kafka read it."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: tuple[int, int]


def bootstrap(cluster) -> str:  # noqa: ANN001 - a SandboxCluster
    return ",".join(cluster.bootstrap)


_ADMINS: dict[str, AdminClient] = {}


def admin(cluster) -> AdminClient:  # noqa: ANN001
    """One client per cluster, kept: a collected AdminClient cancels its pending futures."""
    address = bootstrap(cluster)
    if address not in _ADMINS:
        _ADMINS[address] = AdminClient(client_settings(cluster))
    return _ADMINS[address]


def drop_admin_clients() -> None:
    """Forget the cached admin clients (conftest does so after each module)."""
    _ADMINS.clear()


def cluster_id(cluster) -> str:  # noqa: ANN001
    return admin(cluster).describe_cluster().result(30).cluster_id


def create_topic(cluster, name: str, partitions: int = 1, config: dict[str, str] | None = None,  # noqa: ANN001
                 replication: int = 1) -> None:
    client = admin(cluster)
    client.create_topics([NewTopic(name, partitions, replication, config=config or {})])[name].result(30)


def topics_of(cluster) -> set[str]:  # noqa: ANN001
    return set(admin(cluster).list_topics(timeout=30).topics)


def producer(cluster, **settings: object) -> Producer:  # noqa: ANN001
    return Producer({**client_settings(cluster), "linger.ms": 5, "enable.idempotence": True, **settings})


def produce(cluster, topic: str, records: Iterable[Rec], **settings: object) -> None:  # noqa: ANN001
    client = producer(cluster, **settings)
    for record in records:
        client.produce(topic, value=record.value, key=record.key, partition=record.partition,
                       headers=record.headers or None, timestamp=record.timestamp)
    assert client.flush(30) == 0


def numbered(count: int, partitions: int, start: int = 0, prefix: str = "r") -> list[Rec]:
    """Records whose value says which one it is: ``r-<index>``, round-robin over the partitions."""
    return [Rec(index % partitions, f"k{index}".encode(), f"{prefix}-{index}".encode(), [("n", str(index).encode())],
                BASE_TIMESTAMP + index) for index in range(start, start + count)]


def filled(per_partition: dict[int, int], value_size: int | None = None) -> list[Rec]:
    """``count`` records for each ``partition: count``: keys ``k<index>``, values ``v<partition>-<index>`` (or
    ``value_size`` bytes of ``v``), no headers."""
    return [Rec(partition, f"k{index}".encode(),
                b"v" * value_size if value_size is not None else f"v{partition}-{index}".encode())
            for partition, count in per_partition.items() for index in range(count)]


def read_all(cluster, topic: str, timeout: float = 60,  # noqa: ANN001
             isolation: str = "read_committed") -> dict[int, list[Got]]:
    """Every committed record of every partition, in offset order (read_committed), up to the end offsets
    taken at the start. A partition is done at the first record at or past its end offset, or at an EOF
    event (the end may be a control marker): EOF alone never comes while a writer keeps it busy.
    read_committed stops earlier at an open transaction: its EOF comes at the last stable offset, which
    is all that is committed now."""
    consumer = Consumer({**client_settings(cluster), "group.id": f"verify-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(metadata.partitions)
        ends = {p: _end_offset(consumer, topic, p) for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: dict[int, list[Got]] = {p: [] for p in partitions}
        pending = {p for p in partitions if ends[p] > 0}
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"reading {topic}: partitions {pending} not read to the end"
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    if message.offset() >= ends[message.partition()] or isolation == "read_committed":
                        pending.discard(message.partition())
                    continue
                partition = message.partition()
                if partition not in pending:
                    continue  # already read to its end offset; records arriving since are not counted
                if message.offset() < ends[partition]:
                    found[partition].append(Got(message.offset(), message.key(), message.value(),
                                                list(message.headers() or []), message.timestamp()))
                if message.offset() >= ends[partition] - 1:
                    pending.discard(partition)
        return found
    finally:
        consumer.close()


def _end_offset(consumer: Consumer, topic: str, partition: int) -> int:
    """The high watermark, asked again while a new topic's leadership settles."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def count(cluster, topic: str) -> int:  # noqa: ANN001
    """Records in ``topic`` (0 while it does not exist)."""
    try:
        return sum(len(records) for records in read_all(cluster, topic, timeout=30).values())
    except KeyError:
        return 0


def without_origin(record: Got) -> tuple:
    """What a copy must keep of a record: key, value, headers (but kmc's), timestamp."""
    return (record.key, record.value, [h for h in record.headers if h[0] != ORIGIN], record.timestamp)


def _difference(got: list, want: list) -> str:
    """What differs between a copy and its source, in one line: counts, duplicates, missing, first mismatch."""
    first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    keys = [repr(record) for record in got]
    duplicates = len(keys) - len(set(keys))
    missing = len(set(map(repr, want)) - set(keys))
    return (f"{len(got)} records copied, {len(want)} in the source: {duplicates} duplicate(s), {missing} missing, "
            f"first difference at index {first}")


def assert_exact_copy(source: dict[int, list[Got]], target: dict[int, list[Got]], origin: str | None = None) -> None:
    """Every source record in the target, in order. Without ``origin``, exactly as produced (records of the
    source's own producers are copied unstamped); with it, each also carries ``kmc-origin: origin`` last."""
    assert set(target) >= set(source)
    for partition, records in source.items():
        copied = target[partition]
        if origin is None:
            got, want = ([(r.key, r.value, r.headers, r.timestamp) for r in rs] for rs in (copied, records))
            assert got == want, f"partition {partition}: {_difference(got, want)}"
            continue
        got, want = ([without_origin(r) for r in rs] for rs in (copied, records))
        assert got == want, f"partition {partition}: {_difference(got, want)}"
        assert all(r.headers[-1] == (ORIGIN, origin.encode()) for r in copied), f"partition {partition}: origin"


@dataclass(frozen=True)
class LogBatch:
    """A record batch as the broker stored it (read from its log segment files, not through any client)."""

    base_offset: int
    size: int  # bytes on disk, header included
    codec: int  # 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
    control: bool
    producer_id: int
    records: int


def log_batches(cluster, topic: str, partition: int) -> list[LogBatch]:  # noqa: ANN001
    """Every batch of the partition, from the first broker that holds its log segments."""
    found = []
    for broker in cluster.brokers:
        folder = Path(broker.log_dir) / f"{topic}-{partition}"
        for segment in sorted(folder.glob("*.log")) if folder.is_dir() else []:
            data = segment.read_bytes()
            position = 0
            while position + 61 <= len(data):
                base, length = struct.unpack_from(">qi", data, position)
                attributes = struct.unpack_from(">h", data, position + 21)[0]
                producer_id = struct.unpack_from(">q", data, position + 43)[0]
                count = struct.unpack_from(">i", data, position + 57)[0]
                found.append(LogBatch(base, 12 + length, attributes & 0x07, bool(attributes & 0x20), producer_id,
                                      count))
                position += 12 + length
        if found:
            return found
    return found


def produce_slowly(cluster, topic: str, total: int, partitions: int, pause: float = 0.04) -> threading.Event:  # noqa: ANN001
    """Produce ``numbered(total, partitions)`` in the background, 30 records at a time with ``pause`` after
    each, so records keep arriving while a mirror is killed and restarted; the event is set when all are
    acknowledged."""
    done = threading.Event()

    def run() -> None:
        client = producer(cluster)
        for index, record in enumerate(numbered(total, partitions)):
            client.produce(topic, key=record.key, value=record.value, partition=record.partition,
                           headers=record.headers, timestamp=record.timestamp)
            if index % 30 == 29:
                client.flush(30)
                time.sleep(pause)
        client.flush(30)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def wait_for(condition: Callable[[], bool], timeout: float, what: str, *running: Follower) -> None:
    """Poll ``condition``; fail after ``timeout`` seconds, or at once if one of ``running`` exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        for follower in running:
            follower.ensure_running()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def mirror_json(*args: str, expect: int = 0) -> dict:
    return kmc("mirror", *args, "-o", "json", expect=expect).json()


class Follower:
    """``kmc mirror ... --follow`` (or another ``command``: ``("flow", "run")``) as a child process, its output
    in files."""

    def __init__(self, tmp: Path, *args: str, command: tuple[str, ...] = ("mirror",)) -> None:
        self.name = f"follow-{uuid.uuid4().hex[:6]}"
        self.out = tmp / f"{self.name}.out"
        self.err = tmp / f"{self.name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "kmc", *command, *args, "--follow"],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def ensure_running(self) -> None:
        assert self.proc.poll() is None, f"follower exited {self.proc.returncode}: {self.stderr}"


COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                         KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._WAIT_COORD}


def commit_offsets(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    """Commit, waiting out a group coordinator that is still being set up (a fresh cluster's first group)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException as exc:
            if exc.args[0].code() not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def commit(cluster, group: str, offsets: dict[tuple[str, int], int]) -> None:  # noqa: ANN001
    """Offsets ``{(topic, partition): offset}`` committed for ``group`` by a consumer that never joins it."""
    consumer = Consumer({**client_settings(cluster), "group.id": group, "enable.auto.commit": False})
    try:
        commit_offsets(consumer, [TopicPartition(topic, partition, offset)
                                  for (topic, partition), offset in offsets.items()])
    finally:
        consumer.close()


def on_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``command`` with stdout on a pseudo-terminal: its exit status, what it printed there (newlines as
    "\\n") and its stderr."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), err.decode()
def delete_records(cluster, topic: str, before: dict[int, int]) -> None:  # noqa: ANN001
    """What retention does: move each partition's start to ``before[p]`` (the broker deletes the rest)."""
    futures = admin(cluster).delete_records([TopicPartition(topic, p, offset) for p, offset in before.items()])
    for future in futures.values():
        future.result(30)


# ------------------------------------------------------------------------------------ consumer groups


def _group_consumer(cluster, group: str, **settings: object) -> Consumer:  # noqa: ANN001
    return Consumer({**client_settings(cluster), "group.id": group, "enable.auto.commit": False,
                     "enable.partition.eof": True, **settings})


def consume_as_group(cluster, group: str, topic: str, counts: dict[int, int],  # noqa: ANN001
                     timeout: float = 60) -> dict[int, list[Got]]:
    """What an application does: as consumer group ``group``, consume ``counts[p]`` more records of each
    partition ``p`` of ``topic`` (from the group's committed offset, else the beginning) and commit after
    the last one. Returns the records consumed."""
    consumer = _group_consumer(cluster, group, **{"auto.offset.reset": "earliest"})
    try:
        stored = _committed(consumer, [TopicPartition(topic, p) for p in counts])
        consumer.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                         for tp in stored])
        consumed: dict[int, list[Got]] = {p: [] for p in counts}
        pending = {p for p, wanted in counts.items() if wanted > 0}
        for p in set(counts) - pending:
            consumer.pause([TopicPartition(topic, p)])
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, \
                f"{group}: could not consume {counts} of {topic}: got {[len(r) for r in consumed.values()]}"
            for message in consumer.consume(100, 0.5):
                if message.error() is not None or message.partition() not in pending:
                    continue
                partition = message.partition()
                consumed[partition].append(Got(message.offset(), message.key(), message.value(),
                                               list(message.headers() or []), message.timestamp()))
                if len(consumed[partition]) == counts[partition]:
                    pending.discard(partition)
                    consumer.pause([TopicPartition(topic, partition)])
        commit_offsets(consumer, [TopicPartition(topic, p, records[-1].offset + 1)
                                  for p, records in consumed.items() if records])
        return consumed
    finally:
        consumer.close()


def receive_as_group(cluster, group: str, topics: list[str], timeout: float = 60,  # noqa: ANN001
                     reset: str = "error") -> dict[tuple[str, int], list[Got]]:
    """What a failed-over application receives: a consumer of ``group`` subscribed to ``topics`` (from the
    group's committed offsets; a partition without one is an error, never a silent reset, unless ``reset``
    says where to start then), every record up to the end of each partition, without committing."""
    consumer = _group_consumer(cluster, group, **{"auto.offset.reset": reset})
    partitions = {(topic, p) for topic in topics for p in admin(cluster).list_topics(topic, timeout=10)
                  .topics[topic].partitions}
    found: dict[tuple[str, int], list[Got]] = {key: [] for key in partitions}
    try:
        consumer.subscribe(topics)
        at_end: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        while at_end != partitions:
            assert time.monotonic() < deadline, f"{group}: partitions {sorted(partitions - at_end)} not read to the end"
            for message in consumer.consume(500, 0.5):
                key = (message.topic(), message.partition())
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, f"{group}: {error}"
                    at_end.add(key)
                    continue
                found[key].append(Got(message.offset(), message.key(), message.value(),
                                      list(message.headers() or []), message.timestamp()))
        return found
    finally:
        consumer.close()


def _committed(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets (-1001 where none), waiting out a group coordinator that is still being
    set up (a fresh cluster: librdkafka gives up on an assignment from stored offsets at once then)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def committed_offsets(cluster, group: str, topic: str) -> dict[int, int]:  # noqa: ANN001
    """The group's committed offsets on ``topic`` (partitions without one left out)."""
    consumer = _group_consumer(cluster, group)
    try:
        partitions = admin(cluster).list_topics(topic, timeout=10).topics[topic].partitions
        answer = _committed(consumer, [TopicPartition(topic, p) for p in partitions])
        return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}
    finally:
        consumer.close()


def failover_counts(source: list[Got], committed: int, consumed: set[bytes | None],
                    received: list[Got]) -> tuple[int, int]:
    """(lost, repeated) of one partition after a failover: records the source holds at or after the group's
    committed offset that the failed-over consumer did not receive, and records it received that the group had
    consumed on the source (``consumed``: their values), or received twice. Values must be unique."""
    values = [record.value for record in received]
    arrived = set(values)
    lost = sum(1 for record in source if record.offset >= committed and record.value not in arrived)
    repeated = sum(1 for value in values if value in consumed) + len(values) - len(arrived)
    return lost, repeated
