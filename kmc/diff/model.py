"""What ``kmc diff`` compares and what it found: its options, and the report that owns the JSON shape.
Library code: no printing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmc.errors import UsageError
from kmc.metadata import CLUSTER_SPECIFIC_CONFIGS

# Every kind of difference, in the order a topic's differences are listed.
KINDS = ("missing_topic", "extra_topic", "partitions", "replication_factor", "config", "acl", "records", "data")

@dataclass(frozen=True)
class ConfigSelection:
    """Which topic configs to compare: ``all`` (minus the cluster-specific ones), ``none``, or named keys."""

    mode: str = "all"
    keys: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> ConfigSelection:
        value = text.strip()
        if value.lower() in ("all", "none"):
            return cls(value.lower())
        keys = frozenset(key.strip() for key in value.split(",") if key.strip())
        if not keys:
            raise UsageError(f"--configs: expected all, none or KEY,... (got '{text}')")
        return cls("keys", keys)

    def wanted(self, key: str) -> bool:
        if self.mode == "none":
            return False
        if self.mode == "keys":
            return key in self.keys  # named keys are compared even when cluster-specific
        return key not in CLUSTER_SPECIFIC_CONFIGS

    def to_json(self) -> str | list[str]:
        return sorted(self.keys) if self.mode == "keys" else self.mode


@dataclass(frozen=True)
class DiffOptions:
    topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rename: str = "{topic}"
    configs: ConfigSelection = ConfigSelection()
    data: bool = False
    strict: bool = False
    acls: bool = False  # compare the topics' ACLs as --sync-acls would make them (kmc.acls)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstDifference:
    """Where a partition's two record sequences first part: the index counts records from the start
    of each side; an offset is None on the side that had no record there."""

    index: int
    source_offset: int | None
    target_offset: int | None
    fields: tuple[str, ...] | None = None  # which of key/value/headers/timestamp differ, when both exist

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "source_offset": self.source_offset, "target_offset": self.target_offset,
                "fields": list(self.fields) if self.fields is not None else None}


@dataclass(frozen=True)
class SequenceComparison:
    """The outcome of comparing one partition's records on both sides, in order."""

    source_records: int = 0
    target_records: int = 0
    differing: int = 0  # same index on both sides, different content
    missing: int = 0  # in the source, not in the target (the target is shorter)
    extra: int = 0  # in the target, not in the source (the target is longer)
    first: FirstDifference | None = None
    source_bytes: int = 0
    target_bytes: int = 0

    @property
    def equal(self) -> bool:
        return self.first is None


@dataclass(frozen=True)
class Difference:
    """One difference. Every instance has the same keys in JSON; those that do not apply are null."""

    kind: str
    topic: str | None  # the source topic (for extra_topic: the source name it would come from)
    target_topic: str | None
    partition: int | None = None
    key: str | None = None  # config key, for kind "config"; the ACL ("ALLOW User:x READ"), for kind "acl"
    source: Any = None
    target: Any = None
    data: SequenceComparison | None = None

    def to_dict(self) -> dict[str, Any]:
        data = None
        if self.data is not None:
            data = {"differing": self.data.differing, "missing": self.data.missing, "extra": self.data.extra,
                    "first_difference": self.data.first.to_dict() if self.data.first else None}
        return {"kind": self.kind, "topic": self.topic, "target_topic": self.target_topic,
                "partition": self.partition, "key": self.key, "source": self.source, "target": self.target,
                "data": data}


@dataclass(frozen=True)
class TopicComparison:
    """One source topic and its counterpart, side by side, whether or not they differ."""

    topic: str | None
    target_topic: str | None
    status: str  # equal | different | missing | extra
    partitions: tuple[int | None, int | None]
    replication_factor: tuple[int | None, int | None]
    records: tuple[int | None, int | None]

    def to_dict(self) -> dict[str, Any]:
        def pair(values: tuple[Any, Any]) -> dict[str, Any]:
            return {"source": values[0], "target": values[1]}

        return {"topic": self.topic, "target_topic": self.target_topic, "status": self.status,
                "partitions": pair(self.partitions), "replication_factor": pair(self.replication_factor),
                "records": pair(self.records)}


@dataclass
class DiffReport:
    source: str
    target: str
    options: DiffOptions
    topics: list[TopicComparison] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    records_compared: int | None = None  # record pairs read with --data
    bytes_compared: int | None = None  # key+value+header bytes read on both sides with --data
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return not self.differences

    def rows(self) -> list[dict[str, Any]]:
        """One row per difference (``-o ndjson`` and ``-o csv``): the ``differences`` of :meth:`to_dict`."""
        return [difference.to_dict() for difference in self.differences]

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc diff -o json`` document (keys documented in docs/diff.md)."""
        statuses = [topic.status for topic in self.topics]
        return {
            "source": self.source,
            "target": self.target,
            "rename": self.options.rename,
            "configs": self.options.configs.to_json(),
            "strict": self.options.strict,
            "data": self.options.data,
            "acls": self.options.acls,
            "equal": self.equal,
            "topics": [topic.to_dict() for topic in self.topics],
            "differences": [difference.to_dict() for difference in self.differences],
            "summary": {
                "topics": len(self.topics),
                "equal_topics": statuses.count("equal"),
                "different_topics": statuses.count("different"),
                "missing_topics": statuses.count("missing"),
                "extra_topics": statuses.count("extra"),
                "differences": len(self.differences),
                "records_compared": self.records_compared,
                "bytes_compared": self.bytes_compared,
                "seconds": round(self.seconds, 3),
            },
        }
