"""Local Apache Kafka clusters in KRaft mode, for demos and tests.

Each sandbox lives in ``$XDG_DATA_HOME/kmc/sandbox/NAME/`` (default ``~/.local/share/kmc/sandbox``)::

    NAME/sandbox.json            state: name, bootstrap, brokers (node_id, ports, pid, dirs), cluster id
    NAME/log4j2.properties       quiet logging (WARN, plus the "Kafka Server started" line)
    NAME/node-1/server.properties
    NAME/node-1/data/            the node's log.dirs (metadata log and topic partitions)
    NAME/node-1/kafka.log        the JVM's stdout and stderr
    NAME/node-1/overrides.properties  (optional, yours) settings merged over kmc's at each start

Every node is broker and controller at once (combined mode) and listens on 127.0.0.1 only; the
controllers form a static quorum (``controller.quorum.voters``), so a stopped sandbox can be restarted on
new ports when its old ones were taken meanwhile. Ports are picked below the kernel's ephemeral range, so
the many client connections of a test run cannot take them between our check and the broker's bind.
With 3 brokers, topics default to replication factor 3 and min.insync.replicas is 2.

Longer than 600 lines: a sandbox's life cycle (ports, formatting, starting, probing, restarting and stopping
JVMs, and the state file all of them read and write) is one piece; kmc/sandbox/runtime.py holds what is not
about one cluster (Java, Maven, the Kafka jars).

The JVMs run detached (their own session), so they outlive the process that started them; ``down`` stops
them by the pids recorded in the state file, after checking that each pid still is the java process of
that node. They share a class-data-sharing archive in the cache (see below; ``KMC_SANDBOX_CDS=0`` turns
it off), which halves their start-up time.

This module never prints; progress goes to ``logging.getLogger(__name__)`` and errors are kmc.errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmc.errors import ConfigError, KmcError, UnreachableError, UsageError
from kmc.sandbox import runtime, security

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
MAX_NAME_LENGTH = 64
MAX_BROKERS = 9
STATE_FILE = "sandbox.json"
HOST = "127.0.0.1"

# Small heaps: an idle single-node sandbox settles around 200 MB RSS with these.
JVM_OPTIONS = [
    "-Xms32m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]
STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0
PROBE_TIMEOUT = 2.0
POLL_INTERVAL = 0.2

LOG4J2_CONFIG = """\
# written by kmc: console only (the JVM's output goes to node-N/kafka.log), quiet
status = warn
name = kmc-sandbox
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


# --------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class SandboxBroker:
    node_id: int
    port: int
    controller_port: int
    pid: int | None
    log_dir: str  # the node's Kafka log.dirs (partition data)
    log_file: str  # the JVM's stdout/stderr

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def node_dir(self) -> Path:
        return Path(self.log_file).parent

    @property
    def config_file(self) -> Path:
        return self.node_dir / "server.properties"

    def alive(self) -> bool:
        """True when the recorded pid is running and is this node's java process."""
        return self.pid is not None and _process_matches(self.pid, str(self.config_file))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SandboxCluster:
    name: str
    bootstrap: list[str]
    brokers: list[SandboxBroker]
    data_dir: Path
    kafka_cluster_id: str
    kafka_version: str
    created: str
    security: str = security.PLAINTEXT  # plaintext | sasl_ssl (--secure) | mtls (--mtls): see security.py

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap list as one comma-separated string, as Kafka clients take it."""
        return ",".join(self.bootstrap)

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    def broker(self, node_id: int) -> SandboxBroker:
        for broker in self.brokers:
            if broker.node_id == node_id:
                return broker
        ids = ", ".join(str(b.node_id) for b in self.brokers)
        raise UsageError(f"sandbox {self.name} has no broker {node_id}", hint=f"its brokers are {ids}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bootstrap": list(self.bootstrap),
            "brokers": [b.to_json() for b in self.brokers],
            "kafka_cluster_id": self.kafka_cluster_id,
            "kafka_version": self.kafka_version,
            "created": self.created,
            "security": self.security,
        }

    def profile_tables(self) -> dict[str, dict[str, Any]]:
        """The profiles this sandbox registers (config-file tables; secrets referenced by file)."""
        return security.profile_tables(self.name, self.data_dir, self.security, self.bootstrap)


# ---------------------------------------------------------------------------------------- locations


def sandbox_root() -> Path:
    """``$XDG_DATA_HOME/kmc/sandbox`` (default ``~/.local/share/kmc/sandbox``), read at call time."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kmc" / "sandbox"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"invalid sandbox name {name!r}",
            hint="use lower-case letters, digits, '-' and '_', starting with a letter or digit",
        )
    return name


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        seen[validate_name(name)] = None
    return list(seen)


# ------------------------------------------------------------------------------------------- state


def _read_state(cluster_dir: Path) -> SandboxCluster | None:
    path = cluster_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        brokers = [
            SandboxBroker(
                node_id=int(b["node_id"]),
                port=int(b["port"]),
                controller_port=int(b["controller_port"]),
                pid=None if b.get("pid") is None else int(b["pid"]),
                log_dir=str(b["log_dir"]),
                log_file=str(b["log_file"]),
            )
            for b in raw["brokers"]
        ]
        return SandboxCluster(
            name=str(raw["name"]),
            bootstrap=[str(a) for a in raw["bootstrap"]],
            brokers=brokers,
            data_dir=cluster_dir,
            kafka_cluster_id=str(raw["kafka_cluster_id"]),
            kafka_version=str(raw.get("kafka_version", "")),
            created=str(raw.get("created", "")),
            security=security.validate_mode(str(raw.get("security", security.PLAINTEXT))),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
        log.warning("ignoring unreadable sandbox state %s: %s", path, exc)
        return None


def _write_state(cluster: SandboxCluster) -> None:
    path = cluster.state_file
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def _with_brokers(cluster: SandboxCluster, brokers: list[SandboxBroker]) -> SandboxCluster:
    return dataclasses.replace(cluster, brokers=brokers, bootstrap=[b.address for b in brokers])


def _with_pid(cluster: SandboxCluster, node_id: int, pid: int | None) -> SandboxCluster:
    brokers = [dataclasses.replace(b, pid=pid) if b.node_id == node_id else b for b in cluster.brokers]
    return _with_brokers(cluster, brokers)


@contextlib.contextmanager
def _locked(names: Iterable[str]) -> Iterator[None]:
    """Hold an exclusive lock per sandbox name (sorted, so two callers never deadlock)."""
    lock_dir = sandbox_root() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for name in sorted(set(names)):
            handle = stack.enter_context(open(lock_dir / f"{name}.lock", "a+"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------------- processes

# JVMs started by this process: polling them reaps them, so a stopped child does not linger as a zombie.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _process_matches(pid: int, marker: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line has the argument ``marker``."""
    child = _children.get(pid)
    if child is not None:
        # Our own child: its pid cannot be reused before we reap it, so poll() is the whole answer (and
        # /proc/PID/cmdline reads empty for a moment while the exec is still in progress).
        if child.poll() is None:
            return marker in child.args
        return False
    if Path("/proc/self").exists():
        proc = Path(f"/proc/{pid}")
        for _attempt in range(3):
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
                stat = (proc / "stat").read_text()
            except OSError:
                return False
            if stat.rpartition(")")[2].split()[:1] == ["Z"]:
                return False
            if args != [b""]:
                return marker.encode() in args
            time.sleep(0.05)  # empty: an exec in progress (or a kernel thread)
        return False
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(["ps", "-o", "stat=,command=", "-p", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return False
    return bool(out.strip()) and not out.strip().startswith("Z") and marker in out.split()


def _exit_status(pid: int | None) -> str:
    child = _children.get(pid) if pid is not None else None
    code = child.poll() if child is not None else None
    if code is None:
        return ""
    return f" (killed by signal {-code})" if code < 0 else f" (exit status {code})"


def _signal(pid: int, marker: str, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is the process with ``marker`` on its command line.

    With a pidfd the check and the signal refer to the same process even if the pid is reused in between.
    """
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        pidfd = None
    try:
        if not _process_matches(pid, marker):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)  # type: ignore[attr-defined]
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _terminate(targets: list[tuple[int, str]], timeout: float = STOP_TIMEOUT) -> set[int]:
    """SIGTERM each (pid, marker), wait up to ``timeout`` for all of them, then SIGKILL the rest.

    Returns the pids that exited on their own after SIGTERM (not those killed, nor those not running).
    """
    live = [(pid, marker) for pid, marker in targets if _signal(pid, marker, signal.SIGTERM)]
    clean = {pid for pid, _ in live}
    for sig, wait in ((None, timeout), (signal.SIGKILL, KILL_TIMEOUT)):
        if sig is not None and live:
            log.warning("killing %s: still running %.0fs after SIGTERM", ", ".join(str(p) for p, _ in live), timeout)
            clean.difference_update(pid for pid, _ in live)
            live = [(pid, marker) for pid, marker in live if _signal(pid, marker, sig)]
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            time.sleep(0.1)
            live = [(pid, marker) for pid, marker in live if _process_matches(pid, marker)]
        if not live:
            return clean
    raise KmcError(f"could not stop process {', '.join(str(p) for p, _ in live)}", hint="stop it by hand")


def _stop_brokers(brokers: list[SandboxBroker], timeout: float = STOP_TIMEOUT) -> None:
    """Stop these nodes (all at once) and keep a class-data archive one of them wrote on its way out."""
    clean = _terminate([(b.pid, str(b.config_file)) for b in brokers if b.pid is not None], timeout)
    for broker in brokers:
        if broker.pid in clean:
            _promote_cds(broker)
        _discard_cds(broker)


# ------------------------------------------------------------------------------------------- ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM's server sockets do
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _recorded_ports() -> set[int]:
    ports: set[int] = set()
    for cluster in list_sandboxes():
        for broker in cluster.brokers:
            ports.update((broker.port, broker.controller_port))
    return ports


def free_ports(count: int, avoid: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1.

    Picked below the kernel's ephemeral range when there is room there, so an outgoing connection (of
    which the tests make many) cannot grab a port between our check and the broker's bind; checked by
    binding; falls back to letting the kernel choose (bind to port 0).
    """
    low, _ = _ephemeral_range()
    pool_low, pool_high = 10000, low - 1
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        attempts = 0
        while len(ports) < count:
            attempts += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            port = random.randint(pool_low, pool_high) if pool_high - pool_low > 1000 and attempts < 500 else 0
            try:
                sock.bind((HOST, port))
            except OSError:
                sock.close()
                continue
            port = sock.getsockname()[1]
            if port in avoid or port in ports:
                sock.close()
                continue
            held.append(sock)
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


# ------------------------------------------------------------------------------------------ config


def _new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, URL-safe base64 without padding (Kafka's Uuid.toString)."""
    while True:
        text = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _server_properties(cluster: SandboxCluster, broker: SandboxBroker) -> str:
    count = len(cluster.brokers)
    rf = min(3, count)
    min_isr = max(1, min(2, count - 1))
    voters = ",".join(f"{b.node_id}@{HOST}:{b.controller_port}" for b in cluster.brokers)
    settings = {
        "process.roles": "broker,controller",
        "node.id": broker.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{broker.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": broker.log_dir,
        "num.partitions": 1,
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "num.network.threads": 2,
        "num.io.threads": 4,
        # the cleaner's dedupe buffer is allocated on the heap up front; the default (128 MiB) dominates RSS
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        # retention and compaction act within seconds (the default looks every 5 minutes): demos and the
        # fault tests show data deleted by retention, as a production cluster deletes it
        "log.retention.check.interval.ms": 2000,
    }
    settings.update(security.broker_settings(cluster.data_dir, cluster.security, broker.port, broker.controller_port,
                                             HOST))
    settings.update(_overrides(broker))
    lines = [f"# written by kmc for sandbox {cluster.name}, node {broker.node_id}; rewritten on every start"]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


OVERRIDES_FILE = "overrides.properties"


def _overrides(broker: SandboxBroker) -> dict[str, str]:
    """``key=value`` lines of the node's ``overrides.properties``, if there is one: settings of your own that
    win over kmc's at the node's next start (e.g. a listener more; the bench's WAN rows add one)."""
    try:
        text = (broker.node_dir / OVERRIDES_FILE).read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KmcError(f"cannot read {broker.node_dir / OVERRIDES_FILE}: {exc}") from exc
    settings = {}
    for line in text.splitlines():
        key, equals, value = line.partition("=")
        if line.strip() and not line.lstrip().startswith("#"):
            if not equals or not key.strip():
                raise ConfigError(f"{broker.node_dir / OVERRIDES_FILE}: expected key=value, not {line.strip()!r}",
                                  hint="fix the line or remove the file, then start the sandbox again")
            settings[key.strip()] = value.strip()
    return settings


def _write_configs(cluster: SandboxCluster) -> None:
    cluster.data_dir.mkdir(parents=True, exist_ok=True)
    (cluster.data_dir / "log4j2.properties").write_text(LOG4J2_CONFIG)
    for broker in cluster.brokers:
        broker.node_dir.mkdir(parents=True, exist_ok=True)
        _write_private(broker.config_file, _server_properties(cluster, broker))  # a secure one holds passwords


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _jvm_command(
    rt: _Runtime, cluster: SandboxCluster, broker: SandboxBroker, main: list[str], extra: list[str] | None = None
) -> list[str]:
    return [
        rt.java,
        *JVM_OPTIONS,
        *(extra or []),
        f"-Dlog4j2.configurationFile={cluster.data_dir / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={broker.node_dir}",
        "-cp",
        rt.classpath,
        *main,
    ]


# ------------------------------------------------------------------------------- class-data sharing
#
# The first broker a runtime starts (when no archive exists yet) records the classes it loads and writes
# them out as a dynamic AppCDS archive when it exits (-XX:ArchiveClassesAtExit) into its node directory.
# When kmc stops that broker and it exits cleanly, the archive is checked with a short JVM run and moved
# into the cache; every later JVM maps it (-XX:SharedArchiveFile) and starts in about half the time.
# A truncated archive can crash the JVM, hence the check; KMC_SANDBOX_CDS=0 turns all of this off.

CDS_DUMP = "cds-training.jsa"
CDS_DUMP_INFO = "cds-training.json"


def _cds_options(rt: _Runtime, broker: SandboxBroker | None, train: bool) -> list[str]:
    if rt.cds is None:
        return []
    if rt.cds.is_file():
        return [f"-XX:SharedArchiveFile={rt.cds}"]
    if train and broker is not None:
        info = {"target": str(rt.cds), "java": rt.java, "classpath": rt.classpath}
        (broker.node_dir / CDS_DUMP_INFO).write_text(json.dumps(info) + "\n")
        return [f"-XX:ArchiveClassesAtExit={broker.node_dir / CDS_DUMP}"]
    return []


def _discard_cds(broker: SandboxBroker) -> None:
    for name in (CDS_DUMP, CDS_DUMP_INFO):
        with contextlib.suppress(OSError):
            (broker.node_dir / name).unlink()


def _promote_cds(broker: SandboxBroker) -> None:
    """Move the archive a cleanly stopped broker wrote into the cache, if it maps (a JVM run checks it)."""
    dump = broker.node_dir / CDS_DUMP
    try:
        info = json.loads((broker.node_dir / CDS_DUMP_INFO).read_text())
        target = Path(info["target"])
        if not dump.is_file() or target.exists():
            return
        check = subprocess.run(
            [info["java"], f"-XX:SharedArchiveFile={dump}", "-Xshare:on", "-cp", info["classpath"], "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if check.returncode != 0:
            log.debug("not keeping class-data archive %s: check exited %d", dump, check.returncode)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dump, target)
        log.info("kept a class-data archive for faster broker starts: %s", target)
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError) as exc:
        log.debug("not keeping class-data archive %s: %s", dump, exc)


# --------------------------------------------------------------------------------------- log lines

_RELEVANT = re.compile(r"\b(ERROR|FATAL)\b|Exception\b|Error\b|\bError:")


def _relevant_line(text: str) -> str:
    """The line of a JVM log that best says why it stopped: the last error or exception line."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        stripped = line.strip()
        if stripped.startswith(("at ", "... ")):
            continue
        if _RELEVANT.search(stripped):
            return _shorten(stripped)
    return _shorten(lines[-1].strip()) if lines else "(no output)"


def _shorten(line: str, limit: int = 400) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_from(path: Path, offset: int, limit: int = 256 * 1024) -> str:
    """The log from ``offset`` on (at most its last ``limit`` bytes)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------ launch


@dataclass
class _Runtime:
    java: str
    classpath: str
    version: str
    cds: Path | None  # the class-data archive to use or to create; None when turned off


def _resolve_runtime() -> _Runtime:
    java = runtime.find_java()
    libs = runtime.kafka_libs_dir()
    cds = None if os.environ.get("KMC_SANDBOX_CDS", "1") == "0" else runtime.cds_archive(java, libs)
    return _Runtime(java, str(libs / "*"), runtime.libs_kafka_version(libs) or runtime.KAFKA_VERSION, cds)


def _format(rt: _Runtime, clusters: list[SandboxCluster]) -> None:
    """Format the storage of every node of these new clusters, all in parallel (each is a short JVM run)."""
    procs = []
    for cluster in clusters:
        for broker in cluster.brokers:
            main = ["kafka.tools.StorageTool", "format", "--config", str(broker.config_file)]
            main += ["--cluster-id", cluster.kafka_cluster_id]
            # SCRAM users of a secure sandbox: their passwords go in an argument file (java @FILE), never on a
            # command line, which every user of the machine can read
            argument_file = broker.node_dir / "format.args"
            _write_private(argument_file, security.argument_file_text(
                main + security.format_arguments(cluster.data_dir, cluster.security)))
            extra = ["-XX:TieredStopAtLevel=1", *_cds_options(rt, None, train=False)]  # short run: C1 is enough
            cmd = _jvm_command(rt, cluster, broker, [f"@{argument_file}"], extra)
            proc = subprocess.Popen(
                cmd, cwd=broker.node_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            procs.append((cluster, broker, proc))
    failures: dict[str, list[str]] = {}
    for cluster, broker, proc in procs:
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        finally:
            (broker.node_dir / "format.args").unlink(missing_ok=True)
        if proc.returncode != 0:
            line = _relevant_line(out.decode("utf-8", "replace"))
            failures.setdefault(cluster.name, []).append(f"node {broker.node_id}: {line}")
    if failures:
        name, lines = next(iter(failures.items()))
        raise ConfigError(
            f"formatting the storage of sandbox {name} failed: {'; '.join(lines)}",
            hint="check the Kafka jars (KAFKA_HOME, or the cache under $XDG_CACHE_HOME/kmc)",
        )


def _launch(rt: _Runtime, cluster: SandboxCluster, broker: SandboxBroker, train: bool = False) -> tuple[int, int]:
    """Start one node's JVM detached; returns (pid, offset of its log where this run's output starts)."""
    log_file = Path(broker.log_file)
    offset = log_file.stat().st_size if log_file.exists() else 0
    _discard_cds(broker)
    extra = _cds_options(rt, broker, train)
    cmd = _jvm_command(rt, cluster, broker, ["kafka.Kafka", str(broker.config_file)], extra)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=broker.node_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    log.debug("sandbox %s node %d: started pid %d", cluster.name, broker.node_id, proc.pid)
    return proc.pid, offset


# ------------------------------------------------------------------------------------------ probing


def _running(cluster: SandboxCluster) -> list[SandboxBroker]:
    """The nodes that should be up: those with a pid (a node stopped on purpose, by stop_broker or
    kill_broker, has none, and its absence is no failure of a start)."""
    return [broker for broker in cluster.brokers if broker.pid is not None]


def _ports_accept(cluster: SandboxCluster) -> bool:
    for broker in _running(cluster):
        try:
            with socket.create_connection((HOST, broker.port), timeout=0.5):
                pass
        except OSError:
            return False
    return True


def _describe(cluster: SandboxCluster, timeout: float = PROBE_TIMEOUT) -> dict[str, Any] | None:
    """kafka-python's describe_cluster() against the sandbox, or None when it does not answer in time."""
    from kafka import KafkaAdminClient  # imported late: listing sandboxes must stay cheap

    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=cluster.bootstrap,
            client_id="kmc-sandbox",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            **security.admin_client_settings(cluster.data_dir, cluster.security),
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
        log.debug("sandbox %s: no metadata yet (%s)", cluster.name, exc)
        return None
    try:
        return admin.describe_cluster()
    except Exception as exc:  # noqa: BLE001
        log.debug("sandbox %s: describe_cluster failed (%s)", cluster.name, exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def _registered(cluster: SandboxCluster, info: dict[str, Any] | None) -> bool:
    """True when the metadata shows this cluster with all of its brokers registered and unfenced."""
    if not info or info.get("cluster_id") != cluster.kafka_cluster_id:
        return False
    if info.get("controller_id") in (None, -1):
        return False
    live = {b["broker_id"] for b in info.get("brokers", []) if not b.get("is_fenced")}
    return live >= {b.node_id for b in _running(cluster)}


@dataclass
class _Pending:
    cluster: SandboxCluster
    offsets: dict[int, int]  # node_id -> log offset, for the nodes started by this call


def _broker_logs(cluster: SandboxCluster) -> str:
    return ", ".join(b.log_file for b in cluster.brokers)


def _wait_ready(pending: list[_Pending], timeout: float) -> None:
    """Wait until every cluster answers metadata with all brokers; stop clusters that fail, then raise."""
    deadline = time.monotonic() + timeout
    waiting = list(pending)
    failures: list[tuple[_Pending, KmcError]] = []
    while waiting:
        for item in list(waiting):
            cluster = item.cluster
            dead = [b for b in _running(cluster) if not b.alive()]
            if dead:
                broker = dead[0]
                text = _read_from(Path(broker.log_file), item.offsets.get(broker.node_id, 0))
                failures.append((item, ConfigError(
                    f"sandbox {cluster.name}: broker {broker.node_id} exited during start-up"
                    f"{_exit_status(broker.pid)}: {_relevant_line(text)}",
                    hint=f"see {broker.log_file}",
                )))  # fmt: skip
                waiting.remove(item)
            elif _ports_accept(cluster):
                info = _describe(cluster)
                if info and info.get("cluster_id") not in (None, cluster.kafka_cluster_id):
                    failures.append((item, ConfigError(
                        f"sandbox {cluster.name} answers with cluster id {info.get('cluster_id')}, "
                        f"not its own {cluster.kafka_cluster_id}",
                        hint=f"another Kafka may hold its ports, or its data was replaced; see {_broker_logs(cluster)}",
                    )))  # fmt: skip
                    waiting.remove(item)
                elif _registered(cluster, info):
                    log.info("sandbox %s is up at %s", cluster.name, cluster.bootstrap_servers)
                    waiting.remove(item)
        if not waiting:
            break
        if time.monotonic() >= deadline:
            for item in waiting:
                failures.append((item, UnreachableError(
                    f"sandbox {item.cluster.name} did not come up within {timeout:.0f}s",
                    hint=f"see {_broker_logs(item.cluster)}",
                )))  # fmt: skip
            break
        time.sleep(POLL_INTERVAL)
    if not failures:
        return
    # Leave no half-started JVMs behind: stop the nodes this call started in the failed clusters (their
    # data and logs stay; nodes that were running before are left alone).
    for item, _ in failures:
        started = [item.cluster.broker(node_id) for node_id in item.offsets]
        _stop_brokers(started)
        cluster = item.cluster
        for broker in started:
            cluster = _with_pid(cluster, broker.node_id, None)
        _write_state(cluster)
    first = failures[0][1]
    if len(failures) > 1:
        others = "; ".join(str(err) for _, err in failures[1:])
        raise type(first)(f"{first.message}; also {others}", hint=first.hint)
    raise first


# -------------------------------------------------------------------------------------- public API


def list_sandboxes() -> list[SandboxCluster]:
    """Every sandbox with a state file, by name; reads files only (no network, no process checks)."""
    root = sandbox_root()
    if not root.is_dir():
        return []
    clusters = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and NAME_RE.fullmatch(child.name):
            cluster = _read_state(child)
            if cluster is not None:
                clusters.append(cluster)
    return clusters


def get(name: str) -> SandboxCluster:
    """The recorded state of sandbox ``name`` (no network); UsageError if there is none."""
    cluster = _read_state(sandbox_root() / validate_name(name))
    if cluster is None:
        raise UsageError(f"no sandbox named {name!r}", hint="run 'kmc sandbox status' to list the sandboxes")
    return cluster


def up(names: list[str], brokers: int = 1, timeout: float = 90, security_mode: str | None = None,
       ) -> list[SandboxCluster]:
    """Start (or create) the named sandboxes, all in parallel; return them once they serve metadata.

    A sandbox that is already running is returned unchanged (stopped nodes of it are started again); a
    stopped one restarts on its data (on its old ports when they are still free); a new one gets
    ``brokers`` combined broker+controller nodes. For an existing sandbox ``brokers`` must be 1 (the
    default: take it as it is) or its broker count. ``timeout`` bounds the wait for the metadata.
    ``security_mode`` (``plaintext``, ``sasl_ssl``, ``mtls``; see :mod:`kmc.sandbox.security`) applies to
    new sandboxes; None means plaintext for a new one and "as it is" for an existing one.
    """
    if security_mode is not None:
        security.validate_mode(security_mode)
    names = _unique(names)
    if not names:
        raise UsageError("no sandbox name given")
    if not isinstance(brokers, int) or not 1 <= brokers <= MAX_BROKERS:
        raise UsageError(f"a sandbox has 1 to {MAX_BROKERS} brokers, not {brokers}")
    root = sandbox_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(names):
        rt: _Runtime | None = None
        plans: list[tuple[SandboxCluster, list[int], bool]] = []  # (cluster, node ids to start, format?)
        avoid = _recorded_ports()
        for name in names:
            cluster_dir = root / name
            cluster = _read_state(cluster_dir)
            if cluster is None:
                if cluster_dir.exists():  # a creation that died before writing its state
                    shutil.rmtree(cluster_dir)
                ports = free_ports(2 * brokers, avoid)
                avoid.update(ports)
                cluster = _new_cluster(cluster_dir, name, brokers, ports, runtime.KAFKA_VERSION)
                cluster = dataclasses.replace(cluster, security=security_mode or security.PLAINTEXT)
                plans.append((cluster, [b.node_id for b in cluster.brokers], True))
                continue
            if security_mode is not None and security_mode != cluster.security:
                raise UsageError(
                    f"sandbox {name} already exists with security {cluster.security}",
                    hint=f"run 'kmc sandbox down {name}' first to recreate it as {security_mode}",
                )
            if len(cluster.brokers) != brokers and brokers != 1:
                raise UsageError(
                    f"sandbox {name} already exists with {len(cluster.brokers)} broker(s)",
                    hint=f"run 'kmc sandbox down {name}' first to recreate it with {brokers}",
                )
            dead = [b.node_id for b in cluster.brokers if not b.alive()]
            if dead and len(dead) == len(cluster.brokers):
                wanted = [p for b in cluster.brokers for p in (b.port, b.controller_port)]
                if not all(_can_bind(p) for p in wanted):
                    ports = free_ports(len(wanted), avoid)
                    avoid.update(ports)
                    log.info("sandbox %s: old ports taken, moving to new ports", name)
                    cluster = _reassign_ports(cluster, ports)
            plans.append((cluster, dead, False))

        if any(to_start for _, to_start, _ in plans):
            rt = _resolve_runtime()  # before touching any directory: a missing java leaves nothing behind
        pending: list[_Pending] = []
        try:
            fresh_clusters = []
            for cluster, to_start, fresh in plans:
                if to_start:
                    assert rt is not None
                    if fresh:
                        cluster = dataclasses.replace(cluster, kafka_version=rt.version)
                        security.create_material(cluster.data_dir, cluster.security, cluster.name)
                        fresh_clusters.append(cluster)
                    _write_configs(cluster)
                pending.append(_Pending(cluster, {}))
            if fresh_clusters:
                assert rt is not None
                _format(rt, fresh_clusters)
            # all formats done: now start every JVM, then wait for all of them together
            train = True  # at most one JVM per call records classes for a class-data archive
            for item, (_, to_start, _) in zip(pending, plans, strict=True):
                for node_id in to_start:
                    assert rt is not None
                    broker = item.cluster.broker(node_id)
                    _ensure_ports_free(item.cluster, broker)
                    pid, offset = _launch(rt, item.cluster, broker, train=train)
                    train = False
                    item.cluster = _with_pid(item.cluster, node_id, pid)
                    item.offsets[node_id] = offset
                    _write_state(item.cluster)  # record each pid at once, so 'down' can always find it
                if to_start:
                    log.info("sandbox %s: starting %d node(s)", item.cluster.name, len(to_start))
        except BaseException:
            _abort_start(pending, plans)
            raise
        try:
            _wait_ready(pending, timeout)
        except KeyboardInterrupt:
            _abort_start(pending, plans)
            raise
        return [item.cluster for item in pending]


def _abort_start(pending: list[_Pending], plans: list[tuple[SandboxCluster, list[int], bool]]) -> None:
    """After a failure or Ctrl-C in ``up``: stop the JVMs this call started, leave consistent state behind."""
    for item in pending:
        started = [item.cluster.broker(n) for n in item.offsets]
        _stop_brokers(started)
        cluster = item.cluster
        for broker in started:
            cluster = _with_pid(cluster, broker.node_id, None)
        if cluster.state_file.exists():
            _write_state(cluster)
    for cluster, _, fresh in plans:
        if fresh and not cluster.state_file.exists():  # never got as far as starting a JVM
            shutil.rmtree(cluster.data_dir, ignore_errors=True)


def _new_cluster(cluster_dir: Path, name: str, brokers: int, ports: list[int], version: str) -> SandboxCluster:
    nodes = []
    for index in range(brokers):
        node_dir = cluster_dir / f"node-{index + 1}"
        nodes.append(
            SandboxBroker(
                node_id=index + 1,
                port=ports[2 * index],
                controller_port=ports[2 * index + 1],
                pid=None,
                log_dir=str(node_dir / "data"),
                log_file=str(node_dir / "kafka.log"),
            )
        )
    return SandboxCluster(
        name=name,
        bootstrap=[b.address for b in nodes],
        brokers=nodes,
        data_dir=cluster_dir,
        kafka_cluster_id=_new_cluster_id(),
        kafka_version=version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _reassign_ports(cluster: SandboxCluster, ports: list[int]) -> SandboxCluster:
    brokers = [
        dataclasses.replace(b, port=ports[2 * i], controller_port=ports[2 * i + 1])
        for i, b in enumerate(cluster.brokers)
    ]
    return _with_brokers(cluster, brokers)


def _ensure_ports_free(cluster: SandboxCluster, broker: SandboxBroker) -> None:
    taken = [p for p in (broker.port, broker.controller_port) if not _can_bind(p)]
    if taken:
        raise ConfigError(
            f"sandbox {cluster.name}: port {taken[0]} of broker {broker.node_id} is taken by another process",
            hint=f"free the port, or run 'kmc sandbox down {cluster.name}' and start it again on new ports",
        )


def down(names: list[str] | None = None, keep_data: bool = False) -> list[str]:
    """Stop the named sandboxes (all when ``names`` is None) and remove their data unless ``keep_data``.

    Only the pids recorded in the state files are signalled, and only while their command line still
    names that node's config file. Returns the names stopped.
    """
    root = sandbox_root()
    if names is None:
        if not root.is_dir():
            return []
        names = [c.name for c in sorted(root.iterdir()) if c.is_dir() and NAME_RE.fullmatch(c.name)]
    names = _unique(names)
    missing = [n for n in names if not (root / n).is_dir()]
    if missing:
        raise UsageError(f"no sandbox named {missing[0]!r}", hint="run 'kmc sandbox status' to list the sandboxes")
    if not names:
        return []
    with _locked(names):
        clusters = {name: _read_state(root / name) for name in names}
        _stop_brokers([b for cluster in clusters.values() if cluster is not None for b in cluster.brokers])
        for name, cluster in clusters.items():
            if keep_data:
                if cluster is not None:
                    for broker in cluster.brokers:
                        cluster = _with_pid(cluster, broker.node_id, None)
                    _write_state(cluster)
            else:
                shutil.rmtree(root / name)
            log.info("sandbox %s stopped%s", name, " (data kept)" if keep_data else " and removed")
    return names


def stop_broker(name: str, node_id: int, timeout: float = STOP_TIMEOUT) -> SandboxCluster:
    """Stop one node of a sandbox (SIGTERM, a controlled shutdown); the others keep running."""
    with _locked([validate_name(name)]):
        cluster = get(name)
        broker = cluster.broker(node_id)
        _stop_brokers([broker], timeout=timeout)
        cluster = _with_pid(cluster, node_id, None)
        _write_state(cluster)
        log.info("sandbox %s: broker %d stopped", name, node_id)
        return cluster


def kill_broker(name: str, node_id: int) -> SandboxCluster:
    """SIGKILL one node of a sandbox, as a crash or a lost host would stop it (the fault tests do this);
    ``start_broker`` starts it again."""
    with _locked([validate_name(name)]):
        cluster = get(name)
        broker = cluster.broker(node_id)
        if broker.pid is not None and _signal(broker.pid, str(broker.config_file), signal.SIGKILL):
            deadline = time.monotonic() + KILL_TIMEOUT
            while _process_matches(broker.pid, str(broker.config_file)) and time.monotonic() < deadline:
                time.sleep(0.05)
        _discard_cds(broker)
        cluster = _with_pid(cluster, node_id, None)
        _write_state(cluster)
        log.info("sandbox %s: broker %d killed", name, node_id)
        return cluster


def start_broker(name: str, node_id: int, timeout: float = 90) -> SandboxCluster:
    """Start one stopped node of a sandbox on its old ports; returns once it is registered again."""
    with _locked([validate_name(name)]):
        cluster = get(name)
        broker = cluster.broker(node_id)
        offsets: dict[int, int] = {}
        if not broker.alive():
            _ensure_ports_free(cluster, broker)
            rt = _resolve_runtime()
            _write_configs(cluster)
            pid, offsets[node_id] = _launch(rt, cluster, broker, train=True)
            cluster = _with_pid(cluster, node_id, pid)
            _write_state(cluster)
        item = _Pending(cluster, offsets)
        _wait_ready([item], timeout)
        return item.cluster


def status() -> list[dict[str, Any]]:
    """One dict per sandbox: name, bootstrap, brokers (node_id, port, controller_port, pid, alive), health.

    health is "up" (every node alive and the metadata lists them all within ~2 s), "down" (no node
    alive) or "degraded" (anything in between).
    """
    clusters = list_sandboxes()

    def one(cluster: SandboxCluster) -> dict[str, Any]:
        alive = {b.node_id: b.alive() for b in cluster.brokers}
        if not any(alive.values()):
            health = "down"
        elif all(alive.values()) and _registered(cluster, _describe(cluster, PROBE_TIMEOUT)):
            health = "up"
        else:
            health = "degraded"
        return {
            "name": cluster.name,
            "bootstrap": list(cluster.bootstrap),
            "health": health,
            "brokers": [
                {
                    "node_id": b.node_id,
                    "port": b.port,
                    "controller_port": b.controller_port,
                    "pid": b.pid,
                    "alive": alive[b.node_id],
                }
                for b in cluster.brokers
            ],
            "kafka_cluster_id": cluster.kafka_cluster_id,
            "kafka_version": cluster.kafka_version,
            "created": cluster.created,
            "data_dir": str(cluster.data_dir),
            "security": cluster.security,
        }

    if len(clusters) <= 1:
        return [one(c) for c in clusters]
    with ThreadPoolExecutor(max_workers=min(8, len(clusters))) as pool:
        return list(pool.map(one, clusters))


def kill_jvms_under(directory: Path) -> list[int]:
    """Last resort for test and benchmark harnesses: SIGKILL every java process whose command line
    names ``directory`` (a scratch directory only the caller made). Returns the pids signalled."""
    marker = f"{directory}".encode()
    killed: list[int] = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and b"java" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed
