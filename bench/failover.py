"""Consumer-group failover: kmc (--sync-groups) against MirrorMaker 2 (checkpoint connector with
sync.group.offsets.enabled=true), on the same scenario: how many records the failed-over consumer loses and
how many it receives again.

    .venv/bin/python bench/failover.py [--records 6000] [--keep-work]

Starts two single-broker sandboxes (fo-src, fo-dst) in a temporary XDG home. For each case a source topic
(3 partitions, unique values) is filled, and two consumer groups with the same offsets consume part of it on
the source and commit (``fo-CASE-kmc``, ``fo-CASE-mm2``):

- ``plain``: a topic written by a plain producer;
- ``compacted``: a compacted topic, compacted before the copy (offsets with gaps);
- ``transactional``: a transactional producer, every third transaction aborted (markers, aborted records);
- ``trimmed``: the topic's start deleted (delete-records) before the copy;
- ``live``: written while the tool runs (``--live-seconds`` at 100 records/s), and consumed as it is written
  by a group that commits every half second and stops two seconds before the writing does (an application a
  little behind when its site is lost): each tool's group starts at the end of what was there before.

Then each tool runs as a service with group offset sync until the target holds every record and the groups'
offsets on the target stay the same for ``--settle`` seconds, and is stopped: the failover. A consumer with
each group id reads its tool's target topic to the end (auto.offset.reset=earliest where a partition got no
offset), and is compared with the source: **lost**, records the source holds at or after the group's
committed offset that did not arrive; **repeated**, records the group had consumed on the source that
arrived again. Prints a markdown table and writes bench/results/failover.json and failover.md. Stops every
process and sandbox on any exit.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jars  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402
import runners  # noqa: E402
from confluent_kafka import Consumer, KafkaError, KafkaException  # noqa: E402

from kmc import sandbox  # noqa: E402
from tests.helpers import (  # noqa: E402 - the tests' confluent-kafka helpers, one copy
    Rec,
    commit,
    committed_offsets,
    consume_as_group,
    create_topic,
    delete_records,
    drop_admin_clients,
    failover_counts,
    produce,
    producer,
    read_all,
    receive_as_group,
)

CLUSTERS = ["fo-src", "fo-dst"]
CASES = ("plain", "compacted", "transactional", "trimmed", "live")
PARTITIONS = 3
CONSUMED = 0.37  # the share of each partition the groups consume before the failover
TOOLS = {"kmc": "kmc mirror --follow --sync-groups", "mm2": "MirrorMaker 2 (checkpoints, sync.group.offsets)"}


def say(message: str) -> None:
    print(f"failover: {message}", file=sys.stderr, flush=True)


def values(case: str, count: int, start: int = 0, keys: int | None = None) -> list[Rec]:
    now = int(time.time() * 1000)
    return [Rec(index % PARTITIONS, f"k{index % keys if keys else index}".encode(), f"{case}-{index}".encode(), [],
                now - 600_000 + index) for index in range(start, start + count)]


def fill(source: sandbox.SandboxCluster, case: str, records: int) -> None:
    """The case's source topic, as the module docstring describes it."""
    topic = f"fo-{case}"
    if case == "compacted":
        create_topic(source, topic, PARTITIONS, {"cleanup.policy": "compact", "segment.ms": "100",
                                                 "min.cleanable.dirty.ratio": "0.001", "min.compaction.lag.ms": "0"})
        produce(source, topic, values(case, records, keys=records // 10))
        # a newer record rolls the segment (the broker rolls by record time), which the cleaner then compacts
        produce(source, topic, [Rec(p, b"roll", f"{case}-roll-{p}".encode(), [], int(time.time() * 1000))
                                for p in range(PARTITIONS)])
        deadline = time.monotonic() + 120
        while sum(map(len, read_all(source, topic).values())) > records // 2:
            if time.monotonic() > deadline:
                raise SystemExit("the source topic was not compacted within 120 s")
            time.sleep(2)
        return
    create_topic(source, topic, PARTITIONS)
    if case == "live":
        return  # written while each tool runs (live())
    if case == "transactional":
        txn = producer(source, **{"transactional.id": f"fo-{case}"})
        txn.init_transactions(30)
        per = max(1, records // 30)
        for index in range(30):
            txn.begin_transaction()
            for record in values(case, per, start=index * per):
                txn.produce(topic, key=record.key, value=record.value, partition=record.partition,
                            timestamp=record.timestamp)
            (txn.abort_transaction if index % 3 == 1 else txn.commit_transaction)(30)
        return
    produce(source, topic, values(case, records))
    if case == "trimmed":
        delete_records(source, topic, dict.fromkeys(range(PARTITIONS), records // PARTITIONS // 5))


def live(source: sandbox.SandboxCluster, tool: str, seconds: float) -> dict[int, set[bytes | None]]:
    """The ``live`` case while ``tool`` runs: write ``fo-live`` at 100 records/s for ``seconds`` while its group
    consumes and commits every half second, stopping 2 s before the writing does. Returns what the group
    consumed, counting what was there before it started as consumed."""
    topic, group = "fo-live", f"fo-live-{tool}"
    before = read_all(source, topic)
    consumed = {p: {record.value for record in before.get(p, [])} for p in range(PARTITIONS)}
    commit(source, group, {(topic, p): (before[p][-1].offset + 1 if before.get(p) else 0) for p in range(PARTITIONS)})
    writer = producer(source)
    consumer = Consumer({"bootstrap.servers": ",".join(source.bootstrap), "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    started = time.monotonic()
    index = last_commit = 0
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            for _ in range(10):
                writer.produce(topic, value=f"live-{tool}-{index}".encode(), key=f"k{index}".encode(),
                               partition=index % PARTITIONS)
                index += 1
            writer.poll(0)
            if elapsed < seconds - 2:
                for message in consumer.consume(100, 0.05):
                    if message.error() is None:
                        consumed[message.partition()].add(message.value())
                if elapsed - last_commit >= 0.5:
                    _commit_position(consumer)
                    last_commit = elapsed
            time.sleep(max(0.0, started + index / 100 - time.monotonic()))
        writer.flush(30)
        _commit_position(consumer)
    finally:
        consumer.close()
    return consumed


def _commit_position(consumer: Consumer) -> None:
    """Commit what the consumer consumed (nothing new since the last commit is no error)."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise


def mm2_properties(source: str, target: str, work: Path) -> Path:
    settings = {
        "clusters": "src, dst",
        "src.bootstrap.servers": source,
        "dst.bootstrap.servers": target,
        "src->dst.enabled": "true",
        "dst->src.enabled": "false",
        "src->dst.topics": "fo-(" + "|".join(CASES) + ")",
        "src->dst.groups": "fo-.*-mm2",
        "tasks.max": "2",
        # the consumer group side, as the issue asks: checkpoints and group offset sync on, every second (the
        # defaults are a minute: shorter only helps MM2 here, whose last sync is then the newest)
        "emit.checkpoints.enabled": "true",
        "emit.checkpoints.interval.seconds": "1",
        "sync.group.offsets.enabled": "true",
        "sync.group.offsets.interval.seconds": "1",
        "refresh.groups.interval.seconds": "5",
        "refresh.topics.interval.seconds": "5",
        # read only committed records of transactional sources (MM2's consumer reads uncommitted by default,
        # which would also copy aborted records)
        "src.consumer.isolation.level": "read_committed",
        "emit.heartbeats.enabled": "false",
        "sync.topic.acls.enabled": "false",
        **runners.MM2_SANDBOX_SETTINGS,
        "dst.group.id": "mm2-failover",
    }
    path = work / "mm2-failover.properties"
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    return path


def synced(source: sandbox.SandboxCluster, target: sandbox.SandboxCluster, tool: str, topics: dict[str, str],
           state: dict) -> bool:
    """Whether the tool copied everything and its groups' offsets on the target stood still since the last
    look (``state`` keeps it)."""
    for case, target_topic in topics.items():
        try:
            copied = sum(map(len, read_all(target, target_topic, timeout=30).values()))
        except (KeyError, AssertionError):
            return False
        if copied < sum(map(len, read_all(source, f"fo-{case}").values())):
            return False
    offsets = {case: committed_offsets(target, f"fo-{case}-{tool}", topic) for case, topic in topics.items()}
    complete = all(len(found) == PARTITIONS for found in offsets.values())
    steady = offsets == state.get("offsets")
    state["offsets"] = offsets
    return complete and steady


def run_tool(tool: str, cmd: list[str], env: dict[str, str] | None, source: sandbox.SandboxCluster,
             target: sandbox.SandboxCluster, topics: dict[str, str], work: Path, settle: float,
             live_seconds: float, consumed: dict[str, dict[int, set[bytes | None]]]) -> dict:
    say(f"{TOOLS[tool]}: running until everything is copied and the groups' offsets settle")
    child = measure.Child(cmd, work / f"{tool}.log", env=env)
    state: dict = {}
    time.sleep(10)  # its start-up: the live application starts once the service runs
    consumed[f"live-{tool}"] = live(source, tool, live_seconds)
    started = time.monotonic()
    deadline = started + 300
    try:
        while not synced(source, target, tool, topics, state):
            if child.poll():
                raise SystemExit(f"{tool} exited {child.proc.returncode}: {child.tail(5)}")
            if time.monotonic() > deadline:
                say(f"{tool}: not settled after 300 s; failing over anyway")
                break
            time.sleep(settle)
    finally:
        child.stop(grace=30)
    say(f"{tool}: stopped after {time.monotonic() - started:.0f}s (the failover)")
    return {"seconds": round(time.monotonic() - started, 1), "offsets": state.get("offsets")}


def measure_case(source: sandbox.SandboxCluster, target: sandbox.SandboxCluster, case: str, tool: str,
                 target_topic: str, consumed: dict[int, set[bytes | None]]) -> dict:
    group = f"fo-{case}-{tool}"
    committed = committed_offsets(source, group, f"fo-{case}")
    target_offsets = committed_offsets(target, group, target_topic)
    received = receive_as_group(target, group, [target_topic], reset="earliest")
    now = read_all(source, f"fo-{case}")
    lost = repeated = 0
    for partition, records in now.items():
        counts = failover_counts(records, committed[partition], consumed[partition],
                                 received[(target_topic, partition)])
        lost, repeated = lost + counts[0], repeated + counts[1]
    return {"case": case, "tool": tool, "lost": lost, "repeated": repeated,
            "unconsumed": sum(sum(1 for r in records if r.offset >= committed[p]) for p, records in now.items()),
            "source_offsets": committed, "target_offsets": target_offsets,
            "partitions_without_offset": PARTITIONS - len(target_offsets)}


def markdown(rows: list[dict], records: int) -> str:
    by_case = {(row["case"], row["tool"]): row for row in rows}
    lines = [f"Failover of a consumer group that consumed {CONSUMED:.0%} of each partition ({records:,} records per "
             "topic, 3 partitions; live: consumed as written, for each tool while it ran); records the failed-over "
             "consumer lost / received again:", "",
             "| source topic | not yet consumed | kmc lost | kmc repeated | MM2 lost | MM2 repeated |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for case in CASES:
        kmc_row, mm2_row = by_case.get((case, "kmc")), by_case.get((case, "mm2"))
        if kmc_row is None and mm2_row is None:
            continue

        def cells(row: dict | None) -> str:
            if row is None:
                return "- | -"
            note = f" ({row['partitions_without_offset']} partition(s) without an offset)" \
                if row["partitions_without_offset"] else ""
            return f"{row['lost']:,} | {row['repeated']:,}{note}"

        unconsumed = sorted({row["unconsumed"] for row in (kmc_row, mm2_row) if row is not None})
        lines.append(f"| {case} | {' / '.join(f'{n:,}' for n in unconsumed)} | {cells(kmc_row)} | {cells(mm2_row)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=6000, help="records per source topic (default 6000)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds the offsets must stand still")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="how long the live case writes")
    parser.add_argument("--tools", default="kmc,mm2", help="comma-separated subset of kmc,mm2")
    parser.add_argument("--mm2-version", default=jars.DEFAULT_MM2_VERSION)
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directory (tool logs)")
    args = parser.parse_args(argv)
    tools = [tool for tool in args.tools.split(",") if tool]
    home = Path(tempfile.mkdtemp(prefix="kmc-bench-failover-"))
    os.environ["XDG_DATA_HOME"] = str(home / "data")

    def cleanup() -> None:
        measure.stop_all()
        drop_admin_clients()
        gc.collect()  # librdkafka clients nothing holds go before their brokers do
        existing = {cluster.name for cluster in sandbox.list_sandboxes()}
        sandbox.down([name for name in CLUSTERS if name in existing])
        for pid in sandbox.kill_jvms_under(home):
            say(f"killed leftover JVM {pid}")
        if not args.keep_work:
            shutil.rmtree(home, ignore_errors=True)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    mirror_cp = jars.mirror_classpath(args.mm2_version) if "mm2" in tools else ""
    kmc_env = runners.environment_for_kmc(home / "kmc")
    work = home / "work"
    work.mkdir()
    say(f"starting sandboxes {', '.join(CLUSTERS)}")
    source, target = sandbox.up(CLUSTERS, timeout=120)
    consumed: dict[str, dict[int, set[bytes | None]]] = {}
    for case in CASES:
        say(f"{case}: filling fo-{case}")
        fill(source, case, args.records)
        if case == "live":
            continue
        now = read_all(source, f"fo-{case}")
        counts = {p: int(len(records) * CONSUMED) for p, records in now.items()}
        for tool in tools:
            records = consume_as_group(source, f"fo-{case}-{tool}", f"fo-{case}", counts)
            consumed[case] = {p: {record.value for record in got} for p, got in records.items()}
    src, dst = ",".join(source.bootstrap), ",".join(target.bootstrap)
    runs: dict[str, dict] = {}
    rows: list[dict] = []

    def measure_tool(tool: str, target_topic: str) -> None:
        """Right after the tool's run, before the next tool's live case writes more."""
        rows.extend(measure_case(source, target, case, tool, target_topic.format(case=case),
                                 consumed[f"live-{tool}" if case == "live" else case]) for case in CASES)

    if "kmc" in tools:
        cmd = [runners.kmc_executable(), "mirror", src, dst, "--topics", f"fo-({'|'.join(CASES)})", "--rename",
               "{topic}.kmc", "--follow", "--sync-groups", "fo-.*-kmc", "--sync-interval", "1", "-q"]
        runs["kmc"] = run_tool("kmc", cmd, kmc_env, source, target, {case: f"fo-{case}.kmc" for case in CASES},
                               work, args.settle, args.live_seconds, consumed)
        measure_tool("kmc", "fo-{case}.kmc")
    if "mm2" in tools:
        log4j = work / "log4j2.properties"
        log4j.write_text(runners.LOG4J2)
        cmd = [sandbox.find_java(), *runners.MM2_HEAP, *runners.JVM_PERFORMANCE_OPTS,
               f"-Dlog4j2.configurationFile={log4j}", "-cp", mirror_cp, runners.MIRROR_MAKER,
               str(mm2_properties(src, dst, work)), "--clusters", "dst"]
        runs["mm2"] = run_tool("mm2", cmd, None, source, target, {case: f"src.fo-{case}" for case in CASES},
                               work, args.settle, args.live_seconds, consumed)
        measure_tool("mm2", "src.fo-{case}")
    table = markdown(rows, args.records)
    print(table, end="")
    if not args.no_save:
        result = {"schema": 1, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": report.machine_info(), "records": args.records, "consumed_share": CONSUMED,
                  "mm2_version": jars.mirror_version_of(mirror_cp) if mirror_cp else None,
                  "mm2_properties": (work / "mm2-failover.properties").read_text().splitlines()
                  if "mm2" in tools else None, "runs": runs, "rows": rows}
        results = ROOT / "bench" / "results"
        (results / "failover.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (results / "failover.md").write_text(table)
        say(f"wrote {results / 'failover.json'} and failover.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
