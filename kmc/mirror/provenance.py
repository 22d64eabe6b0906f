"""Which producers in a cluster are kmc mirrors, and where their data came from: loop prevention by batch.

Before a mirror writes a record to its target, it announces its producer there: one record in the target's
compacted topic ``kmc.provenance``, written by that very producer, so the batch that carries the
announcement carries the producer's id (Kafka's, assigned by the broker and never reused in a cluster)::

    key   "{flow}/{uuid}"          (one per producer instance: a restart or a new producer is a new key)
    value {"source_cluster_id": "...", "flow": "...", "since_ms": T}

The announcement is acknowledged (with ``--exactly-once``: committed) before the producer's first record,
so any batch a reader sees from that producer has its announcement readable too. A mirror that fetches a
batch from its source looks up the batch's producer id in the *source's* ``kmc.provenance`` (read-only):

- not a mirror's (a local application wrote it): the batch's data originates in the source cluster;
- a mirror's whose data came from the *target* cluster: the whole batch is skipped (copying it back would
  loop: two-way and ring mirrors), without decompressing or reading a record;
- a mirror's from a third cluster: the data is a copy; its records are copied one by one, each stamped
  with a ``kmc-origin`` header naming that cluster (unless it has one), so the next hop knows.

Records of local producers need no stamp, which is what lets the copy path forward their batches whole
(kmc/mirror/batchpath.py). Producer ids unknown when first seen make the map read ``kmc.provenance``
again (once for each new id: ids of local producers are remembered as local). Library code: no printing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from kmc.acls import hidden_topics
from kmc.client import KafkaSession, translate_errors
from kmc.errors import AuthorizationError
from kmc.mirror.checkpoints import ensure_internal_topic
from kmc.mirror.logreader import read_topic

PROVENANCE_TOPIC = "kmc.provenance"
PROVENANCE_CONFIGS = {"cleanup.policy": "compact", "segment.ms": str(3600 * 1000)}


def ensure_provenance_topic(target: KafkaSession) -> bool:
    """Create ``kmc.provenance`` on the target unless it exists; True when this call created it."""
    return ensure_internal_topic(target, PROVENANCE_TOPIC, 1, PROVENANCE_CONFIGS)


def announce(producer: Any, source_cluster_id: str, flow: str) -> Any:
    """Send ``producer``'s announcement to the target's ``kmc.provenance``; returns its future. The caller
    waits for it (or commits it) before the producer writes any record."""
    value = json.dumps({"source_cluster_id": source_cluster_id, "flow": flow, "since_ms": int(time.time() * 1000)},
                       separators=(",", ":")).encode()
    return producer.send(PROVENANCE_TOPIC, key=f"{flow}/{uuid.uuid4().hex}".encode(), value=value)


class ProvenanceMap:
    """The kmc mirror producers of one cluster (the source of a mirror), by producer id, from its
    ``kmc.provenance``; reads it again when asked about a producer id it has not seen."""

    def __init__(self, session: KafkaSession, warn: Callable[[str], None] = lambda message: None,
                 required: bool = False) -> None:
        self.session = session
        self.warn = warn
        self.required = required  # a cluster that does not let kmc read it is an AuthorizationError, not a warning
        self._origins: dict[int, str] = {}  # producer id -> the cluster its data came from
        self._local: set[int] = set()  # producer ids known not to be a mirror's
        self.exists = False
        self.reads = 0

    def load(self) -> None:
        """Read ``kmc.provenance`` (absent: no mirror writes to this cluster). A cluster that does not let
        kmc read it (no READ ACL) is warned about once and treated as having no mirror producers: batches
        other mirrors wrote into it are then copied as its own (a loop through it is not caught by producer;
        records stamped kmc-origin still are). When ``required`` (offset translation: without it a mirror's
        copies cannot be told from other records), that is an AuthorizationError."""
        self.reads += 1
        with translate_errors(self.session.cluster, f"list {PROVENANCE_TOPIC}"):
            self.exists = PROVENANCE_TOPIC in set(self.session.admin.list_topics())
        if not self.exists:
            if self.reads == 1 and hidden_topics(self.session, [PROVENANCE_TOPIC]):
                # Kafka says "not authorized" for a topic this user may not describe, whether or not it exists
                if self.required:
                    raise AuthorizationError(f"{self.session.cluster.name}: read {PROVENANCE_TOPIC}: not authorized",
                                             hint=f"grant READ on topic {PROVENANCE_TOPIC}")
                self.warn(f"{self.session.cluster.name}: cannot tell whether it has a {PROVENANCE_TOPIC} (copies "
                          "other mirrors wrote into it would count as its own data): grant READ on topic "
                          f"{PROVENANCE_TOPIC}")
            return
        producers: dict[bytes, int] = {}
        try:
            values = read_topic(self.session, PROVENANCE_TOPIC, lambda key: True, producers)
        except AuthorizationError as exc:
            if self.required:
                raise
            self.warn(f"{self.session.cluster.name}: cannot read {PROVENANCE_TOPIC} ({exc.message}); copies other "
                      f"mirrors wrote into it count as its own data: grant READ on topic {PROVENANCE_TOPIC}")
            return
        for key, value in values.items():
            try:
                origin = str(json.loads(value)["source_cluster_id"])
            except (ValueError, KeyError, TypeError):
                self.warn(f"{self.session.cluster.name}: {PROVENANCE_TOPIC}: ignoring unreadable {key!r}")
                continue
            producer_id = producers.get(key, -1)
            if producer_id >= 0:
                self._origins[producer_id] = origin

    def origins(self, producer_ids: set[int]) -> dict[int, str | None]:
        """Where the data of each producer came from: a cluster id for a kmc mirror, None for a local
        producer (or none: -1)."""
        unknown = {pid for pid in producer_ids if pid >= 0 and pid not in self._origins and pid not in self._local}
        if unknown:
            self.load()
            self._local.update(pid for pid in unknown if pid not in self._origins)
        return {pid: self._origins.get(pid) for pid in producer_ids}
