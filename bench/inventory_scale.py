"""How `kmc inventory` scales with the number of topics: wall time and requests sent.

    .venv/bin/python bench/inventory_scale.py [--topics 1,100,1000] [--partitions 6] [--runs 3]

Starts its own single-broker sandbox in a temporary XDG home (no profile or sandbox of yours is seen or
touched; the Kafka jar cache is shared), grows it to each number of topics in turn (each topic with
``--partitions`` partitions and one record in each partition, so records and bytes are not all zero),
runs `kmc -v inventory` as a child process ``--runs`` times, and prints a table of the median wall time
(Python start-up included), CPU seconds of the kmc process, kmc's own gathering time (from connecting
to the last answer), and the requests kmc counted by API (the connection handshakes excluded). Always
stops the sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_HOME = Path(tempfile.mkdtemp(prefix="kmc-bench-inventory-"))
for _var, _dir in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
    (BENCH_HOME / _dir).mkdir()
    os.environ[_var] = str(BENCH_HOME / _dir)
os.environ.pop("KMC_CONFIG", None)

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from kmc import sandbox  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench-inventory"
CREATE_BATCH = 100  # topics per CreateTopics request
# what `kmc -v inventory` says on stderr for each cluster
REQUESTS_LINE = re.compile(r"^(?P<name>\S+): (?P<total>\d+) requests? in (?P<seconds>[\d.]+)s \((?P<detail>.*)\)$")


def grow(bootstrap: str, have: int, want: int, partitions: int) -> None:
    """Create topics ``inv-{have}`` .. ``inv-{want - 1}`` and put one record in each partition."""
    names = [f"inv-{index:05d}" for index in range(have, want)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for start in range(0, len(names), CREATE_BATCH):
        batch = [NewTopic(name, partitions, 1) for name in names[start:start + CREATE_BATCH]]
        for future in admin.create_topics(batch, operation_timeout=60).values():
            future.result(120)
    # CreateTopics answers once the controller has the topics; the broker creates their logs after
    # that, which takes a while for hundreds of partitions: wait until its metadata shows them all
    deadline = time.monotonic() + 300
    while not set(names) <= set(admin.list_topics(timeout=30).topics):
        if time.monotonic() > deadline:
            raise SystemExit("the new topics did not show up in the metadata within 300s")
        time.sleep(1)
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for name in names:
        for partition in range(partitions):
            producer.produce(name, key=b"k", value=b"v" * 100, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    if producer.flush(120) or failures:
        raise SystemExit(f"records not written: {failures[:3]}")


def run_inventory(expected_topics: int) -> tuple[float, float, float, int, str]:
    """One `kmc -v inventory` run: (wall seconds, CPU seconds, kmc's gathering seconds, requests,
    requests by API)."""
    command = [sys.executable, "-m", "kmc", "-v", "inventory", NAME, "-o", "json", "--timeout", "30"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"kmc inventory exited {done.returncode}:\n{done.stderr}")
    [row] = json.loads(done.stdout)
    if row["topics"] != expected_topics:
        raise SystemExit(f"expected {expected_topics} topics, inventory says {row['topics']}")
    for line in done.stderr.splitlines():
        match = REQUESTS_LINE.match(line.strip())
        if match and match["name"] == NAME:
            return wall, cpu, float(match["seconds"]), int(match["total"]), match["detail"]
    raise SystemExit(f"no request count on stderr:\n{done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--topics", default="1,100,1000", help="comma-separated topic counts, ascending")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = sorted(int(count) for count in args.topics.split(","))
    results = []
    try:
        print(f"starting sandbox {NAME} ...", file=sys.stderr)
        [cluster] = sandbox.up([NAME], timeout=180)
        bootstrap = ",".join(cluster.bootstrap)
        have = 0
        for count in counts:
            started = time.monotonic()
            grow(bootstrap, have, count, args.partitions)
            print(f"{count} topics ready ({time.monotonic() - started:.1f}s)", file=sys.stderr)
            have = count
            runs = [run_inventory(count) for _ in range(args.runs)]
            wall, cpu, gathering = (statistics.median(run[index] for run in runs) for index in range(3))
            results.append((count, count * args.partitions, wall, cpu, gathering, runs[-1][3], runs[-1][4]))
    finally:
        try:
            sandbox.down([NAME])
        finally:
            shutil.rmtree(BENCH_HOME, ignore_errors=True)
    print(f"kmc inventory, one broker, {args.partitions} partitions per topic, median of {args.runs} runs")
    header = ("topics", "partitions", "wall s", "CPU s", "gathering s", "requests", "by API")
    rows = [(f"{count:,}", f"{parts:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{gathering:.2f}", str(requests), detail)
            for count, parts, wall, cpu, gathering, requests, detail in results]
    widths = [max(len(line[index]) for line in [header, *rows]) for index in range(len(header) - 1)]
    for line in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
