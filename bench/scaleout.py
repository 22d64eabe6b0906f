"""What `--group` members cost and how fast they take over (issue 15).

    .venv/bin/python bench/scaleout.py [--records 1000000] [--members 1 2 3] [--session-timeout 10]

Starts its own two single-broker sandboxes in a temporary XDG home, generates one 12-partition topic of
100-byte lz4 records (bench/workload.py), then:

1. for each member count M, starts M `kmc mirror --group --follow` processes at once (each group into a
   topic of its own) and times them until the target holds every record: wall seconds, the members' CPU
   seconds in all, CPU seconds per MB (payload) and how the records were shared;
2. with two members copying under continuous production (~5,000 records/s), SIGKILLs one and times
   until every target partition grew again: the take-over, which should be close to the session timeout.

On two cores the total cannot scale with members (the brokers share the cores); the per-member cost is the
figure to read. Always stops the sandboxes and every kmc it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_HOME = Path(tempfile.mkdtemp(prefix="kmc-bench-scaleout-"))
for _var, _dir in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
    (BENCH_HOME / _dir).mkdir()
    os.environ[_var] = str(BENCH_HOME / _dir)
os.environ.pop("KMC_CONFIG", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Producer  # noqa: E402
from measure import Child, stop_all  # noqa: E402
from workload import Dataset, end_offsets, generate  # noqa: E402

from kmc import sandbox  # noqa: E402


def members(count: int, topic: str, group: str, session: float) -> list[Child]:
    return [Child([sys.executable, "-m", "kmc", "mirror", "bench-src", "bench-dst", "--topics", topic, "--rename",
                   f"{{topic}}.{group}", "--flow", group, "--group", group, "--session-timeout", f"{session:g}",
                   "--follow", "-o", "json"], BENCH_HOME / f"{group}-{index}.err",
                  stdout=BENCH_HOME / f"{group}-{index}.out") for index in range(count)]


def wait_for(condition, timeout: float) -> float:  # noqa: ANN001
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit("timed out")
        time.sleep(0.2)
    return time.monotonic() - started


def throughput(target: str, dataset: Dataset, count: int, session: float) -> dict[str, object]:
    group = f"m{count}"
    started = time.monotonic()
    running = members(count, dataset.topic, group, session)
    wall = wait_for(lambda: sum(end_offsets(target, f"{dataset.topic}.{group}").values()) >= dataset.records, 600)
    cpu = sum(child.running_usage()[0] for child in running)
    for child in running:
        child.stop()
    shares = [json.loads(Path(child.stdout).read_text() or "{}").get("records") for child in running]
    mb = dataset.total_bytes / 1e6
    return {"members": count, "seconds": round(wall, 1), "records_per_s": round(dataset.records / wall),
            "cpu_s": round(cpu, 1), "cpu_s_per_mb": round(cpu / mb, 3), "records_each": shares,
            "started_to_done": round(time.monotonic() - started, 1)}


def take_over(source: str, target: str, dataset: Dataset, session: float) -> dict[str, object]:
    stop = threading.Event()

    def produce() -> None:
        producer = Producer({"bootstrap.servers": source, "linger.ms": 5})
        index = 0
        while not stop.is_set():
            for _ in range(500):
                producer.produce(dataset.topic, value=b"x" * 100, key=b"late-%08d" % index, partition=index % 12)
                index += 1
            producer.flush(10)
            time.sleep(0.1)
        producer.flush(30)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    running = members(2, dataset.topic, "kill", session)
    copy = f"{dataset.topic}.kill"
    wait_for(lambda: sum(end_offsets(target, copy).values()) >= dataset.records, 600)
    time.sleep(3)
    victim, survivor = running
    at_kill = end_offsets(target, copy)
    victim.proc.kill()
    taken = wait_for(lambda: all(end > at_kill[p] for p, end in end_offsets(target, copy).items()), 120)
    stop.set()
    thread.join(60)
    survivor.stop()
    victim.stop()
    return {"session_timeout_s": session, "take_over_s": round(taken, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--session-timeout", type=float, default=10.0)
    args = parser.parse_args()
    dataset = Dataset("100B-lz4", "scale", args.records, 100, "lz4")
    try:
        clusters = {cluster.name: cluster for cluster in sandbox.up(["bench-src", "bench-dst"], timeout=120)}
        source, target = clusters["bench-src"].bootstrap_servers, clusters["bench-dst"].bootstrap_servers
        generate(source, dataset)
        print(f"{dataset.records:,} records of {dataset.record_bytes} B ({dataset.total_bytes / 1e6:.0f} MB), "
              f"12 partitions, lz4; load average {os.getloadavg()[0]:.1f}")
        for count in args.members:
            print(json.dumps(throughput(target, dataset, count, args.session_timeout)), flush=True)
        print(json.dumps(take_over(source, target, dataset, args.session_timeout)), flush=True)
    finally:
        stop_all()
        sandbox.down(["bench-src", "bench-dst"])
        shutil.rmtree(BENCH_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
