"""One test per assumption kmc makes about the internals of kafka-python (kmc/_kafka_internals.py), CPython's
regular-expression parser (kmc/_re_internals.py) and typer (kmc/cli/_typer_internals.py). Each test is named
after the assumption it pins, as the modules' docstrings name them: an upgrade that breaks one fails here,
by name, before it fails somewhere less obvious."""

from __future__ import annotations

import inspect
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka.errors as kafka_errors
import pytest
import typer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector

from kmc import _kafka_internals as kafka_internals
from kmc import _re_internals as sre
from kmc.cli import _typer_internals as typer_internals
from kmc.client import client_config
from kmc.errors import UsageError
from kmc.profiles import Cluster, Secret
from tests.helpers import bootstrap, create_topic

CLIENT_CLASSES = (KafkaAdminClient, KafkaConsumer, KafkaProducer)

# ------------------------------------------------------------------------------------ kafka-python


@pytest.mark.parametrize("client_class", CLIENT_CLASSES, ids=lambda cls: cls.__name__)
def test_kafka_default_config(client_class: type) -> None:
    settings = kafka_internals.known_settings(client_class)
    assert {"bootstrap_servers", "security_protocol", "sasl_plain_password", "request_timeout_ms"} <= settings


@pytest.mark.parametrize("client_class", CLIENT_CLASSES, ids=lambda cls: cls.__name__)
def test_kafka_client_hook_is_a_setting(client_class: type) -> None:
    assert "kafka_client" in kafka_internals.known_settings(client_class)


def test_kafka_net_client_parts() -> None:
    assert {"net", "manager"} <= set(inspect.signature(KafkaNetClient.__init__).parameters)
    assert "timeout_ms" in inspect.signature(NetworkSelector.stop).parameters
    assert "node_id" in inspect.signature(KafkaConnectionManager.get_connection).parameters


@pytest.mark.kafka
def test_kafka_client_hook_and_manager_get_connection(src_cluster) -> None:  # noqa: ANN001
    """A consumer built with ``kafka_client=watch.client`` bootstraps through kmc's connection manager, whose
    connections have what the watch reads."""
    watch = kafka_internals.ConnectionWatch()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(src_cluster), kafka_client=watch.client)
    try:
        consumer.topics()  # a request to a broker: through get_connection
        manager = consumer._client._manager  # noqa: SLF001 - checking the hook took
        assert isinstance(manager, kafka_internals._WatchingManager)  # noqa: SLF001
        connections = list(manager._watched)  # noqa: SLF001 - get_connection ran for the bootstrap
        assert connections
        for connection in connections:
            assert callable(connection.close_future.add_errback) and callable(connection.init_future.failed)
            assert connection.sasl_enabled is False and connection.broker_version_data is not None
        assert watch.failure is None
    finally:
        consumer.close()


@pytest.mark.kafka
def test_kafka_admin_manager_send_and_request_api_key(src_cluster) -> None:  # noqa: ANN001
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(src_cluster))
    try:
        seen: list[str] = []
        assert kafka_internals.on_admin_request(admin, seen.append)
        admin.describe_cluster()
        admin.list_topics()
        assert "DescribeCluster" in seen and "Metadata" in seen
    finally:
        admin.close()


def test_kafka_admin_controller_id(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    """A cached controller id that names no broker fails every controller request; None makes the admin
    look the controller up again (kmc.client's patient admin relies on both)."""
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap(src_cluster))
    try:
        admin.create_topics([NewTopic(f"{topic_name}-a", 1, 1)])
        assert isinstance(admin._controller_id, int) and admin._controller_id >= 0
        admin._controller_id = 999  # a broker that left the cluster
        with pytest.raises(kafka_errors.UnknownBrokerIdError):
            admin.create_topics([NewTopic(f"{topic_name}-b", 1, 1)])
        kafka_internals.forget_controller(admin)
        admin.create_topics([NewTopic(f"{topic_name}-b", 1, 1)])
    finally:
        admin.close()


def test_a_session_asks_for_the_controller_again_when_the_cached_one_is_gone(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    """Found by `make chaos`: a mirror restarted while a target broker was down exited 8 with "create topics:
    UnknownBrokerIdError: 2": kafka-python kept sending CreateTopics to the dead controller it had cached."""
    from kafka.admin import NewTopic

    from kmc.client import KafkaSession
    from kmc.profiles import Cluster

    with KafkaSession(Cluster(name="src", bootstrap=tuple(src_cluster.bootstrap)), timeout=10) as session:
        session.admin.create_topics([NewTopic(f"{topic_name}-a", 1, 1)])
        session.admin._admin._controller_id = 999  # the controller it had cached has gone
        session.admin.create_topics([NewTopic(f"{topic_name}-b", 1, 1)])
        assert {f"{topic_name}-a", f"{topic_name}-b"} <= set(session.admin.list_topics())


# the abandoned client's coroutines fail when collected: kmc.client.abandon_connections keeps that quiet for users
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("client_class", CLIENT_CLASSES, ids=lambda cls: cls.__name__)
def test_kafka_abandon_bootstrap(client_class: type) -> None:
    """A client bootstrapping from a broker that accepts and never answers gives up as soon as its watch is
    cancelled from another thread (the admin client and consumer on their IO thread, the producer on the
    caller's), long before its bootstrap timeout; and requests after that raise instead of running a loop."""
    import socket
    import threading
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        watch = kafka_internals.ConnectionWatch()
        failure: list[BaseException] = []

        def construct() -> None:
            try:
                client_class(bootstrap_servers=f"127.0.0.1:{silent.getsockname()[1]}", bootstrap_timeout_ms=60000,
                             kafka_client=watch.client)
            except BaseException as exc:  # noqa: BLE001 - what the test looks at
                failure.append(exc)

        thread = threading.Thread(target=construct, daemon=True)
        thread.start()
        connection, _ = silent.accept()  # it is bootstrapping now
        with connection:
            started = time.monotonic()
            watch.cancel()
            thread.join(10)
        assert not thread.is_alive() and time.monotonic() - started < 5
        assert failure and isinstance(failure[0], (kafka_errors.KafkaError, RuntimeError)), failure
        assert watch.cancelled and not watch.connected()


def test_kafka_broker_api_versions() -> None:
    newest = kafka_internals.NEWEST_KNOWN_BROKER_VERSION
    assert isinstance(newest, tuple) and all(isinstance(part, int) for part in newest) and newest >= (4, 0)


@pytest.mark.kafka
def test_kafka_broker_version_data(src_cluster) -> None:  # noqa: ANN001
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(src_cluster))
    try:
        broker_id = admin.describe_cluster()["brokers"][0]["broker_id"]
        version = kafka_internals.broker_version(admin, broker_id)
        # the sandbox runs Kafka 4.4; kafka-python tells versions apart up to its newest known one
        assert version == min((4, 4), kafka_internals.NEWEST_KNOWN_BROKER_VERSION)
    finally:
        admin.close()


@pytest.mark.kafka
def test_kafka_client_sensors(src_cluster, topic_name) -> None:  # noqa: ANN001
    """A producer's ``request-latency`` and a consumer's ``fetch-latency`` sensors hand every round trip (ms) to
    a stat added through ``observe_sensor``, hooked before the first request or after."""
    create_topic(src_cluster, topic_name)
    requests: list[float] = []
    fetches: list[float] = []
    producer = KafkaProducer(bootstrap_servers=bootstrap(src_cluster))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(src_cluster), fetch_max_wait_ms=50)
    try:
        assert kafka_internals.observe_sensor(producer, "request-latency", requests.append)
        assert kafka_internals.observe_sensor(consumer, "fetch-latency", fetches.append)
        producer.send(topic_name, b"x").get(30)
        consumer.assign([TopicPartition(topic_name, 0)])
        consumer.seek(TopicPartition(topic_name, 0), 0)
        assert sum(len(records) for records in consumer.poll(timeout_ms=10_000).values()) == 1
        assert requests and all(0 <= value < 30_000 for value in requests)
        assert fetches and all(0 <= value < 30_000 for value in fetches)
    finally:
        producer.close()
        consumer.close()
    unmeasured = KafkaProducer(bootstrap_servers=bootstrap(src_cluster), metrics_enabled=False)
    try:
        assert not kafka_internals.observe_sensor(unmeasured, "request-latency", requests.append)
    finally:
        unmeasured.close()


@pytest.mark.parametrize("mode", ["once", "follow"])
def test_kafka_python_metrics_only_where_kmc_reads_them(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                        mode: str, monkeypatch) -> None:  # noqa: ANN001
    """kafka-python's sensors cost its network threads about a tenth of a copy's CPU seconds: a session's
    clients go without them, and the engine asks for them (the latencies the service serves) in --follow
    only. The run's copy is checked too: nothing the engine needs went with them."""
    from kmc.client import KafkaSession
    from kmc.mirror.engine import run_mirror
    from kmc.mirror.plan import MirrorSpec
    from kmc.profiles import adhoc_cluster
    from tests.helpers import count, numbered, produce

    create_topic(src_cluster, topic_name, 2)
    produce(src_cluster, topic_name, numbered(500, 2))
    measured: list[tuple[str, bool]] = []
    for kind in ("consumer", "producer"):
        made = getattr(KafkaSession, kind)

        def recording(session, _made=made, _kind=kind, **settings):  # noqa: ANN001, ANN202
            client = _made(session, **settings)
            measured.append((_kind, client._metrics is not None))  # noqa: SLF001
            return client

        monkeypatch.setattr(KafkaSession, kind, recording)
    stop = threading.Event()
    if mode == "follow":
        threading.Timer(8, stop.set).start()
    run_mirror(adhoc_cluster(bootstrap(src_cluster)), adhoc_cluster(bootstrap(dst_cluster)),
               MirrorSpec(topics=(topic_name,)), mode=mode, stop_event=stop)
    assert count(dst_cluster, topic_name) == 500
    # the engine's consumer and producer first; the checkpoints' producer, the offsets' consumer... after
    assert ("consumer", mode == "follow") in measured and ("producer", mode == "follow") in measured
    assert sum(on for _, on in measured) == (2 if mode == "follow" else 0), measured


# ---------------------------------------------------------------------- kafka-python: what the watch diagnoses

TIMEOUT = 3.0


class RecordingWatch(kafka_internals.ConnectionWatch):
    """A ConnectionWatch that keeps what it was told about each closed connection, and diagnoses nothing."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self.closed: list[dict[str, Any]] = []

    def note(self, connection: Any, error: BaseException, address: tuple[str, int] | None, manager: Any) -> None:
        self.closed.append({"error": error, "address": address, "init_failed": connection.init_future.failed(),
                            "answered": connection.broker_version_data is not None,
                            "sasl": connection.sasl_enabled, "bootstrapped": manager.bootstrapped})


def settings(cluster: Cluster, client_class: Any = KafkaAdminClient) -> dict[str, Any]:
    config = client_config(cluster, TIMEOUT)
    return {key: value for key, value in config.items() if key in client_class.DEFAULT_CONFIG}


def construct(cluster: Cluster, watch: kafka_internals.ConnectionWatch, client_class: Any = KafkaAdminClient) -> Any:
    """Build a client with the watch as its ``kafka_client``; None when construction failed."""
    try:
        return client_class(**settings(cluster, client_class), kafka_client=watch.client)
    except Exception:  # noqa: BLE001 - the tests look at what the watch saw
        watch.stop_io()
        return None


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A local TLS endpoint (not Kafka) with a self-signed certificate for 127.0.0.1: the port and its cert."""
    directory = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=hooks",
                    "-addext", "subjectAltName=IP:127.0.0.1"], cwd=directory, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = server.accept()
            except TimeoutError:
                continue
            with raw:
                raw.settimeout(2)
                try:
                    with context.wrap_socket(raw, server_side=True) as wrapped:
                        wrapped.recv(4)
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], directory / "cert.pem"
    stop.set()
    thread.join(5)
    server.close()


def cluster_at(address: str, **settings: Any) -> Cluster:
    return Cluster(name="hooks", bootstrap=(address,), **settings)


def test_kafka_manager_get_connection_closed_before_set_up(tls_server) -> None:  # noqa: ANN001
    port, _ = tls_server
    watch = RecordingWatch(cluster_at(f"127.0.0.1:{port}"))  # plaintext Kafka against a TLS endpoint
    assert construct(watch.cluster, watch) is None
    assert watch.closed, "close_future never failed"
    first = watch.closed[0]
    assert first["init_failed"] and not first["answered"] and not first["sasl"]


@pytest.mark.kafka
def test_kafka_manager_get_connection_answered_then_closed_during_sasl(src_cluster) -> None:  # noqa: ANN001
    watch = RecordingWatch(cluster_at(src_cluster.bootstrap[0], security_protocol="SASL_PLAINTEXT",
                                      sasl_mechanism="PLAIN", username="u", password=Secret("p")))
    assert construct(watch.cluster, watch) is None  # a plaintext listener refuses the SASL handshake
    assert any(closed["answered"] and closed["sasl"] and closed["init_failed"] for closed in watch.closed)


@pytest.mark.kafka
def test_kafka_bootstrap_stops_on_get_connection_error(src_cluster) -> None:  # noqa: ANN001
    watch = kafka_internals.ConnectionWatch(cluster_at(src_cluster.bootstrap[0]))
    sentinel = kafka_errors.SaslAuthenticationFailedError("sentinel")
    watch.fatal = sentinel
    started = time.monotonic()
    with pytest.raises(kafka_errors.SaslAuthenticationFailedError) as raised:
        KafkaAdminClient(**settings(watch.cluster), kafka_client=watch.client)
    assert raised.value is sentinel and time.monotonic() - started < TIMEOUT / 2
    watch.stop_io()
    healthy = kafka_internals.ConnectionWatch(cluster_at(src_cluster.bootstrap[0]))
    client = KafkaAdminClient(**settings(healthy.cluster), kafka_client=healthy.client)
    try:
        assert healthy.manager.bootstrapped is True
    finally:
        client.close()


def test_kafka_handshake_error_context(tls_server, tmp_path: Path) -> None:  # noqa: ANN001
    port, _ = tls_server
    other = tmp_path / "other.pem"  # a CA that did not sign the endpoint's certificate
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-days", "2", "-subj", "/CN=other"],
                   check=True, capture_output=True)
    watch = RecordingWatch(cluster_at(f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=str(other)))
    assert construct(watch.cluster, watch) is None
    error = watch.closed[0]["error"]
    assert isinstance(error, kafka_errors.KafkaConnectionError)
    assert isinstance(error.__context__, ssl.SSLCertVerificationError)


def test_kafka_manager_broker_metadata(tls_server) -> None:  # noqa: ANN001
    port, _ = tls_server
    watch = RecordingWatch(cluster_at(f"127.0.0.1:{port}"))
    construct(watch.cluster, watch)
    assert watch.closed[0]["address"] == ("127.0.0.1", port)


def test_kafka_net_client_parts_stop_ends_the_io_thread(tls_server) -> None:  # noqa: ANN001
    port, _ = tls_server
    before = {thread.ident for thread in threading.enumerate()}
    watch = RecordingWatch(cluster_at(f"127.0.0.1:{port}"))
    assert construct(watch.cluster, watch) is None  # construct() stops the selector of a client that failed
    deadline = time.monotonic() + 5
    while [thread for thread in threading.enumerate()
           if thread.ident not in before and thread.name.startswith("kafka-io")]:
        assert time.monotonic() < deadline, "the IO thread is still running"
        time.sleep(0.05)

def test_kafka_group_coordinator_and_describe_group_raw(src_cluster, topic_name) -> None:  # noqa: ANN001
    """``group_coordinator``: a BaseCoordinator subclass with a protocol of its own joins a group; the leader
    assigns from every member's metadata; a second member joining makes the first need to rejoin; the
    heartbeat's receive time moves; close() leaves. ``describe_group_raw``: members with metadata bytes."""
    settings = {key: value for key, value in client_config(Cluster("src", (bootstrap(src_cluster),))).items()
                if key in kafka_internals.known_settings(KafkaConsumer)}
    seen: dict[str, dict[str, bytes]] = {}
    joined: dict[str, tuple[int, str, bytes]] = {}
    members = []
    for name in ("a", "b"):
        client, _ = kafka_internals.group_client(settings)

        def assign(metadata: dict[str, bytes], name: str = name) -> dict[str, bytes]:
            seen[name] = metadata
            return {member_id: data.upper() for member_id, data in metadata.items()}

        def on_joined(generation: int, member_id: str, data: bytes, name: str = name) -> None:
            joined[name] = (generation, member_id, data)

        members.append((client, kafka_internals.GroupCoordinator(
            client, "kmc-test", "p1", lambda name=name: f"meta-{name}".encode(), assign, on_joined,
            group_id=topic_name, session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=20000)))
    (client_a, first), (client_b, second) = members
    try:
        assert first.ensure_active_group(timeout_ms=20000) and not first.need_rejoin()
        assert joined["a"][2] == b"META-A" and seen["a"] == {joined["a"][1]: b"meta-a"}
        assert first.current() == joined["a"][:2] and not first.generation_lost()
        joining = threading.Thread(target=second.ensure_active_group, kwargs={"timeout_ms": 20000})
        joining.start()
        deadline = time.monotonic() + 15
        while not first.need_rejoin():  # the heartbeat learns of the rebalance
            first.poll_heartbeat()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert first.heard_within(5) and not first.heard_within(-1)
        # an answer read late (after a pause: the request went out 60 s ago) is not a recent hearing
        first.heartbeat.last_reset = first.heartbeat.last_send = time.monotonic() - 60
        first.heartbeat.received_heartbeat()
        assert first.heartbeat.last_receive > time.monotonic() - 1 and not first.heard_within(30)
        assert first.answered_sent == first.heartbeat.last_send
        assert first.ensure_active_group(timeout_ms=20000)
        joining.join(20)
        assert joined["a"][0] == joined["b"][0] > 1  # one new generation for both
        leader = next(name for name in ("a", "b") if seen.get(name) and len(seen[name]) == 2)
        assert sorted(seen[leader].values()) == [b"meta-a", b"meta-b"]
        admin = KafkaAdminClient(**settings)
        try:
            described = kafka_internals.describe_group_raw(admin, topic_name)
        finally:
            admin.close()
        assert described["protocol_type"] == "kmc-test" and described["protocol"] == "p1"
        assert sorted(member["metadata"] for member in described["members"]) == [b"meta-a", b"meta-b"]
        assert sorted(member["assignment"] for member in described["members"]) == [b"META-A", b"META-B"]
    finally:
        for client, coordinator in members:
            coordinator.close(timeout_ms=5000)
            kafka_internals.close_group_client(client)


# ------------------------------------------------------------------------------------ CPython's re parser



def test_re_parse_items() -> None:
    items = sre.parse("ab")
    assert [(op, argument) for op, argument in items] == [(sre.LITERAL, ord("a")), (sre.LITERAL, ord("b"))]
    assert items[0][0] is sre.LITERAL
    with pytest.raises(re.error):
        sre.parse("(")


def test_re_literal() -> None:
    [(op, argument)] = sre.parse("[^x]")  # a negated one-character class is NOT_LITERAL
    assert op is sre.NOT_LITERAL and argument == ord("x")
    [(op, _)] = sre.parse(".")
    assert op is sre.ANY


def test_re_at() -> None:
    assert [op for op, _ in sre.parse(r"^a\b$")] == [sre.AT, sre.LITERAL, sre.AT, sre.AT]


def test_re_subpattern() -> None:
    [(op, argument)] = sre.parse("(ab)")
    assert op is sre.SUBPATTERN
    assert [(inner, value) for inner, value in argument[-1]] == [(sre.LITERAL, ord("a")), (sre.LITERAL, ord("b"))]


def test_re_branch() -> None:
    [(op, argument)] = sre.parse("ab|cd")
    assert op is sre.BRANCH and argument[0] is None
    assert [[value for _, value in branch] for branch in argument[1]] == [[ord("a"), ord("b")], [ord("c"), ord("d")]]


def test_re_repeat() -> None:
    [(op, (low, high, items))] = sre.parse("x{2,3}")
    assert op is sre.MAX_REPEAT and (low, high) == (2, 3) and list(items) == [(sre.LITERAL, ord("x"))]
    [(op, (low, high, _))] = sre.parse("x*")
    assert op is sre.MAX_REPEAT and low == 0 and high is sre.MAXREPEAT
    [(op, (low, high, _))] = sre.parse("x+?")
    assert op is sre.MIN_REPEAT and low == 1 and high is sre.MAXREPEAT


def test_re_class() -> None:
    [(op, items)] = sre.parse(r"[a0-9\d]")
    assert op is sre.IN
    assert list(items) == [(sre.LITERAL, ord("a")), (sre.RANGE, (ord("0"), ord("9"))),
                           (sre.CATEGORY, sre.CATEGORY_DIGIT)]
    [(op, items)] = sre.parse(r"[^ab\w]")
    assert op is sre.IN and items[0] == (sre.NEGATE, None) and (sre.CATEGORY, sre.CATEGORY_WORD) in list(items)


# ------------------------------------------------------------------------------------ typer


def test_typer_click_exceptions() -> None:
    app = typer.Typer()

    @app.command()
    def only(count: int = typer.Option(1, "--count")) -> None:  # noqa: ARG001
        raise typer.Exit(3)

    command = typer.main.get_command(app)
    with pytest.raises(typer_internals.UsageError):
        command.main(["--count", "x"], standalone_mode=False)
    assert command.main([], standalone_mode=False) == 3  # an Exit's status comes back (kmc main returns it)
    assert typer.Exit in typer_internals.EXIT_EXCEPTIONS
    assert typer.Abort in typer_internals.ABORT_EXCEPTIONS
    assert issubclass(typer_internals.NoArgsIsHelpError, typer_internals.UsageError)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_typer_completion_script(shell: str) -> None:
    script = typer_internals.completion_script("kmc", "_KMC_COMPLETE", shell)
    assert "_KMC_COMPLETE" in script and "kmc" in script


def test_typer_completion_init() -> None:
    from typer._click.shell_completion import get_completion_class

    typer_internals.init_completion()
    for shell in ("bash", "zsh", "fish"):
        assert get_completion_class(shell).__module__ == "typer._completion_classes"


def test_typer_signature() -> None:
    """A command whose parameter stands for a group gets the group's options from ``__signature__``, and its
    function is called with the collected group."""
    seen: dict[str, Any] = {}

    def command(name: str = typer.Argument(...), group: Any = None, *, last: bool = typer.Option(False, "--last")
                ) -> None:
        seen.update(name=name, group=group, last=last)

    parameters = [inspect.Parameter("size", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                                    default=typer.Option(1, "--size")),
                  inspect.Parameter("dry", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                    default=typer.Option(False, "--dry"))]
    app = typer.Typer()
    app.command()(typer_internals.with_parameters(command, "group", parameters, lambda size, dry: (size, dry)))
    typer.main.get_command(app).main(["n", "--size", "5", "--dry", "--last"], standalone_mode=False)
    assert seen == {"name": "n", "group": (5, True), "last": True}
    with pytest.raises(typer_internals.UsageError):
        typer.main.get_command(app).main(["n", "--group", "x"], standalone_mode=False)


def test_the_run_options_group_rejects_once_with_follow() -> None:
    from kmc.cli._options import RunOptions

    with pytest.raises(UsageError, match="give --once or --follow, not both"):
        RunOptions.collect(True, True, "earliest", None, False, 30.0, 1.0, "lz4", 300.0, 10.0)


def test_typer_group_dispatch() -> None:
    """A group made by default_command_group runs its default for anything but its other subcommands' names,
    as the group itself (usage and errors name `app`, not `app run`), and helps with the default's help and
    the other subcommands; completion resolves to the default."""
    seen: list[tuple[str, Any]] = []
    app = typer.Typer(cls=typer_internals.default_command_group("run"), rich_markup_mode=None)

    @app.command("run", hidden=True)
    def run(name: str = typer.Argument(..., metavar="NAME"), loud: bool = typer.Option(False, "--loud")) -> None:
        """Run a thing."""
        seen.append(("run", (name, loud)))

    @app.command("status")
    def status(name: str = typer.Argument(...)) -> None:
        """Say how a thing is."""
        seen.append(("status", name))

    group = typer.main.get_command(app)
    group.main(["x", "--loud"], prog_name="app", standalone_mode=False)
    group.main(["status", "y"], prog_name="app", standalone_mode=False)
    group.main(["run", "status"], prog_name="app", standalone_mode=False)  # a thing named like a subcommand
    assert seen == [("run", ("x", True)), ("status", "y"), ("run", ("status", False))]
    with pytest.raises(typer_internals.UsageError) as missing:
        group.main([], prog_name="app", standalone_mode=False)
    assert missing.value.ctx.command_path == "app"
    ctx = group.make_context("app", [], resilient_parsing=True)
    text = group.get_help(ctx)
    # (NAME bare when kmc's plain help style is installed, as it is once kmc.cli.main was imported)
    assert "Usage: app [OPTIONS] {NAME}" in text or "Usage: app [OPTIONS] NAME" in text
    assert "Run a thing." in text and "status" in text and "--loud" in text
    assert group.resolve_command(ctx, ["x"])[0] == "run" and group.resolve_command(ctx, ["status"])[0] == "status"


def test_transactional_request_wrapper() -> None:
    """kafka-python's words for a transactional request that failed client-side (a request timeout), which
    kmc reads as transient: found in its source, so a release that rewords it fails here."""
    import inspect

    from kafka.producer import transaction_manager

    from kmc._kafka_internals import transient_transactional_failure

    assert "Could not execute transactional request for unknown reasons: %s" in inspect.getsource(transaction_manager)
    wrapped = kafka_errors.KafkaError("Could not execute transactional request for unknown reasons: "
                                      "[Error 7] RequestTimedOutError: Request timed out after 7499 ms")
    assert transient_transactional_failure(wrapped)
    assert not transient_transactional_failure(kafka_errors.KafkaError("Could not execute transactional request "
                                                                        "for unknown reasons: RuntimeError"))
    assert not transient_transactional_failure(kafka_errors.ProducerFencedError())


def test_a_fenced_producer_names_its_fence_behind_the_bare_error(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    """kafka-python refuses a commit of a fenced transactional producer with a bare KafkaError (only the
    text names the fence); producer_hooks.transaction_error finds the ProducerFencedError behind it, so
    the engine treats it as fatal and never starts a producer with the fenced id again (undoing the fence)."""
    from kmc.mirror import producer_hooks

    create_topic(src_cluster, topic_name, 1)
    settings = {"bootstrap_servers": bootstrap(src_cluster), "transactional_id": f"kmc-test/{topic_name}"}
    zombie = KafkaProducer(**settings)
    zombie.init_transactions()
    zombie.begin_transaction()
    zombie.send(topic_name, b"before the fence").get(timeout=30)
    fence = KafkaProducer(**settings)
    try:
        fence.init_transactions()  # bumps the epoch: aborts the zombie's transaction, fences it
        with pytest.raises(kafka_errors.KafkaError):
            zombie.send(topic_name, b"after the fence").get(timeout=30)
        # (kafka-python first tries to bump its epoch, which the broker refuses as fenced)
        manager = producer_hooks.transaction_manager(zombie)
        deadline = time.monotonic() + 30
        while not manager.has_fatal_error():
            assert time.monotonic() < deadline, "the fenced producer never reached its fatal error state"
            time.sleep(0.05)
        with pytest.raises(kafka_errors.KafkaError) as refused:
            producer_hooks.commit_transaction(zombie, 30)
        assert type(refused.value) is kafka_errors.KafkaError  # the bare error, as kafka-python raises it
        assert isinstance(producer_hooks.transaction_error(zombie, refused.value), kafka_errors.ProducerFencedError)
        # in its fatal state any error is the fence (a flush's timeout, an earlier batch's error)
        fenced = producer_hooks.transaction_error(zombie, kafka_errors.KafkaTimeoutError("slow"))
        assert isinstance(fenced, kafka_errors.ProducerFencedError)
        other = kafka_errors.KafkaTimeoutError("slow")
        assert producer_hooks.transaction_error(fence, other) is other  # a healthy producer: as it is
    finally:
        zombie.close(timeout=0)
        fence.close(timeout=5)


def test_kafka_producer_close_raises(src_cluster, topic_name: str) -> None:  # noqa: ANN001
    """``producer_close_raises``: close(timeout) flushes first and raises while a batch is incomplete, before
    it stops the sender, so the producer lives on; close_producer stops it whatever it holds."""
    create_topic(src_cluster, topic_name, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap(src_cluster), linger_ms=60_000, batch_size=1 << 20)
    future = producer.send(topic_name, b"lingering", partition=0)
    producer._sender.wakeup()  # noqa: SLF001
    producer._accumulator.begin_flush()  # noqa: SLF001 - ...and keep it incomplete: pause the sender's drain
    producer._accumulator.muted.add(TopicPartition(topic_name, 0))  # noqa: SLF001
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        producer.close(timeout=0)
    assert producer._sender.is_alive() and producer._accumulator._incomplete.all()  # noqa: SLF001
    started = time.monotonic()
    kafka_internals.close_producer(producer, 0)
    assert time.monotonic() - started < 10
    assert not producer._sender.is_alive()  # noqa: SLF001
    assert future.is_done and future.exception is not None
