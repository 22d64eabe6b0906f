"""Every exit status of kmc, provoked through the CLI, and every bad input of the foundation issue:
one line on stderr starting ``kmc: error:``, the documented exit code, no traceback, nothing written.

Exit 5 needs a broker that checks passwords and ACLs; the sandbox only does PLAINTEXT, so this file starts its own
single-broker KRaft Kafka with a SASL_PLAINTEXT/PLAIN listener and the StandardAuthorizer (on the sandbox's jars
and JVM settings).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from kmc.cli.main import app
from kmc.errors import ExitCode
from kmc.sandbox import find_java, kafka_classpath
from kmc.sandbox.cluster import JVM_OPTIONS, LOG4J2_CONFIG
from tests.helpers import Result, create_topic, kmc

# Which test provokes each exit status. A new ExitCode member fails test_every_exit_code_is_pinned
# until it is added here. Codes 1 and 75 come from diff and flow locking, and are pinned by their tests.
EXIT_CODE_TESTS: dict[ExitCode, str] = {
    ExitCode.OK: "test_exit_0_success",
    ExitCode.DIFFERENCES: "elsewhere: the kmc diff tests (issue 4), a difference exits 1; tests/test_failover.py, "
                          "a lag alarm (mirror/flow status --max-lag) exits 1",
    ExitCode.USAGE: "test_exit_2_usage",
    ExitCode.CONFIG: "test_exit_3_config",
    ExitCode.UNREACHABLE: "test_exit_4_unreachable",
    ExitCode.AUTH: "test_exit_5_authentication_failed",
    ExitCode.PARTIAL: "test_exit_6_partial_failure",
    ExitCode.DATA_GAP: "elsewhere: tests/test_faults.py, records deleted before they were copied exit 7",
    ExitCode.FAILED: "test_exit_8_failed",
    ExitCode.ARCHIVE: "test_exit_9_damaged_export",
    ExitCode.LOCKED: "elsewhere: the mirror/flow lock tests (issues 5, 6), an overlapping run exits 75",
    ExitCode.INTERRUPTED: "test_exit_130_interrupted",
    ExitCode.TERMINATED: "test_exit_143_terminated",
}

TIMEOUT = 2.0
MARGIN = 3.0  # start-up of the client and the interpreter's own overhead
SASL_USER, SASL_PASSWORD, WRONG_PASSWORD = "kmc", "secret", "not-the-secret-x9"
# A second user with no ACLs but the ones a test grants (the broker runs KRaft's StandardAuthorizer; kmc is a
# super user, so every other test sees no difference).
LIMITED_USER, LIMITED_PASSWORD = "limited", "limited-secret"


def closed_port() -> int:
    """A local port nothing listens on (bound once by the kernel, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_error_line(result: Result, code: int) -> str:
    assert result.code == code, f"exit {result.code}, expected {code}: {result.stderr}"
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stderr.startswith("kmc: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# --- the mapping -----------------------------------------------------------------------------------------


def test_every_exit_code_is_pinned() -> None:
    assert set(EXIT_CODE_TESTS) == set(ExitCode), "add a test for the new ExitCode member to EXIT_CODE_TESTS"
    for code, where in EXIT_CODE_TESTS.items():
        if where.startswith("elsewhere:"):
            assert code in (ExitCode.DIFFERENCES, ExitCode.LOCKED, ExitCode.DATA_GAP)  # pinned elsewhere
        else:
            assert callable(globals().get(where)), f"{where} (for exit {int(code)}) is not a test in this file"


def test_exit_code_values_are_the_documented_ones() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "DIFFERENCES": 1, "USAGE": 2, "CONFIG": 3, "UNREACHABLE": 4, "AUTH": 5, "PARTIAL": 6,
        "DATA_GAP": 7, "FAILED": 8, "ARCHIVE": 9, "LOCKED": 75, "INTERRUPTED": 130, "TERMINATED": 143,
    }


# --- one test per code -------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_exit_0_success(config: Path, src_cluster) -> None:  # noqa: ANN001
    result = kmc("profile", "test", "src", expect=None)
    assert result.code == 0 and result.stderr == ""


def test_exit_2_usage(config: Path) -> None:
    message = assert_one_error_line(kmc("topics", "nope", expect=None), 2)
    assert "unknown cluster 'nope' (known: central, dc1" in message


def test_exit_3_config(config: Path) -> None:
    config.write_text('[clusters.dc1]\nbootstrap = ["localhost:19092"\n')
    message = assert_one_error_line(kmc("topics", "dc1", expect=None), 3)
    assert "invalid TOML" in message and "line 2" in message


def test_exit_4_unreachable(config: Path) -> None:
    started = time.monotonic()
    result = kmc("topics", "--bootstrap", f"127.0.0.1:{closed_port()}", "--timeout", str(TIMEOUT), expect=None)
    elapsed = time.monotonic() - started
    message = assert_one_error_line(result, 4)
    assert "cannot reach 127.0.0.1:" in message and ": connection refused: nothing listens there (" in message
    assert elapsed < TIMEOUT + MARGIN


def test_exit_4_a_port_that_accepts_but_never_answers(config: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete (the kernel's backlog), and nothing ever answers them
        port = silent.getsockname()[1]
        result = kmc("topics", "--bootstrap", f"127.0.0.1:{port}", "--timeout", str(TIMEOUT), expect=None)
    message = assert_one_error_line(result, 4)
    assert f"cannot reach 127.0.0.1:{port}: no broker answered in time (" in message


@pytest.mark.kafka
def test_exit_6_partial_failure(config: Path, src_cluster) -> None:  # noqa: ANN001
    config.write_text(f'[clusters.good]\nbootstrap = {list(src_cluster.bootstrap)!r}\n'.replace("'", '"')
                      + f'[clusters.bad]\nbootstrap = ["127.0.0.1:{closed_port()}"]\n')
    result = kmc("profile", "test", "good", "bad", "--timeout", str(TIMEOUT), "-o", "json", expect=None)
    assert "1 of 2 failed" in assert_one_error_line(result, 6)
    rows = {row["name"]: row for row in result.json()}
    assert rows["good"]["status"] == "ok" and rows["good"]["cluster_id"] == src_cluster.kafka_cluster_id
    assert rows["bad"]["status"] == "error" and "cannot reach" in rows["bad"]["error"]


@pytest.mark.kafka
def test_exit_8_failed(config: Path, src_cluster, dst_cluster, topic_name: str) -> None:  # noqa: ANN001
    """A broker refusing an operation for a reason that is none of 4/5: here the target refuses to create a
    topic whose name collides with one it has ('.' and '_' collide in metric names)."""
    create_topic(src_cluster, f"{topic_name}.x")
    create_topic(dst_cluster, f"{topic_name}_x")
    # kmc's own topics exist (on a fresh target the run creates them first and says so on stderr)
    kmc("mirror", "src", "dst", "--topics", f"{topic_name}_nothing", "--once")
    message = assert_one_error_line(kmc("mirror", "src", "dst", "--topics", f"{topic_name}\\.x", expect=None), 8)
    assert "InvalidTopic" in message and f"{topic_name}.x" in message


def test_exit_9_damaged_export(tmp_path: Path) -> None:
    """An export whose manifest has an unknown format version: one line, exit 9, before any connection (the
    target address answers nothing). tests/test_archive.py pins damaged data files."""
    part = tmp_path / "export" / "part-00001"
    part.mkdir(parents=True)
    (part / "manifest.json").write_text('{"format": "kmc-export", "format_version": 2, "part": 1}')
    result = kmc("import", str(tmp_path / "export"), "127.0.0.1:1", expect=9)
    assert result.stderr.count("\n") == 1 and "format version 2; this kmc reads version 1" in result.stderr


def signal_while_waiting(tmp_path: Path, signum: int) -> tuple[int, str, str, float]:
    """Send ``signum`` to `kmc topics` waiting on a cluster; exit status, stdout, stderr, seconds to exit.

    The "cluster" is a socket that accepts and never answers: once it has a connection, kmc is
    certainly past start-up and waiting on Kafka (a fixed sleep is not, on a loaded machine).
    More signal cases, for every kind of command: tests/test_signals.py.
    """
    env = dict(os.environ, KMC_CONFIG=str(tmp_path / "absent.toml"))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(60)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kmc", "--timeout", "120", "topics", "--bootstrap",
             f"127.0.0.1:{silent.getsockname()[1]}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        try:
            connection, _ = silent.accept()
            with connection:
                time.sleep(0.5)  # let it send its first request and wait for the answer
                proc.send_signal(signum)
                started = time.monotonic()
                stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return proc.returncode, stdout, stderr, time.monotonic() - started


def test_exit_130_interrupted(tmp_path: Path) -> None:
    """Ctrl-C while waiting on a cluster: exit 130 at once, one line, no traceback."""
    code, stdout, stderr, elapsed = signal_while_waiting(tmp_path, signal.SIGINT)
    assert (code, stdout, stderr) == (130, "", "kmc: error: interrupted\n")
    assert elapsed < 10


def test_exit_143_terminated(tmp_path: Path) -> None:
    """SIGTERM while waiting on a cluster (a command that does not stop cleanly on it): exit 143 at once."""
    code, stdout, stderr, elapsed = signal_while_waiting(tmp_path, signal.SIGTERM)
    assert (code, stdout, stderr) == (143, "", "kmc: error: terminated\n")
    assert elapsed < 10


# --- exit 5: a SASL broker of our own ---------------------------------------------------------------------


@dataclass
class SaslBroker:
    address: str
    process: subprocess.Popen[bytes]
    log_file: Path


def _server_properties(data: Path, port: int, controller_port: int) -> str:
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'username="{SASL_USER}" password="{SASL_PASSWORD}" user_{SASL_USER}="{SASL_PASSWORD}" '
            f'user_{LIMITED_USER}="{LIMITED_PASSWORD}";')
    settings = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # the controller listener is PLAINTEXT: the broker talks to its controller as ANONYMOUS
        "super.users": f"User:{SASL_USER};User:ANONYMOUS",
        "log.dirs": data / "data",
        "num.partitions": 1,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(address: str) -> bool:
    admin = AdminClient({"bootstrap.servers": address, "security.protocol": "SASL_PLAINTEXT", "log_level": 0,
                         "sasl.mechanism": "PLAIN", "sasl.username": SASL_USER, "sasl.password": SASL_PASSWORD})
    try:
        return bool(admin.list_topics(timeout=2).brokers)
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    java, classpath = find_java(), kafka_classpath()
    data = tmp_path_factory.mktemp("sasl-broker")
    port, controller_port = _free_ports(2)
    config = data / "server.properties"
    config.write_text(_server_properties(data, port, controller_port))
    (data / "log4j2.properties").write_text(LOG4J2_CONFIG)
    jvm = [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}",
           f"-Dkafka.logs.dir={data}", "-cp", classpath]
    cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=").lstrip("-") or "kmc-test-cluster"
    formatted = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "--config", str(config),
                                "--cluster-id", cluster_id], capture_output=True, text=True, timeout=120)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    log_file = data / "kafka.log"
    with open(log_file, "ab") as out:
        process = subprocess.Popen([*jvm, "kafka.Kafka", str(config)], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    atexit.register(stop)  # even if the session dies before the fixture's teardown
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _answers(address):
            assert process.poll() is None, f"SASL broker exited: {log_file.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"SASL broker did not come up: {log_file.read_text()[-2000:]}"
            time.sleep(0.5)
        yield SaslBroker(address, process, log_file)
    finally:
        stop()
        atexit.unregister(stop)


def sasl_config(path: Path, broker: SaslBroker) -> None:
    path.write_text(f'[clusters.secure]\nbootstrap = ["{broker.address}"]\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                    f'sasl_mechanism = "PLAIN"\nusername = "{SASL_USER}"\npassword = "${{KMC_TEST_SASL_PASSWORD}}"\n')


@pytest.mark.kafka
def test_exit_5_authentication_failed(config: Path, sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_config(config, sasl_broker)
    monkeypatch.setenv("KMC_TEST_SASL_PASSWORD", WRONG_PASSWORD)
    started = time.monotonic()
    result = kmc("profile", "test", "secure", "--timeout", "5", expect=None)
    message = assert_one_error_line(result, 5)
    assert "authentication failed" in message
    assert WRONG_PASSWORD not in result.stdout + result.stderr
    assert time.monotonic() - started < 5 + MARGIN
    assert_one_error_line(kmc("topics", "secure", "--timeout", "5", expect=None), 5)


@pytest.mark.kafka
def test_sasl_right_password_succeeds(config: Path, sasl_broker: SaslBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_config(config, sasl_broker)
    monkeypatch.setenv("KMC_TEST_SASL_PASSWORD", SASL_PASSWORD)
    rows = kmc("profile", "test", "secure", "-o", "json").json()
    assert [(row["name"], row["status"], row["brokers"]) for row in rows] == [("secure", "ok", 1)]
    cluster_id = AdminClient({"bootstrap.servers": sasl_broker.address, "security.protocol": "SASL_PLAINTEXT",
                              "sasl.mechanism": "PLAIN", "sasl.username": SASL_USER,
                              "sasl.password": SASL_PASSWORD}).list_topics(timeout=10).cluster_id
    assert rows[0]["cluster_id"] == cluster_id
    kmc("topics", "secure", "-o", "json")


@pytest.mark.kafka
def test_sasl_debug_log_hides_the_password(config: Path, sasl_broker: SaslBroker,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sasl_config(config, sasl_broker)
    monkeypatch.setenv("KMC_TEST_SASL_PASSWORD", WRONG_PASSWORD)
    result = kmc("--debug", "profile", "test", "secure", "--timeout", "5", expect=5)
    assert "Traceback" in result.stderr  # --debug shows it, but never the password
    assert WRONG_PASSWORD not in result.stdout + result.stderr


# --- the bad inputs of the foundation issue ---------------------------------------------------------------

BAD_INPUTS = {
    "malformed TOML": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\nusername = "x\n', ["topics", "dc1"], 3,
                       "line 3"),
    "malformed TOML at the end": ('# a\n\n[clusters.dc1]\nbootstrap = ["localhost:19092"\n', ["profile", "list"], 3,
                                  "line 4"),
    "unknown key in a cluster table": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\nbootstrp = "x"\n',
                                       ["topics", "dc1"], 3, "unknown key 'bootstrp'"),
    "unknown key in a client table": ('[clusters.dc1]\nbootstrap = ["h:1"]\n[clusters.dc1.client]\nfoo_ms = 1\n',
                                      ["profile", "show", "dc1"], 3, "unknown kafka-python setting 'foo_ms'"),
    "undefined variable": ('[clusters.dc1]\nbootstrap = ["${KMC_TEST_UNDEFINED}:9092"]\n', ["topics", "dc1"], 3,
                           "KMC_TEST_UNDEFINED is not set"),
    "unknown cluster name": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n', ["topics", "dc2"], 2,
                             "unknown cluster 'dc2'"),
    "bad -o value": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n', ["profile", "list", "-o", "xml"], 2,
                     "'xml' is not one of"),
    "bad -o value before the command": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n',
                                        ["-o", "yaml", "profile", "list"], 2, "'yaml' is not one of"),
    "profile add of an existing name": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n',
                                        ["profile", "add", "dc1", "--bootstrap", "h:1"], 2,
                                        "cluster 'dc1' already exists"),
    "profile add into a malformed file": ('[clusters.dc1\n', ["profile", "add", "dc2", "--bootstrap", "h:1"], 3,
                                          "line 1"),
    "profile remove of an unknown name": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n',
                                          ["profile", "remove", "dc2"], 2, "cluster 'dc2' is not in"),
    "unreachable bootstrap": ('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n',
                              ["topics", "--bootstrap", "127.0.0.1:{port}", "--timeout", str(TIMEOUT)], 4,
                              "cannot reach"),
    "unreachable cluster by name": ('[clusters.dead]\nbootstrap = ["127.0.0.1:{port}"]\n',
                                    ["groups", "dead", "--timeout", str(TIMEOUT)], 4, "cannot reach"),
    # issue 18: user mistakes that were reported as internal errors
    "a client setting of the wrong type": ('[clusters.dc1]\nbootstrap = ["h:1"]\n[clusters.dc1.client]\n'
                                           'reconnect_backoff_ms = "abc"\n', ["topics", "dc1"], 3,
                                           'clusters.dc1.client.reconnect_backoff_ms must be an integer, not "abc"'),
    "a bad api_version": ('[clusters.dc1]\nbootstrap = ["h:1"]\n[clusters.dc1.client]\napi_version = "banana"\n',
                          ["topics", "dc1"], 3, 'api_version must be a version such as "3.7"'),
    "a client flag that is not a boolean": ('[clusters.dc1]\nbootstrap = ["h:1"]\n[clusters.dc1.client]\n'
                                            'check_crcs = 1\n', ["profile", "show", "dc1"], 3,
                                            "check_crcs must be true or false, not 1"),
    "--timeout inf": ('[clusters.dc1]\nbootstrap = ["h:1"]\n', ["topics", "dc1", "--timeout", "inf"], 2,
                      "Invalid value for '--timeout'"),
    "--timeout 1e308": ('[clusters.dc1]\nbootstrap = ["h:1"]\n', ["topics", "dc1", "--timeout", "1e308"], 2,
                        "less than or equal to 86400"),
    "--delivery-timeout inf": ('[clusters.dc1]\nbootstrap = ["h:1"]\n',
                               ["mirror", "dc1", "h:2", "--delivery-timeout", "inf"], 2,
                               "Invalid value for '--delivery-timeout'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, args, code, fragment = BAD_INPUTS[case]
    port = closed_port()
    path = tmp_path / "config.toml"
    path.write_text(text.replace("{port}", str(port)))
    monkeypatch.setenv("KMC_CONFIG", str(path))
    monkeypatch.delenv("KMC_TEST_UNDEFINED", raising=False)
    before = path.read_bytes()
    started = time.monotonic()
    result = kmc(*[arg.replace("{port}", str(port)) for arg in args], expect=None)
    elapsed = time.monotonic() - started
    message = assert_one_error_line(result, code)
    assert fragment in message
    assert result.stdout == ""
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    if code == ExitCode.CONFIG and "TOML" not in case:
        assert str(path) in message  # a config error names the file
    if code == ExitCode.UNREACHABLE:
        assert elapsed < TIMEOUT + MARGIN


def test_debug_shows_a_traceback(config: Path) -> None:
    result = kmc("--debug", "topics", "nope", expect=2)
    assert "Traceback (most recent call last)" in result.stderr
    assert "UnknownClusterError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("kmc: error: unknown cluster 'nope'")
    late = kmc("topics", "nope", "--debug", expect=2)  # --debug after the command works the same
    assert "Traceback (most recent call last)" in late.stderr


@pytest.mark.kafka
def test_a_state_directory_that_cannot_be_created(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  src_cluster, dst_cluster) -> None:  # noqa: ANN001
    """XDG_STATE_HOME pointing at a file: the lock cannot be made; nothing is copied."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "a-file"))
    message = assert_one_error_line(kmc("mirror", "src", "dst", "--topics", "kmc-none-18", expect=None), 3)
    assert "cannot create the lock directory" in message and "Not a directory" in message
    assert "XDG_STATE_HOME" in message


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
@pytest.mark.parametrize("args", [["profile", "list"], ["profile", "list", "-o", "json"], ["completion", "bash"]])
def test_stdout_closed_or_full(config: Path, redirect: str, args: list[str]) -> None:
    proc = subprocess.run(["sh", "-c", f'"$0" -m kmc "$@" {redirect}', sys.executable, *args],
                          capture_output=False, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    reason = "stdout is closed" if redirect == ">&-" else "No space left on device"
    assert proc.stderr == f"kmc: error: cannot write the output to stdout: {reason} (check where stdout goes)\n"


def test_a_command_that_writes_nothing_to_stdout_works_with_it_closed(config: Path) -> None:
    proc = subprocess.run(["sh", "-c", '"$0" -m kmc profile add dc2 --bootstrap h:2 >&-', sys.executable],
                          stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "[clusters.dc2]" in config.read_text()


def test_debug_does_not_suggest_debug(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kmc.errors import KafkaOperationError

    def document(self, data, title=None):  # noqa: ANN001, ANN202 - stands in for Renderer.document
        raise KafkaOperationError("dc1: the broker said no")

    monkeypatch.setattr("kmc.output.Renderer.document", document)
    assert kmc("profile", "show", "dc1", expect=8).stderr == \
        "kmc: error: dc1: the broker said no (run again with --debug for details)\n"
    last = kmc("profile", "show", "dc1", "--debug", expect=8).stderr.splitlines()[-1]
    assert last == "kmc: error: dc1: the broker said no (details above)"


@pytest.mark.parametrize("args", [["diff", "nope", "dc1"], ["mirror", "dc1", "nope"], ["sandbox", "seed", "nope"],
                                  ["profile", "remove", "nope"], ["aggregate", "dc1", "--into", "nope"],
                                  ["diff", "h:abc", "dc1"], ["mirror", "dc1", "x:y"], ["inventory", "h:1,h:x"]])
def test_hints_name_only_what_the_command_has(config: Path, args: list[str]) -> None:
    """A command without --bootstrap is not told to pass it; a bad address given as a cluster argument is
    not called --bootstrap (issue 18)."""
    message = assert_one_error_line(kmc(*args, expect=None), 2)
    assert "--bootstrap" not in message
    if ":" in args[1] or ":" in args[2]:
        bad = args[1] if ":" in args[1] else args[2]
        assert message.startswith(f"kmc: error: cluster '{bad}': bootstrap server '")
        assert "a cluster is a profile name, or host:port" in message


def test_unknown_flow_when_there_are_none(config: Path) -> None:
    message = assert_one_error_line(kmc("flow", "run", "nope", expect=None), 2)
    assert f"unknown flow 'nope': no flows in {config}" in message and "[flows.NAME]" in message


# --- internal errors: never locals ----------------------------------------------------------------------


def test_typer_never_shows_locals() -> None:
    assert app.pretty_exceptions_show_locals is False
    assert app.pretty_exceptions_enable is False


@pytest.fixture
def broken_renderer(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make `profile show` fail inside kmc with a password in a local variable of the failing frame."""
    password = "local-secret-" + uuid.uuid4().hex

    def document(self, data, title=None):  # noqa: ANN001, ANN202 - stands in for Renderer.document
        secret_in_a_local = password  # noqa: F841 - what a locals dump would show
        raise RuntimeError("boom")

    monkeypatch.setattr("kmc.output.Renderer.document", document)
    return password


def test_internal_error_is_one_line_without_locals(config: Path, broken_renderer: str) -> None:
    result = kmc("profile", "show", "dc1", expect=None)
    message = assert_one_error_line(result, 8)
    assert message == "kmc: error: internal error: RuntimeError: boom (run again with --debug and report it)\n"
    assert broken_renderer not in result.stderr


def test_internal_error_with_debug_shows_traceback_but_no_locals(config: Path, broken_renderer: str) -> None:
    result = kmc("--debug", "profile", "show", "dc1", expect=8)
    assert "Traceback (most recent call last)" in result.stderr and "RuntimeError: boom" in result.stderr
    assert broken_renderer not in result.stderr
    assert result.stderr.splitlines()[-1] == \
        "kmc: error: internal error: RuntimeError: boom (report it, with the traceback above)"


def test_installed_entry_point_never_shows_locals(tmp_path: Path) -> None:
    """The console script and `python -m kmc` go through main(), not typer's exception hook."""
    env = dict(os.environ, KMC_CONFIG=str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n')
    code = ("import kmc.output, sys\n"
            "def document(self, data, title=None):\n"
            "    password = 'subprocess-local-secret'\n"
            "    raise RuntimeError('boom')\n"
            "kmc.output.Renderer.document = document\n"
            "from kmc.cli.main import run\n"
            "sys.argv = ['kmc', 'profile', 'show', 'dc1']\n"
            "run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 8
    assert proc.stderr == "kmc: error: internal error: RuntimeError: boom (run again with --debug and report it)\n"
    assert "subprocess-local-secret" not in proc.stderr


# --- a missing ACL: exit 5, one line naming what was denied -------------------------------------------------


def limited_config(path: Path, broker: SaslBroker, *extra: str) -> None:
    path.write_text(f'[clusters.limited]\nbootstrap = ["{broker.address}"]\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                    f'sasl_mechanism = "PLAIN"\nusername = "{LIMITED_USER}"\npassword = "{LIMITED_PASSWORD}"\n'
                    + "".join(extra))


def super_admin(broker: SaslBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.address, "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanism": "PLAIN", "sasl.username": SASL_USER, "sasl.password": SASL_PASSWORD})


def grant(broker: SaslBroker, resource_type: ResourceType, name: str, *operations: AclOperation,
          pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> None:
    bindings = [AclBinding(resource_type, name, pattern, f"User:{LIMITED_USER}", "*", operation,
                           AclPermissionType.ALLOW) for operation in operations]
    admin = super_admin(broker)  # kept: a collected AdminClient cancels its futures
    for future in admin.create_acls(bindings).values():
        future.result(30)


def denied(result: Result) -> str:
    """The one error line of a run that a missing ACL stopped (info lines before it are fine)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("kmc: error:")]
    assert result.code == 5 and len(errors) == 1 and "Traceback" not in result.stderr, result
    return errors[0]


@pytest.mark.kafka
def test_a_missing_acl_is_one_line_naming_it(config: Path, sasl_broker: SaslBroker,  # noqa: ANN001
                                             src_cluster, dst_cluster) -> None:
    topic = f"acl-{uuid.uuid4().hex[:6]}"
    admin = super_admin(sasl_broker)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    writer = Producer({"bootstrap.servers": sasl_broker.address, "security.protocol": "SASL_PLAINTEXT",
                       "sasl.mechanism": "PLAIN", "sasl.username": SASL_USER, "sasl.password": SASL_PASSWORD})
    for index in range(10):
        writer.produce(topic, value=b"v%d" % index)
    assert writer.flush(30) == 0
    limited_config(config, sasl_broker)
    grant(sasl_broker, ResourceType.TOPIC, topic, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS)
    assert topic in kmc("topics", "limited").stdout  # it may see the topic, not read it
    line = denied(kmc("mirror", "limited", "dst", "--topics", topic, "--once", expect=None))
    assert line == (f"kmc: error: limited: not authorized: READ on topic {topic} (to copy its records) (grant it: "
                    f"kafka-acls --add --allow-principal User:{LIMITED_USER} --operation Read --topic {topic})")
    line = denied(kmc("diff", "limited", "dst", "--topics", topic, "--data", expect=None))
    assert f"limited: not authorized: READ on topic {topic} (to compare its records (--data))" in line
    line = denied(kmc("mirror", "src", "limited", "--topics", "kmc-acl-none", "--once", expect=None))
    assert line.startswith("kmc: error: limited: not authorized: CREATE, DESCRIBE, READ and WRITE on topic "
                           "kmc.checkpoints (to create kmc's checkpoint topic, find the checkpoints, ")

    grant(sasl_broker, ResourceType.TOPIC, "kmc.checkpoints", AclOperation.ALL)
    grant(sasl_broker, ResourceType.TOPIC, "kmc.provenance", AclOperation.ALL)
    grant(sasl_broker, ResourceType.TOPIC, topic, AclOperation.READ)
    assert kmc("mirror", "limited", "dst", "--topics", topic, "--once", "-o", "json").json()["records"] == 10
    line = denied(kmc("mirror", "limited", "limited", "--topics", topic, "--rename", "{topic}-copy", "--once",
                      expect=None))
    assert line.startswith(f"kmc: error: limited: not authorized: CREATE, DESCRIBE and WRITE on topic {topic}-copy "
                           "(to create the mirrored topic, list it, write the records)")
    assert line.endswith(f"--operation Create --operation Write --topic {topic}-copy)")  # WRITE includes DESCRIBE
    line = denied(kmc("mirror", "src", "limited", "--topics", "kmc-acl-none", "--once", "--exactly-once",
                      expect=None))
    assert "not authorized: DESCRIBE and WRITE on transactional ids prefixed kmc/" in line
    assert "--transactional-id kmc/ --resource-pattern-type prefixed" in line
    # the ACL the hint names is the one that is needed
    grant(sasl_broker, ResourceType.TRANSACTIONAL_ID, "kmc/", AclOperation.WRITE, AclOperation.DESCRIBE,
          pattern=ResourcePatternType.PREFIXED)
    kmc("mirror", "src", "limited", "--topics", "kmc-acl-none", "--once", "--exactly-once")
