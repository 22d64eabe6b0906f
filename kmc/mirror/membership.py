"""What the members of a ``--group`` tell each other through Kafka's group protocol, and how the leader
shares out the source partitions: pure functions, no Kafka (kmc/mirror/member.py runs the membership).

A member's metadata (sent with every JoinGroup) is JSON: the settings all members must agree on, which
member it is (host, pid), the source partitions it sees (topic -> partition count) and those it copied in
the last generation. The leader's assignment gives each member a list of ``[topic, partition]``. Library
code: no printing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmc.mirror.plan import MirrorSpec

PROTOCOL_TYPE = "kmc-mirror"
METADATA_VERSION = 1

Partition = tuple[str, int]


@dataclass(frozen=True)
class Member:
    """One member's share of a mirror in one generation of its group: what :func:`kmc.mirror.run_mirror`
    copies (``partitions``), and how it names itself in checkpoints (``label``, host:pid) and in its
    transactional id (``generation`` and ``member_id``: unique, so fencing an earlier one never fences a
    live member). ``still_member``, asked before each commit, is False once the group may have given the
    partitions to another member (a commit then fails as fenced)."""

    group: str
    generation: int
    member_id: str
    label: str
    partitions: frozenset[Partition]
    # asked before each commit: False once the member may have been replaced (kmc/mirror/member.py)
    still_member: Callable[[], bool] | None = field(default=None, compare=False)

    def owns(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self.partitions

    @property
    def transactional_suffix(self) -> str:
        return f"g{self.generation}-{hashlib.sha256(self.member_id.encode()).hexdigest()[:8]}"


def member_label() -> str:
    """How checkpoints and ``kmc flow status`` name this process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def group_id(group: str, source_cluster_id: str) -> str:
    """The Kafka group (on the target cluster) of one source's mirror: one per source, so the jobs of
    ``kmc aggregate --group`` and a flow with several sources each share out their own partitions."""
    return f"kmc.{group}.{source_cluster_id}"


def agreed_settings(spec: MirrorSpec, source_cluster_id: str, target_cluster_id: str) -> dict[str, Any]:
    """What every member of a group must have alike: the same clusters, flow, selection, rename and
    delivery. (Run options such as --checkpoint-interval or --session-timeout may differ per member.)"""
    return {"source_cluster_id": source_cluster_id, "target_cluster_id": target_cluster_id, "flow": spec.flow,
            "topics": sorted(set(spec.topics)), "exclude": sorted(set(spec.exclude)), "rename": spec.rename,
            "exactly_once": spec.exactly_once, "partitioner": spec.partitioner}


def protocol_name(settings: Mapping[str, Any]) -> str:
    """The group protocol's name carries a digest of the agreed settings: Kafka's coordinator refuses a
    member whose protocol no member of the group supports (INCONSISTENT_GROUP_PROTOCOL), so a member started
    with other settings cannot join, even when two start at the same moment."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"kmc-v{METADATA_VERSION}-{digest}"


def encode_metadata(settings: Mapping[str, Any], label: str, universe: Mapping[str, int],
                    owned: frozenset[Partition]) -> bytes:
    return json.dumps({"version": METADATA_VERSION, "settings": dict(settings), "member": label,
                       "universe": dict(universe), "owned": sorted([list(part) for part in owned])},
                      separators=(",", ":")).encode()


def decode_metadata(data: bytes) -> dict[str, Any]:
    """A member's metadata; ``{}`` for bytes that are not a kmc member's."""
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def encode_assignment(partitions: list[Partition]) -> bytes:
    return json.dumps({"version": METADATA_VERSION, "partitions": [list(part) for part in sorted(partitions)]},
                      separators=(",", ":")).encode()


def decode_assignment(data: bytes) -> frozenset[Partition]:
    found = decode_metadata(data)
    return frozenset((str(topic), int(partition)) for topic, partition in found.get("partitions", []))


def assign(members: Mapping[str, bytes]) -> dict[str, bytes]:
    """The leader's assignment: every partition any member sees, balanced over the members (counts differ
    by at most one), each member keeping as many of the partitions it copied before as its share allows
    (fewer take-overs: each moves a partition's checkpoint and fencing)."""
    metadata = {member_id: decode_metadata(data) for member_id, data in members.items()}
    universe: dict[str, int] = {}
    for found in metadata.values():
        for topic, count in (found.get("universe") or {}).items():
            universe[topic] = max(universe.get(topic, 0), int(count))
    partitions = sorted((topic, p) for topic, count in universe.items() for p in range(count))
    ids = sorted(members)
    shares = {member_id: len(partitions) // len(ids) + (1 if index < len(partitions) % len(ids) else 0)
              for index, member_id in enumerate(ids)}
    given: dict[str, list[Partition]] = {member_id: [] for member_id in ids}
    taken: set[Partition] = set()
    valid = set(partitions)
    for member_id in ids:
        for topic, p in sorted(tuple(part) for part in metadata[member_id].get("owned") or []):
            part = (str(topic), int(p))
            if part in valid and part not in taken and len(given[member_id]) < shares[member_id]:
                given[member_id].append(part)
                taken.add(part)
    rest = [part for part in partitions if part not in taken]
    for member_id in ids:
        while len(given[member_id]) < shares[member_id] and rest:
            given[member_id].append(rest.pop(0))
    return {member_id: encode_assignment(parts) for member_id, parts in given.items()}


def settings_difference(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """What differs between two members' agreed settings, for the one line that refuses the later one:
    ``flow: 'a' here, 'b' in the group; topics: ...``."""
    keys = sorted(set(mine) | set(theirs), key=lambda key: (key not in ("flow", "topics"), key))
    return "; ".join(f"{key}: {mine.get(key)!r} here, {theirs.get(key)!r} in the group"
                     for key in keys if mine.get(key) != theirs.get(key))
