"""Sample data for demos and trials: a few topics of different data types, with keys and headers."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from kafka.admin import NewTopic

from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import UsageError
from kmc.profiles import Cluster

SAMPLE_TOPICS = {
    "orders": 6,  # JSON order events keyed by customer
    "payments": 3,  # JSON payment events keyed by order
    "clicks": 4,  # small text events with null keys
    "customers": 2,  # compacted: latest profile per customer, with tombstones
}


@dataclass(frozen=True)
class SeedResult:
    topic: str
    partitions: int
    records: int

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partitions": self.partitions, "records": self.records}


def _record(topic: str, index: int, origin: str, rng: random.Random) -> tuple[bytes | None, bytes | None]:
    customer = f"c{rng.randrange(50):03d}"
    if topic == "orders":
        body = {"order": f"{origin}-{index}", "customer": customer, "amount": round(rng.uniform(1, 500), 2)}
        return customer.encode(), json.dumps(body).encode()
    if topic == "payments":
        body = {"order": f"{origin}-{index}", "method": rng.choice(["card", "iban", "wallet"])}
        return f"{origin}-{index}".encode(), json.dumps(body).encode()
    if topic == "clicks":
        return None, f"{origin} page=/p/{rng.randrange(20)} ms={rng.randrange(2000)}".encode()
    # customers: every tenth record deletes a profile (a tombstone)
    if index % 10 == 9:
        return customer.encode(), None
    return customer.encode(), json.dumps({"customer": customer, "tier": rng.choice(["gold", "basic"])}).encode()


def seed(cluster: Cluster, topics: list[str], records: int, *, origin: str,
         timeout: float = DEFAULT_TIMEOUT) -> list[SeedResult]:
    """Create the sample topics if missing and append ``records`` records to each."""
    unknown = [topic for topic in topics if topic not in SAMPLE_TOPICS]
    if unknown:
        raise UsageError(f"unknown sample topic '{unknown[0]}'", hint=f"choose from {', '.join(SAMPLE_TOPICS)}")
    with KafkaSession(cluster, timeout) as session:
        return _seed(session, topics, records, origin)


def _seed(session: KafkaSession, topics: list[str], records: int, origin: str) -> list[SeedResult]:
    brokers = len(session.describe().brokers)
    with translate_errors(session.cluster, "create sample topics"):
        existing = set(session.admin.list_topics())
        missing = [
            NewTopic(topic, SAMPLE_TOPICS[topic], min(3, brokers),
                     topic_configs={"cleanup.policy": "compact"} if topic == "customers" else {})
            for topic in topics if topic not in existing
        ]
        if missing:
            session.admin.create_topics(missing)
    producer = session.producer(linger_ms=20, compression_type="lz4")
    rng = random.Random(f"{origin}:{records}")
    with translate_errors(session.cluster, "produce sample data"):
        for topic in topics:
            for index in range(records):
                key, value = _record(topic, index, origin, rng)
                headers = [("source-app", f"{topic}-service".encode()), ("seq", str(index).encode())]
                producer.send(topic, key=key, value=value, headers=headers)
        producer.flush()
    return [SeedResult(topic, SAMPLE_TOPICS[topic], records) for topic in topics]
