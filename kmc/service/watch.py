"""The service's own look at the sources: end offsets of the partitions of mirrors that have stopped
reporting (a hung or paused mirror process, a copy loop waiting for a target), so that lag and /healthz keep
moving when the mirror does not. A mirror that reports needs none of this: its reports carry the ends its
fetches saw. Library code: no printing."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping

from kafka import TopicPartition
from kafka.admin import OffsetSpec

from kmc.client import KafkaSession
from kmc.errors import KmcError
from kmc.metadata import list_offsets
from kmc.profiles import Cluster
from kmc.service.state import ServiceState

log = logging.getLogger(__name__)


class EndWatcher:
    """A thread that asks each source for the end offsets (last stable offsets: what a read_committed mirror
    copies up to) of its silent mirrors' partitions every ``interval`` seconds, until :meth:`close`."""

    def __init__(self, state: ServiceState, sources: Mapping[str, Cluster], interval: float, timeout: float) -> None:
        self.state = state
        self.sources = dict(sources)
        self.interval = interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._sessions: dict[str, KafkaSession] = {}
        self._thread = threading.Thread(target=self._run, name="kmc-end-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for source, partitions in self.state.silent_partitions().items():
                if self._stop.is_set():
                    return
                self.look(source, partitions)

    def look(self, source: str, partitions: set[tuple[str, int]]) -> None:
        cluster = self.sources.get(source)
        if cluster is None:
            return
        session = self._sessions.get(source)
        if session is None:
            session = self._sessions[source] = KafkaSession(cluster, self.timeout)
        specs = {TopicPartition(topic, partition): OffsetSpec.LATEST for topic, partition in partitions}
        try:
            ends = list_offsets(session, specs, "read_committed")
        except KmcError as exc:  # the source is away: nothing to learn now; a fresh session next time
            log.debug("end offsets of %s: %s", source, exc)
            self._sessions.pop(source, None)
            session.close()
            return
        self.state.saw_ends(source, {(tp.topic, tp.partition): offset for tp, offset in ends.items()})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        for session in self._sessions.values():
            with contextlib.suppress(Exception):
                session.close()
