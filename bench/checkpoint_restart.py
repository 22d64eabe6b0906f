"""How long a mirror of 1,000 busy partitions takes to restart after a long run (the faults issue, defect 10).

    .venv/bin/python bench/checkpoint_restart.py [--partitions 1000] [--minutes 60] [--settle 90]

A running mirror rewrites each busy partition's checkpoint once a second, so after an hour
``kmc.checkpoints`` has received 3.6 million records for 1,000 partitions. This script starts its own
single-broker sandbox in a temporary XDG home, creates source topics with ``--partitions`` partitions in
all (one record each), runs ``kmc mirror --once`` (which creates ``kmc.checkpoints`` with kmc's settings and
pins a checkpoint per partition), then writes ``--minutes`` × 60 rounds of checkpoints for every partition
into ``kmc.checkpoints`` the way a running mirror would (same keys, same JSON, lz4, one round a "second"
but as fast as the broker takes them), and times a second ``kmc mirror --once`` (a restart with nothing new
to copy: its time is start-up, planning and reading the checkpoints):

- right after the writes (the log cleaner has not caught up: the worst case), and
- after ``--settle`` seconds (the cleaner compacts the rolled segments).

It prints the records in ``kmc.checkpoints`` and its size on disk at each point, and the restart's wall
time, CPU seconds and peak RSS. Always stops the sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_HOME = Path(tempfile.mkdtemp(prefix="kmc-bench-checkpoints-"))
for _var, _dir in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
    (BENCH_HOME / _dir).mkdir()
    os.environ[_var] = str(BENCH_HOME / _dir)
os.environ.pop("KMC_CONFIG", None)

import measure  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from kmc import sandbox  # noqa: E402

TOPICS = 10


def kmc_once(source: str, target: str) -> dict[str, float]:
    """Run ``kmc mirror SRC DST --topics 'ck-.*' --once`` in a child; wall, CPU and peak RSS (measure.py)."""
    log = BENCH_HOME / "kmc-once.log"
    child = measure.Child([sys.executable, "-m", "kmc", "mirror", source, target, "--topics", "ck-.*", "--once",
                           "-q", "--timeout", "30"], log)
    usage = child.wait(600)
    if usage.exit_code != 0:
        raise SystemExit(f"kmc mirror exited {usage.exit_code}: {child.tail()}")
    return {"wall_s": round(usage.seconds, 2), "cpu_s": round(usage.cpu_s, 2), "peak_rss_mib": round(usage.peak_rss_mb)}


def checkpoint_log(cluster: sandbox.SandboxCluster) -> tuple[int, float]:
    """Records (end - start offsets) and MB on disk of kmc.checkpoints."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": "bench-watermarks"})
    try:
        records = 0
        for partition in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition("kmc.checkpoints", partition), timeout=30)
            records += high - low
    finally:
        consumer.close()
    size = sum(path.stat().st_size for broker in cluster.brokers
               for path in Path(broker.log_dir).glob("kmc.checkpoints-*/*.log"))
    return records, round(size / 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--settle", type=float, default=90, help="seconds to let the log cleaner work")
    args = parser.parse_args()
    try:
        source, target = sandbox.up(["ck-src", "ck-dst"], timeout=180)
        admin = AdminClient({"bootstrap.servers": source.bootstrap_servers})
        per_topic = args.partitions // TOPICS
        names = [f"ck-{index}" for index in range(TOPICS)]
        for future in admin.create_topics([NewTopic(name, per_topic, 1) for name in names]).values():
            future.result(120)
        producer = Producer({"bootstrap.servers": source.bootstrap_servers})
        for name in names:
            for partition in range(per_topic):
                producer.produce(name, value=b"x", partition=partition)
        producer.flush(60)
        first = kmc_once("ck-src", "ck-dst")
        rows = [("first run (creates kmc.checkpoints)", *checkpoint_log(target), first)]
        source_id = json.loads(subprocess.run([sys.executable, "-m", "kmc", "profile", "test", "ck-src", "-o", "json"],
                                              capture_output=True, text=True, check=True).stdout)[0]["cluster_id"]
        rounds = int(args.minutes * 60)
        writer = Producer({"bootstrap.servers": target.bootstrap_servers, "compression.type": "lz4",
                           "linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        for round_ in range(rounds):
            for name in names:
                for partition in range(per_topic):
                    key = f"mirror/{source_id}/{name}/{partition}".encode()
                    value = json.dumps({"next_offset": 1, "target_topic": name, "target_next_offset": 1,
                                        "updated_ms": now_ms + round_ * 1000}, separators=(",", ":")).encode()
                    while True:
                        try:
                            writer.produce("kmc.checkpoints", key=key, value=value)
                            break
                        except BufferError:
                            writer.poll(0.05)
            writer.poll(0)
        writer.flush(600)
        written = time.perf_counter() - started
        rows.append((f"restart after {rounds * args.partitions:,} checkpoint writes", *checkpoint_log(target),
                     kmc_once("ck-src", "ck-dst")))
        time.sleep(args.settle)
        rows.append((f"restart {args.settle:.0f} s later (cleaner ran)", *checkpoint_log(target),
                     kmc_once("ck-src", "ck-dst")))
        print(f"\n{args.partitions} partitions, {args.minutes:g} minutes of checkpoints "
              f"({rounds * args.partitions:,} records written in {written:.0f} s)\n")
        print("| moment | kmc.checkpoints records | MB on disk | restart wall s | CPU s | peak RSS MiB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for moment, records, size, figures in rows:
            print(f"| {moment} | {records:,} | {size} | {figures['wall_s']} | {figures['cpu_s']} | "
                  f"{figures['peak_rss_mib']} |")
    finally:
        sandbox.down()
        shutil.rmtree(BENCH_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
