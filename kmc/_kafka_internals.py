"""Every use kmc makes of kafka-python's internals outside the copy engine, in one place.

kmc is pinned to kafka-python 3.0.x; each function here states the internal it relies on, and
tests/test_internals.py has a test per assumption that fails on a release that changes it. The copy
engine's own hooks (the fetcher's PartitionRecords, the accumulator's batches, the sender and the
transaction manager, in kmc/mirror/engine.py and kmc/mirror/batchpath.py) are listed in
docs/design-notes.md and join this module when the engine is next reshaped.

Assumptions, by name (the tests use the same names):

- ``kafka_client_hook``: KafkaAdminClient, KafkaConsumer and KafkaProducer take a ``kafka_client`` setting, a
  callable called with the client's settings that returns the KafkaNetClient they use.
- ``net_client_parts``: ``kafka.net.compat.KafkaNetClient(net=NetworkSelector, manager=KafkaConnectionManager,
  **configs)``; ``NetworkSelector(**configs)`` has ``stop(timeout_ms=...)``.
- ``abandon_bootstrap``: a client constructor waits on the Future that ``KafkaConnectionManager.bootstrap_async``
  returns; failing that Future on the loop (``NetworkSelector.call_soon_threadsafe``) makes the constructor
  raise at once; ``stop()`` fails every request waiting on the loop's thread, and a true ``_closed`` makes
  later requests raise ("NetworkSelector closed!") instead of running the loop on the caller's thread.
- ``manager_get_connection``: ``KafkaConnectionManager.get_connection(node_id, ...)`` returns the connection
  for every request; a connection has ``close_future`` (errbacks get the closing error), ``init_future``
  (``failed()``), ``sasl_enabled`` and ``broker_version_data`` (None until ApiVersions answered).
- ``bootstrap_stops_on_get_connection_error``: while the manager bootstraps, an exception other than
  NodeNotReadyError raised by ``get_connection`` ends the bootstrap and the client's constructor raises it;
  ``manager.bootstrapped`` is True once the bootstrap succeeded.
- ``handshake_error_context``: a failed TLS handshake closes the connection with a KafkaConnectionError
  whose ``__context__`` is the ssl.SSLError (kmc.tls.ssl_error_in also looks at its cause and arguments).
- ``manager_broker_metadata``: ``manager.cluster.broker_metadata(node_id)`` has the ``host`` and ``port`` of
  a node, bootstrap nodes included.
- ``producer_close_raises``: ``KafkaProducer.close(timeout)`` calls ``flush(timeout)`` first, which raises
  KafkaTimeoutError while a batch is incomplete, before the sender is stopped; ``producer._sender`` has
  ``force_close()`` (pending batches fail) and is a thread; ``producer._accumulator._incomplete.all()``.
- ``admin_manager_send``: every admin request goes through ``admin._manager.send(request, ...)``.
- ``admin_controller_id``: KafkaAdminClient sends controller requests (CreateTopics, CreatePartitions,
  DeleteTopics...) to the node id it caches in ``_controller_id``, looked up again only when that is None
  (or the broker answers NotController): a controller that died stays cached, every later request failing
  with UnknownBrokerIdError or a refused connection.
- ``request_api_key``: a request has ``API_KEY``, which ``kafka.protocol.api_key.ApiKey`` names.
- ``broker_api_versions``: ``kafka.protocol.broker_version_data.BROKER_API_VERSIONS`` is keyed by the version
  tuples kafka-python can tell apart.
- ``broker_version_data``: ``admin.get_broker_version_data(broker_id).broker_version`` is that broker's tuple.
- ``default_config``: each client class lists its settings in ``DEFAULT_CONFIG`` (unknown keys are errors).
- ``transactional_request_wrapper``: a transactional request (InitProducerId, AddPartitionsToTxn, EndTxn) that
  fails with a client-side exception other than a dropped connection (a request timeout) ends in a generic
  ``KafkaError("Could not execute transactional request for unknown reasons: <error>")``, which kafka-python
  treats as fatal for that producer although the cause was transient.
- ``client_sensors``: a KafkaConsumer or KafkaProducer keeps its ``kafka.metrics.Metrics`` in ``_metrics`` (None
  with ``metrics_enabled=False``); ``Metrics.sensor(name)`` gets or creates a sensor, and a stat added to it
  (``Sensor.add(metric_name, stat)``) has ``record(config, value, time_ms)`` called with every value recorded:
  ``request-latency`` (every request's round trip, ms; created with a client's first connection) and the
  consumer's ``fetch-latency`` (every fetch's round trip, ms).
- ``group_coordinator``: ``kafka.coordinator.base.BaseCoordinator(client, **configs)`` implements Kafka's
  group protocol (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup) for any protocol type: a
  subclass names it (``protocol_type()``), gives ``group_protocols()`` as ``[(name, metadata bytes)]``, and as
  the leader ``_perform_assignment(leader_id, protocol, members)`` (members with ``member_id`` and
  ``metadata`` bytes) returns ``{member_id: assignment bytes}``, all on the client's IO thread;
  ``await _on_join_complete_async(generation, member_id, protocol, assignment bytes)`` runs there too.
  ``ensure_coordinator_ready(timeout_ms)`` and ``ensure_active_group(timeout_ms)`` return False on timeout
  (a JoinGroup still in flight is awaited again by the next call); the heartbeat runs on the IO thread once
  joined, and a heartbeat answered REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION sets
  ``need_rejoin()`` (the latter two also reset ``_generation``, whose ``is_lost()`` is then true);
  ``poll_heartbeat()`` must be called more often than ``max_poll_interval_ms``; ``close(timeout_ms)`` sends
  LeaveGroup; ``heartbeat.last_receive`` and ``heartbeat.last_reset`` are ``time.monotonic()`` values.
  The client is a started ``KafkaNetClient`` (``_net.start()``, ``_manager.bootstrap(timeout_ms)``,
  ``_manager.broker_version``).
- ``describe_group_raw``: ``DescribeGroupsRequest(groups=[...], include_authorized_operations=False)`` sent with
  ``admin._manager.send(request, node_id=...)`` to the coordinator ``admin._find_coordinator_ids([group])``
  returns; its ``groups[0].members`` carry ``member_id``, ``client_host``, ``member_metadata`` and
  ``member_assignment`` as bytes (kafka-python's ``describe_groups`` decodes them as a consumer group's).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import kafka.errors as kafka_errors
from kafka.coordinator.base import BaseCoordinator
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.protocol.admin import DescribeGroupsRequest
from kafka.protocol.api_key import ApiKey
from kafka.protocol.broker_version_data import BROKER_API_VERSIONS

from kmc.profiles import Cluster
from kmc.tls import explain_close

# kafka-python infers a broker's version from the protocol versions it supports, and knows them up to
# this release: a newer broker looks exactly like it.
NEWEST_KNOWN_BROKER_VERSION: tuple[int, ...] = max(BROKER_API_VERSIONS)


_TRANSACTIONAL_WRAPPER = "Could not execute transactional request for unknown reasons: "
_TRANSIENT_CAUSES = ("RequestTimedOutError", "KafkaTimeoutError", "KafkaConnectionError", "NodeNotReadyError")


def transient_transactional_failure(error: BaseException | None) -> bool:
    """Whether ``error`` is kafka-python's generic wrapper of a transactional request that failed for a
    transient reason (``transactional_request_wrapper``): a new producer may succeed where this one gave up."""
    text = str(error) if isinstance(error, kafka_errors.KafkaError) else ""
    return _TRANSACTIONAL_WRAPPER in text and any(name in text for name in _TRANSIENT_CAUSES)


class _Forward:
    """A kafka-python stat that hands every value to a callback (and measures nothing itself)."""

    def __init__(self, callback: Callable[[float], None]) -> None:
        self._callback = callback

    def record(self, config: Any, value: float, time_ms: float) -> None:  # noqa: ARG002 - a stat's signature
        self._callback(value)

    def measure(self, config: Any, now: float) -> float:  # noqa: ARG002
        return 0.0


def observe_sensor(client: Any, sensor: str, callback: Callable[[float], None]) -> bool:
    """Call ``callback`` with every value ``client``'s sensor named ``sensor`` records (``client_sensors``),
    from whichever thread records it. False when the client keeps no metrics."""
    registry = getattr(client, "_metrics", None)
    if registry is None:
        return False
    registry.sensor(sensor).add(registry.metric_name(f"kmc-{sensor}-{id(callback):x}", "kmc"), _Forward(callback))
    return True


def known_settings(client_class: type) -> frozenset[str]:
    """The settings a kafka-python client class accepts (``default_config``)."""
    return frozenset(client_class.DEFAULT_CONFIG)


class ConnectionWatch:
    """Remembers why a client's connections closed while it bootstraps, and keeps its IO loop.

    kafka-python 3.0 retries a failing bootstrap connection until the bootstrap timeout, then raises a bare
    KafkaTimeoutError: a wrong password, an untrusted certificate or TLS spoken to a plaintext port (or the
    reverse) would all look like an unreachable cluster, after the whole ``--timeout``. Worse, the broker
    closes the connection right after its SASL error response, and kafka-python drops data that arrives
    together with the close, so the error often shows only as "socket disconnected". Passed as
    ``kafka_client=watch.client`` (``kafka_client_hook``), this supplies the connection manager, which
    notes why each connection closed (``manager_get_connection``): ``failure`` is an authentication failure
    seen (raised instead of the timeout it turns into); ``fatal`` an error that ends the bootstrap at once
    (``bootstrap_stops_on_get_connection_error``): one the broker reported, or what
    :func:`kmc.tls.explain_close` finds for ``cluster`` (a certificate problem, ``handshake_error_context``;
    TLS against plaintext, SASL settings that do not match the listener's: short probes of the node's
    address, ``manager_broker_metadata``). ``stop_io`` stops the IO thread of a client that failed to start
    (``net_client_parts``). ``cancel`` makes the client give up, from another thread (``abandon_bootstrap``):
    kmc.client calls it when a signal asks kmc to stop.
    """

    def __init__(self, cluster: Cluster | None = None) -> None:
        self.cluster = cluster  # None: no diagnosis, only authentication failures
        self.failure: Exception | None = None
        self.fatal: Exception | None = None
        self.manager: _WatchingManager | None = None
        self._net: NetworkSelector | None = None
        self._diagnosing: set[tuple[str, int]] = set()
        self._bootstrap: Any = None
        self.connecting = True  # until the client's constructor returns
        self.cancelled = False
        self._lock = threading.Lock()

    def client(self, **configs: Any) -> KafkaNetClient:
        with self._lock:
            if self.cancelled:
                raise kafka_errors.KafkaConnectionError("abandoned")
            self._net = NetworkSelector(**configs)
        self.manager = _WatchingManager(self._net, self, **configs)
        return KafkaNetClient(net=self._net, manager=self.manager, **configs)

    def connected(self) -> bool:
        """The constructor returned: no longer "connecting". False if it was cancelled first."""
        with self._lock:
            self.connecting = False
            return not self.cancelled

    def cancel(self, connecting_only: bool = False) -> None:
        """Make this client give up now, from any thread but its IO thread: its bootstrap fails, and its
        event loop stops, which fails every request waiting on it, and is marked closed, which fails any
        request made later. With ``connecting_only``, only if it is still connecting.

        Stopped, not closed: the thread that owns the client may be stopping or closing it at this very
        moment, and closing the selector under a running IO thread makes that thread die with EBADF."""
        with self._lock:
            if connecting_only and not self.connecting:
                return
            self.cancelled = True
            net, bootstrap = self._net, self._bootstrap
        if net is None:
            return
        if bootstrap is not None:  # a producer bootstraps on the caller's thread, with no IO thread to stop
            with contextlib.suppress(Exception):
                net.call_soon_threadsafe(lambda: bootstrap.is_done or bootstrap.failure(
                    kafka_errors.KafkaConnectionError("abandoned")))
        with contextlib.suppress(Exception):
            net.stop(timeout_ms=1000)  # returns at once when there is no IO thread (yet), or it is stopping
        net._closed = True

    def stop_io(self, timeout_ms: int = 1000) -> None:
        if self._net is not None:
            self._net.stop(timeout_ms=timeout_ms)

    def note(self, connection: Any, error: BaseException, address: tuple[str, int] | None = None,
             manager: Any = None) -> None:
        """A connection closed with ``error`` (on the client's IO thread: nothing here may block)."""
        if isinstance(error, (kafka_errors.SaslAuthenticationFailedError, kafka_errors.AuthorizationError)):
            self.failure = self.fatal = error  # the broker said so: retrying cannot help
            return
        answered = getattr(connection, "broker_version_data", None) is not None
        set_up = not connection.init_future.failed()
        if self.failure is None and getattr(connection, "sasl_enabled", False) and answered and not set_up:
            self.failure = kafka_errors.SaslAuthenticationFailedError(
                "the broker answered, then closed the connection during SASL authentication")
        # Worth a diagnosis, while the client bootstraps (later a finding would change nothing): a connection
        # that closed while being set up, or right after, when a SASL listener refuses a client that did not
        # authenticate. Not one that never connected (a broker down): no probe can tell more than that.
        if (self.cluster is None or address is None or self.fatal is not None or manager is None
                or manager.bootstrapped or _never_connected(error)):
            return
        with self._lock:  # one diagnosis per address at a time: a probe may take a second
            if address in self._diagnosing:
                return
            self._diagnosing.add(address)
        threading.Thread(target=self._diagnose, args=(address, error, answered, set_up), name="kmc-diagnosis",
                         daemon=True).start()

    def _diagnose(self, address: tuple[str, int], error: BaseException, answered: bool, set_up: bool) -> None:
        try:
            found = explain_close(self.cluster, address[0], address[1], error, answered=answered, set_up=set_up)
            if found is not None and self.fatal is None:
                self.fatal = found
        finally:
            with self._lock:
                self._diagnosing.discard(address)


def _never_connected(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is a refused, timed-out or unresolvable TCP connection."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionRefusedError, TimeoutError, socket.gaierror)):
            return True
        argument = current.args[0] if current.args else None
        current = argument if isinstance(argument, BaseException) else current.__cause__ or current.__context__
    return False


class _WatchingManager(KafkaConnectionManager):
    def __init__(self, net: NetworkSelector, watch: ConnectionWatch, **configs: Any) -> None:
        super().__init__(net, **configs)
        self._watch = watch
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()

    def bootstrap_async(self, *args: Any, **kwargs: Any) -> Any:
        future = super().bootstrap_async(*args, **kwargs)
        self._watch._bootstrap = future
        return future

    def get_connection(self, node_id: Any, **kwargs: Any) -> Any:
        if self._watch.fatal is not None and not self.bootstrapped:  # bootstrap_stops_on_get_connection_error
            raise self._watch.fatal
        connection = super().get_connection(node_id, **kwargs)
        if connection not in self._watched:  # once per connection: get_connection runs for every request
            self._watched.add(connection)
            node = self.cluster.broker_metadata(node_id)  # manager_broker_metadata
            address = (node.host, node.port) if node is not None else None
            connection.close_future.add_errback(self._watch.note, connection, address=address, manager=self)
        return connection


def on_admin_request(admin: Any, callback: Callable[[str], None]) -> bool:
    """Call ``callback(api name)`` for every request ``admin`` sends from now on (``admin_manager_send``,
    ``request_api_key``); the connection handshakes (ApiVersions, the bootstrap Metadata) are not seen.
    False, and nothing changed, when this kafka-python has no such path."""
    manager = getattr(admin, "_manager", None)
    send = getattr(manager, "send", None)
    if manager is None or not callable(send):
        return False

    def counting_send(request: Any, *args: Any, **kwargs: Any) -> Any:
        callback(api_name(request))
        return send(request, *args, **kwargs)

    manager.send = counting_send
    return True


def api_name(request: Any) -> str:
    """The Kafka API a request belongs to: ``Metadata``, ``ListOffsets``..."""
    try:
        return ApiKey(request.API_KEY).name
    except (AttributeError, ValueError):
        return type(request).__name__.removesuffix("Request")


def broker_version(admin: Any, broker_id: int) -> tuple[int, ...] | None:
    """The version kafka-python inferred from the broker's ApiVersions answer (``broker_version_data``);
    None when there is no connection to that broker."""
    try:
        data = admin.get_broker_version_data(broker_id)
    except kafka_errors.KafkaError:
        return None
    version = getattr(data, "broker_version", None)
    return tuple(version) if version else None


def close_producer(producer: Any, timeout: float) -> None:
    """Close a KafkaProducer whatever it still holds, never raising, never leaving its sender thread running.
    ``producer.close(timeout)`` first flushes and raises when a batch is still incomplete after ``timeout``
    (``timeout=0`` included), before it stops the sender: the producer would live on and keep sending
    (``producer_close_raises``). This waits up to ``timeout`` for the incomplete batches, then closes
    gracefully if none is left, else force-closes the sender (its pending batches fail) and joins it."""
    accumulator = producer._accumulator  # noqa: SLF001
    deadline = time.monotonic() + timeout
    while accumulator._incomplete.all() and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.05)
    if not accumulator._incomplete.all():  # noqa: SLF001
        with contextlib.suppress(Exception):
            producer.close(timeout=max(timeout, 1.0))
            return
    sender = producer._sender  # noqa: SLF001
    with contextlib.suppress(Exception):
        sender.force_close()
        sender.join(max(timeout, 5.0))
    with contextlib.suppress(Exception):
        producer.close(timeout=0)


def forget_controller(admin: Any) -> None:
    """Make a KafkaAdminClient look up the controller again at its next controller request
    (``admin_controller_id``): after a failure, the node it had cached may be the one that is down."""
    if getattr(admin, "_controller_id", None) is not None:
        admin._controller_id = None


# ------------------------------------------------------------------------------------------ groups


def group_client(settings: dict[str, Any]) -> tuple[KafkaNetClient, ConnectionWatch]:
    """A started, bootstrapped network client for a group member (``group_coordinator``), from a
    consumer's settings; raises kafka-python's errors (a timeout when no broker answers)."""
    watch = ConnectionWatch()
    client = watch.client(**settings)
    client._net.start()
    try:
        client._manager.bootstrap(settings.get("bootstrap_timeout_ms", 10000))
        if client._manager.broker_version is None:
            raise kafka_errors.KafkaTimeoutError("Unable to bootstrap from the group's cluster")
    except BaseException:
        close_group_client(client)
        if watch.failure is not None:
            raise watch.failure from None
        raise
    return client, watch


def close_group_client(client: KafkaNetClient) -> None:
    client.close()


class GroupCoordinator(BaseCoordinator):
    """One member of a Kafka group whose protocol is kmc's own (``group_coordinator``): Kafka's group
    coordinator runs the membership, this class supplies the metadata and, as the leader, the assignment.
    ``metadata()`` is asked at every join; ``assign({member_id: metadata})`` returns each member's
    assignment bytes; ``joined(generation, member_id, assignment)`` is told the result. The last two run
    on the client's IO thread: they must not block."""

    def __init__(self, client: KafkaNetClient, protocol_type: str, protocol: str,
                 metadata: Callable[[], bytes], assign: Callable[[dict[str, bytes]], dict[str, bytes]],
                 joined: Callable[[int, str, bytes], None], **configs: Any) -> None:
        configs.setdefault("api_version", client._manager.broker_version)
        super().__init__(client, **configs)
        self._protocol_type = protocol_type
        self._protocol = protocol
        self._metadata = metadata
        self._assign = assign
        self._joined = joined
        # The send time of the last heartbeat the coordinator answered: the moment it last knew this member
        # alive. (kafka-python keeps one heartbeat in flight, so at an answer ``last_send`` is its request's.)
        self.answered_sent = float("-inf")
        heartbeat, received = self.heartbeat, self.heartbeat.received_heartbeat

        def received_heartbeat() -> None:
            self.answered_sent = heartbeat.last_send
            received()

        heartbeat.received_heartbeat = received_heartbeat

    def protocol_type(self) -> str:
        return self._protocol_type

    def group_protocols(self) -> list[tuple[str, bytes]]:
        return [(self._protocol, self._metadata())]

    def _perform_assignment(self, leader_id: str, protocol: str, members: Any) -> dict[str, bytes]:  # noqa: ARG002
        return self._assign({member.member_id: bytes(member.metadata) for member in members})

    async def _on_join_complete_async(self, generation: int, member_id: str, protocol: str,  # noqa: ARG002
                                      member_assignment_bytes: bytes) -> None:
        self._joined(generation, member_id, bytes(member_assignment_bytes))

    def generation_lost(self) -> bool:
        """The coordinator no longer knows this member's generation (a heartbeat was answered
        UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION, or it never joined)."""
        with self._lock:
            return self._generation.is_lost()

    def heard_within(self, seconds: float) -> bool:
        """Whether a heartbeat the coordinator answered was sent (or the member joined) in the last
        ``seconds`` (on ``time.monotonic()``, which runs on while the process is stopped): a member paused
        for longer may have been replaced without knowing it yet. Measured from the answered heartbeat's
        send, not from its answer: an answer read after a pause (sent before it) says nothing of the pause."""
        return time.monotonic() - max(self.answered_sent, self.heartbeat.last_reset) <= seconds

    def current(self) -> tuple[int, str]:
        """(generation id, member id) as this member knows them."""
        with self._lock:
            return self._generation.generation_id, self._generation.member_id


def describe_group_raw(admin: Any, group_id: str) -> dict[str, Any]:
    """A group's state, protocol type and members, each member's metadata and assignment as bytes
    (``describe_group_raw``); ``{}`` when no broker knows the group."""
    manager = admin._manager

    async def describe() -> Any:
        coordinators = await admin._find_coordinator_ids([group_id])
        request = DescribeGroupsRequest(groups=[group_id], include_authorized_operations=False)
        return await manager.send(request, node_id=coordinators[group_id])

    response = manager.run(describe)
    group = response.groups[0]
    if group.error_code:
        raise kafka_errors.for_code(group.error_code)(group_id)
    return {
        "state": group.group_state, "protocol_type": group.protocol_type, "protocol": group.protocol_data,
        "members": [{"member_id": member.member_id, "client_host": member.client_host,
                     "metadata": bytes(member.member_metadata or b""),
                     "assignment": bytes(member.member_assignment or b"")} for member in group.members],
    }
