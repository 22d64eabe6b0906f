r"""The vocabulary of kmc's ACL work: a :class:`Permission` (one operation on one resource), what a command
:class:`Need`\ s and the :class:`Verdict` a check gives it; an :class:`AclBinding` (one ACL as plain strings)
and :func:`describe_acls`. Kafka's implied operations (:func:`grants`) live here. Library code: no printing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

from kmc.client import KafkaSession, translate_errors
from kmc.profiles import Cluster

TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID = "topic", "group", "cluster", "transactional_id"
CLUSTER_RESOURCE = "kafka-cluster"
LITERAL, PREFIXED = "literal", "prefixed"
TRANSACTIONAL_ID_PREFIX = "kmc/"  # kmc's transactional ids are kmc/FLOW/DIGEST (--exactly-once)
GRANTED, MISSING, UNKNOWN = "granted", "missing", "unknown"

# Kafka's implied operations: any of these grants the key as well (ALL grants everything).
IMPLIED_BY = {
    "DESCRIBE": {"READ", "WRITE", "DELETE", "ALTER"},
    "DESCRIBE_CONFIGS": {"ALTER_CONFIGS"},
}
DESCRIBE_OR_MORE = {"DESCRIBE", *IMPLIED_BY["DESCRIBE"]}
_RESOURCE_TYPES = {TOPIC: ResourceType.TOPIC, GROUP: ResourceType.GROUP, CLUSTER: ResourceType.CLUSTER,
                   TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID}
_KAFKA_ACLS_RESOURCE = {TOPIC: "--topic", GROUP: "--group", CLUSTER: "--cluster",
                        TRANSACTIONAL_ID: "--transactional-id"}


def grants(operation: str, granted: Iterable[str]) -> bool:
    """Whether holding the operations ``granted`` allows ``operation`` (Kafka's implications included)."""
    held = set(granted)
    return operation in held or "ALL" in held or bool(IMPLIED_BY.get(operation, set()) & held)


@dataclass(frozen=True, order=True)
class Permission:
    """One operation on one resource, e.g. READ on topic orders, WRITE on transactional ids prefixed kmc/."""

    resource_type: str
    name: str
    operation: str
    pattern: str = LITERAL

    @property
    def resource(self) -> str:
        if self.resource_type == CLUSTER:
            return "the cluster"
        kind = "transactional id" if self.resource_type == TRANSACTIONAL_ID else self.resource_type
        if self.pattern == PREFIXED:
            return f"{kind}s prefixed {self.name}"
        return f"{kind} {self.name}"

    def label(self) -> str:
        return f"{self.operation} on {self.resource}"

    def to_dict(self) -> dict[str, str]:
        return {"resource_type": self.resource_type, "resource": self.name, "pattern": self.pattern,
                "operation": self.operation}


@dataclass(frozen=True)
class Need:
    """A permission a command needs on one cluster, and what for."""

    permission: Permission
    purpose: str


@dataclass(frozen=True)
class Verdict:
    need: Need
    status: str  # granted | missing | unknown
    how: str = ""  # what told (or why nothing could)

    def to_dict(self, cluster: str) -> dict[str, Any]:
        return {"cluster": cluster, **self.need.permission.to_dict(), "status": self.status,
                "needed_for": self.need.purpose, "checked_by": self.how}


def principal_of(cluster: Cluster) -> str | None:
    """The principal the brokers see for this profile, when kmc can tell (SASL: ``User:USERNAME``; no
    authentication: ``User:ANONYMOUS``)."""
    if cluster.sasl_mechanism and cluster.username:
        return f"User:{cluster.username}"
    if not cluster.ssl_certfile:
        return "User:ANONYMOUS"
    return None  # the certificate's name, as the brokers' principal mapping rules make it


def grant_command(cluster: Cluster, permission: Permission, operations: Sequence[str]) -> str:
    """The kafka-acls command an operator would run to grant ``operations`` on the permission's resource."""
    principal = principal_of(cluster) or "User:<the principal of ssl_certfile>"
    words = ["kafka-acls", "--add", "--allow-principal", principal]
    for operation in operations:
        words += ["--operation", "".join(part.capitalize() for part in operation.split("_"))]
    words.append(_KAFKA_ACLS_RESOURCE[permission.resource_type])
    if permission.resource_type != CLUSTER:
        words.append(permission.name)
    if permission.pattern == PREFIXED:
        words += ["--resource-pattern-type", "prefixed"]
    return " ".join(words)


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ACL, as plain strings: ``ALLOW User:alice READ on topic orders (literal) from host *``."""

    resource_type: str
    name: str
    pattern: str
    principal: str
    host: str
    operation: str
    permission: str  # ALLOW | DENY

    @classmethod
    def from_kafka(cls, acl: ACL) -> AclBinding:
        resource = acl.resource_pattern
        return cls(resource.resource_type.name.lower(), resource.resource_name, resource.pattern_type.name.lower(),
                   acl.principal, acl.host, acl.operation.name, acl.permission_type.name)

    def to_kafka(self) -> ACL:
        return ACL(self.principal, self.host, ACLOperation[self.operation], ACLPermissionType[self.permission],
                   ResourcePattern(ResourceType[self.resource_type.upper()], self.name,
                                   ACLResourcePatternType[self.pattern.upper()]))

    def label(self) -> str:
        where = "" if self.host == "*" else f" from {self.host}"
        return f"{self.permission} {self.principal} {self.operation}{where}"

    def to_dict(self) -> dict[str, str]:
        return {"resource_type": self.resource_type, "resource": self.name, "pattern": self.pattern,
                "principal": self.principal, "host": self.host, "operation": self.operation,
                "permission": self.permission}

    def applies_to(self, permission: Permission, principal: str) -> bool:
        if self.resource_type != permission.resource_type or self.principal not in (principal, "User:*"):
            return False
        if self.host != "*":
            return False  # which host the broker sees us from is not known here
        if self.pattern == LITERAL:
            return self.name in (permission.name, "*") and (permission.pattern == LITERAL or self.name == "*")
        if self.pattern == PREFIXED:
            return permission.name.startswith(self.name)
        return False


def describe_acls(session: KafkaSession, resource_type: str | None = None) -> list[AclBinding]:
    """Every ACL of the cluster (of one resource type); needs DESCRIBE on the cluster."""
    kind = _RESOURCE_TYPES[resource_type] if resource_type else ResourceType.ANY
    query = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                      resource_pattern=ResourcePatternFilter(kind, None, ACLResourcePatternType.ANY))
    with translate_errors(session.cluster, "describe ACLs"):
        bindings, _ = session.admin.describe_acls(query)
    return sorted(AclBinding.from_kafka(binding) for binding in bindings)
