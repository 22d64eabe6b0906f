"""The chaos harness: a mirror between two three-broker clusters, under continuous production, while kmc and
single brokers on either side are SIGKILLed (and restarted) at random moments. Then count.

Used by tests/test_chaos.py (short runs in ``make test``) and by ``make chaos`` (long runs and a table,
``python -m tests.chaos``). Records are produced and verified with confluent-kafka only; kmc is run as a
user runs it, ``kmc mirror --follow`` in a process of its own.

The verdict per partition, in source order: every source record is in the target (lost = 0); the target's
records in the order they were first seen are the source's order; duplicates are the target's extra
copies, which must be 0 with ``--exactly-once`` (read_committed) and, with at-least-once, exactly the
records kmc said it would copy again ("... (redelivered)" notices on stderr, summed over every run).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kmc import sandbox

PARTITIONS = 6
REDELIVERED = re.compile(r"(?:resuming|resending) \S+: (\d+) records")
GAP_LINE = re.compile(r"expired at the source|was recreated|lost records|source lost records")


@dataclass
class ChaosResult:
    delivery: str
    copy_path: str
    seconds: float
    records: int = 0
    kmc_kills: int = 0
    source_broker_kills: int = 0
    target_broker_kills: int = 0
    lost: int = 0
    duplicates: int = 0
    redelivered: int = 0  # what kmc reported it would copy again
    gaps: int = 0
    out_of_order: int = 0
    final_exit: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said beside the verdict, not a failure

    def count_problems(self) -> list[str]:
        """What the counts say is wrong, for the verdict."""
        expected_duplicates = 0 if self.delivery == "exactly-once" else self.redelivered
        found = [f"{self.lost} lost"] if self.lost else []
        if self.duplicates != expected_duplicates:
            found.append(f"{self.duplicates} duplicates, {expected_duplicates} expected")
        if self.out_of_order:
            found.append(f"{self.out_of_order} partition(s) out of source order")
        if self.gaps:
            found.append(f"{self.gaps} gap(s) reported")
        if self.final_exit != 0:
            found.append(f"the last run exited {self.final_exit}")
        return found or ["counts"]

    @property
    def clean(self) -> bool:
        expected_duplicates = 0 if self.delivery == "exactly-once" else self.redelivered
        return (not self.problems and self.lost == 0 and self.out_of_order == 0 and self.gaps == 0
                and self.duplicates == expected_duplicates and self.final_exit == 0)


class _Writer:
    """Numbered records ("p:seq") into every partition, idempotent and acks=all, until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        self.topic = topic
        self.rate = rate
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "message.timeout.ms": 300000})
        self.stop_event = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sequence = [0] * PARTITIONS
        started = time.monotonic()
        while not self.stop_event.is_set():
            for partition in range(PARTITIONS):
                self.producer.produce(self.topic, key=str(partition).encode(),
                                      value=f"{partition}:{sequence[partition]}".encode(), partition=partition)
                sequence[partition] += 1
                self.sent += 1
            self.producer.poll(0)
            ahead = self.sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        remaining = self.producer.flush(300)
        assert remaining == 0, f"{remaining} records were never acknowledged by the source"


class _Mirror:
    """``kmc mirror --follow`` runs, one after another; their stderr kept for the counts."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.workdir = workdir
        self.args = args
        self.env = env
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.runs += 1
        out = open(self.workdir / f"run-{self.runs}.out", "wb")  # noqa: SIM115 - closed with the process
        err = open(self.workdir / f"run-{self.runs}.err", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "kmc", "mirror", *self.args, "--follow"],
                                     stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env)
        out.close()
        err.close()

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"kmc exited {self.proc.returncode} on its own: {self.stderr(self.runs)[-2000:]}")
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)

    def stderr(self, run: int) -> str:
        return (self.workdir / f"run-{run}.err").read_text(errors="replace")

    def all_stderr(self) -> str:
        return "".join(self.stderr(run) for run in range(1, self.runs + 1))


def read_values(name: str, topic: str, isolation: str) -> dict[int, list[str]]:
    """Every partition's values, to the end offsets seen at the start (tests.helpers' reader)."""
    from tests.helpers import read_all

    found = read_all(sandbox.get(name), topic, timeout=180, isolation=isolation)
    return {partition: [record.value.decode() for record in records] for partition, records in found.items()}


def _wait_for_all_brokers(name: str) -> None:
    cluster = sandbox.get(name)
    for broker in cluster.brokers:
        if not broker.alive():
            sandbox.start_broker(name, broker.node_id)


def run_chaos(source: str, target: str, *, seconds: float, exactly_once: bool, copy_path: str, seed: int,
              workdir: Path, rate: float = 600.0) -> ChaosResult:
    """One chaos run between sandboxes ``source`` and ``target`` (three brokers each) on a new topic."""
    rng = random.Random(seed)
    result = ChaosResult("exactly-once" if exactly_once else "at-least-once", copy_path, seconds)
    topic = f"chaos-{result.delivery}-{copy_path}-{seed}-{os.getpid()}"
    source_bootstrap = sandbox.get(source).bootstrap_servers
    admin = AdminClient({"bootstrap.servers": source_bootstrap})  # kept: its futures die with it
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(60)
    workdir.mkdir(parents=True, exist_ok=True)
    # The delivery timeout stays above the brokers' replica.lag.time.max.ms (30 s): with acks=all a produce
    # request waits for a follower that was just restarted (or is starved on a loaded machine) until the
    # leader drops it from the ISR, and a shorter timeout expires such batches over and over (a long run at
    # load 40 with 15 s never caught up: each expiry sent everything unacknowledged again).
    args = [source, target, "--topics", topic, "--delivery-timeout", "45", "--checkpoint-interval", "0.5", "-o",
            "json", *(["--exactly-once"] if exactly_once else [])]
    mirror = _Mirror(workdir, args, {**os.environ, "KMC_COPY_PATH": copy_path})
    writer = _Writer(source_bootstrap, topic, rate)
    started = time.monotonic()
    try:
        mirror.start()
        mirror_started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(rng.uniform(2.0, 6.0))
            action = rng.choice(["kmc", "kmc", "source", "target"])
            if action == "kmc":
                # a kill of a kmc that is still starting proves little: let it copy for a while first
                time.sleep(max(0.0, mirror_started + rng.uniform(4.0, 8.0) - time.monotonic()))
                mirror.kill()
                result.kmc_kills += 1
                mirror.start()
                mirror_started = time.monotonic()
                continue
            name = source if action == "source" else target
            node = rng.choice([broker.node_id for broker in sandbox.get(name).brokers])
            sandbox.kill_broker(name, node)
            if action == "source":
                result.source_broker_kills += 1
            else:
                result.target_broker_kills += 1
            time.sleep(rng.uniform(0.5, 4.0))
            sandbox.start_broker(name, node)
        writer.stop()
        result.records = writer.sent
        _wait_for_all_brokers(source)
        _wait_for_all_brokers(target)
        isolation = "read_committed" if exactly_once else "read_uncommitted"
        wanted = read_values(source, topic, "read_committed")
        deadline = time.monotonic() + 240
        while True:
            got = read_values(target, topic, isolation)
            if all(set(wanted[p]) <= set(got.get(p, ())) for p in wanted):
                break
            if mirror.proc is not None and mirror.proc.poll() is not None:
                result.problems.append(f"kmc exited {mirror.proc.returncode}: {mirror.stderr(mirror.runs)[-2000:]}")
                break
            if time.monotonic() > deadline:
                result.problems.append("the target did not catch up within 240 s")
                break
            time.sleep(2)
        time.sleep(2)  # let a last checkpoint land, then stop as systemd would
        result.final_exit = mirror.stop()
        final = json.loads((workdir / f"run-{mirror.runs}.out").read_text() or "{}")
        got = read_values(target, topic, isolation)
    finally:
        writer.stop_event.set()
        if mirror.proc is not None and mirror.proc.poll() is None:
            mirror.proc.kill()
            mirror.proc.wait(30)
        for name in (source, target):
            _wait_for_all_brokers(name)
    stderr = mirror.all_stderr()
    result.redelivered = sum(int(n) for n in REDELIVERED.findall(stderr))
    result.gaps = len(GAP_LINE.findall(stderr)) + len(final.get("gaps", []))
    for partition, source_values in wanted.items():
        # (counted per value against the source's own count: under broker kills the source's idempotent
        # producer itself may write a record twice, and a faithful copy then holds it twice too)
        copied = got.get(partition, [])
        in_source, in_target = Counter(source_values), Counter(copied)
        result.lost += sum(max(0, n - in_target[value]) for value, n in in_source.items())
        result.duplicates += sum(max(0, n - in_source[value]) for value, n in in_target.items())
        first_seen = list(dict.fromkeys(copied))
        if first_seen != [value for value in dict.fromkeys(source_values) if value in in_target]:
            result.out_of_order += 1
    held = sum(len(values) for values in wanted.values())
    if held < result.records:
        result.problems.append(f"the source holds {held} records, {result.records} were produced")
    elif held > result.records:
        result.notes.append(f"the source's own producer wrote {held - result.records} record(s) twice")
    (workdir / "result.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def table(results: list[ChaosResult]) -> str:
    """The markdown table ``make chaos`` prints."""
    lines = ["| delivery | copy path | seconds | records | kmc kills | source broker kills | target broker kills "
             "| lost | duplicates | redelivered (reported) | gaps reported | verdict |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        verdict = "clean" if r.clean else "FAILED: " + "; ".join(r.problems or r.count_problems())
        verdict += "".join(f" ({note})" for note in r.notes)
        lines.append(f"| {r.delivery} | {r.copy_path} | {r.seconds:.0f} | {r.records:,} | {r.kmc_kills} | "
                     f"{r.source_broker_kills} | {r.target_broker_kills} | {r.lost} | {r.duplicates} | "
                     f"{r.redelivered} | {r.gaps} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    """``make chaos``: every delivery mode and copy path for KMC_CHAOS_SECONDS (default 180) each, on two
    three-broker sandboxes of a scratch home; the table goes to stdout and chaos-results/."""
    import tempfile

    seconds = float(os.environ.get("KMC_CHAOS_SECONDS", "180"))
    home = Path(tempfile.mkdtemp(prefix="kmc-chaos-"))
    for variable, folder in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        (home / folder).mkdir()
        os.environ[variable] = str(home / folder)
    results = []
    try:
        sandbox.up(["chaos-src", "chaos-dst"], brokers=3, timeout=180)
        only = os.environ.get("KMC_CHAOS_ONLY")  # e.g. "at-least-once/batches": one combination
        for index, (exactly_once, copy_path) in enumerate(
                [(False, "batches"), (True, "batches"), (False, "records"), (True, "records")]):
            if only and only != f"{'exactly-once' if exactly_once else 'at-least-once'}/{copy_path}":
                continue
            result = run_chaos("chaos-src", "chaos-dst", seconds=seconds, exactly_once=exactly_once,
                               copy_path=copy_path, seed=index + 1, workdir=home / f"run-{index}")
            results.append(result)
            print(table(results[-1:]).splitlines()[-1], flush=True)  # noqa: T201 - progress of a long run
    finally:
        sandbox.down()
    out = Path("chaos-results")
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    text = f"# kmc chaos run {stamp}\n\n{table(results)}\n"
    (out / f"chaos-{stamp}.md").write_text(text)
    (out / f"chaos-{stamp}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(text)  # noqa: T201
    return 0 if all(result.clean for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
