"""One function per benchmarked tool: run it on a dataset, measure it, check its copy, return a Row.

Tools: Kafka's ProducerPerformance and ConsumerPerformance (the broker ceiling), MirrorMaker 2 in dedicated
mode, ``kmc mirror --once``, and the kafka-python loop in floor.py. A mirroring tool whose copy is not
exact (per-partition record counts differ) gets a failed row and no numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import measure
import workload
from workload import Dataset

from kmc.sandbox import runtime

# As Kafka's bin/kafka-run-class.sh runs every tool; heaps as kafka-producer-perf-test.sh and
# connect-mirror-maker.sh set them.
JVM_PERFORMANCE_OPTS = [
    "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
]  # fmt: skip
PERF_HEAP = ["-Xmx512M"]
MM2_HEAP = ["-Xms256M", "-Xmx2G"]

LOG4J2 = """\
# written by bench/run.py: warnings, plus MirrorMaker's own start-up lines
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.mm2.name = org.apache.kafka.connect.mirror.MirrorMaker
logger.mm2.level = INFO
"""

PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
MIRROR_MAKER = "org.apache.kafka.connect.mirror.MirrorMaker"

TOOL_NAMES = {
    "producer-perf": "ProducerPerformance",
    "consumer-perf": "ConsumerPerformance",
    "mm2": "MirrorMaker 2",
    "kmc": "kmc mirror --once",
    "kmc-w2": "kmc mirror --once --workers 2",
    "kmc-walk": "kmc mirror --once, every batch walked",
    "kmc-records": "kmc mirror --once, record path",
    "kmc-sasl-ssl": "kmc mirror --once over SASL_SSL",
    "kmc-lan": "kmc mirror --once, LAN, beside",
    "floor": "kafka-python loop",
}
MIRROR_TOOLS = ("mm2", "kmc", "kmc-w2", "kmc-walk", "kmc-records", "kmc-sasl-ssl", "floor")
MB = 1_000_000


@dataclass
class Row:
    """One measurement; ``status`` is "ok", "failed" or "not available" (then the numbers are None)."""

    section: str  # "ceiling" | "throughput" | "oneshot" | "wan"
    dataset: str
    tool: str  # a TOOL_NAMES key
    status: str = "ok"
    error: str | None = None
    records: int | None = None
    bytes: int | None = None
    seconds: float | None = None
    records_per_s: float | None = None
    mb_per_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    vs_mm2: float | None = None  # records/s ÷ MM2's records/s on the same data (one-shot: MM2's time ÷ this time)
    vs_ceiling: float | None = None  # records/s ÷ the broker ceiling of the same data
    vs_plaintext: float | None = None  # kmc over SASL_SSL: records/s ÷ kmc's over PLAINTEXT on the same data
    vs_lan: float | None = None  # a WAN row: records/s ÷ the same tool's throughput row on the same data
    detail: dict[str, Any] = field(default_factory=dict)

    def measured(self, dataset: Dataset, usage: measure.Usage, seconds: float | None = None) -> Row:
        """Fill the numbers from a dataset copied in ``seconds`` (default: the usage's wall time)."""
        self.seconds = usage.seconds if seconds is None else seconds
        self.records = dataset.records
        self.bytes = dataset.total_bytes
        self.records_per_s = dataset.records / self.seconds
        self.mb_per_s = dataset.total_bytes / self.seconds / MB
        self.cpu_s = usage.cpu_s
        self.peak_rss_mb = usage.peak_rss_mb
        return self

    def fail(self, error: str) -> Row:
        self.status = "failed"
        self.error = " ".join(error.split())[:500]
        self.records_per_s = self.mb_per_s = self.vs_mm2 = self.vs_ceiling = None
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tool_name"] = TOOL_NAMES[self.tool]
        for key in ("seconds", "records_per_s", "mb_per_s", "cpu_s", "peak_rss_mb", "vs_mm2", "vs_ceiling",
                    "vs_plaintext", "vs_lan"):
            if data[key] is not None:
                data[key] = round(data[key], 3)
        return data


@dataclass
class Bench:
    """What every run needs: the clusters, the jars, the working directory and the limits."""

    source: str  # bootstrap of the source sandbox
    target: str  # bootstrap of the target sandbox
    work: Path  # scratch directory (logs, properties files)
    kmc_env: dict[str, str]  # environment for kmc (isolated XDG directories)
    tools_cp: str
    mirror_cp: str
    mm2_tasks: int
    # the SASL_SSL pair (kmc-sasl-ssl): their bootstraps, their profile names and the config file naming them
    secure_source: str = ""
    secure_target: str = ""
    secure_profiles: tuple[str, str] = ("", "")
    secure_config: Path | None = None
    poll_interval: float = 0.1
    min_timeout: float = 180.0

    def timeout(self, dataset: Dataset) -> float:
        """Generous: the start-up allowance plus 2,000 records/s, far below any tool's rate."""
        return self.min_timeout + dataset.records / 2000

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def log4j2(self) -> Path:
        path = self.work / "log4j2.properties"
        if not path.exists():
            path.write_text(LOG4J2)
        return path

    def java(self, classpath: str, heap: list[str], main: str, *args: str) -> list[str]:
        return [runtime.find_java(), *heap, *JVM_PERFORMANCE_OPTS, f"-Dlog4j2.configurationFile={self.log4j2()}",
                "-cp", classpath, main, *args]  # fmt: skip


def _verify(row: Row, bench: Bench, dataset: Dataset, target_topic: str, secure: bool = False) -> Row:
    """Mark the row failed unless the target topic holds exactly the source's records, partition by partition."""
    source = workload.end_offsets(bench.secure_source if secure else bench.source, dataset.topic)
    target = workload.end_offsets(bench.secure_target if secure else bench.target, target_topic)
    row.detail.update(
        target_topic=target_topic,
        source_counts=[source.get(p, 0) for p in sorted(source)],
        target_counts=[target.get(p, 0) for p in sorted(target)],
    )
    problem = workload.compare(source, target)
    return row.fail(f"incomplete copy: {problem}") if problem else row


# -------------------------------------------------------------------------------------- ceiling


_PRODUCER_SUMMARY = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")


# A ceiling, not a default-client number: batches as large as a mirror's (kmc sends 512 KiB batches).
PRODUCER_PERF_PROPS = {"batch.size": "524288", "linger.ms": "10"}


def best_of(runner: Callable[..., Row], times: int) -> Callable[..., Row]:
    """``runner`` ``times`` times, keeping the fastest run (the perf tools vary by a third from run to run on
    a 2-core machine); every run's rate is kept in the row's detail."""

    def run(bench: Bench, dataset: Dataset, section: str | None = None) -> Row:  # noqa: ARG001 - the runner's own
        rows = [runner(bench, dataset, attempt=attempt) for attempt in range(times)]
        done = [row for row in rows if row.status == "ok"]
        if not done:
            return rows[-1]
        best = max(done, key=lambda row: row.records_per_s or 0)
        best.detail["runs_records_per_s"] = [round(row.records_per_s or 0) for row in done]
        return best

    return run


def producer_ceiling(bench: Bench, dataset: Dataset, attempt: int = 0) -> Row:
    """ProducerPerformance into a fresh 12-partition topic on the target cluster, records of the dataset's
    size (value + key + header bytes, as one value: the tool cannot make keys or headers), same codec."""
    row = Row("ceiling", dataset.name, "producer-perf")
    topic = f"ceiling-{dataset.topic}-{attempt}"
    workload.create_topic(bench.target, topic, dataset.compression)
    props = {**PRODUCER_PERF_PROPS, "compression.type": dataset.compression}
    cmd = bench.java(
        bench.tools_cp, PERF_HEAP, PRODUCER_PERF,
        "--bootstrap-server", bench.target, "--topic", topic, "--num-records", str(dataset.records),
        "--record-size", str(dataset.record_bytes), "--throughput", "-1",
        "--command-property", *(f"{key}={value}" for key, value in props.items()),
    )  # fmt: skip
    child = measure.Child(cmd, bench.log(f"producer-perf-{dataset.name}"))
    try:
        usage = child.wait(bench.timeout(dataset))
    except measure.ToolTimeout as exc:
        return row.fail(f"{exc}: {child.tail(3)}")
    summaries = _PRODUCER_SUMMARY.findall(child.log.read_text(errors="replace"))
    if usage.exit_code != 0 or not summaries:
        return row.fail(f"exit status {usage.exit_code}: {child.tail(5)}")
    sent, rate, _ = summaries[-1]
    # The tool's own rate (from its first send to its last acknowledgement, JVM start-up excluded).
    row.measured(dataset, usage, seconds=int(sent) / float(rate))
    row.detail.update(tool_records_per_s=float(rate), wall_s=round(usage.seconds, 3), topic=topic, props=props)
    return row


def consumer_ceiling(bench: Bench, dataset: Dataset, attempt: int = 0) -> Row:  # noqa: ARG001 - best_of's
    """ConsumerPerformance reading the dataset itself (keys, headers, codec) from the source cluster."""
    row = Row("ceiling", dataset.name, "consumer-perf")
    cmd = bench.java(
        bench.tools_cp, PERF_HEAP, CONSUMER_PERF,
        "--bootstrap-server", bench.source, "--topic", dataset.topic, "--num-records", str(dataset.records),
        "--timeout", "30000",
    )  # fmt: skip
    child = measure.Child(cmd, bench.log(f"consumer-perf-{dataset.name}"))
    try:
        usage = child.wait(bench.timeout(dataset))
    except measure.ToolTimeout as exc:
        return row.fail(f"{exc}: {child.tail(3)}")
    stats = _consumer_stats(child.log.read_text(errors="replace"))
    if usage.exit_code != 0 or stats is None:
        return row.fail(f"exit status {usage.exit_code}: {child.tail(5)}")
    if int(stats["data.consumed.in.nMsg"]) < dataset.records:
        return row.fail(f"read {stats['data.consumed.in.nMsg']} of {dataset.records} records")
    # Fetch time excludes the consumer group join, as the tool's fetch.nMsg.sec does.
    fetch_s = float(stats["fetch.time.ms"]) / 1000
    row.measured(dataset, usage, seconds=fetch_s if fetch_s > 0 else usage.seconds)
    row.detail.update(stats=stats, wall_s=round(usage.seconds, 3))
    return row


def _consumer_stats(output: str) -> dict[str, str] | None:
    """ConsumerPerformance's result: a header line of field names, then one line of values."""
    lines = [line.strip() for line in output.splitlines()]
    for index, line in enumerate(lines[:-1]):
        if line.startswith("start.time,"):
            names = [n.strip() for n in line.split(",")]
            values = [v.strip() for v in lines[index + 1].split(",")]
            if len(values) == len(names):
                return dict(zip(names, values, strict=True))
    return None


# -------------------------------------------------------------------------------------- mirrors


# What every MirrorMaker 2 run on the bench's sandboxes needs (also bench/failover.py's).
MM2_SANDBOX_SETTINGS = {
    # single-broker sandboxes
    "replication.factor": "1",
    "offset-syncs.topic.replication.factor": "1",
    "heartbeats.topic.replication.factor": "1",
    "checkpoints.topic.replication.factor": "1",
    "config.storage.replication.factor": "1",
    "offset.storage.replication.factor": "1",
    "status.storage.replication.factor": "1",
    # MM2's own start-up warning recommends this: skip the reflective scan of the whole classpath for
    # Connect plugins (once for MirrorMaker itself, once for the herder's worker)
    "plugin.discovery": "service_load",
    "dst.plugin.discovery": "service_load",
}


def mm2_properties(bench: Bench, dataset: Dataset, run: str) -> str:
    """A minimal mm2.properties: one flow src->dst for the dataset's topic, identity names, no extras."""
    settings = {
        "clusters": "src, dst",
        "src.bootstrap.servers": bench.source,
        "dst.bootstrap.servers": bench.target,
        "src->dst.enabled": "true",
        "src->dst.topics": re.escape(dataset.topic),
        "dst->src.enabled": "false",
        # target topic names equal the source's, as kmc's default does
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "tasks.max": str(bench.mm2_tasks),
        # only the data flow: no heartbeats, consumer-group checkpoints, group offset or ACL sync
        "emit.heartbeats.enabled": "false",
        "emit.checkpoints.enabled": "false",
        "sync.group.offsets.enabled": "false",
        "sync.topic.acls.enabled": "false",
        # the producer compresses as the dataset's producer did, so no tool hands compression to the broker
        "dst.producer.compression.type": dataset.compression,
        **MM2_SANDBOX_SETTINGS,
        # fresh Connect group and internal topics per run: a run never starts with the previous run's
        # connector config (which would cost it a reconfiguration and a rebalance). The worker takes its
        # group.id only from the target cluster's settings, the topic names also from the top level.
        "dst.group.id": f"mm2-{run}",
        "config.storage.topic": f"mm2-configs.{run}.internal",
        "offset.storage.topic": f"mm2-offsets.{run}.internal",
        "status.storage.topic": f"mm2-status.{run}.internal",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def mirror_maker(bench: Bench, dataset: Dataset, section: str = "throughput") -> Row:
    """MirrorMaker 2 in dedicated mode, from JVM start until the target's end offsets cover the source."""
    row = Row(section, dataset.name, "mm2")
    run = f"{section}-{dataset.name}".lower()
    properties = bench.work / f"mm2-{run}.properties"
    properties.write_text(mm2_properties(bench, dataset, run))
    expected = workload.end_offsets(bench.source, dataset.topic)
    if section == "wan":  # the throughput row's copy is there under the same name (identity policy)
        workload.delete_topic(bench.target, dataset.topic)
    watcher = workload.Watcher(bench.target, dataset.topic, expected)
    # --clusters dst: run only the herder that writes into dst (no idle herder for the reverse direction)
    cmd = bench.java(bench.mirror_cp, MM2_HEAP, MIRROR_MAKER, str(properties), "--clusters", "dst")
    child = measure.Child(cmd, bench.log(f"mm2-{run}"))
    try:
        usage = child.wait_until(watcher.covered, bench.timeout(dataset), bench.poll_interval)
    except (measure.ToolTimeout, RuntimeError) as exc:
        return row.fail(f"{exc}: {child.tail(3)}")
    finally:
        child.stop()
    row.measured(dataset, usage)
    row.detail.update(properties=properties.read_text().splitlines(), poll_interval_s=bench.poll_interval)
    if watcher.first_record is not None:  # how much of the time was start-up
        row.detail["first_record_s"] = round(watcher.first_record - child.started, 3)
    return _verify(row, bench, dataset, dataset.topic)


def kmc_available(env: dict[str, str]) -> tuple[bool, str]:
    """Whether this kmc has ``mirror --once`` (it did not, while it was being written)."""
    try:
        proc = subprocess.run([kmc_executable(), "mirror", "--help"], capture_output=True, text=True, env=env,
                              timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or ["kmc mirror --help failed"])[-1]
    if "--once" not in proc.stdout:
        return False, "kmc mirror has no --once"
    return True, ""


def kmc_executable() -> str:
    """The ``kmc`` next to the running Python (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("kmc")
    return str(candidate) if candidate.exists() else shutil.which("kmc") or "kmc"


def kmc_mirror(bench: Bench, dataset: Dataset, section: str = "throughput", workers: int = 1,
               copy_path: str = "batches", secure: bool = False, attempt: int = 0, lan: bool = False) -> Row:
    """``kmc mirror SRC DST --topics T --rename {topic}.kmc --once -q -o json``: start to exit.

    kmc's default ``--compression keep`` sends each batch with the codec its source batch has, as MM2's
    producer is set to the dataset's codec, so every tool sends the target what the source's producer sent.
    With ``workers`` > 1 the partitions are sharded over that many processes (MM2 runs tasks.max tasks),
    into its own topic and flow. ``copy_path="walk"`` runs it with KMC_COPY_PATH=walk (every batch walked
    record by record as bytes: the byte path before batches travelled whole), ``"records"`` with
    KMC_COPY_PATH=records (decoded records).
    ``secure`` copies the same dataset between the SASL_SSL sandboxes (SCRAM-SHA-512 as admin, TLS), by
    their profiles: what TLS and SASL cost.
    In the "wan" section every run (``attempt``) copies into a topic and flow of its own, deleted once checked:
    the copy through the latency proxy, or with ``lan`` the LAN copy it is compared with ("kmc-lan").
    """
    tool = "kmc" if workers == 1 else f"kmc-w{workers}"
    suffix = "kmc" if workers == 1 else f"kmc{workers}"
    if section == "wan":  # the same data copied again: a topic and flow of its own
        tool = "kmc-lan" if lan else tool
        suffix += ("lan" if lan else "wan") + (str(attempt) if attempt else "")
    env = bench.kmc_env
    if copy_path != "batches":
        tool, suffix, env = f"kmc-{copy_path}", f"kmc{copy_path}", {**env, "KMC_COPY_PATH": copy_path}
    source, target = bench.source, bench.target
    if secure:
        tool = "kmc-sasl-ssl"
        source, target = bench.secure_profiles
    row = Row(section, dataset.name, tool)
    target_topic = f"{dataset.topic}.{suffix}"
    cmd = [
        kmc_executable(), "mirror", source, target,
        "--topics", re.escape(dataset.topic), "--rename", f"{{topic}}.{suffix}", "--once", "-q", "-o", "json",
    ]  # fmt: skip
    if secure:
        cmd += ["--config", str(bench.secure_config)]
    if workers > 1 or copy_path != "batches" or section == "wan":
        cmd += ["--flow", f"bench-{suffix}"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    name = f"{tool}-{section}-{dataset.name}"
    child = measure.Child(cmd, bench.log(name), env=env, stdout=bench.work / f"{name}.json")
    try:
        usage = child.wait(bench.timeout(dataset))
    except measure.ToolTimeout as exc:
        return row.fail(f"{exc}: {child.tail(3)}")
    if usage.exit_code != 0:
        return row.fail(f"exit status {usage.exit_code}: {child.tail(5)}")
    row.measured(dataset, usage)
    row.detail["command"] = ["kmc", *cmd[1:]]
    try:
        row.detail["kmc_output"] = json.loads(child.stdout.read_text()) if child.stdout else None
    except (OSError, ValueError) as exc:
        row.detail["kmc_output"] = f"unreadable: {exc}"
    row = _verify(row, bench, dataset, target_topic, secure)
    if section == "wan":
        workload.delete_topic(bench.target, target_topic)  # (six copies of each dataset: the disk is not endless)
    return row


def floor_loop(bench: Bench, dataset: Dataset, section: str = "throughput") -> Row:
    """bench/floor.py (plain kafka-python) into a target topic made like the source's: start to exit."""
    row = Row(section, dataset.name, "floor")
    target_topic = f"{dataset.topic}.floor"
    workload.create_topic(bench.target, target_topic, dataset.compression)
    cmd = [
        sys.executable, str(Path(__file__).with_name("floor.py")), "--source", bench.source,
        "--target", bench.target, "--topic", dataset.topic, "--target-topic", target_topic,
        "--compression", dataset.compression,
    ]  # fmt: skip
    child = measure.Child(cmd, bench.log(f"floor-{section}-{dataset.name}"), env=bench.kmc_env)
    try:
        usage = child.wait(bench.timeout(dataset))
    except measure.ToolTimeout as exc:
        return row.fail(f"{exc}: {child.tail(3)}")
    if usage.exit_code != 0:
        return row.fail(f"exit status {usage.exit_code}: {child.tail(5)}")
    row.measured(dataset, usage)
    return _verify(row, bench, dataset, target_topic)


def not_available(section: str, dataset: Dataset, tool: str, reason: str) -> Row:
    return Row(section, dataset.name, tool, status="not available", error=reason)


def environment_for_kmc(home: Path) -> dict[str, str]:
    """The harness's environment with kmc's config, data and state in ``home`` (no user profiles)."""
    env = {k: v for k, v in os.environ.items() if k != "KMC_CONFIG"}
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env["NO_COLOR"] = "1"
    return env
