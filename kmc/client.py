"""The client layer: a Cluster profile becomes kafka-python clients with consistent timeouts.

Every kafka-python exception that reaches a user passes through :func:`translate_errors`, the one
place that maps them onto kmc's error tree. :class:`KafkaSession` owns every client it creates and
closes all of them on every exit path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from kmc._kafka_internals import (
    ConnectionWatch,
    close_producer,
    forget_controller,
    group_client,
    known_settings,
    transient_transactional_failure,
)
from kmc.errors import (
    AuthError,
    AuthorizationError,
    Cancelled,
    KafkaOperationError,
    KmcError,
    UnreachableError,
    describe_exception,
)
from kmc.profiles import Cluster, Secret
from kmc.tls import ssl_context, uses_tls

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
CLIENT_ID = "kmc"


def client_config(cluster: Cluster, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """kafka-python settings common to admin, consumer and producer clients."""
    timeout_ms = max(1000, int(timeout * 1000))
    config: dict[str, Any] = {
        "bootstrap_servers": list(cluster.bootstrap),
        "client_id": CLIENT_ID,
        "security_protocol": cluster.security_protocol,
        "request_timeout_ms": max(timeout_ms, 5000),
        "bootstrap_timeout_ms": timeout_ms,
        "reconnect_backoff_max_ms": 1000,
    }
    if cluster.sasl_mechanism:
        config["sasl_mechanism"] = cluster.sasl_mechanism
        config["sasl_plain_username"] = cluster.username
        config["sasl_plain_password"] = _hand_over(cluster.password) if cluster.password else None
    client = dict(cluster.client)
    if uses_tls(cluster):
        # kmc builds the SSL context (kmc.tls): file problems are config errors before any connection, and
        # the key's password never enters kafka-python's configuration
        if cluster.ssl_password is not None:
            _hand_over(cluster.ssl_password)  # only to be masked in logs, should it ever appear in one
        config["ssl_context"] = ssl_context(cluster, client)
        for key in ("ssl_crlfile", "ssl_ciphers"):
            client.pop(key, None)
    config.update(client)
    if isinstance(config.get("api_version"), str):  # "3.7" in the config file; kafka-python wants (3, 7)
        config["api_version"] = tuple(int(part) for part in config["api_version"].split("."))
    return config


def _only(config: dict[str, Any], client_class: type) -> dict[str, Any]:
    allowed = known_settings(client_class)
    return {key: value for key, value in config.items() if key in allowed}


@contextlib.contextmanager
def translate_errors(cluster: Cluster, action: str = "") -> Iterator[None]:
    """Turn kafka-python's exceptions into kmc errors that name the cluster."""
    what = f"{cluster.name}: {action}: " if action else f"{cluster.name}: "
    try:
        yield
    except KmcError:
        raise
    except kafka_errors.SaslAuthenticationFailedError as exc:
        raise AuthError(f"{what}authentication failed ({describe_exception(exc)})") from exc
    except kafka_errors.AuthorizationError as exc:
        raise authorization_error(what, exc) from exc
    except (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError,
            kafka_errors.NodeNotReadyError, kafka_errors.MetadataEmptyBrokerList) as exc:
        detail = describe_exception(exc)
        if "Unable to bootstrap" in str(exc):
            detail = ("connection refused: nothing listens there" if _all_refused(cluster.bootstrap)
                      else "no broker answered in time")
        raise UnreachableError(f"{what}cannot reach {','.join(cluster.bootstrap)}: {detail}") from exc
    except kafka_errors.KafkaError as exc:
        raise KafkaOperationError(f"{what}{describe_exception(exc)}") from exc
    except OSError as exc:  # e.g. an unreadable CA file
        raise UnreachableError(f"{what}{exc}") from exc


def _all_refused(servers: tuple[str, ...], timeout: float = 0.3) -> bool:
    """Whether every bootstrap address refuses a TCP connection (a wrong port, a broker that is not started):
    asked after a failed bootstrap, so that the error says so rather than "no broker answered in time"."""
    for server in servers[:3]:  # at most ~1 s, on a path that already waited --timeout
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return False
        except ConnectionRefusedError:
            continue
        except (OSError, ValueError):
            return False
    return bool(servers)


# What each kind of denial means in ACL terms (the hint of its one-line error).
_ACL_HINTS: dict[type, str] = {
    kafka_errors.TopicAuthorizationFailedError:
        "grant the profile's user an ACL on the topic: DESCRIBE and DESCRIBE_CONFIGS to list and plan, READ to "
        "copy or compare from it, WRITE (and CREATE where kmc creates it) to copy into it",
    kafka_errors.GroupAuthorizationFailedError: "grant the profile's user DESCRIBE on the consumer groups",
    kafka_errors.ClusterAuthorizationFailedError:
        "grant the profile's user the cluster ACL it needs (DESCRIBE; CREATE to create topics; "
        "IDEMPOTENT_WRITE for idempotent sends on brokers before 2.8)",
    kafka_errors.TransactionalIdAuthorizationFailedError:
        "grant the profile's user WRITE and DESCRIBE on transactional ids with the prefix kmc/ (--exactly-once)",
}


def authorization_error(what: str, exc: BaseException) -> AuthorizationError:
    """The kmc error for a broker's authorization failure, with the ACL to ask for."""
    name = type(exc).__name__.removesuffix("Error")
    return AuthorizationError(f"{what}not authorized ({name})",
                              hint=_ACL_HINTS.get(type(exc), "ask the cluster's operator for the missing ACL"))


def broker_error(what: str, error: type[BaseException], detail: str = "") -> KmcError:
    """The kmc error for an error code a broker returned for one resource (a topic it would not create,
    ...): an AuthorizationError (exit 5, with the ACL to ask for) or a KafkaOperationError."""
    if issubclass(error, kafka_errors.AuthorizationError):
        return authorization_error(what, error())
    return KafkaOperationError(f"{what}{error.__name__}: {detail}".rstrip(": "))


_SECRET_SETTING = re.compile(
    r"""(['"][a-z_]*(?:password|secret|token)[a-z_]*['"]\s*:\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
)


# Every secret handed to kafka-python in this process, as text and as Python would quote it in a
# str or bytes repr: RedactSecrets masks them wherever they appear in a log line.
_handed_over: set[str] = set()


def _hand_over(secret: Secret) -> str:
    value = secret.reveal()
    if value:
        _handed_over.update({value, repr(value)[1:-1], repr(value.encode())[2:-1]})
    return value


class RedactSecrets(logging.Filter):
    """Masks secrets in log records: at debug level kafka-python logs its whole configuration,
    its SASL requests and the raw bytes it sends, password included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_SETTING.sub(r"\1'***'", message)
        for value in sorted(tuple(_handed_over), key=len, reverse=True):
            redacted = redacted.replace(value, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_LOG_FORMAT = ["text"]  # as configure_logging was last told, for child processes (logging_levels)


def configure_logging(root_level: int, kafka_level: int, log_format: str = "text") -> None:
    """Log records to stderr as ``kmc: LOGGER: message`` (``log_format="json"``: one JSON object per line,
    kmc.service.logs), secrets masked (:class:`RedactSecrets`), with kafka-python's loggers at
    ``kafka_level``: the command line does this once, and so does each child process (kmc.worker) with its
    parent's settings (:func:`logging_levels`)."""
    logging.basicConfig(level=root_level, format="kmc: %(name)s: %(message)s", stream=sys.stderr, force=True)
    _LOG_FORMAT[0] = log_format
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
        if log_format == "json":
            from kmc.service.logs import JsonFormatter

            handler.setFormatter(JsonFormatter())
    logging.getLogger("kafka").setLevel(kafka_level)


def logging_levels() -> tuple[int, int, str]:
    """What :func:`configure_logging` was given (the levels as this process runs now)."""
    return logging.getLogger().getEffectiveLevel(), logging.getLogger("kafka").getEffectiveLevel(), _LOG_FORMAT[0]


# Every client made by _connect that is alive, so that a signal can make them all give up at once
# (abandon_connections); and whether it did, so that no new connection starts after it.
_clients: weakref.WeakSet[ConnectionWatch] = weakref.WeakSet()
_clients_lock = threading.Lock()
_abandoned = False


def _quiet_abandoned_coroutines() -> None:
    """An abandoned client's event loop stops under coroutines still waiting on their sockets; collected
    later (at exit, mostly) they fail ("Exception ignored in ... Bad file descriptor"). The user asked kmc to
    stop and should see one line: drop those reports, and only those (raised in kafka-python's code)."""
    previous = sys.unraisablehook
    if getattr(previous, "kmc_quiet", False):
        return

    def hook(unraisable: Any) -> None:
        code = getattr(unraisable.object, "gi_code", None) or getattr(unraisable.object, "cr_code", None)
        files = [code.co_filename] if code is not None else []
        trace = unraisable.exc_traceback
        while trace is not None:
            files.append(trace.tb_frame.f_code.co_filename)
            trace = trace.tb_next
        if not any(f"{os.sep}kafka{os.sep}" in name for name in files):
            previous(unraisable)

    hook.kmc_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def abandon_connections(*, connecting_only: bool = False) -> None:
    """Make kmc's clients in this process give up at once (called from a thread started by a signal
    handler, when the user asked kmc to stop): connections being made fail with Cancelled. With
    ``connecting_only`` that is all: connected clients keep working, and new ones may still be made (a
    mirror's clean stop flushes and checkpoints, and may need a new producer for that); the caller does
    not start new work once stopped. Otherwise the process is ending: requests waiting on connected
    clients fail too, so that threads blocked on a silent broker end now rather than at --timeout, and
    every connection started afterwards fails at once."""
    global _abandoned
    _quiet_abandoned_coroutines()
    with _clients_lock:
        _abandoned = _abandoned or not connecting_only
        watches = list(_clients)
    for watch in watches:
        watch.cancel(connecting_only)


def allow_connections() -> None:
    """Undo abandon_connections (a new command in the same process)."""
    global _abandoned
    with _clients_lock:
        _abandoned = False


def _connect(cluster: Cluster, client_class: Any, settings: dict[str, Any], action: str) -> Any:
    """Construct a kafka-python client (it bootstraps on construction), reporting a failed
    authentication or a TLS problem as such rather than as the timeout it turns into
    (kmc._kafka_internals.ConnectionWatch), and a connection abandoned on a signal (abandon_connections)
    as Cancelled, at once."""
    watch = ConnectionWatch(cluster)
    abandoned = Cancelled(f"{cluster.name}: stopped while connecting to {','.join(cluster.bootstrap)}")
    with _clients_lock:
        if _abandoned:
            raise abandoned
        _clients.add(watch)
    with translate_errors(cluster, action):
        try:
            client = client_class(**settings, kafka_client=watch.client)
        except BaseException as exc:
            # Stop the IO thread of a client that failed to start; not on Ctrl-C, when the process is
            # about to exit and a stopped loop leaves coroutines that complain while being collected.
            if not isinstance(exc, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    watch.stop_io()
            if watch.cancelled and isinstance(exc, Exception):
                raise abandoned from exc
            if isinstance(exc, kafka_errors.KafkaTimeoutError):
                if watch.fatal is not None:
                    raise watch.fatal from exc
                if watch.failure is not None:
                    raise watch.failure from exc
            raise
        if not watch.connected():  # abandoned just as it connected
            with contextlib.suppress(Exception):
                client.close()
            raise abandoned
        return client


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str
    controller_id: int | None
    brokers: tuple[dict[str, Any], ...]
    round_trip_ms: float


def is_transient(error: BaseException | None) -> bool:
    """A failure that asking again (another broker, a moment later) can mend: a broker that refuses or
    drops connections or left the metadata, or an error the protocol calls retriable. Not a timeout: the
    call already waited."""
    if isinstance(error, kafka_errors.KafkaTimeoutError):
        return False
    return (isinstance(error, (kafka_errors.KafkaConnectionError, kafka_errors.NodeNotReadyError,
                               kafka_errors.UnknownBrokerIdError)) or bool(getattr(error, "retriable", False))
            or transient_transactional_failure(error))


class _PatientAdmin:
    """A KafkaAdminClient whose requests are asked again, of another broker, while the one kafka-python
    picked cannot be reached or answers with a retriable error (a broker killed or restarting, a leader
    moving), until the session's timeout. kafka-python sends most admin requests to one node of its
    choosing and gives up at the first refused connection: with one broker of three down, kmc could not
    even start. Timeouts are not retried (they already waited)."""

    def __init__(self, admin: KafkaAdminClient, timeout: float) -> None:
        self._admin = admin
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._admin, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def patiently(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._timeout
            delay = 0.1
            while True:
                try:
                    return attribute(*args, **kwargs)
                except kafka_errors.KafkaError as exc:
                    if not is_transient(exc) or time.monotonic() + delay > deadline:
                        raise
                    forget_controller(self._admin)  # it may be the broker that is down
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

        return patiently


# kafka-python's per-request and per-batch metrics (sensors) cost its network threads about a tenth of a
# copy's CPU seconds; kmc reads two of them (request and fetch latency, kmc/mirror/telemetry.py) and only a
# --follow mirror serves them (the service's /metrics), so the engine asks for them there and no other
# consumer or producer has them (admin clients keep theirs: KafkaAdminClient has no such setting).
CLIENT_METRICS = {"metrics_enabled": False}


class KafkaSession:
    """The clients for one cluster; use as a context manager so they are always closed."""

    def __init__(self, cluster: Cluster, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._admin: KafkaAdminClient | None = None
        self._owned: list[Any] = []
        self._cluster_id: str | None = None

    def __enter__(self) -> KafkaSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        while self._owned:
            client = self._owned.pop()
            if isinstance(client, KafkaProducer):
                close_producer(client, min(self.timeout, 5))
                continue
            with contextlib.suppress(Exception):
                client.close()
        self._admin = None

    def config(self) -> dict[str, Any]:
        return client_config(self.cluster, self.timeout)

    @property
    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            settings = _only(self.config(), KafkaAdminClient)
            admin = _connect(self.cluster, KafkaAdminClient, settings, "connect")
            self._owned.append(admin)
            self._admin = _PatientAdmin(admin, self.timeout)
        return self._admin  # type: ignore[return-value] - the same methods

    def consumer(self, **overrides: Any) -> KafkaConsumer:
        """A consumer that never commits (kmc keeps its own checkpoints). Without kafka-python's own metrics
        unless asked for (``metrics_enabled=True``; see :data:`CLIENT_METRICS`)."""
        settings = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "group_id": None,
            **CLIENT_METRICS,
        }
        settings.update(_only(self.config(), KafkaConsumer))
        settings.update(overrides)
        consumer = _connect(self.cluster, KafkaConsumer, settings, "connect consumer")
        self._owned.append(consumer)
        return consumer

    def producer(self, **overrides: Any) -> KafkaProducer:
        """A producer, ``acks=all``, without kafka-python's own metrics unless asked for (:data:`CLIENT_METRICS`)."""
        settings = {"acks": "all", **CLIENT_METRICS}
        settings.update(_only(self.config(), KafkaProducer))
        settings.update(overrides)
        producer = _connect(self.cluster, KafkaProducer, settings, "connect producer")
        self._owned.append(producer)
        return producer

    def group_client(self) -> Any:
        """A started network client for a member of a Kafka group (kmc/mirror/member.py), closed with the
        session; its settings are a consumer's."""
        with translate_errors(self.cluster, "connect"):
            client, _ = group_client(_only(self.config(), KafkaConsumer))
        self._owned.append(client)
        return client

    def describe(self) -> ClusterInfo:
        """Cluster id, controller and brokers, with the round trip of one metadata request."""
        admin = self.admin
        with translate_errors(self.cluster, "describe cluster"):
            started = time.perf_counter()
            metadata = admin.describe_cluster()
            elapsed = (time.perf_counter() - started) * 1000
        brokers = tuple(
            {"id": broker["broker_id"], "host": broker["host"], "port": broker["port"],
             "rack": broker.get("rack"), "fenced": bool(broker.get("is_fenced"))}
            for broker in sorted(metadata["brokers"], key=lambda broker: broker["broker_id"])
        )
        controller = metadata.get("controller_id")
        return ClusterInfo(
            cluster_id=metadata.get("cluster_id") or "",
            controller_id=None if controller is None or controller < 0 else controller,
            brokers=brokers,
            round_trip_ms=elapsed,
        )

    def cluster_id(self) -> str:
        """The cluster's id, asked once per session (a round trip each time counts over a long link)."""
        if self._cluster_id is None:
            self._cluster_id = self.describe().cluster_id
        return self._cluster_id


def probe_clusters(clusters: list[Cluster], timeout: float = DEFAULT_TIMEOUT) -> list[Outcome]:
    """``kmc profile test``: connect to every cluster at once; each Outcome's value is its cluster_id, brokers,
    controller and rtt_ms (one metadata request's round trip), or the error that stopped it."""

    def probe(session: KafkaSession) -> dict[str, Any]:
        info = session.describe()
        return {"cluster_id": info.cluster_id, "brokers": len(info.brokers), "controller": info.controller_id,
                "rtt_ms": round(info.round_trip_ms, 1)}

    return gather_clusters(clusters, probe, timeout)


@dataclass
class Outcome:
    """What one cluster's part of a parallel job gave: a value, or the error that stopped it."""

    cluster: Cluster
    value: Any = None
    error: KmcError | None = None


def gather_clusters(clusters: list[Cluster], work: Any, timeout: float = DEFAULT_TIMEOUT) -> list[Outcome]:
    """Run ``work(session)`` for every cluster in parallel, each with its own session and timeout.

    A failing cluster becomes an Outcome carrying its error; the others are unaffected. Results
    keep the order of ``clusters``.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(cluster: Cluster) -> Outcome:
        try:
            with KafkaSession(cluster, timeout) as session, translate_errors(cluster):
                return Outcome(cluster, value=work(session))
        except KmcError as exc:
            return Outcome(cluster, error=exc)

    if len(clusters) == 1:
        return [one(clusters[0])]
    with ThreadPoolExecutor(max_workers=min(16, len(clusters))) as pool:
        return list(pool.map(one, clusters))
