"""Throughput of `kmc diff --data`: records/s and MB/s comparing one topic of N records on two clusters.

    .venv/bin/python bench/diff_throughput.py [--records 1000000] [--value-size 100] [--compression none|lz4]

Starts its own pair of sandbox clusters in a temporary XDG home (no profile or sandbox of yours is seen
or touched; the Kafka jar cache is shared), writes the same records into both with confluent-kafka, runs
`kmc diff --data` as a child process measured by bench/measure.py (wall time with start-up, CPU seconds,
peak RSS), and always stops the clusters.

The records have the mirror benchmark's shape (bench/workload.py: 12-byte key, one 27-byte header,
values from a seeded pool, 12 partitions) plus a fixed timestamp per record, because diff compares
timestamps and two producers would otherwise stamp the two copies differently. Records/s counts record
pairs compared (every record is read from both clusters); MB/s counts one side's payload bytes (key,
value, header) per second, and "both sides" twice that.

The records are written by child processes (``--write-into``), so this process stays small: Linux
counts the memory a process had when it forked into its child's peak RSS, which would otherwise
inflate kmc's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from measure import Child
from workload import HEADER_NAME, KEY_FORMAT, PARTITIONS, TOPIC_CONFIG, VALUE_POOL, Dataset, end_offsets

SOURCE, TARGET = "bench-diff-src", "bench-diff-dst"
DIFF_TIMEOUT = 1800.0


def write_copy(bootstrap: str, dataset: Dataset, base_timestamp: int, seed: int = 7) -> float:
    """Create the dataset's topic in one cluster and fill it with the same records every call; seconds taken."""
    # Not workload.create_topic: it lets its AdminClient be collected before the result arrives
    # ("Broker handle destroyed"), which fails nondeterministically.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topic = NewTopic(dataset.topic, PARTITIONS, 1, config={"compression.type": TOPIC_CONFIG[dataset.compression]})
    admin.create_topics([new_topic], operation_timeout=30)[dataset.topic].result(60)
    rng = random.Random(seed)
    pool = [bytes(rng.choices(range(65, 91), k=dataset.value_size)) for _ in range(VALUE_POOL)]
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": dataset.compression,
                         "linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000,
                         "enable.idempotence": True,  # retries must not reorder: diff compares order
                         "queue.buffering.max.kbytes": 512 * 1024})
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.monotonic()
    produce = producer.produce
    for index in range(dataset.records):
        while True:
            try:
                produce(dataset.topic, value=pool[index % VALUE_POOL], key=KEY_FORMAT % index,
                        partition=index % PARTITIONS, headers=[(HEADER_NAME, b"%016x" % index)],
                        timestamp=base_timestamp + index, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let librdkafka send
                producer.poll(0.05)
        if index % 20_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    landed = sum(end_offsets(bootstrap, dataset.topic).values())
    if left or failures or landed != dataset.records:
        raise SystemExit(f"writing {dataset.topic}: {left} unsent, {len(failures)} failed, {landed} landed")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--compression", choices=["none", "lz4"], default="none")
    parser.add_argument("--write-into", metavar="BOOTSTRAP", help=argparse.SUPPRESS)  # the writer child
    parser.add_argument("--base-timestamp", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dataset = Dataset(f"{args.value_size}B-{args.compression}", "bench-diff", args.records, args.value_size,
                      args.compression)
    if args.write_into:
        print(f"{write_copy(args.write_into, dataset, args.base_timestamp):.1f}")
        return 0

    home = Path(tempfile.mkdtemp(prefix="kmc-bench-diff-"))
    for variable, directory in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        (home / directory).mkdir()
        os.environ[variable] = str(home / directory)
    os.environ.pop("KMC_CONFIG", None)
    from kmc import sandbox  # after the environment: sandboxes live under XDG_DATA_HOME

    try:
        print(f"starting sandboxes {SOURCE} and {TARGET} ...", file=sys.stderr)
        clusters = sandbox.up([SOURCE, TARGET], timeout=180)
        # Recent timestamps: records older than the brokers' 7-day retention would be deleted mid-run.
        base_timestamp = int(time.time() * 1000) - 3_600_000
        writers = [subprocess.Popen([sys.executable, __file__, "--records", str(args.records), "--value-size",
                                     str(args.value_size), "--compression", args.compression, "--write-into",
                                     ",".join(cluster.bootstrap), "--base-timestamp", str(base_timestamp)],
                                    stdout=subprocess.PIPE, text=True) for cluster in clusters]
        for cluster, writer in zip(clusters, writers, strict=True):
            seconds, _ = writer.communicate()
            if writer.returncode:
                raise SystemExit(f"writing into {cluster.name} failed")
            print(f"wrote {dataset.records:,} records into {cluster.name} in {float(seconds):.1f}s", file=sys.stderr)
        child = Child([sys.executable, "-m", "kmc", "diff", SOURCE, TARGET, "--topics", dataset.topic, "--data",
                       "-o", "json", "--timeout", "30"], home / "diff.log", stdout=home / "diff.json")
        usage = child.wait(DIFF_TIMEOUT)
        if usage.exit_code != 0:
            raise SystemExit(f"kmc diff exited {usage.exit_code}:\n{child.tail()}")
        summary = json.loads((home / "diff.json").read_text())["summary"]
        if summary["records_compared"] != dataset.records or summary["differences"]:
            raise SystemExit(f"unexpected result: {summary}")
        megabytes = dataset.total_bytes / 1e6
        rows = [
            ("dataset", f"{dataset.records:,} records of {dataset.record_bytes} B ({dataset.name}, "
                        f"{PARTITIONS} partitions)"),
            ("wall time, start-up included", f"{usage.seconds:.2f} s"),
            ("of which comparing (kmc's own count)", f"{summary['seconds']:.2f} s"),
            ("records/s", f"{dataset.records / usage.seconds:,.0f}"),
            ("MB/s (one side's payload)", f"{megabytes / usage.seconds:.1f}"),
            ("MB/s (both sides read)", f"{2 * megabytes / usage.seconds:.1f}"),
            ("CPU seconds (kmc and its readers)", f"{usage.cpu_s:.1f}"),
            ("peak RSS (largest kmc process)", f"{usage.peak_rss_mb:.0f} MiB"),
            ("load average at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name.ljust(width)}  {value}")
        return 0
    finally:
        try:
            sandbox.down([SOURCE, TARGET])
        finally:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
