"""``--sync-acls`` and ``kmc diff --acls``: the source's ACLs of mirrored topics copied to the target, renamed
with the topics, as MirrorMaker 2 does (literal topic ACLs only, ALLOW WRITE never: only the mirror writes to a
mirrored topic, ALLOW ALL downgraded to READ), and what such a sync would still change. Library code: no
printing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kafka.errors as kafka_errors

from kmc.acls.model import LITERAL, TOPIC, AclBinding, describe_acls
from kmc.client import KafkaSession, authorization_error, translate_errors
from kmc.errors import KafkaOperationError


def topic_acls(session: KafkaSession, topics: Iterable[str]) -> list[AclBinding]:
    """The literal topic ACLs of ``topics`` (needs DESCRIBE on the cluster)."""
    wanted = set(topics)
    return [binding for binding in describe_acls(session, TOPIC)
            if binding.pattern == LITERAL and binding.name in wanted]


def mirrored_acl(binding: AclBinding, target_topic: str) -> AclBinding | None:
    """What ``binding`` (a source topic ACL) becomes on the target topic; None when it is not copied.

    MirrorMaker 2's rules: ALLOW WRITE is never copied (only the mirror writes to a mirrored topic), ALLOW
    ALL becomes ALLOW READ, anything else (DENY included) is copied as it is, renamed with the topic.
    """
    if binding.resource_type != TOPIC or binding.pattern != LITERAL:
        return None
    operation = binding.operation
    if binding.permission == "ALLOW":
        if operation == "WRITE":
            return None
        if operation == "ALL":
            operation = "READ"
    return AclBinding(TOPIC, target_topic, LITERAL, binding.principal, binding.host, operation, binding.permission)


@dataclass(frozen=True)
class AclSync:
    """The target ACLs a sync creates, and the source ACLs it leaves out (ALLOW WRITE)."""

    create: tuple[AclBinding, ...]
    skipped: tuple[AclBinding, ...]
    present: tuple[AclBinding, ...]  # already on the target

    def to_dict(self) -> dict[str, Any]:
        return {"create": [binding.to_dict() for binding in self.create],
                "skipped": [binding.to_dict() for binding in self.skipped],
                "present": len(self.present)}


def expected_target_acls(source_acls: Iterable[AclBinding], mapping: Mapping[str, str],
                         ) -> tuple[set[AclBinding], list[AclBinding]]:
    """(target ACLs the source's imply, source ACLs that are not copied) for source -> target topic names."""
    expected: set[AclBinding] = set()
    skipped = []
    for binding in source_acls:
        target_topic = mapping.get(binding.name)
        if target_topic is None:
            continue
        copied = mirrored_acl(binding, target_topic)
        if copied is None:
            skipped.append(binding)
        else:
            expected.add(copied)
    return expected, skipped


def acls_to_sync(source: KafkaSession, target: KafkaSession, mapping: Mapping[str, str]) -> AclSync:
    """What ``--sync-acls`` would create on the target for source -> target topic ``mapping``. Reads only."""
    if not mapping:
        return AclSync((), (), ())
    expected, skipped = expected_target_acls(topic_acls(source, mapping), mapping)
    existing = set(topic_acls(target, mapping.values()))
    return AclSync(tuple(sorted(expected - existing)), tuple(sorted(skipped)), tuple(sorted(expected & existing)))


def apply_acl_sync(target: KafkaSession, sync: AclSync) -> list[str]:
    """Create the ACLs of ``sync`` on the target; one line per ACL created."""
    if not sync.create:
        return []
    with translate_errors(target.cluster, "create ACLs"):
        result = target.admin.create_acls([binding.to_kafka() for binding in sync.create])
    failed = result.get("failed") or []
    if failed:
        error = failed[0] if isinstance(failed[0], type) else type(failed[0])
        if issubclass(error, kafka_errors.AuthorizationError):
            raise authorization_error(f"{target.cluster.name}: create ACLs: ", error())
        raise KafkaOperationError(f"{target.cluster.name}: create ACLs: {error.__name__}")
    return [f"created ACL {binding.label()} on topic {binding.name}" for binding in sync.create]


@dataclass(frozen=True)
class AclDifference:
    source_topic: str
    target_topic: str
    binding: AclBinding  # as it is (or would be) on the target
    side: str  # "missing": the source's ACL implies it, the target lacks it; "extra": the target's alone

    def to_dict(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "target_topic": self.target_topic, "side": self.side,
                **self.binding.to_dict()}


def acl_differences(source: KafkaSession, target: KafkaSession, mapping: Mapping[str, str]) -> list[AclDifference]:
    """``kmc diff --acls``: target ACLs the source's imply but the target lacks, and target ACLs on the
    mirrored topics that no source ACL implies (ALLOW WRITE left out on both sides: a sync never copies
    it, and the mirror's own WRITE lives there)."""
    if not mapping:
        return []
    expected, _ = expected_target_acls(topic_acls(source, mapping), mapping)
    actual = {binding for binding in topic_acls(target, mapping.values())
              if not (binding.permission == "ALLOW" and binding.operation == "WRITE")}
    back = {target_topic: source_topic for source_topic, target_topic in mapping.items()}
    differences = [AclDifference(back[binding.name], binding.name, binding, "missing") for binding in expected - actual]
    differences += [AclDifference(back[binding.name], binding.name, binding, "extra") for binding in actual - expected]
    return sorted(differences, key=lambda item: (item.source_topic, item.side, item.binding))
