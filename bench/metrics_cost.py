"""What serving Prometheus metrics costs a mirror: `kmc mirror --follow` with and without `--metrics-addr`,
at 12 and 1,000 partitions (goal: under 5 % of throughput).

    .venv/bin/python bench/metrics_cost.py [--records 400000] [--runs 3] [--partitions 12,1000]

Starts two single-broker sandboxes in a temporary XDG home (the Kafka jar cache is shared), writes
``--records`` records of 100 B (12-byte keys) round-robin into a topic per partition count, then runs
``kmc mirror src dst --follow`` into a fresh target topic each time, alternating without and with
``--metrics-addr`` (and, with it, a scraper asking /metrics every second, fifteen times as often as
Prometheus' default), with the default labels (per topic) at each count and with ``--metrics-partitions``
(every partition's series) at the largest, after one uncounted warm-up pair of runs, and
times it from start until the target holds every record (start-up included, the same in both). Prints a
table of the median records/s of each and the cost, and the median CPU seconds of kmc at the moment the
copy was complete (steadier than wall time on two cores shared with both brokers). Always stops the
sandboxes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BENCH_HOME = Path(tempfile.mkdtemp(prefix="kmc-bench-metrics-"))
for _var, _dir in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
    (BENCH_HOME / _dir).mkdir()
    os.environ[_var] = str(BENCH_HOME / _dir)
os.environ.pop("KMC_CONFIG", None)

from confluent_kafka import Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # noqa: E402

from kmc import sandbox  # noqa: E402

NAMES = ["bench-msrc", "bench-mdst"]


def fill(bootstrap: str, topic: str, partitions: int, records: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 512 * 1024,
                         "queue.buffering.max.messages": 1_000_000})
    value = b"V" * 100
    for index in range(records):
        while True:
            try:
                producer.produce(topic, key=f"k-{index:010d}".encode(), value=value, partition=index % partitions)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def end_total(bootstrap: str, topic: str, partitions: int) -> int:
    """The target topic's end offsets, summed (0 while it does not exist). A fresh admin client each time:
    one that asked before the topic existed keeps answering that it does not."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    try:
        answers = admin.list_offsets(specs, request_timeout=30)
        return sum(future.result(30).offset for future in answers.values())
    except Exception:  # noqa: BLE001 - the target topic may not exist yet
        return 0


def scrape(url: str, stop: threading.Event, counts: list[int]) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - a local URL
                counts.append(len(answer.read()))
        except OSError:
            pass


def one_run(source: str, target: str, topic: str, partitions: int, records: int, run: str,
            metrics: bool, per_partition: bool) -> tuple[float, float, int]:
    """Seconds until the target holds every record, kmc's CPU seconds at that moment, and the size of the
    last scrape (0 without metrics)."""
    args = [sys.executable, "-m", "kmc", "mirror", source, target, "--topics", topic, "--rename",
            f"{{topic}}.{run}", "--flow", run, "--follow", "-q"]
    (port,) = sandbox.free_ports(1)
    if metrics:
        args += ["--metrics-addr", f"127.0.0.1:{port}"] + (["--metrics-partitions"] if per_partition else [])
    stop = threading.Event()
    scraped: list[int] = []
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if metrics:
        threading.Thread(target=scrape, args=(f"http://127.0.0.1:{port}/metrics", stop, scraped), daemon=True).start()
    try:
        while end_total(target, f"{topic}.{run}", partitions) < records:
            if process.poll() is not None:
                raise SystemExit(f"kmc exited {process.returncode}: {process.stderr.read()}")
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
        cpu = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return seconds, cpu, scraped[-1] if scraped else 0
    finally:
        stop.set()
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        # one broker with a new 1,000-partition topic per run slows down run after run, and fell over near
        # 16,000 partitions: each copy goes once measured
        with contextlib.suppress(Exception):
            AdminClient({"bootstrap.servers": target}).delete_topics([f"{topic}.{run}"])[f"{topic}.{run}"].result(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partitions", default="12,1000")
    args = parser.parse_args(argv)
    counts = [int(value) for value in args.partitions.split(",")]
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # the sandboxes stop on every exit
    try:
        clusters = sandbox.up(NAMES, timeout=180)
        source, target = (cluster.bootstrap[0] for cluster in clusters)
        rows = []
        # the default labels (per topic) at every count, and per-partition labels at the largest
        cases = [(partitions, False) for partitions in counts] + [(max(counts), True)]
        for partitions in counts:
            fill(source, f"mc-{partitions}", partitions, args.records)
        for partitions, per_partition in cases:
            topic = f"mc-{partitions}"
            times: dict[bool, list[float]] = {False: [], True: []}
            cpus: dict[bool, list[float]] = {False: [], True: []}
            scrape_size = 0
            for index in range(-1, args.runs):  # run -1 warms the brokers' caches up, and is not counted
                for metrics in (False, True):
                    run = f"r{index + 1}{'m' if metrics else 'p'}{'x' if per_partition else ''}"
                    seconds, cpu, size = one_run(source, target, topic, partitions, args.records, run, metrics,
                                                 per_partition)
                    if index < 0:
                        continue
                    times[metrics].append(seconds)
                    cpus[metrics].append(cpu)
                    scrape_size = max(scrape_size, size)
                    print(f"  {partitions} partitions, {'with' if metrics else 'without'} metrics: "
                          f"{seconds:.2f}s, {cpu:.2f} CPU s", flush=True)
            plain, served = statistics.median(times[False]), statistics.median(times[True])
            cpu_plain, cpu_served = statistics.median(cpus[False]), statistics.median(cpus[True])
            rows.append((partitions, per_partition, args.records / plain, args.records / served, cpu_plain,
                         cpu_served, scrape_size))
        print("\n| partitions | metrics labels | records/s without | records/s with --metrics-addr | cost | "
              "CPU s without | CPU s with | CPU cost | /metrics size |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for partitions, per_partition, plain, served, cpu_plain, cpu_served, size in rows:
            print(f"| {partitions:,} | {'per partition' if per_partition else 'per topic'} | {plain:,.0f} | "
                  f"{served:,.0f} | {(plain - served) / plain * 100:+.1f} % | {cpu_plain:.2f} | {cpu_served:.2f} | "
                  f"{(cpu_served - cpu_plain) / cpu_plain * 100:+.1f} % | {size / 1024:,.0f} KiB |")
    finally:
        sandbox.down(NAMES)
        shutil.rmtree(BENCH_HOME, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
