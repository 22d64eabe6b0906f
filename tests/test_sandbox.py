"""kmc.sandbox: real Kafka brokers (no mocks), and the java/mvn/jar lookups steered through the environment."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from kmc import sandbox
from kmc.errors import ConfigError, ExitCode, MissingToolError, UsageError
from kmc.sandbox import runtime

REPO = Path(__file__).resolve().parent.parent


def _status_of(name: str) -> dict:
    entries = {entry["name"]: entry for entry in sandbox.status()}
    return entries[name]


def _pid_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _produce_and_consume(bootstrap: str, topic: str, value: bytes, create: bool = True) -> list[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    if create:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce(topic, key=b"k", value=value, headers=[("h", b"1")])
        assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join: faster
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.key() == b"k"
                assert msg.headers() == [("h", b"1")]
                return [msg.value()]
        return []
    finally:
        consumer.close()


# ------------------------------------------------------------------------------- shared clusters


@pytest.mark.kafka
def test_up_is_idempotent(src_cluster, dst_cluster):
    # other tests restart these brokers (new pids), so compare with the state as it is now
    src_cluster, dst_cluster = sandbox.get("src"), sandbox.get("dst")
    started = time.monotonic()
    again = sandbox.up(["src", "dst"])
    assert time.monotonic() - started < 10
    assert again == [src_cluster, dst_cluster]  # same pids, ports, cluster ids
    assert [b.pid for b in again[0].brokers] == [b.pid for b in src_cluster.brokers]
    assert src_cluster.bootstrap != dst_cluster.bootstrap
    assert src_cluster.kafka_cluster_id != dst_cluster.kafka_cluster_id


@pytest.mark.kafka
def test_produce_and_consume_through_sandbox(src_cluster, topic_name):
    assert _produce_and_consume(src_cluster.bootstrap_servers, topic_name, b"hello") == [b"hello"]


@pytest.mark.kafka
def test_status_reports_up(src_cluster, dst_cluster):
    for cluster in (sandbox.get(src_cluster.name), sandbox.get(dst_cluster.name)):
        entry = _status_of(cluster.name)
        assert entry["health"] == "up"
        assert entry["bootstrap"] == cluster.bootstrap
        assert entry["kafka_cluster_id"] == cluster.kafka_cluster_id
        assert [(b["node_id"], b["pid"], b["alive"]) for b in entry["brokers"]] == [
            (b.node_id, b.pid, True) for b in cluster.brokers
        ]


@pytest.mark.kafka
def test_state_file_and_listing(src_cluster):
    src_cluster = sandbox.get(src_cluster.name)  # current pids: other tests restart brokers
    state = json.loads(src_cluster.state_file.read_text())
    assert set(state) == {"name", "bootstrap", "brokers", "kafka_cluster_id", "kafka_version", "created", "security"}
    assert state["security"] == "plaintext"
    assert state["bootstrap"] == [f"127.0.0.1:{src_cluster.brokers[0].port}"]
    assert set(state["brokers"][0]) == {"node_id", "port", "controller_port", "pid", "log_dir", "log_file"}
    assert state["kafka_version"] == runtime.KAFKA_VERSION
    assert src_cluster.data_dir == sandbox.sandbox_root() / "src"
    assert str(src_cluster.data_dir).startswith(os.environ["XDG_DATA_HOME"])
    assert src_cluster in sandbox.list_sandboxes()
    # the broker log stays small: WARN level plus the start-up line
    assert Path(src_cluster.brokers[0].log_file).stat().st_size < 64 * 1024


@pytest.mark.kafka
def test_invalid_and_unknown_names(src_cluster):
    with pytest.raises(UsageError) as err:
        sandbox.up(["Bad Name"])
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageError):
        sandbox.down(["no-such-sandbox"])
    with pytest.raises(UsageError):
        sandbox.stop_broker("src", 7)
    assert _status_of("src")["health"] == "up"  # none of that touched it


# ------------------------------------------------------------------- clusters of their own


@pytest.fixture(scope="module")
def scratch_pair():
    """Throw-away single-broker sandboxes, started together, for the tests that stop or break them."""
    names = ["scratch-rm", "scratch-keep", "scratch-bad"]
    try:
        clusters = sandbox.up(names)
    except BaseException:
        sandbox.down([n for n in names if n in {c.name for c in sandbox.list_sandboxes()}])
        raise
    yield {c.name: c for c in clusters}
    leftover = [n for n in names if (sandbox.sandbox_root() / n).exists()]
    if leftover:
        sandbox.down(leftover)


@pytest.mark.kafka
def test_down_stops_exactly_the_recorded_pids_and_removes_data(scratch_pair, src_cluster):
    src_cluster = sandbox.get(src_cluster.name)  # current pids: other tests restart brokers
    cluster = scratch_pair["scratch-rm"]
    pids = [b.pid for b in cluster.brokers]
    assert all(_pid_running(pid) for pid in pids)
    assert sandbox.down(["scratch-rm"]) == ["scratch-rm"]
    assert not any(_pid_running(pid) for pid in pids)
    assert not cluster.data_dir.exists()
    assert "scratch-rm" not in {c.name for c in sandbox.list_sandboxes()}
    # the other sandboxes were not touched
    assert _pid_running(src_cluster.brokers[0].pid)
    assert _pid_running(scratch_pair["scratch-keep"].brokers[0].pid)


@pytest.mark.kafka
def test_keep_data_keeps_the_dir_and_up_restarts_on_it(scratch_pair, topic_name):
    cluster = scratch_pair["scratch-keep"]
    assert _produce_and_consume(cluster.bootstrap_servers, topic_name, b"kept") == [b"kept"]
    pid = cluster.brokers[0].pid

    assert sandbox.down(["scratch-keep"], keep_data=True) == ["scratch-keep"]
    assert not _pid_running(pid)
    assert cluster.state_file.exists()
    assert Path(cluster.brokers[0].log_dir).is_dir()
    assert _status_of("scratch-keep")["health"] == "down"
    assert sandbox.get("scratch-keep").brokers[0].pid is None

    # settings of one's own in the node's overrides.properties win over kmc's at the next start
    (cluster.brokers[0].node_dir / "overrides.properties").write_text("# mine\nmessage.max.bytes = 1234567\n")
    (restarted,) = sandbox.up(["scratch-keep"])
    assert restarted.kafka_cluster_id == cluster.kafka_cluster_id
    assert restarted.brokers[0].pid != pid
    assert restarted.bootstrap == cluster.bootstrap  # its old ports were free
    assert _produce_and_consume(restarted.bootstrap_servers, topic_name, b"", create=False) == [b"kept"]
    resource = ConfigResource(ResourceType.BROKER, "1")
    client = AdminClient({"bootstrap.servers": restarted.bootstrap_servers})
    assert client.describe_configs([resource])[resource].result(timeout=30)["message.max.bytes"].value == "1234567"
    sandbox.down(["scratch-keep"])
    assert not cluster.data_dir.exists()


@pytest.mark.kafka
def test_a_broker_dying_at_start_is_reported_with_its_log_line(scratch_pair):
    cluster = scratch_pair["scratch-bad"]
    sandbox.down(["scratch-bad"], keep_data=True)
    meta = Path(cluster.brokers[0].log_dir) / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
    with pytest.raises(ConfigError) as err:
        sandbox.up(["scratch-bad"], timeout=60)
    assert err.value.message == (
        "sandbox scratch-bad: broker 1 exited during start-up (exit status 1): java.lang.RuntimeException: "
        f"Stored node id 7 doesn't match previous node id 1 in {meta}. If you moved your data, make sure your "
        "configured node id matches. If you intend to create a new node, you should remove all data in your "
        "data directories."
    )
    assert err.value.hint == f"see {cluster.brokers[0].log_file}"
    assert err.value.exit_code == 3
    entry = _status_of("scratch-bad")
    assert entry["health"] == "down" and entry["brokers"][0]["pid"] is None
    sandbox.down(["scratch-bad"])


@pytest.mark.kafka
def test_three_brokers_degraded_when_one_stops(three_broker_cluster):
    name = three_broker_cluster.name
    current = sandbox.get(name)  # current pids: other tests restart brokers of this cluster
    assert len(current.bootstrap) == 3
    assert _status_of(name)["health"] == "up"
    stopped_pid = current.broker(2).pid
    sandbox.stop_broker(name, 2)
    try:
        entry = _status_of(name)
        assert entry["health"] == "degraded"
        assert [b["alive"] for b in entry["brokers"]] == [True, False, True]
        assert not _pid_running(stopped_pid)
        assert _pid_running(current.broker(1).pid)
    finally:
        restarted = sandbox.start_broker(name, 2)
    assert restarted.broker(2).pid != stopped_pid
    assert restarted.bootstrap == three_broker_cluster.bootstrap
    assert _status_of(name)["health"] == "up"


# --------------------------------------------------------------------- runtime: java, mvn, jars


def _env(path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "KAFKA_HOME")}
    env["PATH"] = path
    env.update(extra)
    return env


def test_missing_java_is_a_config_error_with_exit_code_3(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from kmc.errors import KmcError
        from kmc.sandbox.runtime import kafka_classpath
        try:
            kafka_classpath()
        except KmcError as exc:
            print(type(exc).__name__, exc.one_line(), file=sys.stderr)
            sys.exit(int(exc.exit_code))
        """
    )
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(str(empty), PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "MissingToolError java not found (install a Java 17+ runtime "
        "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME)"
    ]
    assert not (tmp_path / "cache").exists()  # nothing fetched without java


def test_missing_java_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingToolError) as err:
        runtime.find_java()
    assert err.value.exit_code == ExitCode.CONFIG == 3
    assert "JAVA_HOME" in err.value.hint


def _real_java() -> str:
    import shutil

    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH")
    return os.path.realpath(java)


def test_java_home_is_honoured(tmp_path, monkeypatch):
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").symlink_to(_real_java())
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert runtime.find_java() == str(home / "bin" / "java")


def test_missing_mvn_when_a_fetch_is_needed(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(_real_java())
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(MissingToolError) as err:
        runtime.kafka_classpath()
    assert err.value.one_line() == "mvn not found (install Maven, or set KAFKA_HOME to an unpacked Kafka distribution)"
    assert err.value.exit_code == 3


def test_kafka_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        runtime.kafka_classpath()
    assert "has no libs/ directory" in err.value.message and err.value.hint
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.3.1.jar").write_bytes(b"")
    assert runtime.kafka_classpath() == f"{tmp_path}/libs/*"
    assert runtime.libs_kafka_version(tmp_path / "libs") == "4.3.1"


MVN_ERROR = (
    "[ERROR] Failed to execute goal on project kmc-kafka-runtime: Could not resolve dependencies for project "
    "io.kmc:kmc-kafka-runtime:pom:1: Could not find artifact org.apache.kafka:kafka_2.13:jar:9.9.9 in central "
    "(https://repo.maven.apache.org/maven2) -> [Help 1]"
)
FAKE_MVN = """#!/bin/sh
# stands in for Maven: records its run, then copies two fake jars (or fails like Maven does)
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}" ;; esac
done
echo run >> "$FAKE_MVN_RUNS"
sleep "${FAKE_MVN_SLEEP:-0}"
mkdir -p "$out"
echo jar > "$out/kafka_2.13-9.9.9.jar"
if [ -n "$FAKE_MVN_FAIL" ]; then
  echo "$FAKE_MVN_ERROR"
  echo "[ERROR] "
  echo "[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch."
  echo "[ERROR] Re-run Maven using the -X switch to enable full debug logging."
  echo "[ERROR] "
  echo "[ERROR] For more information about the errors and possible solutions, please read the following articles:"
  echo "[ERROR] [Help 1] http://cwiki.apache.org/confluence/display/MAVEN/DependencyResolutionException"
  exit 1
fi
echo jar > "$out/kafka-clients-9.9.9.jar"
"""


@pytest.fixture
def fake_mvn(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN)
    mvn.chmod(0o755)
    runs = tmp_path / "mvn-runs"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_MVN_RUNS", str(runs))
    monkeypatch.setenv("FAKE_MVN_ERROR", MVN_ERROR)
    return runs


def test_mvn_failure_reports_the_meaningful_line_and_leaves_no_cache(fake_mvn, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MVN_FAIL", "1")
    with pytest.raises(ConfigError) as err:
        runtime.kafka_libs_dir("9.9.9")
    assert err.value.message == (
        "fetching Kafka 9.9.9 with Maven failed: Failed to execute goal on project kmc-kafka-runtime: "
        "Could not resolve dependencies for project io.kmc:kmc-kafka-runtime:pom:1: Could not find artifact "
        "org.apache.kafka:kafka_2.13:jar:9.9.9 in central (https://repo.maven.apache.org/maven2)"
    )
    version_dir = tmp_path / "cache" / "kmc" / "kafka-9.9.9"
    assert list(version_dir.iterdir()) == []  # neither libs/ nor a temporary directory


def test_concurrent_fetches_run_maven_once(fake_mvn, tmp_path):
    script = "from kmc.sandbox.runtime import kafka_libs_dir; print(kafka_libs_dir('9.9.9'))"
    env = dict(os.environ, PYTHONPATH=str(REPO), FAKE_MVN_SLEEP="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    libs = tmp_path / "cache" / "kmc" / "kafka-9.9.9" / "libs"
    assert outputs == [str(libs), str(libs)]
    assert fake_mvn.read_text().splitlines() == ["run"]  # the second process waited and used the cache
    assert sorted(p.name for p in libs.glob("*.jar")) == ["kafka-clients-9.9.9.jar", "kafka_2.13-9.9.9.jar"]
    assert runtime.libs_kafka_version(libs) == "9.9.9"
    # an incomplete cache (a jar gone) is fetched again
    (libs / "kafka-clients-9.9.9.jar").unlink()
    assert runtime.kafka_libs_dir("9.9.9") == libs
    assert (libs / "kafka-clients-9.9.9.jar").is_file()
    assert fake_mvn.read_text().splitlines() == ["run", "run"]


def test_mvn_error_line():
    assert runtime.mvn_error_line("\x1b[1;31m[ERROR]\x1b[m Network is unreachable -> [Help 1]\n[ERROR] \n") == (
        "Network is unreachable"
    )
    assert runtime.mvn_error_line("some output\nlast words\n") == "last words"
    assert runtime.mvn_error_line("") is None


@pytest.mark.kafka
def test_class_data_archive_is_made_by_a_cleanly_stopped_broker(tmp_path, monkeypatch):
    from kmc.sandbox import cluster as sandbox_cluster

    libs = runtime.kafka_libs_dir()
    java = runtime.find_java()
    monkeypatch.setenv("KAFKA_HOME", str(libs.parent))  # the same jars, but a fresh cache for the archive
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KMC_SANDBOX_CDS", raising=False)

    (cluster,) = sandbox.up(["cds"])
    try:
        args = Path(f"/proc/{cluster.brokers[0].pid}/cmdline").read_bytes().decode().split("\0")
        assert any(arg.startswith("-XX:ArchiveClassesAtExit=") for arg in args)
    finally:
        sandbox.down(["cds"])
    (archive,) = (tmp_path / "cache" / "kmc" / "cds").glob("kafka-broker-*.jsa")
    assert archive == runtime.cds_archive(java, libs)  # the name the next start looks for
    check = [java, f"-XX:SharedArchiveFile={archive}", "-Xshare:on", "-cp", str(libs / "*"), "-version"]
    assert subprocess.run(check, capture_output=True).returncode == 0

    # a truncated archive (it would crash the JVM) is never moved into the cache
    broker = dataclasses.replace(cluster.brokers[0], log_file=str(tmp_path / "node" / "kafka.log"))
    broker.node_dir.mkdir()
    (broker.node_dir / sandbox_cluster.CDS_DUMP).write_bytes(archive.read_bytes()[:1_000_000])
    target = tmp_path / "cache" / "kmc" / "cds" / "other.jsa"
    info = {"target": str(target), "java": java, "classpath": str(libs / "*")}
    (broker.node_dir / sandbox_cluster.CDS_DUMP_INFO).write_text(json.dumps(info))
    sandbox_cluster._promote_cds(broker)
    assert not target.exists()


def test_a_malformed_overrides_file_is_a_config_error(tmp_path):
    from kmc.sandbox.cluster import SandboxBroker, _overrides

    broker = SandboxBroker(1, 1, 2, None, str(tmp_path / "data"), str(tmp_path / "kafka.log"))
    assert _overrides(broker) == {}
    (tmp_path / "overrides.properties").write_text("a.b = 1\n\n# comment\nc=x=y\n")
    assert _overrides(broker) == {"a.b": "1", "c": "x=y"}
    (tmp_path / "overrides.properties").write_text("listeners\n")
    with pytest.raises(ConfigError, match="expected key=value, not 'listeners'"):
        _overrides(broker)
