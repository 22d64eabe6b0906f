"""A member of a ``--group``: one of any number of kmc processes, on any hosts, that share a mirror's source
partitions through Kafka's group protocol (docs/scale-out.md).

The group lives on the target cluster (the source stays read-only): Kafka's group coordinator keeps the
membership, picks a leader, and hands out what the leader assigns (kmc/mirror/membership.py). Each
generation of the group is one :func:`kmc.mirror.run_mirror` over the partitions this member got; when the
group rebalances (a member joins, leaves or dies, the source gains partitions) the member stops it, which
checkpoints everything acknowledged (with ``--exactly-once``: commits), and only then joins again: no
partition changes hands before its last owner checkpointed it, or was removed by the coordinator after its
session timeout. Under ``--exactly-once`` each generation's run has a transactional id of its own, and the
next owner of a partition fences the id its checkpoint names, so a member that was paused past its
session timeout (a zombie) cannot commit anything when it resumes. Library code: no printing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import kafka.errors as kafka_errors

from kmc._kafka_internals import GroupCoordinator, describe_group_raw
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import AuthError, Cancelled, FencedError, KmcError, UnreachableError, UsageError
from kmc.metadata import compile_patterns, describe_topics
from kmc.mirror.engine import MirrorResult, NoticeCallback, ProgressCallback, run_mirror
from kmc.mirror.jobs import MirrorJob
from kmc.mirror.membership import (
    PROTOCOL_TYPE,
    Member,
    agreed_settings,
    assign,
    decode_assignment,
    decode_metadata,
    encode_metadata,
    group_id,
    member_label,
    protocol_name,
    settings_difference,
)
from kmc.mirror.telemetry import Notice

REBALANCE_TIMEOUT = 60.0  # seconds a member has to checkpoint its partitions and join again in a rebalance
WATCH_INTERVAL = 0.2  # seconds between looks at the group while copying


def run_member(job: MirrorJob, *, stop_event: threading.Event, progress_callback: ProgressCallback,
               notice_callback: NoticeCallback, timeout: float = DEFAULT_TIMEOUT) -> list[MirrorResult]:
    """Copy ``job`` (``--follow``) as a member of its group until ``stop_event`` is set; one result per
    generation in which it copied (one without topics if it never got a partition). Raises UsageError when
    the group's members mirror with other settings (what differs in one line), UnreachableError when the
    target (the group's cluster) does not answer within ``timeout``, and what a generation's mirror raised
    for any reason but losing its partitions."""
    with KafkaSession(job.source, timeout) as source, KafkaSession(job.target, timeout) as target:
        settings = agreed_settings(job.spec, source.cluster_id(), target.cluster_id())
        member = _Membership(job, source, target, settings, stop_event, progress_callback, notice_callback,
                             timeout)
        started = time.monotonic()
        results = member.run()
        return results or [MirrorResult(job.flow, job.source.name, job.target.name, settings["source_cluster_id"],
                                        settings["target_cluster_id"], "follow", False, time.monotonic() - started,
                                        [])]


class _Membership:
    def __init__(self, job: MirrorJob, source: KafkaSession, target: KafkaSession, settings: dict[str, Any],
                 stop_event: threading.Event, progress: ProgressCallback, notice: NoticeCallback,
                 timeout: float) -> None:
        self.job = job
        self.spec = job.spec
        self.source = source
        self.target = target
        self.settings = settings
        self.group = group_id(job.spec.group or "", settings["source_cluster_id"])
        self.label = member_label()
        self.stop_event = stop_event
        self.progress = progress
        self.notice = notice
        self.timeout = timeout
        self.universe: dict[str, int] = {}  # source topic -> partitions, as last sent in the metadata
        self.owned: frozenset[tuple[str, int]] = frozenset()
        self.joined: tuple[int, str, frozenset[tuple[str, int]]] | None = None  # set on the IO thread
        self.next_look = 0.0
        self.results: list[MirrorResult] = []

    # ------------------------------------------------------------------------------------ the protocol

    def _metadata(self) -> bytes:
        return encode_metadata(self.settings, self.label, self.universe, self.owned)

    def _on_joined(self, generation: int, member_id: str, assignment: bytes) -> None:
        self.joined = (generation, member_id, decode_assignment(assignment))

    def _look_at_source(self) -> dict[str, int]:
        """The source topics the selection matches, with their partition counts."""
        include = compile_patterns(self.spec.topics, "--topics")
        exclude = compile_patterns(self.spec.exclude, "--exclude")
        with translate_errors(self.source.cluster, "list topics"):
            return {topic.name: len(topic.partitions)
                    for topic in describe_topics(self.source, include, exclude, with_offsets=False)}

    def _source_changed(self) -> bool:
        """Every --refresh seconds: whether the source has topics or partitions the group does not know of
        (this member then joins again, so that the leader assigns them)."""
        now = time.monotonic()
        if now < self.next_look:
            return False
        self.next_look = now + self.spec.refresh_interval
        try:
            seen = self._look_at_source()
        except KmcError as exc:
            self.notice("warn", Notice(f"looking for new partitions failed: {exc}", "refresh"))
            return False
        if any(count > self.universe.get(topic, 0) for topic, count in seen.items()):
            self.universe = seen
            self.notice("info", "the source has new partitions: rebalancing the group")
            return True
        return False

    # ------------------------------------------------------------------------------------ the member

    def run(self) -> list[MirrorResult]:
        self.universe = self._look_at_source()
        self.next_look = time.monotonic() + self.spec.refresh_interval
        session_ms = int(self.spec.session_timeout * 1000)
        coordinator = GroupCoordinator(
            self.target.group_client(), PROTOCOL_TYPE, protocol_name(self.settings), self._metadata, assign,
            self._on_joined, group_id=self.group, session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(500, session_ms // 6), max_poll_interval_ms=int(REBALANCE_TIMEOUT * 1000),
            request_timeout_ms=max(int(self.timeout * 1000), int(REBALANCE_TIMEOUT * 1000) + 5000),
            retry_backoff_ms=200)
        try:
            while not self.stop_event.is_set():
                if not self._join(coordinator):
                    break
                generation, member_id, partitions = self.joined or (0, "", frozenset())
                self.owned = partitions
                member = Member(self.group, generation, member_id, self.label, partitions,
                                still_member=lambda: self._still_member(coordinator))
                self._copy(coordinator, member)
        finally:
            # only now, with every partition checkpointed: the others take them over at once
            with contextlib.suppress(Exception):  # best effort: the coordinator drops a silent member anyway
                coordinator.close(timeout_ms=5000)
        return self.results

    def _still_member(self, coordinator: GroupCoordinator) -> bool:
        """Whether this member may commit: its generation is not lost, and the coordinator answered a
        heartbeat within half its session timeout. A member that has not heard for that long (it was paused,
        or starved of CPU) waits up to half a session timeout for the next heartbeat's answer rather than
        give up at once: a zombie's is UNKNOWN_MEMBER_ID (generation lost: False), a live member's keeps
        it, so a slow machine does not make members refuse commits and rebalance the group for nothing.
        A rebalance in progress is no reason: the partitions stay this member's until it joins again, and
        its last commit is what the next owner starts from."""
        window = self.spec.session_timeout / 2
        deadline = time.monotonic() + window
        while not coordinator.generation_lost():
            if coordinator.heard_within(window):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)  # the member's thread sends heartbeats (_should_stop); the answer lands on IO
        return False

    def _join(self, coordinator: GroupCoordinator) -> bool:
        """Join (again) and get this generation's partitions; False when stopped first. The first join
        fails with UnreachableError when the group's coordinator cannot be found within --timeout."""
        started = time.monotonic()
        first = not self.results and self.joined is None
        self.joined = None
        while not self.stop_event.is_set():
            try:
                with translate_errors(self.target.cluster, f"join group {self.group}"):
                    if coordinator.ensure_active_group(timeout_ms=500) and self.joined is not None:
                        generation, _, partitions = self.joined
                        self.notice("info", Notice(f"member {self.label} of group {self.group}, generation "
                                                   f"{generation}: {len(partitions)} partition(s)", "group"))
                        return True
            except (UsageError, AuthError):
                raise
            except KmcError as exc:
                if isinstance(exc.__cause__, kafka_errors.InconsistentGroupProtocolError):
                    raise self._different_settings() from None
                if first and time.monotonic() - started > self.timeout:
                    raise
                self.notice("warn", Notice(f"joining group {self.group} failed, retrying: {exc}", "group"))
                self.stop_event.wait(1.0)
                continue
            if first and coordinator.coordinator_unknown() and time.monotonic() - started > self.timeout:
                raise UnreachableError(f"{self.target.cluster.name}: the coordinator of group {self.group} "
                                       f"did not answer within {self.timeout:g}s")
        return False

    def _different_settings(self) -> UsageError:
        """The group's members mirror with other settings than this one: say what differs."""
        try:
            with translate_errors(self.target.cluster, f"describe group {self.group}"):
                described = describe_group_raw(self.target.admin, self.group)
        except KmcError:
            described = {}
        for found in described.get("members", []):
            theirs = decode_metadata(found["metadata"]).get("settings")
            if isinstance(theirs, dict) and theirs != self.settings:
                difference = settings_difference(self.settings, theirs)
                return UsageError(f"group {self.group} mirrors with other settings ({difference})",
                                  hint="start every member of a group with the same flow and options, or "
                                       "give this one another --group")
        return UsageError(f"group {self.group} is used by members that mirror with other settings, or by "
                          "something that is not kmc", hint="give this mirror another --group")

    def _copy(self, coordinator: GroupCoordinator, member: Member) -> None:
        """Copy this generation's partitions until a stop, a rebalance or new source partitions."""
        if not member.partitions:
            self.notice("info", Notice(f"no partitions for this member in generation {member.generation}: "
                                       "waiting for a rebalance", "group"))
            while not self._should_stop(coordinator):
                self.stop_event.wait(WATCH_INTERVAL)
            return
        generation_stop = threading.Event()
        outcome: dict[str, Any] = {}

        def copy() -> None:
            try:
                outcome["result"] = run_mirror(self.job.source, self.job.target, self.spec, mode="follow",
                                               stop_event=generation_stop, progress_callback=self.progress,
                                               notice_callback=self.notice, timeout=self.timeout, member=member)
            except BaseException as exc:  # noqa: BLE001 - handed to the member's thread
                outcome["error"] = exc

        thread = threading.Thread(target=copy, name=f"kmc-member-g{member.generation}", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(WATCH_INTERVAL)
            if not generation_stop.is_set() and self._should_stop(coordinator):
                generation_stop.set()
        error = outcome.get("error")
        if error is None:
            self.results.append(outcome["result"])
            return
        if isinstance(error, Cancelled) and self.stop_event.is_set():
            return  # stopped while this generation connected: nothing of it to report, the earlier ones stand
        if isinstance(error, FencedError) or (isinstance(error, KmcError) and coordinator.need_rejoin()):
            # its partitions went to another member while this one was away (a pause, a lost network)
            self.notice("warn", Notice(f"lost this member's partitions ({error.message}); joining the group "
                                       "again", "group"))
            coordinator.request_rejoin()
            return
        raise error

    def _should_stop(self, coordinator: GroupCoordinator) -> bool:
        """A stop was asked for, the group rebalances, or the source has new partitions."""
        try:
            coordinator.poll_heartbeat()
        except kafka_errors.KafkaError as exc:
            self.notice("warn", Notice(f"heartbeat to group {self.group} failed ({exc}); joining again", "group"))
            coordinator.request_rejoin()
        if self._source_changed():
            coordinator.request_rejoin()
        return self.stop_event.is_set() or coordinator.need_rejoin()
