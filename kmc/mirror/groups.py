"""Consumer groups across a mirror: their committed offsets on the source translated into the target
(kmc/mirror/offsets.py) and committed there, for failover and failback (``kmc groups translate``) and
while mirroring (``--sync-groups``, :class:`GroupSync`). docs/failover.md is the runbook. Library code: no
printing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from kmc.acls import (
    explain_translation_denials,
    literal_topic_names,
    raise_for_hidden_groups,
    raise_for_hidden_topics,
)
from kmc.client import DEFAULT_TIMEOUT, KafkaSession, translate_errors
from kmc.errors import KmcError, PartialFailure, UsageError
from kmc.metadata import compile_patterns, matches
from kmc.mirror.offsets import OffsetTranslator
from kmc.mirror.plan import DEFAULT_FLOW
from kmc.profiles import NAME_RE, Cluster, validate_rename

# OffsetCommit errors that mean the group has members on the target (the broker refuses the commit)
_ACTIVE_GROUP_ERRORS = tuple(getattr(kafka_errors, name) for name in (
    "UnknownMemberIdError", "IllegalGenerationError", "RebalanceInProgressError", "StaleMemberEpochError",
    "FencedMemberEpochError") if hasattr(kafka_errors, name))


@dataclass
class PartitionOffsets:
    """One group's offset of one partition: on the source, translated, and what was done on the target."""

    source_topic: str
    partition: int
    source_offset: int  # the group's committed offset on the source
    behind: int | None  # records the group has not consumed on the source (its lag there)
    target_topic: str | None
    target_offset: int | None
    status: str
    previous: int | None = None  # the group's committed offset on the target before (None: none, or not asked)
    committed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "partition": self.partition, "source_offset": self.source_offset,
                "behind": self.behind, "target_topic": self.target_topic, "target_offset": self.target_offset,
                "status": self.status, "previous_target_offset": self.previous, "committed": self.committed}


@dataclass
class GroupOffsets:
    """One consumer group: its partitions, and why it was not committed on the target (``refused``)."""

    group: str
    partitions: list[PartitionOffsets]
    target_state: str | None = None  # the group's state on the target (None: not asked)
    target_members: int = 0
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "target_state": self.target_state, "target_members": self.target_members,
                "refused": self.refused, "partitions": [partition.to_dict() for partition in self.partitions]}


@dataclass
class TranslationReport:
    """What :func:`translate_groups` (or one round of :class:`GroupSync`) found and did."""

    source: str
    target: str
    flow: str
    source_cluster_id: str
    target_cluster_id: str
    commit: bool
    groups: list[GroupOffsets] = field(default_factory=list)

    @property
    def refused(self) -> list[GroupOffsets]:
        return [group for group in self.groups if group.refused is not None]

    @property
    def committed(self) -> int:
        """Partitions whose offset was committed on the target."""
        return sum(partition.committed for group in self.groups for partition in group.partitions)

    def failure(self) -> KmcError | None:
        """PartialFailure (exit 6) when some groups were refused (active on the target), else None."""
        refused = self.refused
        if not refused:
            return None
        names = ", ".join(group.group for group in refused[:5]) + (" ..." if len(refused) > 5 else "")
        return PartialFailure(f"{len(refused)} of {len(self.groups)} group(s) not committed on {self.target}, "
                              f"active there: {names}",
                              hint="stop the group's consumers on the target first; the other groups were committed")

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc groups translate -o json`` document (keys in docs/failover.md)."""
        return {"source": self.source, "target": self.target, "flow": self.flow,
                "source_cluster_id": self.source_cluster_id, "target_cluster_id": self.target_cluster_id,
                "commit": self.commit, "committed": self.committed,
                "groups": [group.to_dict() for group in self.groups]}

    def rows(self) -> list[dict[str, Any]]:
        """One row per group and partition: the group's keys, then the partition's."""
        return [{"group": group.group, **partition.to_dict(), "refused": group.refused}
                for group in self.groups for partition in group.partitions]


def _source_group_offsets(session: KafkaSession, groups: list[re.Pattern[str]],
                          wanted_topic: Callable[[str], bool]) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]:
    """The committed offsets of the source's groups matching ``groups`` (all when empty), on the topics
    ``wanted_topic`` accepts; groups with none left out."""
    with translate_errors(session.cluster, "list consumer groups"):
        ids = sorted({entry["group_id"] for entry in session.admin.list_groups()
                      if matches(entry["group_id"], groups)})
    if not ids:
        return {}
    with translate_errors(session.cluster, "read consumer group offsets"):
        committed = session.admin.list_group_offsets(ids)
    found = {}
    for group in ids:
        offsets = {tp: meta for tp, meta in (committed.get(group) or {}).items()
                   if meta is not None and meta.offset >= 0 and wanted_topic(tp.topic)}
        if offsets:
            found[group] = offsets
    return found


def _translate(translator: OffsetTranslator,
               committed: Mapping[str, Mapping[TopicPartition, OffsetAndMetadata]]) -> list[GroupOffsets]:
    translator.prepare(sorted({(tp.topic, tp.partition) for offsets in committed.values() for tp in offsets}))
    groups = []
    for group, offsets in sorted(committed.items()):
        partitions = []
        for tp in sorted(offsets, key=lambda tp: (tp.topic, tp.partition)):
            offset = offsets[tp].offset
            result = translator.translate(tp.topic, tp.partition, offset)
            end = translator.source_end(tp.topic, tp.partition)
            partitions.append(PartitionOffsets(tp.topic, tp.partition, offset,
                                               None if end is None else max(0, end - offset),
                                               result.target_topic, result.target_offset, result.status))
        groups.append(GroupOffsets(group, partitions))
    return groups


def _commit(target: KafkaSession, groups: list[GroupOffsets], forward_only: bool) -> None:
    """Commit each group's translated offsets on the target, unless the group has members there (then it is
    ``refused``; the broker refuses such a commit too, which covers a member that joins meanwhile).
    ``forward_only``: never move a group's committed offset back (--sync-groups: a group that consumed on the
    target since, e.g. after a failover, keeps its position)."""
    ids = [group.group for group in groups]
    if not ids:
        return
    with translate_errors(target.cluster, "describe consumer groups"):
        described = target.admin.describe_groups(ids)
        current = target.admin.list_group_offsets(ids)
    for group in groups:
        info = described.get(group.group) or {}
        group.target_state = info.get("group_state") or None
        group.target_members = len(info.get("members") or ())
        previous = {tp: meta.offset for tp, meta in (current.get(group.group) or {}).items()
                    if meta is not None and meta.offset >= 0}
        for partition in group.partitions:
            if partition.target_topic is not None:
                partition.previous = previous.get(TopicPartition(partition.target_topic, partition.partition))
        if group.target_members:
            group.refused = (f"{group.target_members} active member(s) on {target.cluster.name} "
                             f"(state {group.target_state})")
            continue
        todo = {TopicPartition(partition.target_topic, partition.partition): partition
                for partition in group.partitions
                if partition.target_offset is not None and partition.target_topic is not None
                and not (forward_only and partition.previous is not None
                         and partition.target_offset <= partition.previous)}
        if not todo:
            continue
        metadata = {tp: OffsetAndMetadata(partition.target_offset, "", -1) for tp, partition in todo.items()}
        with translate_errors(target.cluster, f"commit offsets of group {group.group}"):
            errors = target.admin.alter_group_offsets(group.group, metadata)
        for tp, error in errors.items():
            if error is kafka_errors.NoError:
                todo[tp].committed = True
            elif issubclass(error, _ACTIVE_GROUP_ERRORS):
                group.refused = f"active on {target.cluster.name} ({error.__name__})"
            else:
                with translate_errors(target.cluster, f"commit offsets of group {group.group}"):
                    raise error(f"{tp.topic}[{tp.partition}]")


def validate_translation(groups: Sequence[str], topics: Sequence[str], rename: str | None, flow: str) -> None:
    """UsageError for what the user typed wrong, before any cluster is contacted."""
    compile_patterns(groups, "--group")
    compile_patterns(topics, "--topics")
    if rename is not None:
        validate_rename(rename, "--rename", error=UsageError)
    if not NAME_RE.match(flow):
        raise UsageError(f"--flow: invalid flow name '{flow}'", hint="use letters, digits, '.', '_' or '-'")


def translate_groups(source: Cluster, target: Cluster, *, groups: Sequence[str] = (), topics: Sequence[str] = (),
                     rename: str | None = None, flow: str = DEFAULT_FLOW, commit: bool = False,
                     timeout: float = DEFAULT_TIMEOUT) -> TranslationReport:
    """``kmc groups translate``: the committed offsets of the source's consumer groups (``groups``: anchored
    regexes, all when empty) on the topics ``topics`` selects, translated into the target of the mirror
    ``flow`` (whose target topic names follow ``rename``; by default whatever its checkpoints name). Reads
    the source only. With ``commit``, commits the translations on the target for every group that has no
    active member there; the others are ``refused`` (:meth:`TranslationReport.failure`)."""
    validate_translation(groups, topics, rename, flow)
    group_patterns, topic_patterns = compile_patterns(groups, "--group"), compile_patterns(topics, "--topics")
    with KafkaSession(source, timeout) as source_session, KafkaSession(target, timeout) as target_session, \
            explain_translation_denials(source_session, target_session, groups=groups, topics=topics, rename=rename,
                                        flow=flow, commit=commit):  # a denial names the missing ACL (kmc.acls)
        translator = OffsetTranslator(source_session, target_session, flow, rename)
        try:
            # Kafka leaves a group's offsets on topics this user may not describe out of OffsetFetch: a mirrored
            # topic (or one named in --topics) it may not describe is exit 5, not a group silently left out
            raise_for_hidden_topics(source_session, [*literal_topic_names(topics), *(
                topic for topic in translator.mirrored_topics() if matches(topic, topic_patterns))], ())
            committed = _source_group_offsets(source_session, group_patterns,
                                              lambda topic: matches(topic, topic_patterns))
            raise_for_hidden_groups(source_session, groups, committed)
            found = _translate(translator, committed)
        finally:
            translator.close()
        report = TranslationReport(source.name, target.name, flow, translator.source_id or source_session.cluster_id(),
                                   translator.target_id or target_session.cluster_id(), commit, found)
        if commit:
            _commit(target_session, found, forward_only=False)
    return report


class GroupSync:
    """``--sync-groups``: rounds of translate-and-commit for one mirror (source, target, spec), as the mirror
    runs (kmc/mirror/runner.py calls :meth:`round`). Only ever moves a target group's offset forward; a
    group with members on the target is refused (and skipped) in each round. Keeps its sessions and what it
    translated between rounds; use as a context manager."""

    def __init__(self, source: Cluster, target: Cluster, *, flow: str, rename: str, groups: Sequence[str],
                 topics: Sequence[str] = (), exclude: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT) -> None:
        self.source_cluster = source
        self.target_cluster = target
        self.flow = flow
        self.rename = rename
        self.timeout = timeout
        self.groups = compile_patterns(groups, "--sync-groups")
        self.selection = (tuple(groups), tuple(topics), tuple(exclude))  # as given: for explaining a denial
        include, leave_out = compile_patterns(topics, "--topics"), compile_patterns(exclude, "--exclude")
        self.wanted_topic: Callable[[str], bool] = lambda topic: matches(topic, include, leave_out)
        self._sessions: tuple[KafkaSession, KafkaSession] | None = None
        self._translator: OffsetTranslator | None = None

    def __enter__(self) -> GroupSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._translator is not None:
            self._translator.close()
        for session in self._sessions or ():
            session.close()
        self._sessions = self._translator = None

    def round(self, abandon: threading.Event | None = None) -> TranslationReport:
        """Translate the matching groups' offsets and commit those that moved forward. A failure closes the
        sessions (the next round opens new ones) and raises; ``abandon`` set while it reads records ends it
        (Interrupted)."""
        try:
            if self._sessions is None:
                self._sessions = (KafkaSession(self.source_cluster, self.timeout),
                                  KafkaSession(self.target_cluster, self.timeout))
                self._translator = OffsetTranslator(*self._sessions, self.flow, self.rename)
            self._translator.abandon = abandon
            source_session, target_session = self._sessions
            translator = self._translator
            groups, topics, exclude = self.selection
            with explain_translation_denials(source_session, target_session, groups=groups, topics=topics,
                                             exclude=exclude, rename=self.rename, flow=self.flow, commit=True):
                committed = _source_group_offsets(source_session, self.groups, self.wanted_topic)
                raise_for_hidden_groups(source_session, groups, committed)
                found = _translate(translator, committed)
                _commit(target_session, found, forward_only=True)
            return TranslationReport(self.source_cluster.name, self.target_cluster.name, self.flow,
                                     translator.source_id, translator.target_id, True, found)
        except BaseException:
            self.close()
            raise
