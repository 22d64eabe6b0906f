"""What each command needs (:func:`mirror_needs`, :func:`diff_needs`), whether the profile's user holds it
(:func:`check_permissions`), and a denial explained (:func:`explain_denials`): one line naming the missing
operation and resource, with the ``kafka-acls`` command that grants it.

The check changes nothing: the operations the broker reports for topics and the cluster (KIP-430), a
validate-only CreateTopics for topics still to be created, a DescribeTransactions for transactional ids, a
FindCoordinator and an OffsetCommit of a topic that cannot exist for consumer groups, and, where the user
may describe the cluster, its ACLs (DescribeAcls) for what nothing else tells.
Library code: no printing.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import kafka.errors as kafka_errors
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from kmc.acls.model import (
    CLUSTER,
    CLUSTER_RESOURCE,
    DESCRIBE_OR_MORE,
    GRANTED,
    GROUP,
    IMPLIED_BY,
    LITERAL,
    MISSING,
    PREFIXED,
    TOPIC,
    TRANSACTIONAL_ID,
    TRANSACTIONAL_ID_PREFIX,
    UNKNOWN,
    Need,
    Permission,
    Verdict,
    describe_acls,
    grant_command,
    grants,
    principal_of,
)
from kmc.client import KafkaSession, authorization_error, translate_errors
from kmc.errors import AuthorizationError, KmcError
from kmc.metadata import compile_patterns, describe_topics, matches, render_topic_name
from kmc.profiles import Cluster

# The OffsetCommit that probes READ on a group names a topic that cannot exist (':' is not allowed in topic
# names): the broker checks the group's ACL first, then refuses the topic, and commits nothing.
_GROUP_PROBE_TOPIC = TopicPartition("kmc:permission-check", 0)
_PREFIX_PROBE = "kmc-permission-check"  # appended to a prefix: a name the prefixed ACL covers
_COORDINATOR_MOVING = (kafka_errors.NotCoordinatorError, kafka_errors.CoordinatorNotAvailableError,
                       kafka_errors.CoordinatorLoadInProgressError)

# ------------------------------------------------------------------------------------------ needs


_LITERAL_PATTERN = re.compile(r"(?:[A-Za-z0-9_-]|\\\.|\.)+")


def literal_topic_names(patterns: Iterable[str]) -> list[str]:
    """The topic names among ``--topics`` patterns that are plain names (``orders``, ``payments\\.eu``)."""
    names = []
    for pattern in patterns:
        if _LITERAL_PATTERN.fullmatch(pattern):
            name = pattern.replace("\\.", ".")
            if name not in (".", ".."):
                names.append(name)
    return names


def hidden_topics(session: KafkaSession, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that exist but that this user may not describe (Kafka leaves them out of every
    listing, so a mirror or diff would silently skip them)."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    with translate_errors(session.cluster, "describe topics"):
        described = session.admin.describe_topics(wanted)
    return [entry["name"] for entry in described
            if kafka_errors.for_code(entry.get("error_code", 0)) is kafka_errors.TopicAuthorizationFailedError]


def raise_for_hidden_topics(session: KafkaSession, patterns: Iterable[str], found: Iterable[str],
                            exclude: Sequence[str] = ()) -> None:
    """AuthorizationError when a topic named literally in ``patterns`` is not among the topics ``found``
    because this user may not describe it (instead of a run that silently copies or compares nothing)."""
    excluded = compile_patterns(exclude, "--exclude")
    absent = [name for name in literal_topic_names(patterns)
              if name not in set(found) and matches(name, [], excluded)]
    for name in hidden_topics(session, absent):
        raise authorization_error(f"{session.cluster.name}: describe topic {name}: ",
                                  kafka_errors.TopicAuthorizationFailedError())


def _can_find_group(session: KafkaSession, group: str) -> bool:
    """Whether this user may describe ``group`` (FindCoordinator answers "not authorized" otherwise, whether
    or not the group exists)."""
    with translate_errors(session.cluster, f"describe group {group}"):
        try:
            session.admin.describe_groups([group])
        except kafka_errors.GroupAuthorizationFailedError:
            return False
    return True


def _can_commit_group(session: KafkaSession, group: str) -> bool:
    """Whether this user may READ ``group`` (commit its offsets), by an OffsetCommit that commits nothing."""
    deadline = time.monotonic() + session.timeout
    while True:
        with translate_errors(session.cluster, f"check READ on group {group}"):
            errors = session.admin.alter_group_offsets(group, {_GROUP_PROBE_TOPIC: OffsetAndMetadata(0, "", -1)})
        error = errors.get(_GROUP_PROBE_TOPIC, kafka_errors.NoError)
        if not (isinstance(error, type) and issubclass(error, _COORDINATOR_MOVING)) or time.monotonic() > deadline:
            return error is not kafka_errors.GroupAuthorizationFailedError
        time.sleep(0.2)


def raise_for_hidden_groups(session: KafkaSession, patterns: Iterable[str], found: Iterable[str]) -> None:
    """AuthorizationError when a group named literally in ``patterns`` (``--group billing``) is not among the
    groups ``found`` because this user may not describe it (Kafka leaves it out of ListGroups)."""
    for name in sorted(set(literal_topic_names(patterns)) - set(found)):
        if not _can_find_group(session, name):
            raise authorization_error(f"{session.cluster.name}: describe group {name}: ",
                                      kafka_errors.GroupAuthorizationFailedError())


_PREFIX_PATTERN = re.compile(r"(?:[A-Za-z0-9_-]|\\\.)+")


def regex_prefix(pattern: str) -> str:
    """The literal start every name ``pattern`` (an anchored regex) matches begins with ('' when none):
    ``billing-.*`` -> ``billing-``, ``payments\\.(eu|us)`` -> ``payments.``."""
    if "|" in re.sub(r"\\.|\([^()]*\)", "", pattern):
        return ""  # an alternative at the top level: no common start
    found = _PREFIX_PATTERN.match(pattern)
    prefix = found.group(0) if found else ""
    if prefix and pattern[len(prefix):len(prefix) + 1] in ("?", "*", "{"):
        prefix = prefix[:-2] if prefix.endswith("\\.") else prefix[:-1]  # its last character is optional
    return prefix.replace("\\.", ".")


def group_selection(session: KafkaSession, patterns: Sequence[str]) -> list[tuple[str, str]]:
    """The consumer groups ``patterns`` (``--group``, ``--sync-groups``: anchored regexes; all when none)
    select, as ACL resources (name, literal | prefixed): a plain name as it is; a regex as the groups it
    matches that this user can see, or, when it matches none, as the groups prefixed with its literal start
    (``billing-.*``: groups prefixed ``billing-``) when it has one. docs/security.md says why."""
    with translate_errors(session.cluster, "list consumer groups"):
        visible = sorted({entry["group_id"] for entry in session.admin.list_groups()})
    selected: dict[tuple[str, str], None] = {}
    for pattern in patterns or [".*"]:
        literal = literal_topic_names([pattern])
        if literal:
            selected[(literal[0], LITERAL)] = None
            continue
        compiled = compile_patterns([pattern], "--group")
        names = [name for name in visible if matches(name, compiled)]
        selected.update(((name, LITERAL), None) for name in names)
        if not names and regex_prefix(pattern):
            selected[(regex_prefix(pattern), PREFIXED)] = None
    return list(selected)


def _group_needs(groups: Iterable[tuple[str, str]], operations: Iterable[tuple[str, str]]) -> list[Need]:
    return [Need(Permission(GROUP, name, operation, pattern), purpose)
            for name, pattern in groups for operation, purpose in operations]


def _translation_needs(groups: Sequence[tuple[str, str]], mapping: dict[str, str], commit: bool,
                       ) -> tuple[list[Need], list[Need]]:
    """What translating ``groups``' offsets through a mirror's ``mapping`` (source topic -> target topic)
    needs, beyond listing: the groups' offsets and records on the source, the offset map and the copies on
    the target, and the groups there to commit."""
    from kmc.mirror.checkpoints import CHECKPOINT_TOPIC  # the mirror package imports this module
    from kmc.mirror.provenance import PROVENANCE_TOPIC

    source_needs = _group_needs(groups, (("DESCRIBE", "read its committed offsets"),))
    target_needs = _topic_needs(CHECKPOINT_TOPIC, (("READ", "read the mirror's offset map"),))
    target_needs += _topic_needs(PROVENANCE_TOPIC, (("READ", "tell the mirror's copies from other records"),))
    for source_topic, target_topic in sorted(mapping.items()):
        source_needs += _topic_needs(source_topic, (("READ", "read the records its groups consumed"),))
        target_needs += _topic_needs(target_topic, (("READ", "find the copies of the groups' records"),))
    if commit:
        target_needs += _group_needs(groups, (("DESCRIBE", "see whether it has members there"),
                                              ("READ", "commit its translated offsets")))
    return source_needs, target_needs


def _selected_topics(source: KafkaSession, topics: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The source topics ``topics`` selects that this user can see, and those it names literally but may not
    describe."""
    include, excluded = compile_patterns(topics, "--topics"), compile_patterns(exclude, "--exclude")
    names = [topic.name for topic in describe_topics(source, include, excluded, with_offsets=False)
             if not topic.internal]
    literal = [name for name in literal_topic_names(topics) if name not in names and matches(name, [], excluded)]
    return sorted(set(names) | set(hidden_topics(source, literal)))


def translation_needs(source: KafkaSession, target: KafkaSession, *, groups: Sequence[str] = (),
                      topics: Sequence[str] = (), exclude: Sequence[str] = (), rename: str | None = None,
                      flow: str, commit: bool) -> tuple[list[Need], list[Need]]:
    """What ``kmc groups translate`` (``commit``: with ``--commit``) and a round of ``--sync-groups`` need on
    the source and on the target. The target topics are those the mirror's checkpoints name (``rename``
    when given); when the checkpoints cannot be read, READ on them is what is missing."""
    from kmc.mirror.checkpoints import CheckpointStore

    try:
        checkpoints = CheckpointStore(target, flow, source.cluster_id()).load_present()
        named = {key[0]: checkpoint.target_topic for key, checkpoint in checkpoints.items()
                 if not rename or checkpoint.target_topic == render_topic_name(rename, key[0], source.cluster.name)}
    except KmcError:
        named = {}
    include, excluded = compile_patterns(topics, "--topics"), compile_patterns(exclude, "--exclude")
    # with the mirrored topics this user may not even describe (their groups' offsets are hidden then)
    selected = set(_selected_topics(source, topics, exclude)) | set(hidden_topics(
        source, [topic for topic in named if matches(topic, include, excluded)]))
    mapping = {topic: named[topic] for topic in selected if topic in named}
    return _translation_needs(group_selection(source, groups), mapping, commit)


def status_needs(source: KafkaSession, spec: Any) -> tuple[list[Need], list[Need]]:
    """What ``kmc mirror status`` and ``kmc flow status`` need for a mirror with ``spec``."""
    from kmc.mirror.checkpoints import CHECKPOINT_TOPIC

    source_needs = []
    for topic in _selected_topics(source, spec.topics, spec.exclude):
        source_needs += _topic_needs(topic, (("DESCRIBE", "list it and its offsets"),
                                             ("READ", "time its oldest uncopied record")))
    return source_needs, _topic_needs(CHECKPOINT_TOPIC, (("READ", "read the mirror's checkpoints"),))


def _topic_needs(name: str, operations: Iterable[tuple[str, str]]) -> list[Need]:
    return [Need(Permission(TOPIC, name, operation), purpose) for operation, purpose in operations]


def mirror_needs(source: KafkaSession, target: KafkaSession, spec: Any, plan: Any = None,
                 ) -> tuple[list[Need], list[Need]]:
    """What a mirror with ``spec`` (a kmc.mirror.MirrorSpec) needs on the source and on the target.

    With its ``plan`` the needs are exact (which topics are created, grown, re-configured); without one
    (it could not be made: a permission is missing) they come from listing both clusters, and every
    possible action counts. Reads only.
    """
    from kmc.mirror.checkpoints import CHECKPOINT_TOPIC  # the mirror package imports this module
    from kmc.mirror.provenance import PROVENANCE_TOPIC

    if plan is not None:
        mapping = {topic.source_topic: topic.target_topic for topic in plan.topics}
        creates = {topic.target_topic for topic in plan.topics if "create" in topic.actions}
        grows = {topic.target_topic for topic in plan.topics if "add_partitions" in topic.actions}
        syncs = {topic.target_topic for topic in plan.topics if "sync_configs" in topic.actions}
        checkpoint_exists = plan.checkpoint_topic_exists
    else:
        include = compile_patterns(spec.topics, "--topics")
        exclude = compile_patterns(spec.exclude, "--exclude")
        partitions = {topic.name: len(topic.partitions)
                      for topic in describe_topics(source, include, exclude, with_offsets=False) if not topic.internal}
        literal = [name for name in literal_topic_names(spec.topics) if name not in partitions
                   and matches(name, [], exclude)]
        names = set(partitions) | set(hidden_topics(source, literal))
        mapping = {name: render_topic_name(spec.rename, name, source.cluster.name) for name in sorted(names)}
        wanted = set(mapping.values()) | {CHECKPOINT_TOPIC, PROVENANCE_TOPIC}
        existing = {topic.name: len(topic.partitions) for topic in describe_topics(
            target, include_internal=True, with_offsets=False, wanted=wanted.__contains__)}
        creates = {name for name in mapping.values() if name not in existing}
        grows = {target_topic for source_topic, target_topic in mapping.items() if target_topic in existing
                 and existing[target_topic] < partitions.get(source_topic, 0) and spec.partitioner != "key"}
        syncs = set(mapping.values()) - creates if spec.sync_configs else set()
        checkpoint_exists = CHECKPOINT_TOPIC in existing
    source_needs: list[Need] = []
    target_needs: list[Need] = []
    for source_topic, target_topic in sorted(mapping.items()):
        source_needs += _topic_needs(source_topic, (("DESCRIBE", "list it"), ("DESCRIBE_CONFIGS", "read its configs"),
                                                    ("READ", "copy its records")))
        if target_topic in creates:
            target_needs += _topic_needs(target_topic, (("CREATE", "create the mirrored topic"),))
        else:
            target_needs += _topic_needs(target_topic, (("DESCRIBE_CONFIGS", "compare its configs"),))
        target_needs += _topic_needs(target_topic, (("DESCRIBE", "list it"), ("WRITE", "write the records")))
        if target_topic in grows:
            target_needs += _topic_needs(target_topic, (("ALTER", "add the partitions the source gained"),))
        if target_topic in syncs:
            target_needs += _topic_needs(target_topic, (("ALTER_CONFIGS", "sync its configs (--sync-configs)"),))
    with translate_errors(target.cluster, "list topics"):
        provenance_exists = PROVENANCE_TOPIC in set(target.admin.list_topics())
    if not provenance_exists:
        target_needs += _topic_needs(PROVENANCE_TOPIC, (("CREATE", "create kmc's provenance topic"),))
    target_needs += _topic_needs(PROVENANCE_TOPIC, (("DESCRIBE", "find the provenance topic"),
                                                    ("WRITE", "announce the mirror's producer")))
    if not checkpoint_exists:
        target_needs += _topic_needs(CHECKPOINT_TOPIC, (("CREATE", "create kmc's checkpoint topic"),))
    target_needs += _topic_needs(CHECKPOINT_TOPIC, (("DESCRIBE", "find the checkpoints"),
                                                    ("READ", "resume from the checkpoints"),
                                                    ("WRITE", "write checkpoints")))
    if spec.exactly_once:
        for operation in ("DESCRIBE", "WRITE"):
            target_needs.append(Need(Permission(TRANSACTIONAL_ID, TRANSACTIONAL_ID_PREFIX, operation, PREFIXED),
                                     "write in transactions for --exactly-once"))
    if spec.sync_groups:
        groups = group_selection(source, spec.sync_groups)
        more = _translation_needs(groups, mapping, commit=True)
        for needs, extra in zip((source_needs, target_needs), more, strict=True):
            held = {need.permission for need in needs}
            needs += [Need(need.permission, f"{need.purpose} (--sync-groups)") for need in extra
                      if need.permission not in held]
    if getattr(spec, "group", None):
        # the group's Kafka ids are kmc.NAME.<source cluster id> (kmc/mirror/membership.py)
        for operation, purpose in (("READ", "join the group of --group members"),
                                   ("DESCRIBE", "name what differs when a member is refused")):
            target_needs.append(Need(Permission(GROUP, f"kmc.{spec.group}.", operation, PREFIXED), purpose))
    if getattr(spec, "sync_acls", False):
        source_needs.append(Need(Permission(CLUSTER, CLUSTER_RESOURCE, "DESCRIBE"),
                                 "read the topics' ACLs (--sync-acls)"))
        target_needs.append(Need(Permission(CLUSTER, CLUSTER_RESOURCE, "ALTER"),
                                 "create the topics' ACLs (--sync-acls)"))
    return source_needs, target_needs


def diff_needs(pairs: Iterable[tuple[str, str]], data: bool, acls: bool = False) -> tuple[list[Need], list[Need]]:
    """What ``kmc diff`` needs on each side for these (source topic, target topic) pairs."""
    sides: tuple[list[Need], list[Need]] = ([], [])
    for names in pairs:
        for side, name in zip(sides, names, strict=True):
            side += _topic_needs(name, (("DESCRIBE", "list it"), ("DESCRIBE_CONFIGS", "compare its configs")))
            if data:
                side += _topic_needs(name, (("READ", "compare its records (--data)"),))
    if acls:
        for side in sides:
            side.append(Need(Permission(CLUSTER, CLUSTER_RESOURCE, "DESCRIBE"), "read the topics' ACLs (--acls)"))
    return sides


# ------------------------------------------------------------------------------------------ checking


def check_permissions(session: KafkaSession, needs: Sequence[Need]) -> list[Verdict]:
    """Whether the profile's user holds each of ``needs`` on this cluster: granted, missing, or unknown
    (nothing the user may ask tells). Changes nothing."""
    if not needs:
        return []
    admin = session.admin
    cluster = session.cluster
    found: dict[Need, tuple[str, str]] = {}
    with translate_errors(cluster, "describe cluster"):
        cluster_operations = admin.describe_cluster().get("authorized_operations") or []
    for need in needs:
        permission = need.permission
        if permission.resource_type == CLUSTER:
            if cluster_operations:
                found[need] = (GRANTED if grants(permission.operation, cluster_operations) else MISSING,
                               "the cluster's authorized operations")
            elif permission.operation == "DESCRIBE":
                found[need] = (MISSING, "the cluster's authorized operations (none reported)")
    _check_topics(session, [need for need in needs if need.permission.resource_type == TOPIC], found)
    _check_transactional_ids(session, [need for need in needs if need.permission.resource_type == TRANSACTIONAL_ID],
                             found)
    _check_groups(session, [need for need in needs if need.permission.resource_type == GROUP], found)
    unsettled = [need for need in needs if need not in found]
    if unsettled and "CLUSTER_ACTION" in cluster_operations:
        # what only brokers need: this user is a super user, or the cluster has no authorizer
        for need in unsettled:
            found[need] = (GRANTED, "a super user (or no authorizer)")
    elif unsettled and "DESCRIBE" in cluster_operations:
        _check_by_acls(session, unsettled, found)
    return [Verdict(need, *found.get(need, (UNKNOWN, "nothing this user may ask tells"))) for need in needs]


def _check_topics(session: KafkaSession, needs: Sequence[Need], found: dict[Need, tuple[str, str]]) -> None:
    names = sorted({need.permission.name for need in needs if need.permission.pattern == LITERAL})
    if not names:
        return
    with translate_errors(session.cluster, "describe topics"):
        described = {entry["name"]: entry for entry in session.admin.describe_topics(names)}
    absent = []
    for need in needs:
        entry = described.get(need.permission.name)
        if entry is None:
            continue
        error = kafka_errors.for_code(entry.get("error_code", 0))
        operation = need.permission.operation
        operations = entry.get("authorized_operations")
        if error is kafka_errors.NoError and operations is not None:
            found[need] = (GRANTED if grants(operation, operations) else MISSING, "the topic's authorized operations")
        elif error is kafka_errors.TopicAuthorizationFailedError and operation in DESCRIBE_OR_MORE:
            found[need] = (MISSING, "the topic cannot be described")  # each of these would imply DESCRIBE
        if operation == "CREATE" and need not in found:
            absent.append(need)
    if absent:
        topics = {need.permission.name: {"num_partitions": 1, "replication_factor": -1} for need in absent}
        with translate_errors(session.cluster, "check topic creation (validate only)"):
            response = session.admin.create_topics(topics, validate_only=True, raise_errors=False)
        errors = {entry["name"]: kafka_errors.for_code(entry.get("error_code", 0))
                  for entry in response.get("topics", [])}
        for need in absent:
            error = errors.get(need.permission.name)
            if error in (kafka_errors.TopicAuthorizationFailedError, kafka_errors.ClusterAuthorizationFailedError):
                found[need] = (MISSING, "a validate-only CreateTopics")
            elif error is not None:
                found[need] = (GRANTED, "a validate-only CreateTopics")


def _check_transactional_ids(session: KafkaSession, needs: Sequence[Need], found: dict[Need, tuple[str, str]]) -> None:
    for name in sorted({need.permission.name for need in needs}):
        probe = name + "kmc-permission-check" if name.endswith("/") else name
        try:
            session.admin.describe_transactions([probe])
            described = True
        except kafka_errors.TransactionalIdAuthorizationFailedError:
            described = False
        except kafka_errors.KafkaError:
            described = True  # e.g. TransactionalIdNotFound: it was allowed to ask
        for need in needs:
            if need.permission.name != name:
                continue
            if need.permission.operation == "DESCRIBE":
                found[need] = (GRANTED if described else MISSING, "a DescribeTransactions request")
            elif not described and need.permission.operation in IMPLIED_BY["DESCRIBE"]:
                found[need] = (MISSING, "a DescribeTransactions request")


def _check_groups(session: KafkaSession, needs: Sequence[Need], found: dict[Need, tuple[str, str]]) -> None:
    for name, pattern in sorted({(need.permission.name, need.permission.pattern) for need in needs}):
        probe = name + _PREFIX_PROBE if pattern == PREFIXED else name
        described = _can_find_group(session, probe)
        committed: bool | None = None
        for need in needs:
            if (need.permission.name, need.permission.pattern) != (name, pattern):
                continue
            operation = need.permission.operation
            if operation == "DESCRIBE":
                found[need] = (GRANTED if described else MISSING, "a FindCoordinator request")
            elif not described and operation in IMPLIED_BY["DESCRIBE"]:
                found[need] = (MISSING, "a FindCoordinator request")
            elif operation == "READ":
                if committed is None:
                    committed = _can_commit_group(session, probe)
                found[need] = (GRANTED if committed else MISSING, "an OffsetCommit that commits nothing")


def _check_by_acls(session: KafkaSession, needs: Sequence[Need], found: dict[Need, tuple[str, str]]) -> None:
    principal = principal_of(session.cluster)
    if principal is None:
        return
    bindings = describe_acls(session)
    for need in needs:
        relevant = [binding for binding in bindings if binding.applies_to(need.permission, principal)]
        denied = any(binding.permission == "DENY" and grants(need.permission.operation, [binding.operation])
                     for binding in relevant)
        allowed = any(binding.permission == "ALLOW" and grants(need.permission.operation, [binding.operation])
                      for binding in relevant)
        if denied:
            found[need] = (MISSING, "the cluster's ACLs (a DENY)")
        else:
            found[need] = (GRANTED if allowed else MISSING, "the cluster's ACLs")


# ------------------------------------------------------------------------------------------ explaining


def missing_line(cluster: Cluster, verdicts: Sequence[Verdict], context: str = "") -> tuple[str, str] | None:
    """(message, hint) naming the first resource with missing permissions and all of them on it; a resource
    named in ``context`` (the broker's error) comes first."""
    missing = [verdict for verdict in verdicts if verdict.status == MISSING]
    if not missing:
        return None
    if context:
        named = re.compile(r"(?<![\w.-])({})(?![\w.-])".format("|".join(
            re.escape(verdict.need.permission.name) for verdict in missing)))
        mentioned = set(named.findall(context))
        missing.sort(key=lambda verdict: verdict.need.permission.name not in mentioned)
    first = missing[0].need.permission
    same = [verdict for verdict in missing if (verdict.need.permission.resource_type, verdict.need.permission.name,
                                               verdict.need.permission.pattern)
            == (first.resource_type, first.name, first.pattern)]
    operations = list(dict.fromkeys(verdict.need.permission.operation for verdict in same))
    purposes = ", ".join(dict.fromkeys(verdict.need.purpose for verdict in same))
    listed = operations[0] if len(operations) == 1 else f"{', '.join(operations[:-1])} and {operations[-1]}"
    message = f"{cluster.name}: not authorized: {listed} on {first.resource} (to {purposes})"
    others = len({(verdict.need.permission.resource_type, verdict.need.permission.name)
                  for verdict in missing}) - 1
    if others:
        message += f"; {others} more resource{'s' if others > 1 else ''} lack{'' if others > 1 else 's'} ACLs too"
    # grant what is needed, leaving out what another granted operation implies
    granting = [operation for operation in operations
                if not any(grants(operation, [other]) for other in operations if other != operation)]
    return message, "grant it: " + grant_command(cluster, first, granting)


@contextlib.contextmanager
def explain_denials(checks: Callable[[], Sequence[tuple[KafkaSession, Sequence[Need]]]]) -> Iterator[None]:
    """Turn an AuthorizationError raised in the block into one naming the missing operation and resource.

    ``checks`` gives, when a denial happens, each session with what the command needs there. When the
    check finds nothing missing (or cannot run), the original error stands.
    """
    try:
        yield
    except AuthorizationError as exc:
        better = _explained(exc, checks)
        if better is None:
            raise
        raise better from exc


def _explained(error: AuthorizationError, checks: Callable[[], Sequence[tuple[KafkaSession, Sequence[Need]]]],
               ) -> AuthorizationError | None:
    try:
        pairs = checks()
        verdicts = [(session.cluster, check_permissions(session, needs)) for session, needs in pairs]
    except KmcError:
        return None
    # the cluster the broker's error came from first (its message starts with the profile name)
    verdicts.sort(key=lambda pair: not error.message.startswith(f"{pair[0].name}: "))
    for cluster, found in verdicts:
        line = missing_line(cluster, found, error.message)
        if line is not None:
            return AuthorizationError(*line)
    if isinstance(error.__cause__, kafka_errors.TransactionalIdAuthorizationFailedError) or \
            "TransactionalIdAuthorizationFailed" in error.message:
        # DescribeTransactions settles DESCRIBE; WRITE only the ACLs would tell: it is the one left
        for cluster, found in verdicts:
            unknown = [verdict for verdict in found if verdict.status == UNKNOWN
                       and verdict.need.permission.resource_type == TRANSACTIONAL_ID]
            inferred = missing_line(cluster, [Verdict(verdict.need, MISSING) for verdict in unknown])
            if inferred is not None:
                return AuthorizationError(*inferred)
    return None


def check_mirror(source: KafkaSession, target: KafkaSession, spec: Any, plan: Any = None,
                 ) -> list[tuple[Cluster, list[Verdict]]]:
    """Every permission a mirror needs, checked on both clusters (``kmc mirror --dry-run``)."""
    source_needs, target_needs = mirror_needs(source, target, spec, plan)
    return [(source.cluster, check_permissions(source, source_needs)),
            (target.cluster, check_permissions(target, target_needs))]


def permission_failure(checks: Sequence[tuple[Cluster, Sequence[Verdict]]]) -> AuthorizationError | None:
    """The error a check that found missing permissions ends with (the first, and how many in all)."""
    missing = sum(verdict.status == MISSING for _, verdicts in checks for verdict in verdicts)
    for cluster, verdicts in checks:
        line = missing_line(cluster, verdicts)
        if line is not None:
            message, hint = line
            if missing > 1:
                message = f"{missing} permissions missing; first: {message}"
            return AuthorizationError(message, hint=hint)
    return None


def explain_mirror_denials(source: KafkaSession, target: KafkaSession, spec: Any) -> contextlib.AbstractContextManager:
    """:func:`explain_denials` for a mirror (the hook in kmc.mirror.run_mirror)."""

    def checks() -> list[tuple[KafkaSession, list[Need]]]:
        source_needs, target_needs = mirror_needs(source, target, spec)
        return [(source, source_needs), (target, target_needs)]

    return explain_denials(checks)


def explain_translation_denials(source: KafkaSession, target: KafkaSession, *, groups: Sequence[str],
                                topics: Sequence[str] = (), exclude: Sequence[str] = (), rename: str | None = None,
                                flow: str, commit: bool) -> contextlib.AbstractContextManager:
    """:func:`explain_denials` for ``kmc groups translate`` and ``--sync-groups`` (kmc.mirror.groups)."""

    def checks() -> list[tuple[KafkaSession, list[Need]]]:
        source_needs, target_needs = translation_needs(source, target, groups=groups, topics=topics,
                                                       exclude=exclude, rename=rename, flow=flow, commit=commit)
        return [(source, source_needs), (target, target_needs)]

    return explain_denials(checks)


def explain_status_denials(source: KafkaSession, target: KafkaSession, spec: Any) -> contextlib.AbstractContextManager:
    """:func:`explain_denials` for ``kmc mirror status`` and ``kmc flow status`` (kmc.mirror.status)."""

    def checks() -> list[tuple[KafkaSession, list[Need]]]:
        source_needs, target_needs = status_needs(source, spec)
        return [(source, source_needs), (target, target_needs)]

    return explain_denials(checks)
