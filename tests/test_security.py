"""Security isolation against real secure sandboxes: least privilege, ACL sync, TLS failures, secrets.

Two SASL_SSL sandboxes (``ssrc``, ``sdst``: SCRAM-SHA-512, TLS from a CA of their own, KRaft's
StandardAuthorizer with allow.everyone.if.no.acl.found=false) and one mutual-TLS sandbox (``smtls``) start once
for the module. Data is written and verified with confluent-kafka as each sandbox's admin (SASL_SSL, or SSL with
a client certificate); kmc runs as users the tests create, holding exactly the ACLs a test grants.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from kmc import sandbox
from tests.conftest import sandboxes
from tests.helpers import (
    Result,
    admin,
    client_settings,
    commit,
    committed_offsets,
    count,
    create_topic,
    drop_admin_clients,
    kmc,
    numbered,
    produce,
    read_all,
)

pytestmark = pytest.mark.kafka

SOURCE, TARGET, MTLS = "ssrc", "sdst", "smtls"
TARGET_PREFIX = "lp."  # the least-privilege test's target topics: lp.<run>.<topic>
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
TOPIC, CLUSTER, TXN, GROUP = ResourceType.TOPIC, ResourceType.BROKER, ResourceType.TRANSACTIONAL_ID, ResourceType.GROUP
GROUP_PREFIX = "billing-"  # the consumer groups the least-privilege group test translates: billing-<run>
Op = AclOperation


@pytest.fixture(scope="module")
def secure() -> Iterator[dict[str, sandbox.SandboxCluster]]:
    with sandboxes([SOURCE, TARGET], security_mode="sasl_ssl") as clusters:
        yield {cluster.name: cluster for cluster in clusters}
        _forget_clients()


@pytest.fixture(scope="module")
def mtls() -> Iterator[sandbox.SandboxCluster]:
    with sandboxes([MTLS], security_mode="mtls") as clusters:
        yield clusters[0]
        _forget_clients()


def _forget_clients() -> None:
    """Destroy the cached confluent-kafka clients while their brokers still run (else librdkafka logs
    "connection refused" once they are gone)."""
    drop_admin_clients()
    gc.collect()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("")
    path.chmod(0o600)
    monkeypatch.setenv("KMC_CONFIG", str(path))
    return path


# ------------------------------------------------------------------------------------------ helpers


def new_user(cluster: sandbox.SandboxCluster, name: str, password: str) -> None:
    """A SCRAM-SHA-512 user on a secure sandbox, usable once this returns."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    for future in admin(cluster).alter_user_scram_credentials(
            [UserScramCredentialUpsertion(name, info, password.encode())]).values():
        future.result(30)
    settings = {**client_settings(cluster), "sasl.username": name, "sasl.password": password}
    deadline = time.monotonic() + 30
    while True:  # brokers learn new credentials from the metadata log, a moment later
        consumer = Consumer({**settings, "group.id": "kmc-login-check", "log_level": 0})
        try:
            consumer.list_topics(timeout=5)
            return
        except Exception:  # noqa: BLE001 - not known yet
            assert time.monotonic() < deadline, f"user {name} cannot log in"
            time.sleep(0.3)
        finally:
            consumer.close()


def profile(name: str, cluster: sandbox.SandboxCluster, user: str, password_file: Path, **extra: str) -> str:
    """A [clusters.NAME] table for ``user`` on a secure sandbox, its password read from ``password_file``."""
    security = cluster.data_dir / "security"
    lines = [f"[clusters.{name}]", f'bootstrap = ["{cluster.bootstrap[0]}"]', 'security_protocol = "SASL_SSL"',
             'sasl_mechanism = "SCRAM-SHA-512"', f'username = "{user}"', f'password_file = "{password_file}"',
             f'ssl_cafile = "{security / "ca.pem"}"', *(f'{key} = "{value}"' for key, value in extra.items())]
    return "\n".join(lines) + "\n"


def password_file(directory: Path, name: str, password: str) -> Path:
    path = directory / name
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def acl(principal: str, resource: ResourceType, name: str, operation: AclOperation,
        pattern: ResourcePatternType = LITERAL) -> AclBinding:
    return AclBinding(resource, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)


def _acls_of(cluster: sandbox.SandboxCluster, principal: str) -> set[tuple]:
    query = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None, Op.ANY,
                             AclPermissionType.ANY)
    return {_key(binding) for binding in admin(cluster).describe_acls(query).result(30)}


def _key(binding: AclBinding) -> tuple:
    return (binding.restype, binding.name, binding.resource_pattern_type, binding.principal, binding.operation)


def grant(cluster: sandbox.SandboxCluster, *bindings: AclBinding) -> None:
    """Create ACLs and wait until the broker's authorizer has them (DescribeAcls answers from it)."""
    for future in admin(cluster).create_acls(list(bindings)).values():
        future.result(30)
    _wait_acls(cluster, bindings, present=True)


def revoke(cluster: sandbox.SandboxCluster, *bindings: AclBinding) -> None:
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                b.permission_type) for b in bindings]
    for future in admin(cluster).delete_acls(filters).values():
        future.result(30)
    _wait_acls(cluster, bindings, present=False)


def _wait_acls(cluster: sandbox.SandboxCluster, bindings: tuple[AclBinding, ...], present: bool) -> None:
    wanted = {_key(binding) for binding in bindings}
    deadline = time.monotonic() + 30
    while True:
        held = set().union(*(_acls_of(cluster, principal) for principal in {b.principal for b in bindings}))
        if (wanted <= held) if present else not (wanted & held):
            return
        assert time.monotonic() < deadline, f"ACLs not {'applied' if present else 'removed'}: {wanted}"
        time.sleep(0.2)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("kmc: error:")]


def denied(result: Result, code: int = 5) -> str:
    """The one error line of a run that a missing ACL stopped (info lines before it are fine)."""
    lines = error_lines(result)
    assert result.code == code and len(lines) == 1 and "Traceback" not in result.stderr, result
    return lines[0]


def alter_topic_config(cluster: sandbox.SandboxCluster, topic: str, configs: dict[str, str]) -> None:
    entries = [ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in configs.items()]
    for future in admin(cluster).incremental_alter_configs(
            [ConfigResource("topic", topic, incremental_configs=entries)]).values():
        future.result(30)


def topic_config(cluster: sandbox.SandboxCluster, topic: str, key: str) -> str | None:
    [found] = admin(cluster).describe_configs([ConfigResource("topic", topic)]).values()
    entry = found.result(30).get(key)
    return None if entry is None else entry.value


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------ the sandboxes


def test_secure_sandboxes_register_profiles_that_read_secrets_from_files(secure, mtls) -> None:  # noqa: ANN001
    rows = {row["name"]: row for row in kmc("sandbox", "status", "-o", "json").json()}
    assert (rows[SOURCE]["security"], rows[TARGET]["security"], rows[MTLS]["security"]) == ("sasl_ssl",) * 2 + ("mtls",)
    assert "SECURITY" in kmc("sandbox", "status").stdout
    kmc("sandbox", "up", SOURCE)  # an existing sandbox is taken as it is
    line = denied(kmc("sandbox", "up", SOURCE, "--mtls", expect=None), 2)
    assert f"sandbox {SOURCE} already exists with security sasl_ssl" in line
    shown = kmc("profile", "show", f"{SOURCE}.mirror", "-o", "json").json()
    security = secure[SOURCE].data_dir / "security"
    assert shown["security_protocol"] == "SASL_SSL" and shown["sasl_mechanism"] == "SCRAM-SHA-512"
    assert shown["username"] == "mirror" and shown["password"] == "***"
    assert shown["password_file"] == str(security / "mirror.password")
    assert shown["ssl_cafile"] == str(security / "ca.pem")
    shown = kmc("profile", "show", MTLS, "-o", "json").json()
    assert shown["security_protocol"] == "SSL" and shown["ssl_certfile"].endswith("admin.pem")
    assert shown["ssl_password"] == "***" and "password" not in shown
    for directory in (security, mtls.data_dir / "security"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in directory.iterdir():
            if path.suffix in (".password", ".keypass", ".key", ".p12"):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for cluster in (*secure.values(), mtls):
        for broker in cluster.brokers:
            assert stat.S_IMODE(broker.config_file.stat().st_mode) == 0o600
    # no secret on any process's command line (readable by every user of the machine)
    secrets = [(security / f"{user}.password").read_text().strip() for user in ("admin", "mirror")]
    for pid in (broker.pid for cluster in (*secure.values(), mtls) for broker in cluster.brokers):
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert not any(secret in command_line for secret in secrets)
    # both profiles authenticate; the mirror user sees nothing until it is granted ACLs
    rows = {row["name"]: row for row in kmc("profile", "test", SOURCE, f"{SOURCE}.mirror", MTLS, f"{MTLS}.mirror",
                                            "-o", "json").json()}
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "ok")
    assert rows[f"{SOURCE}.mirror"]["authentication"] == "SCRAM-SHA-512 as mirror, TLS"
    assert rows[f"{MTLS}.mirror"]["authentication"] == "TLS client certificate mirror.pem"
    create_topic(secure[SOURCE], f"hidden-{uuid.uuid4().hex[:6]}")
    assert kmc("topics", f"{SOURCE}.mirror", "-o", "json").json() == []


def test_wrong_password_is_exit_5_in_one_line(secure, config: Path, tmp_path: Path) -> None:  # noqa: ANN001
    wrong = f"not-the-password-{uuid.uuid4().hex[:6]}"
    config.write_text(profile("wrong", secure[SOURCE], "mirror", password_file(tmp_path, "wrong.pw", wrong)))
    started = time.monotonic()
    result = kmc("topics", "wrong", "--timeout", "20", expect=None)
    line = denied(result)
    assert "authentication failed" in line and wrong not in result.stdout + result.stderr
    assert time.monotonic() - started < 5  # the broker said so: no waiting for --timeout


# ------------------------------------------------------------------------------------------ least privilege


def least_privilege_acls(principal: str, topic: str) -> dict[str, list[AclBinding]]:
    """The exact ACL set every command runs with (README, "Least privilege"): nothing that writes to the
    source; on the target, what creating, writing, growing and re-configuring the mirrored topics takes, kmc's
    checkpoint and provenance topics and its transactional ids; DESCRIBE on each cluster for inventory."""
    return {
        SOURCE: [acl(principal, TOPIC, topic, Op.READ), acl(principal, TOPIC, topic, Op.DESCRIBE_CONFIGS),
                 acl(principal, CLUSTER, "kafka-cluster", Op.DESCRIBE)],
        TARGET: [acl(principal, TOPIC, TARGET_PREFIX, operation, PREFIXED)
                 for operation in (Op.CREATE, Op.WRITE, Op.READ, Op.ALTER, Op.ALTER_CONFIGS)]
        + [acl(principal, TOPIC, "kmc.checkpoints", operation) for operation in (Op.CREATE, Op.READ, Op.WRITE)]
        + [acl(principal, TOPIC, "kmc.provenance", operation) for operation in (Op.CREATE, Op.WRITE)]
        + [acl(principal, TXN, "kmc/", Op.WRITE, PREFIXED), acl(principal, CLUSTER, "kafka-cluster", Op.DESCRIBE)],
    }


def test_least_privilege_runs_every_command_and_each_acl_is_needed(secure, config: Path,  # noqa: ANN001, PLR0915
                                                                     tmp_path: Path) -> None:
    source, target = secure[SOURCE], secure[TARGET]
    user = f"lp-{uuid.uuid4().hex[:6]}"
    principal = f"User:{user}"
    password = f"pw-{uuid.uuid4().hex}"
    for cluster in (source, target):
        new_user(cluster, user, password)
    secret = password_file(tmp_path, "lp.pw", password)
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    config.write_text(profile("lpsrc", source, user, secret) + profile("lpdst", target, user, secret)
                      + f'[flows.lpflow]\nfrom = ["lpsrc"]\nto = "lpdst"\ntopics = ["{topic}"]\n'
                      + f'rename = "{TARGET_PREFIX}flow.{{topic}}"\n')
    create_topic(source, topic, 3, {"retention.ms": "86400000"})  # records are 1 h old
    produce(source, topic, numbered(30, 3))
    acls = least_privilege_acls(principal, topic)
    grant(source, *acls[SOURCE])
    grant(target, *acls[TARGET])
    copy = f"{TARGET_PREFIX}1.{topic}"

    def mirror(*args: str, expect: int | None = 0) -> Result:
        return kmc("mirror", "lpsrc", "lpdst", "--topics", topic, "--once", *args, expect=expect)

    # --- every command succeeds with exactly this set
    rows = kmc("profile", "test", "lpsrc", "lpdst", "-o", "json").json()
    assert [row["authentication"] for row in rows] == [f"SCRAM-SHA-512 as {user}, TLS"] * 2
    assert [row["topic"] for row in kmc("topics", "lpsrc", "-o", "json").json()] == [topic]
    kmc("groups", "lpsrc")
    assert all(row["bytes"] is not None for row in kmc("inventory", "lpsrc", "lpdst", "-o", "json").json())
    plan = kmc("mirror", "lpsrc", "lpdst", "--topics", topic, "--rename", f"{TARGET_PREFIX}1.{{topic}}",
               "--exactly-once", "--sync-configs", "--dry-run", "-o", "json").json()
    assert plan["permissions"] and {row["status"] for row in plan["permissions"]} == {"granted"}, plan["permissions"]
    result = mirror("--rename", f"{TARGET_PREFIX}1.{{topic}}", "-o", "json").json()
    assert result["records"] == 30 and count(target, copy) == 30
    eos = f"{TARGET_PREFIX}eos.{topic}"
    to_eos = ("--rename", f"{TARGET_PREFIX}eos.{{topic}}", "--flow", "lpeos", "--exactly-once")  # own checkpoints
    assert mirror(*to_eos, "-o", "json").json()["records"] == 30
    assert count(target, eos) == 30
    admin(source).create_partitions([NewPartitions(topic, 4)])[topic].result(30)
    produce(source, topic, numbered(4, 4, start=30))
    result = mirror("--rename", f"{TARGET_PREFIX}1.{{topic}}", "-o", "json").json()
    assert f"added partitions to {copy} (now 4)" in result["changes"] and count(target, copy) == 34
    alter_topic_config(source, topic, {"retention.ms": "172800000"})
    result = mirror("--rename", f"{TARGET_PREFIX}1.{{topic}}", "--sync-configs", "-o", "json").json()
    assert f"synced configs of {copy} (retention.ms)" in result["changes"]
    wait_for(lambda: topic_config(target, copy, "retention.ms") == "172800000", 15, "the synced config")
    kmc("diff", "lpsrc", "lpdst", "--topics", topic, "--rename", f"{TARGET_PREFIX}1.{{topic}}", "--data")
    kmc("aggregate", "lpsrc", "--into", "lpdst", "--topics", topic, "--rename", f"{TARGET_PREFIX}agg.{{topic}}",
        "--flow", "lpagg")
    assert count(target, f"{TARGET_PREFIX}agg.{topic}") == 34
    kmc("flow", "run", "lpflow")
    assert count(target, f"{TARGET_PREFIX}flow.{topic}") == 34
    assert {row["records_behind"] for row in kmc("flow", "status", "lpflow", "-o", "json").json()} == {0}

    # --- without any one of them, a command fails: exit 5 and one line naming the operation and resource
    def without(cluster: sandbox.SandboxCluster, binding: AclBinding, run, needle: str, code: int = 5) -> None:  # noqa: ANN001
        revoke(cluster, binding)
        try:
            line = denied(run(), code)
            assert needle in line, line
        finally:
            grant(cluster, binding)

    def more() -> None:
        produce(source, topic, numbered(4, 4, start=int(time.time() * 1000) % 100000))

    to_copy = ("--rename", f"{TARGET_PREFIX}1.{{topic}}")
    source_read, source_configs, source_cluster = acls[SOURCE]
    (create, write, read, alter, alter_configs, cp_create, cp_read, cp_write, pv_create, pv_write, txn_write,
     target_cluster) = acls[TARGET]
    more()
    without(source, source_read, lambda: mirror(*to_copy, expect=None), f"READ on topic {topic}")
    without(source, source_configs, lambda: mirror(*to_copy, expect=None), f"DESCRIBE_CONFIGS on topic {topic}")
    # inventory reports what it could gather (exit 6, partial), naming what it could not
    without(source, source_cluster, lambda: kmc("inventory", "lpsrc", expect=None), "DESCRIBE on the cluster", 6)
    without(target, create, lambda: mirror("--rename", f"{TARGET_PREFIX}new.{{topic}}", "--flow", "lpnew", expect=None),
            f"CREATE on topic {TARGET_PREFIX}new.{topic}")
    without(target, write, lambda: mirror(*to_copy, expect=None), f"WRITE on topic {copy}")
    without(target, read, lambda: kmc("diff", "lpsrc", "lpdst", "--topics", topic, *to_copy, "--data", expect=None),
            f"READ on topic {copy}")
    admin(source).create_partitions([NewPartitions(topic, 5)])[topic].result(30)
    without(target, alter, lambda: mirror(*to_copy, expect=None), f"ALTER on topic {copy}")
    alter_topic_config(source, topic, {"retention.ms": "259200000"})
    without(target, alter_configs, lambda: mirror(*to_copy, "--sync-configs", expect=None),
            f"ALTER_CONFIGS on topic {copy}")
    more()
    without(target, cp_read, lambda: mirror(*to_copy, expect=None), "READ on topic kmc.checkpoints")
    more()
    without(target, cp_write, lambda: mirror(*to_copy, expect=None), "WRITE on topic kmc.checkpoints")
    more()
    without(target, pv_write, lambda: mirror(*to_copy, expect=None), "WRITE on topic kmc.provenance")
    without(target, txn_write, lambda: mirror(*to_eos, expect=None), "WRITE on transactional ids prefixed kmc/")
    without(target, target_cluster, lambda: kmc("inventory", "lpdst", expect=None), "DESCRIBE on the cluster", 6)
    admin(target).delete_topics(["kmc.checkpoints"])["kmc.checkpoints"].result(30)
    wait_for(lambda: "kmc.checkpoints" not in admin(target).list_topics(timeout=10).topics, 30, "the deletion")
    without(target, cp_create, lambda: mirror(*to_copy, expect=None), "CREATE on topic kmc.checkpoints")
    admin(target).delete_topics(["kmc.provenance"])["kmc.provenance"].result(30)
    wait_for(lambda: "kmc.provenance" not in admin(target).list_topics(timeout=10).topics, 30, "the deletion")
    without(target, pv_create, lambda: mirror(*to_copy, expect=None), "CREATE on topic kmc.provenance")
    # and with all of them back, the mirror goes on
    assert mirror(*to_copy, "-o", "json").json()["complete"] is True


def group_acls(principal: str) -> dict[str, list[AclBinding]]:
    """What translating consumer groups takes on top of :func:`least_privilege_acls` (README, "Least
    privilege"): DESCRIBE on the source's groups (read their offsets; nothing that writes), READ on the target's
    (commit there: READ includes DESCRIBE), READ on the target's kmc.provenance (tell the mirror's copies)."""
    return {SOURCE: [acl(principal, GROUP, GROUP_PREFIX, Op.DESCRIBE, PREFIXED)],
            TARGET: [acl(principal, GROUP, GROUP_PREFIX, Op.READ, PREFIXED),
                     acl(principal, TOPIC, "kmc.provenance", Op.READ)]}


def test_least_privilege_for_consumer_groups(secure, config: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """groups translate --commit, mirror --sync-groups and mirror status with exactly the least-privilege set
    and the group ACLs; without any one of those they need, exit 5 and one line naming it."""
    source, target = secure[SOURCE], secure[TARGET]
    run = uuid.uuid4().hex[:6]
    user, password = f"lg-{run}", f"pw-{uuid.uuid4().hex}"
    principal = f"User:{user}"
    for cluster in (source, target):
        new_user(cluster, user, password)
    secret = password_file(tmp_path, "lg.pw", password)
    config.write_text(profile("lgsrc", source, user, secret) + profile("lgdst", target, user, secret))
    topic, group = f"ledger-{run}", f"{GROUP_PREFIX}{run}"
    copy = f"{TARGET_PREFIX}g.{topic}"
    create_topic(source, topic, 2)
    produce(source, topic, numbered(40, 2))
    commit(source, group, {(topic, 0): 5, (topic, 1): 7})
    acls = least_privilege_acls(principal, topic)
    more = group_acls(principal)
    grant(source, *acls[SOURCE], *more[SOURCE])
    grant(target, *acls[TARGET], *more[TARGET])
    to_copy = ("--topics", topic, "--rename", f"{TARGET_PREFIX}g.{{topic}}")

    # --- with exactly this set: the dry run finds every group permission granted, the mirror syncs the group
    plan = kmc("mirror", "lgsrc", "lgdst", *to_copy, "--sync-groups", f"{GROUP_PREFIX}.*", "--dry-run",
               "-o", "json").json()
    rows = {(row["cluster"], row["resource_type"], row["resource"], row["operation"]): row["status"]
            for row in plan["permissions"]}
    assert {("lgsrc", "group", group, "DESCRIBE"), ("lgdst", "group", group, "READ"),
            ("lgdst", "topic", "kmc.provenance", "READ"), ("lgdst", "topic", copy, "READ")} <= set(rows)
    assert set(rows.values()) == {"granted"}, rows
    result = kmc("mirror", "lgsrc", "lgdst", *to_copy, "--once", "--sync-groups", f"{GROUP_PREFIX}.*",
                 "-o", "json").json()
    assert result["records"] == 40 and count(target, copy) == 40
    assert committed_offsets(target, group, copy) == {0: 5, 1: 7}
    commit(source, group, {(topic, 0): 11, (topic, 1): 16})
    # (--rename: this mirror's checkpoints, not those of the other tests' mirrors with the same flow name)
    translate = ("groups", "translate", "lgsrc", "lgdst", "--group", group, "--rename", f"{TARGET_PREFIX}g.{{topic}}",
                 "--commit")
    document = kmc(*translate, "-o", "json").json()
    assert document["committed"] == 2 and committed_offsets(target, group, copy) == {0: 11, 1: 16}
    status = kmc("mirror", "status", "lgsrc", "lgdst", *to_copy, "-o", "json").json()
    assert [(row["source_topic"], row["records_behind"]) for row in status] == [(topic, 0)]

    # --- without any one of them: exit 5, one line naming the operation and the resource
    def without(cluster: sandbox.SandboxCluster, binding: AclBinding, args: tuple[str, ...], needle: str) -> None:
        revoke(cluster, binding)
        try:
            line = denied(kmc(*args, expect=None))
            assert needle in line, line
        finally:
            grant(cluster, binding)

    sync = ("mirror", "lgsrc", "lgdst", *to_copy, "--once", "--sync-groups", group)
    [source_groups], [target_groups, provenance_read] = more[SOURCE], more[TARGET]
    source_read, checkpoint_read, copies_read = acls[SOURCE][0], acls[TARGET][6], acls[TARGET][2]
    without(source, source_groups, translate, f"lgsrc: not authorized: DESCRIBE on group {group}")
    without(source, source_groups, sync, f"lgsrc: not authorized: DESCRIBE on group {group}")
    without(target, target_groups, translate, f"lgdst: not authorized: DESCRIBE and READ on group {group}")
    without(target, target_groups, sync, f"lgdst: not authorized: DESCRIBE and READ on group {group}")
    without(target, provenance_read, translate, "lgdst: not authorized: READ on topic kmc.provenance")
    without(target, provenance_read, sync, "lgdst: not authorized: READ on topic kmc.provenance")
    without(target, checkpoint_read, translate, "lgdst: not authorized: READ on topic kmc.checkpoints")
    without(target, copies_read, translate, f"lgdst: not authorized: READ on topic {copy}")
    without(source, source_read, translate, f"lgsrc: not authorized: READ on topic {topic}")
    without(target, checkpoint_read, ("mirror", "status", "lgsrc", "lgdst", *to_copy),
            "lgdst: not authorized: READ on topic kmc.checkpoints")
    # a user who may not even see kmc.checkpoints cannot tell whether there are checkpoints: exit 5, not
    # "nothing copied yet"
    checkpoint_create, checkpoint_write = acls[TARGET][5], acls[TARGET][7]
    revoke(target, checkpoint_create, checkpoint_write)
    try:
        without(target, checkpoint_read, ("mirror", "status", "lgsrc", "lgdst", *to_copy),
                "lgdst: not authorized: READ on topic kmc.checkpoints")
    finally:
        grant(target, checkpoint_create, checkpoint_write)
    # nothing was committed while an ACL was missing; with all of them back, the translation is committed
    assert committed_offsets(target, group, copy) == {0: 11, 1: 16}
    commit(source, group, {(topic, 0): 20, (topic, 1): 20})
    assert kmc(*translate, "-o", "json").json()["committed"] == 2
    assert committed_offsets(target, group, copy) == {0: 20, 1: 20}


def test_dry_run_lists_every_missing_permission_before_copying(secure, config: Path,  # noqa: ANN001
                                                                tmp_path: Path) -> None:
    source, target = secure[SOURCE], secure[TARGET]
    user = f"dry-{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    for cluster in (source, target):
        new_user(cluster, user, password)
    secret = password_file(tmp_path, "dry.pw", password)
    config.write_text(profile("drysrc", source, user, secret) + profile("drydst", target, user, secret))
    topic = f"dry-{uuid.uuid4().hex[:6]}"
    create_topic(source, topic, 2)
    produce(source, topic, numbered(10, 2))
    principal = f"User:{user}"
    grant(source, acl(principal, TOPIC, topic, Op.DESCRIBE), acl(principal, CLUSTER, "kafka-cluster", Op.DESCRIBE))
    before = set(admin(target).list_topics(timeout=10).topics)
    result = kmc("mirror", "drysrc", "drydst", "--topics", topic, "--dry-run", "-o", "json", expect=5)
    missing = {(row["cluster"], row["resource"], row["operation"]) for row in result.json()["permissions"]
               if row["status"] == "missing"}
    assert {("drysrc", topic, "READ"), ("drysrc", topic, "DESCRIBE_CONFIGS"), ("drydst", topic, "CREATE"),
            ("drydst", topic, "WRITE"), ("drydst", "kmc.checkpoints", "READ")} <= missing
    assert ("drysrc", topic, "DESCRIBE") not in missing
    assert error_lines(result) == [line for line in error_lines(result) if "permissions missing" in line]
    table = kmc("mirror", "drysrc", "drydst", "--topics", topic, "--dry-run", expect=5)
    assert f"drysrc: READ on topic {topic}: missing (needed to copy its records)" in table.stderr
    assert set(admin(target).list_topics(timeout=10).topics) == before  # nothing was created


def test_a_provenance_topic_the_mirror_may_not_see_is_warned_about(secure, config: Path,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    """A source that is itself a mirror's target has kmc.provenance, which tells the mirror which records other
    mirrors wrote there. A user who may not even describe it cannot tell whether it exists (Kafka answers "not
    authorized" either way): a warning naming the ACL, not a silent change of what is copied."""
    source, target = secure[TARGET], secure[SOURCE]  # sdst has kmc.provenance (other tests mirror into it)
    create_topic(source, f"seed-{uuid.uuid4().hex[:6]}")
    kmc("mirror", SOURCE, TARGET, "--topics", "nothing-matches", "--once")  # makes sure kmc.provenance exists
    user = f"pv-{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    for cluster in (source, target):
        new_user(cluster, user, password)
    secret = password_file(tmp_path, "pv.pw", password)
    config.write_text(profile("pvsrc", source, user, secret) + profile("pvdst", target, user, secret))
    topic = f"pv-{uuid.uuid4().hex[:6]}"
    create_topic(source, topic, 1)
    produce(source, topic, numbered(5, 1))
    principal = f"User:{user}"
    grant(source, acl(principal, TOPIC, topic, Op.READ), acl(principal, TOPIC, topic, Op.DESCRIBE_CONFIGS))
    grant(target, acl(principal, TOPIC, topic, Op.DESCRIBE_CONFIGS),
          *(acl(principal, TOPIC, name, operation) for name in (topic, "kmc.checkpoints", "kmc.provenance")
            for operation in (Op.CREATE, Op.READ, Op.WRITE)))
    result = kmc("mirror", "pvsrc", "pvdst", "--topics", topic, "--once", "-o", "json")
    assert result.json()["records"] == 5
    assert "pvsrc: cannot tell whether it has a kmc.provenance" in result.stderr
    assert "grant READ on topic kmc.provenance" in result.stderr
    grant(source, acl(principal, TOPIC, "kmc.provenance", Op.READ))
    produce(source, topic, numbered(3, 1, start=5))
    result = kmc("mirror", "pvsrc", "pvdst", "--topics", topic, "--once", "-o", "json")
    assert result.json()["records"] == 3 and "kmc.provenance" not in result.stderr


# ------------------------------------------------------------------------------------------ ACL sync


def test_sync_acls_copies_read_acls_renamed_and_skips_write(secure, config: Path) -> None:  # noqa: ANN001
    source, target = secure[SOURCE], secure[TARGET]
    topic = f"acl-{uuid.uuid4().hex[:6]}"
    create_topic(source, topic, 1)
    produce(source, topic, numbered(5, 1))
    reader, writer, owner, banned = (f"User:{name}-{uuid.uuid4().hex[:4]}" for name in ("reader", "writer", "owner",
                                                                                          "banned"))
    grant(source, acl(reader, TOPIC, topic, Op.READ), acl(writer, TOPIC, topic, Op.WRITE),
          acl(owner, TOPIC, topic, Op.ALL),
          AclBinding(TOPIC, topic, LITERAL, banned, "*", Op.READ, AclPermissionType.DENY))
    renamed = f"copy.{topic}"
    plan = kmc("mirror", SOURCE, TARGET, "--topics", topic, "--rename", "copy.{topic}", "--sync-acls", "--dry-run",
               "-o", "json").json()
    assert len(plan["acls"]["create"]) == 3 and [row["principal"] for row in plan["acls"]["skipped"]] == [writer]
    assert kmc("diff", SOURCE, TARGET, "--topics", topic, "--rename", "copy.{topic}", "--acls", expect=1).code == 1
    result = kmc("mirror", SOURCE, TARGET, "--topics", topic, "--rename", "copy.{topic}", "--sync-acls",
                 "-o", "json").json()
    assert result["records"] == 5 and count(target, renamed) == 5
    query = AclBindingFilter(TOPIC, renamed, ResourcePatternType.ANY, None, None, Op.ANY, AclPermissionType.ANY)
    copied = {(b.principal, b.operation, b.permission_type)
              for b in admin(target).describe_acls(query).result(30)}
    assert copied == {(reader, Op.READ, AclPermissionType.ALLOW), (owner, Op.READ, AclPermissionType.ALLOW),
                      (banned, Op.READ, AclPermissionType.DENY)}  # WRITE skipped, ALL downgraded to READ
    document = kmc("diff", SOURCE, TARGET, "--topics", topic, "--rename", "copy.{topic}", "--acls", "-o",
                   "json").json()
    assert document["equal"] is True and document["acls"] is True
    # a second run has nothing to add; a target ACL no source ACL implies is a difference
    again = kmc("mirror", SOURCE, TARGET, "--topics", topic, "--rename", "copy.{topic}", "--sync-acls",
                "-o", "json").json()
    assert not [change for change in again["changes"] if change.startswith("created ACL")]
    stray = f"User:stray-{uuid.uuid4().hex[:4]}"
    grant(target, acl(stray, TOPIC, renamed, Op.DESCRIBE))
    document = kmc("diff", SOURCE, TARGET, "--topics", topic, "--rename", "copy.{topic}", "--acls", "-o", "json",
                   expect=1).json()
    assert [(d["kind"], d["key"], d["source"], d["target"]) for d in document["differences"]] == [
        ("acl", f"ALLOW {stray} DESCRIBE", None, f"ALLOW {stray} DESCRIBE")]


def test_flow_sync_acls_key(secure, config: Path) -> None:  # noqa: ANN001
    source, target = secure[SOURCE], secure[TARGET]
    topic = f"flowacl-{uuid.uuid4().hex[:6]}"
    create_topic(source, topic, 1)
    reader = f"User:reader-{uuid.uuid4().hex[:4]}"
    grant(source, acl(reader, TOPIC, topic, Op.READ), acl(reader, TOPIC, topic, Op.WRITE))
    config.write_text(f'[flows.withacls]\nfrom = ["{SOURCE}"]\nto = "{TARGET}"\ntopics = ["{topic}"]\n'
                      'rename = "f.{topic}"\nsync_acls = true\n')
    assert kmc("flow", "list", "-o", "json").json()[0]["sync_acls"] is True
    kmc("flow", "run", "withacls")
    query = AclBindingFilter(TOPIC, f"f.{topic}", ResourcePatternType.ANY, None, None, Op.ANY, AclPermissionType.ANY)
    assert {(b.principal, b.operation) for b in admin(target).describe_acls(query).result(30)} == {(reader, Op.READ)}


# ------------------------------------------------------------------------------------------ mTLS, SCRAM-SHA-256


def test_mtls_mirror_copies_everything(secure, mtls, config: Path) -> None:  # noqa: ANN001
    topic = f"mtls-{uuid.uuid4().hex[:6]}"
    create_topic(mtls, topic, 2)
    produce(mtls, topic, numbered(40, 2))
    result = kmc("mirror", MTLS, TARGET, "--topics", topic, "-o", "json").json()
    assert result["records"] == 40
    source_records = read_all(mtls, topic)
    copied = read_all(secure[TARGET], topic)  # confluent-kafka over SASL_SSL
    assert {p: [(r.key, r.value) for r in records] for p, records in copied.items()} == \
        {p: [(r.key, r.value) for r in records] for p, records in source_records.items()}
    # the mirror user of the mTLS cluster (CN=mirror) is known by its certificate: no ACL, no topic
    assert kmc("topics", f"{MTLS}.mirror", "-o", "json").json() == []


def test_scram_sha_256_and_an_encrypted_client_key(secure, mtls, config: Path, tmp_path: Path) -> None:  # noqa: ANN001
    # the sandbox creates its users for both SCRAM mechanisms
    security = secure[SOURCE].data_dir / "security"
    config.write_text(profile("sha256", secure[SOURCE], "mirror", security / "mirror.password")
                      .replace("SCRAM-SHA-512", "SCRAM-SHA-256"))
    assert kmc("profile", "test", "sha256", "-o", "json").json()[0]["authentication"] == "SCRAM-SHA-256 as mirror, TLS"
    # mTLS with the key's password inline (from the environment), and a wrong one: a config error, exit 3
    mtls_security = mtls.data_dir / "security"
    table = (f'[clusters.cert]\nbootstrap = ["{mtls.bootstrap[0]}"]\nsecurity_protocol = "SSL"\n'
             f'ssl_cafile = "{mtls_security / "ca.pem"}"\nssl_certfile = "{mtls_security / "admin.pem"}"\n'
             f'ssl_keyfile = "{mtls_security / "admin.key"}"\nssl_password = "${{KMC_TEST_KEY_PASSWORD}}"\n')
    config.write_text(table)
    os.environ["KMC_TEST_KEY_PASSWORD"] = (mtls_security / "admin.keypass").read_text().strip()
    try:
        kmc("profile", "test", "cert")
        os.environ["KMC_TEST_KEY_PASSWORD"] = "wrong-key-password"
        line = denied(kmc("topics", "cert", expect=None), 3)
        assert "ssl_password" in line and "cannot be decrypted" in line and "wrong-key-password" not in line
    finally:
        del os.environ["KMC_TEST_KEY_PASSWORD"]


# ------------------------------------------------------------------------------------------ TLS failures


def test_tls_failures_are_named_within_seconds(secure, mtls, src_cluster, config: Path,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    cluster = secure[SOURCE]
    security = cluster.data_dir / "security"
    port = cluster.bootstrap[0].rsplit(":", 1)[1]
    other_ca = mtls.data_dir / "security" / "ca.pem"  # a real CA, just not this cluster's
    secret = security / "admin.password"
    base = profile("x", cluster, "admin", secret)
    cases = {
        "plaintext": (f'[clusters.x]\nbootstrap = ["{cluster.bootstrap[0]}"]\n',
                      "speaks TLS, but the profile's security_protocol is PLAINTEXT"),
        "wrong CA": (base.replace(str(security / "ca.pem"), str(other_ca)), "is not trusted"),
        "hostname": (base.replace(cluster.bootstrap[0], f"localhost:{port}"), "TLS hostname mismatch"),
        "TLS to plaintext": (f'[clusters.x]\nbootstrap = ["{src_cluster.bootstrap[0]}"]\nsecurity_protocol = "SSL"\n'
                             f'ssl_cafile = "{security / "ca.pem"}"\n', "does not speak TLS"),
        "no client certificate": (f'[clusters.x]\nbootstrap = ["{mtls.bootstrap[0]}"]\nsecurity_protocol = "SSL"\n'
                                  f'ssl_cafile = "{mtls.data_dir / "security" / "ca.pem"}"\n',
                                  "requires a client certificate"),
        "SASL expected": (base.replace('security_protocol = "SASL_SSL"', 'security_protocol = "SSL"')
                          .replace('sasl_mechanism = "SCRAM-SHA-512"\n', "").replace('username = "admin"\n', "")
                          .replace(f'password_file = "{secret}"\n', ""), "expects SASL authentication"),
    }
    for case, (text, fragment) in cases.items():
        config.write_text(text)
        started = time.monotonic()
        result = kmc("topics", "x", "--timeout", "30", expect=None)
        elapsed = time.monotonic() - started
        line = denied(result)
        assert fragment in line, (case, line)
        assert elapsed < 5, (case, elapsed)  # named at once, not after --timeout
    # the documented opt-out: the certificate is still checked against the CA, the name is not
    config.write_text(cases["hostname"][0] + "ssl_check_hostname = false\n")
    assert kmc("profile", "show", "x", "-o", "json").json()["ssl_check_hostname"] is False
    kmc("topics", "x")


# ------------------------------------------------------------------------------------------ secrets


def test_no_command_leaks_the_password(secure, config: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Every command, with --debug, a known password: nowhere in stdout, stderr, process titles or files."""
    source, target = secure[SOURCE], secure[TARGET]
    user = f"leak-{uuid.uuid4().hex[:6]}"
    password = f"Known-Secret-{uuid.uuid4().hex}"
    for cluster in (source, target):
        new_user(cluster, user, password)
    principal = f"User:{user}"
    for cluster in (source, target):  # a super-user-like set: every command must get far enough to log a lot
        grant(cluster, acl(principal, TOPIC, "*", Op.ALL), acl(principal, CLUSTER, "kafka-cluster", Op.ALL),
              acl(principal, TXN, "*", Op.ALL), acl(principal, ResourceType.GROUP, "*", Op.ALL))
    secret = password_file(tmp_path, "leak.pw", password)
    topic = f"leak-{uuid.uuid4().hex[:6]}"
    create_topic(source, topic, 2)
    produce(source, topic, numbered(20, 2))
    config.write_text(profile("leaksrc", source, user, secret) + profile("leakdst", target, user, secret)
                      + f'[flows.leakflow]\nfrom = ["leaksrc"]\nto = "leakdst"\ntopics = ["{topic}"]\n'
                      + 'rename = "leak.{topic}"\n')
    outputs = []
    commands = [
        ["profile", "list"], ["profile", "show", "leaksrc"], ["profile", "test", "leaksrc", "leakdst"],
        ["topics", "leaksrc"],
        ["groups", "leaksrc"], ["inventory", "leaksrc", "leakdst"],
        ["mirror", "leaksrc", "leakdst", "--topics", topic, "--dry-run"],
        ["mirror", "leaksrc", "leakdst", "--topics", topic, "--exactly-once", "--sync-acls"],
        ["mirror", "leaksrc", "leakdst", "--topics", topic, "--rename", "w.{topic}", "--workers", "2", "--flow", "w"],
        ["diff", "leaksrc", "leakdst", "--topics", topic, "--data", "--acls"],
        ["aggregate", "leaksrc", "--into", "leakdst", "--topics", topic, "--flow", "agg"],
        ["flow", "check"], ["flow", "run", "leakflow"], ["flow", "status", "leakflow"],
    ]
    for command in commands:
        for output in ("table", "json"):
            result = kmc("--debug", "-o", output, *command, expect=None)
            assert result.code in (0, 1), (command, result.stderr[-2000:])
            outputs.append(result.stdout + result.stderr)
    # a failure with --debug prints a traceback: still no password
    revoke(source, acl(principal, TOPIC, "*", Op.ALL))
    result = kmc("--debug", "mirror", "leaksrc", "leakdst", "--topics", topic, "--once", expect=5)
    assert "Traceback" in result.stderr
    outputs.append(result.stdout + result.stderr)
    grant(source, acl(principal, TOPIC, "*", Op.ALL))
    # a mirror with workers, in its own process: the password is on no command line while it runs
    log = tmp_path / "follow.log"  # a file, not a pipe: --debug writes more than a pipe holds
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "kmc", "--debug", "mirror", "leaksrc", "leakdst", "--topics",
                                    topic, "--rename", "f.{topic}", "--flow", "leakfollow", "--workers", "2",
                                    "--follow"], stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: count(target, f"f.{topic}") == 20, 90, "the following mirror")
            titles = [_command_line(pid) for pid in _process_tree(process.pid)]
            assert len(titles) >= 3 and not any(password in title for title in titles)  # parent and two workers
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()[-2000:]
    outputs.append(log.read_text())
    for text in outputs:
        assert password not in text
    assert any("sasl_plain_password': '***'" in text for text in outputs)  # the debug log was there, redacted
    # files kmc wrote (locks, state, configs, sandboxes) and the checkpoints it wrote into the target
    home = Path(os.environ["XDG_STATE_HOME"]).parent
    for path in [*home.rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file() and path != secret and not _partition_data(path):
            assert password.encode() not in path.read_bytes(), path
    assert not any(password.encode() in (record.value or b"") + (record.key or b"")
                   for records in read_all(target, "kmc.checkpoints").values() for record in records)


def _partition_data(path: Path) -> bool:
    """A broker's partition files (records kmc wrote into Kafka are checked by reading them, above)."""
    return any(part == "data" for part in path.parts) and any(part.startswith("node-") for part in path.parts)


def _process_tree(pid: int) -> list[int]:
    found = [pid]
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            with contextlib.suppress(OSError):
                if int((child / "stat").read_text().rpartition(")")[2].split()[1]) in found:
                    found.append(int(child.name))
    return found


def _command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path(f"/proc/{pid}/cmdline")).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def test_an_inline_password_in_a_file_others_can_read_is_warned_about(config: Path) -> None:
    config.write_text('[clusters.loose]\nbootstrap = ["h:1"]\nsecurity_protocol = "SASL_SSL"\nusername = "u"\n'
                      'password = "inline-secret"\n[clusters.fine]\nbootstrap = ["h:2"]\n'
                      'security_protocol = "SASL_SSL"\nusername = "u"\npassword = "${KMC_TEST_UNSET_OK}"\n')
    config.chmod(0o644)
    os.environ["KMC_TEST_UNSET_OK"] = "x"
    try:
        result = kmc("profile", "list")
        warnings = [line for line in result.stderr.splitlines() if line.startswith("kmc: warning:")]
        assert len(warnings) == 1 and "clusters.loose.password" in warnings[0] and "0644" in warnings[0]
        assert "inline-secret" not in result.stderr + result.stdout
        config.chmod(0o600)
        assert "warning" not in kmc("profile", "list").stderr
    finally:
        del os.environ["KMC_TEST_UNSET_OK"]


def test_a_password_file_others_can_read_is_refused(secure, config: Path, tmp_path: Path) -> None:  # noqa: ANN001
    loose = tmp_path / "loose.pw"
    loose.write_text("whatever\n")
    loose.chmod(0o644)
    config.write_text(profile("loose", secure[SOURCE], "mirror", loose))
    line = denied(kmc("topics", "loose", expect=None), 3)
    assert re.search(r"password_file: .*loose\.pw is readable by others \(chmod 600", line)
