"""The client layer: a Cluster profile becomes kafka-python clients with consistent timeouts.

Every kafka-python exception that reaches a user passes through :func:`translate_errors`, the one
place that maps them onto kmc's error tree. :class:`KafkaSession` owns every client it creates and
closes all of them on every exit path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from kmc.errors import (
    AuthError,
    AuthorizationError,
    KafkaOperationError,
    KmcError,
    UnreachableError,
)
from kmc.profiles import Cluster

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
        config["sasl_plain_password"] = cluster.password.reveal() if cluster.password else None
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(cluster, key)
        if value:
            config[key] = value
    if cluster.ssl_password is not None:
        config["ssl_password"] = cluster.ssl_password.reveal()
    config.update(cluster.client)
    return config


def _only(config: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
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
        raise AuthError(f"{what}authentication failed ({_describe(exc)})") from exc
    except kafka_errors.AuthorizationError as exc:
        raise AuthorizationError(f"{what}not authorized: {type(exc).__name__}") from exc
    except (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError,
            kafka_errors.NodeNotReadyError, kafka_errors.MetadataEmptyBrokerList) as exc:
        raise UnreachableError(f"{what}cannot reach {','.join(cluster.bootstrap)}: {exc}") from exc
    except kafka_errors.KafkaError as exc:
        raise KafkaOperationError(f"{what}{_describe(exc)}") from exc
    except OSError as exc:  # e.g. an unreadable CA file
        raise UnreachableError(f"{what}{exc}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if not text or text == name:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str
    controller_id: int | None
    brokers: tuple[dict[str, Any], ...]
    round_trip_ms: float


class KafkaSession:
    """The clients for one cluster; use as a context manager so they are always closed."""

    def __init__(self, cluster: Cluster, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._admin: KafkaAdminClient | None = None
        self._owned: list[Any] = []

    def __enter__(self) -> KafkaSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        while self._owned:
            client = self._owned.pop()
            with contextlib.suppress(Exception):
                if isinstance(client, KafkaProducer):
                    client.close(timeout=min(self.timeout, 5))
                else:
                    client.close()
        self._admin = None

    def config(self) -> dict[str, Any]:
        return client_config(self.cluster, self.timeout)

    @property
    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            with translate_errors(self.cluster, "connect"):
                self._admin = KafkaAdminClient(**_only(self.config(), KafkaAdminClient.DEFAULT_CONFIG))
            self._owned.append(self._admin)
        return self._admin

    def consumer(self, **overrides: Any) -> KafkaConsumer:
        """A consumer that never commits (kmc keeps its own checkpoints)."""
        settings = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "group_id": None,
        }
        settings.update(_only(self.config(), KafkaConsumer.DEFAULT_CONFIG))
        settings.update(overrides)
        with translate_errors(self.cluster, "connect consumer"):
            consumer = KafkaConsumer(**settings)
        self._owned.append(consumer)
        return consumer

    def producer(self, **overrides: Any) -> KafkaProducer:
        settings = {"acks": "all"}
        settings.update(_only(self.config(), KafkaProducer.DEFAULT_CONFIG))
        settings.update(overrides)
        with translate_errors(self.cluster, "connect producer"):
            producer = KafkaProducer(**settings)
        self._owned.append(producer)
        return producer

    def describe(self) -> ClusterInfo:
        """Cluster id, controller and brokers, with the round trip of one metadata request."""
        admin = self.admin
        with translate_errors(self.cluster, "describe cluster"):
            started = time.perf_counter()
            metadata = admin.describe_cluster()
            elapsed = (time.perf_counter() - started) * 1000
        brokers = tuple(
            {"id": broker["broker_id"], "host": broker["host"], "port": broker["port"],
             "rack": broker.get("rack")}
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
        return self.describe().cluster_id


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
