"""The foundation commands through the CLI: `profile list/show/add/remove/test`, `topics`, `groups`,
ad-hoc `--bootstrap` wherever a cluster is accepted, and global options anywhere on the line.

Cluster tests run against the session's real sandbox brokers (`src`, `dst`); their data is produced and
checked with confluent-kafka (librdkafka), which shares no code with kmc. Each test has its own config
file (KMC_CONFIG under tmp_path): the user's config is never read.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from kmc.cli.argv import entry_command
from tests.conftest import CONFIG
from tests.conftest import CONFIG_PASSWORD as PASSWORD
from tests.helpers import bootstrap, cluster_id, commit, commit_offsets, create_topic, filled, kmc, produce

LIST_KEYS = ["name", "bootstrap", "security_protocol", "sandbox", "source"]
TEST_KEYS = ["name", "status", "authentication", "cluster_id", "brokers", "controller", "rtt_ms", "error"]
TOPIC_KEYS = ["topic", "partitions", "replication_factor", "records", "under_replicated", "internal"]
GROUP_KEYS = ["group", "state", "protocol_type", "members", "topics", "lag"]

# --- profile list / show ------------------------------------------------------------------------------


@pytest.mark.kafka
def test_profile_list_json(config: Path, src_cluster, dst_cluster) -> None:  # noqa: ANN001
    result = kmc("profile", "list", "-o", "json")
    rows = {row["name"]: row for row in result.json()}
    assert all(list(row) == LIST_KEYS for row in rows.values())
    assert {"central", "dc1", "src", "dst"} <= set(rows)
    assert list(rows) == sorted(rows)
    assert rows["dc1"] == {"name": "dc1", "bootstrap": ["localhost:19092"], "security_protocol": "PLAINTEXT",
                           "sandbox": False, "source": str(config)}
    assert rows["central"]["security_protocol"] == "SASL_SSL"
    assert rows["src"] == {"name": "src", "bootstrap": list(src_cluster.bootstrap), "security_protocol": "PLAINTEXT",
                           "sandbox": True, "source": "sandbox"}
    assert PASSWORD not in result.stdout + result.stderr


def test_profile_list_table_in_a_pipe(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "no-sandboxes"))
    result = kmc("profile", "list")
    assert result.stdout.splitlines() == [
        "NAME     BOOTSTRAP                      SECURITY PROTOCOL  SANDBOX  SOURCE",
        f"central  central-1:9093,central-2:9093  SASL_SSL           no       {config}",
        f"dc1      localhost:19092                PLAINTEXT          no       {config}",
    ]
    assert result.stderr == ""


def test_profile_list_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "no-sandboxes"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("KMC_CONFIG", raising=False)
    result = kmc("profile", "list", "-o", "json")
    assert result.json() == []
    assert "no clusters in" in result.stderr and "kmc profile add" in result.stderr
    assert kmc("profile", "list", "-o", "json", "-q").stderr == ""


@pytest.mark.parametrize("fmt", ["table", "json", "ndjson", "csv"])
def test_profile_show_masks_secrets_in_every_format(config: Path, fmt: str) -> None:
    result = kmc("profile", "show", "central", "-o", fmt)
    assert PASSWORD not in result.stdout + result.stderr
    assert result.stdout.count("***") == 2  # password and ssl_password
    assert "mirror" in result.stdout and "SCRAM-SHA-512" in result.stdout


def test_profile_show_json_keys(config: Path) -> None:
    shown = kmc("profile", "show", "central", "-o", "json").json()
    assert shown == {
        "name": "central", "bootstrap": ["central-1:9093", "central-2:9093"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "username": "mirror", "password": "***", "ssl_password": "***",
        "sandbox": False, "source": str(config),
    }


def test_profile_show_table(config: Path) -> None:
    assert kmc("profile", "show", "dc1").stdout.splitlines() == [
        "KEY                VALUE",
        "name               dc1",
        "bootstrap          localhost:19092",
        "security_protocol  PLAINTEXT",
        "sandbox            no",
        f"source             {config}",
    ]


@pytest.mark.parametrize("flags", [["-v"], ["-vv"], ["--debug"]])
def test_secrets_stay_hidden_in_verbose_and_debug_output(config: Path, flags: list[str]) -> None:
    """kafka-python logs its whole configuration at debug level; the SASL password must not be in it."""
    config.write_text(CONFIG.replace("central-1:9093", "127.0.0.1:9").replace(', "central-2:9093"', "")
                      .replace("SASL_SSL", "SASL_PLAINTEXT"))
    result = kmc(*flags, "profile", "test", "central", "--timeout", "3", expect=None)
    assert result.code == 4
    if flags == ["--debug"]:
        assert "sasl_plain_password': '***'" in result.stderr  # the debug log was there, redacted
    assert PASSWORD not in result.stdout + result.stderr
    shown = kmc(*flags, "profile", "show", "central")
    assert PASSWORD not in shown.stdout + shown.stderr


@pytest.mark.kafka
def test_profile_show_sandbox(config: Path, src_cluster) -> None:  # noqa: ANN001
    shown = kmc("profile", "show", "src", "-o", "json").json()
    assert shown == {"name": "src", "bootstrap": list(src_cluster.bootstrap), "security_protocol": "PLAINTEXT",
                     "sandbox": True, "source": "sandbox"}


def test_profile_show_unknown(config: Path) -> None:
    result = kmc("profile", "show", "nope", expect=2)
    assert result.stderr.startswith("kmc: error: unknown cluster 'nope' (known: ")
    assert result.stdout == ""


# --- profile add / remove -----------------------------------------------------------------------------


def test_profile_add_creates_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fresh" / "config.toml"
    monkeypatch.setenv("KMC_CONFIG", str(path))
    result = kmc("profile", "add", "dc1", "--bootstrap", "h1:9092,h2:9092")
    assert result.stderr == f"added cluster 'dc1' to {path}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == '[clusters.dc1]\nbootstrap = ["h1:9092", "h2:9092"]\n'
    assert kmc("profile", "show", "dc1", "-o", "json").json()["bootstrap"] == ["h1:9092", "h2:9092"]


def test_profile_add_with_explicit_config_option(tmp_path: Path) -> None:
    path = tmp_path / "explicit.toml"
    kmc("profile", "add", "dc1", "--bootstrap", "h:1", "--config", str(path))
    assert kmc("--config", str(path), "profile", "show", "dc1", "-o", "json").json()["bootstrap"] == ["h:1"]


def test_profile_add_keeps_comments_and_other_tables(config: Path) -> None:
    kmc("profile", "add", "dc2", "--bootstrap", "localhost:29092", "-q")
    text = config.read_text()
    assert text == CONFIG + '\n[clusters.dc2]\nbootstrap = ["localhost:29092"]\n'
    names = [row["name"] for row in kmc("profile", "list", "-o", "json").json()]
    assert {"dc1", "dc2", "central"} <= set(names)


def test_profile_add_sasl_with_password_env_stores_only_the_reference(config: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMC_TEST_LATER", raising=False)
    kmc("profile", "add", "secure", "--bootstrap", "h:1", "--security-protocol", "sasl_plaintext",
        "--sasl-mechanism", "SCRAM-SHA-256", "--username", "me", "--password-env", "KMC_TEST_LATER")
    assert config.read_text().endswith(
        '[clusters.secure]\nbootstrap = ["h:1"]\nsecurity_protocol = "SASL_PLAINTEXT"\n'
        'sasl_mechanism = "SCRAM-SHA-256"\nusername = "me"\npassword = "${KMC_TEST_LATER}"\n'
    )
    monkeypatch.setenv("KMC_TEST_LATER", PASSWORD)
    shown = kmc("profile", "show", "secure", "-o", "json").json()
    assert shown["password"] == "***" and shown["sasl_mechanism"] == "SCRAM-SHA-256"
    assert PASSWORD not in config.read_text()


def test_profile_add_with_password_file(config: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    kmc("profile", "add", "secure", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL", "--username", "me",
        "--password-file", str(secret), "--ssl-cafile", "/ca.pem")
    shown = kmc("profile", "show", "secure", "-o", "json").json()
    assert shown["password_file"] == str(secret) and shown["ssl_cafile"] == "/ca.pem"  # a path, not a secret
    assert shown["password"] == "***"  # set, and masked
    assert f'password_file = "{secret}"' in config.read_text()
    assert PASSWORD not in config.read_text()


def test_profile_add_force_replaces(config: Path) -> None:
    kmc("profile", "add", "dc1", "--bootstrap", "new:1", "--force")
    assert kmc("profile", "show", "dc1", "-o", "json").json()["bootstrap"] == ["new:1"]
    text = config.read_text()
    assert text.startswith("# test config -- this comment must survive edits\n")
    assert "localhost:19092" not in text and "[clusters.central]" in text


@pytest.mark.parametrize(
    "args",
    [
        ["dc1", "--bootstrap", "new:1"],  # exists, no --force
        ["x", "--bootstrap", "nohost"],
        ["x", "--bootstrap", ""],
        ["bad name", "--bootstrap", "h:1"],
        ["x", "--bootstrap", "h:1", "--security-protocol", "TLS"],
        ["x", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL", "--username", "u",
         "--password-env", "P", "--sasl-mechanism", "GSSAPI"],
        ["x", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL", "--username", "u"],
        ["x", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL", "--password-env", "P"],
        ["x", "--bootstrap", "h:1", "--sasl-mechanism", "PLAIN"],
        ["x", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL", "--username", "u",
         "--password-env", "P", "--password-file", "/f"],
        ["x", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL", "--username", "u", "--password-env", "A B"],
        ["x"],  # --bootstrap is required
    ],
)
def test_profile_add_bad_options_are_usage_errors_and_write_nothing(config: Path, args: list[str]) -> None:
    before = config.read_bytes()
    result = kmc("profile", "add", *args, expect=2)
    assert result.stderr.startswith("kmc: error: ") and result.stderr.count("\n") == 1
    assert config.read_bytes() == before


def test_profile_remove(config: Path) -> None:
    result = kmc("profile", "remove", "dc1")
    assert result.stderr == f"removed cluster 'dc1' from {config}\n"
    assert config.read_text() == CONFIG.replace('[clusters.dc1]\nbootstrap = ["localhost:19092"]\n', "")
    kmc("profile", "show", "dc1", expect=2)
    before = config.read_bytes()
    result = kmc("profile", "remove", "dc1", expect=2)
    assert result.stderr.startswith("kmc: error: cluster 'dc1' is not in ")
    assert config.read_bytes() == before


# --- profile test ---------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_profile_test_reports_cluster(config: Path, src_cluster, dst_cluster) -> None:  # noqa: ANN001
    rows = kmc("profile", "test", "src", "dst", "-o", "json").json()
    assert [row["name"] for row in rows] == ["src", "dst"]
    for row, cluster in zip(rows, (src_cluster, dst_cluster), strict=True):
        assert list(row) == TEST_KEYS
        assert row["status"] == "ok" and row["error"] is None
        assert row["cluster_id"] == cluster_id(cluster) == cluster.kafka_cluster_id
        assert row["brokers"] == 1
        assert row["controller"] == 1
        assert isinstance(row["rtt_ms"], float) and 0 < row["rtt_ms"] < 10_000
    assert rows[0]["cluster_id"] != rows[1]["cluster_id"]


@pytest.mark.kafka
def test_profile_test_table(config: Path, src_cluster) -> None:  # noqa: ANN001
    lines = kmc("profile", "test", "src").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AUTHENTICATION", "CLUSTER", "ID", "BROKERS", "CONTROLLER", "RTT",
                                "MS", "ERROR"]
    assert lines[1].split()[:6] == ["src", "ok", "none", src_cluster.kafka_cluster_id, "1", "1"]
    assert lines[1].split()[-1] == "-"


@pytest.mark.kafka
def test_profile_test_every_configured_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              src_cluster) -> None:  # noqa: ANN001
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "no-sandboxes"))
    path = tmp_path / "config.toml"
    path.write_text(f'[clusters.one]\nbootstrap = "{bootstrap(src_cluster)}"\n'
                    f'[clusters.two]\nbootstrap = {json.dumps(src_cluster.bootstrap)}\n')
    rows = kmc("--config", str(path), "profile", "test", "-o", "json").json()
    assert [(row["name"], row["status"], row["cluster_id"]) for row in rows] == [
        ("one", "ok", src_cluster.kafka_cluster_id), ("two", "ok", src_cluster.kafka_cluster_id)]


# --- topics -----------------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_topics_counts(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, partitions=3)
    produce(src_cluster, topic_name, filled({0: 7, 1: 5}))
    rows = kmc("topics", "src", topic_name, "-o", "json").json()
    assert rows == [{"topic": topic_name, "partitions": 3, "replication_factor": 1, "records": 12,
                     "under_replicated": 0, "internal": False}]
    assert list(rows[0]) == TOPIC_KEYS


@pytest.mark.kafka
def test_topics_table_and_csv(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, partitions=2)
    produce(src_cluster, topic_name, filled({1: 4}))
    lines = kmc("topics", "src", topic_name).stdout.splitlines()
    assert [line.split() for line in lines] == [["TOPIC", "PARTITIONS", "RF", "RECORDS", "UNDER-REPL"],
                                                [topic_name, "2", "1", "4", "0"]]
    assert kmc("topics", "src", topic_name, "-o", "csv").stdout.splitlines() == [
        ",".join(TOPIC_KEYS), f"{topic_name},2,1,4,0,false"]


@pytest.mark.kafka
def test_topics_pattern_is_anchored(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name)
    assert kmc("topics", "src", topic_name[:-2], "-o", "json").json() == []
    assert kmc("topics", "src", topic_name[2:], "-o", "json").json() == []
    assert [row["topic"] for row in kmc("topics", "src", topic_name[:-2] + ".*", "-o", "json").json()] == [topic_name]
    assert topic_name in [row["topic"] for row in kmc("topics", "src", "-o", "json").json()]


@pytest.mark.kafka
def test_topics_hides_internal_topics_unless_asked(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    internal = f"kmc.{topic_name}"
    create_topic(src_cluster, internal)
    assert kmc("topics", "src", internal, "-o", "json").json() == []
    rows = kmc("topics", "src", internal, "--include-internal", "-o", "json").json()
    assert [(row["topic"], row["internal"], row["records"]) for row in rows] == [(internal, True, 0)]


@pytest.mark.kafka
def test_topics_bad_pattern(config: Path, src_cluster) -> None:  # noqa: ANN001
    result = kmc("topics", "src", "(unclosed", expect=2)
    assert result.stderr.startswith("kmc: error: PATTERN: bad regex '(unclosed'")


# --- groups -----------------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_groups_committed_offsets_and_lag(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name, partitions=2)
    produce(src_cluster, topic_name, filled({0: 6, 1: 4}))
    group = f"g-{topic_name}"
    commit(src_cluster, group, {(topic_name, 0): 4, (topic_name, 1): 1})
    rows = kmc("groups", "src", group, "-o", "json").json()
    # a group that only ever committed (never joined) has no protocol type
    assert rows == [{"group": group, "state": "Empty", "protocol_type": "", "members": 0,
                     "topics": [topic_name], "lag": (6 - 4) + (4 - 1)}]
    assert list(rows[0]) == GROUP_KEYS
    lines = kmc("groups", "src", group).stdout.splitlines()
    assert [line.split() for line in lines] == [["GROUP", "STATE", "MEMBERS", "TOPICS", "LAG"],
                                                [group, "Empty", "0", topic_name, "5"]]


@pytest.mark.kafka
def test_groups_live_member(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name)
    produce(src_cluster, topic_name, filled({0: 5}))
    group = f"g-{topic_name}"
    consumer = Consumer({"bootstrap.servers": bootstrap(src_cluster), "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic_name])
        consumed = []
        deadline = time.monotonic() + 30
        while len(consumed) < 3 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                consumed.append(message)
        assert len(consumed) >= 3
        commit_offsets(consumer, [TopicPartition(topic_name, 0, 3)])
        rows = kmc("groups", "src", group, "-o", "json").json()
        assert rows == [{"group": group, "state": "Stable", "protocol_type": "consumer", "members": 1,
                         "topics": [topic_name], "lag": 2}]
    finally:
        consumer.close()


@pytest.mark.kafka
def test_groups_pattern_selects(config: Path, src_cluster, topic_name: str) -> None:  # noqa: ANN001
    create_topic(src_cluster, topic_name)
    produce(src_cluster, topic_name, filled({0: 1}))
    prefix = f"g-{uuid.uuid4().hex[:8]}"
    for suffix in ("a", "b"):
        commit(src_cluster, f"{prefix}-{suffix}", {(topic_name, 0): 1})
    assert [row["group"] for row in kmc("groups", "src", f"{prefix}-.*", "-o", "json").json()] == [
        f"{prefix}-a", f"{prefix}-b"]
    assert [row["group"] for row in kmc("groups", "src", f"{prefix}-a", "-o", "json").json()] == [f"{prefix}-a"]
    assert kmc("groups", "src", prefix, "-o", "json").json() == []
    assert [row["lag"] for row in kmc("groups", "src", f"{prefix}-.*", "-o", "json").json()] == [0, 0]


# --- ad-hoc --bootstrap -------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize(
    "command",
    [
        ["topics", "--bootstrap", "{bootstrap}", "{topic}"],
        ["topics", "-b", "{bootstrap}", "{topic}"],
        ["topics", "{bootstrap}", "{topic}"],
        ["groups", "--bootstrap", "{bootstrap}", "g-{topic}"],
        ["groups", "{bootstrap}", "g-{topic}"],
        ["profile", "test", "--bootstrap", "{bootstrap}"],
        ["profile", "test", "{bootstrap}"],
        ["profile", "show", "{bootstrap}"],
    ],
)
def test_adhoc_bootstrap_needs_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, src_cluster,  # noqa: ANN001
                                         topic_name: str, command: list[str]) -> None:
    """An ad-hoc address works even when the config file is broken: it is never read."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[clusters.x\n")
    monkeypatch.setenv("KMC_CONFIG", str(broken))
    create_topic(src_cluster, topic_name)
    produce(src_cluster, topic_name, filled({0: 3}))
    commit(src_cluster, f"g-{topic_name}", {(topic_name, 0): 1})
    args = [part.format(bootstrap=bootstrap(src_cluster), topic=topic_name) for part in command]
    rows = kmc(*args, "-o", "json").json()
    if command[0] == "topics":
        assert [(row["topic"], row["records"]) for row in rows] == [(topic_name, 3)]
    elif command[0] == "groups":
        assert [(row["group"], row["lag"]) for row in rows] == [(f"g-{topic_name}", 2)]
    elif command[1] == "test":
        assert [(row["name"], row["status"], row["cluster_id"]) for row in rows] == [
            (src_cluster.bootstrap[0], "ok", src_cluster.kafka_cluster_id)]
    else:
        assert rows["bootstrap"] == list(src_cluster.bootstrap) and rows["source"] == "--bootstrap"


@pytest.mark.parametrize(
    "command",
    [["topics", "dc1", "x", "--bootstrap", "h:1"], ["groups", "dc1", "x", "--bootstrap", "h:1"], ["topics"], ["groups"],
     ["topics", "--bootstrap", "nohost"], ["profile", "test", "--bootstrap", "h:x"]],
)
def test_adhoc_bootstrap_usage_errors(config: Path, command: list[str]) -> None:
    result = kmc(*command, expect=2)
    assert result.stderr.startswith("kmc: error: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""


# --- global options anywhere ------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize(
    "args",
    [
        ["-o", "json", "--timeout", "5", "-q", "topics", "src", "{topic}"],
        ["topics", "src", "{topic}", "-o", "json", "--timeout", "5", "-q"],
        ["topics", "-o", "json", "src", "{topic}"],
        ["topics", "src", "{topic}", "-ojson"],
        ["topics", "src", "{topic}", "--output=json", "--timeout=5"],
        ["topics", "src", "{topic}", "--output", "JSON", "-v", "--no-color"],
        ["topics", "src", "{topic}", "--config", "{config}", "-o", "json"],
        ["topics", "src", "{topic}", "--config={config}", "-o", "json", "--debug"],
    ],
)
def test_global_options_after_the_subcommand(config: Path, src_cluster, topic_name: str,  # noqa: ANN001
                                             args: list[str]) -> None:
    create_topic(src_cluster, topic_name)
    produce(src_cluster, topic_name, filled({0: 2}))
    result = kmc(*[arg.format(topic=topic_name, config=config) for arg in args])
    assert [(row["topic"], row["records"]) for row in json.loads(result.stdout)] == [(topic_name, 2)]


def test_config_option_after_the_subcommand_wins_over_env(config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[clusters.elsewhere]\nbootstrap = "e:1"\n')
    shown = kmc("profile", "show", "elsewhere", "--config", str(other), "-o", "json").json()
    assert shown["source"] == str(other)
    kmc("profile", "show", "elsewhere", expect=2)  # KMC_CONFIG alone does not have it


def test_quiet_after_the_subcommand_silences_messages(config: Path) -> None:
    assert kmc("profile", "add", "dc9", "--bootstrap", "h:1", "-q").stderr == ""
    assert kmc("profile", "remove", "dc9", "--quiet").stderr == ""


@pytest.mark.parametrize("flags", [["-vvv"], ["-qv"], ["-vq"], ["-qo", "json"], ["-qojson"], ["-vo", "csv"]])
def test_combined_short_global_flags_after_the_subcommand(config: Path, flags: list[str]) -> None:
    """The README says global options may stand anywhere: clusters of short ones too (issue 18, bug 6)."""
    result = kmc("profile", "list", *flags)
    assert result.stdout.startswith({"json": "[", "csv": "name,"}.get(flags[-1].removeprefix("-qo"), "NAME"))
    assert "dc1" in result.stdout
    if "q" in flags[0]:
        assert kmc("profile", "add", "dc9", "--bootstrap", "h:1", *flags).stderr == ""


@pytest.mark.parametrize("option", ["-o", "-qo", "--config", "--timeout", "--output"])
def test_a_global_option_without_its_value_at_the_end(config: Path, option: str) -> None:
    """`kmc profile list -o`: not "'profile' is not one of table, json..." (the word before it taken as the value)."""
    result = kmc("profile", "list", option, expect=2)
    assert result.stderr == f"kmc: error: option {option} needs a value (see 'kmc --help')\n"


def test_a_cluster_with_a_subcommand_letter_is_left_to_the_subcommand(config: Path) -> None:
    message = kmc("profile", "list", "-vx", expect=2).stderr
    assert message.startswith("kmc: error: No such option: -x")


def test_help_and_version() -> None:
    assert "Cross-cluster Apache Kafka" in kmc("--help").stdout
    assert kmc("--version").stdout.startswith("kmc ")
    profile_help = kmc("profile", "--help").stdout
    assert all(verb in profile_help for verb in ("list", "show", "add", "remove", "test"))
    assert "JSON keys: topic, partitions, replication_factor, records, under_replicated, internal" in " ".join(
        kmc("topics", "--help").stdout.split())
    assert "JSON keys: group, state, protocol_type, members, topics, lag" in " ".join(
        kmc("groups", "--help").stdout.split())


@pytest.mark.parametrize(("args", "command"), [
    (["mirror", "a", "b", "--once"], "mirror"),
    (["-o", "json", "inventory"], "inventory"),
    (["--config", "mirror", "diff", "a", "b"], "diff"),  # an option's value is not the command
    (["-qojson", "export", "src"], "export"),
    (["flow", "run", "--follow"], "flow"),
    (["mirorr"], None), (["--help"], None), ([], None), (["profile", "list", "-o"], None),
    (["--help", "mirror"], None), (["-o", "json", "-h", "topics"], None),  # the root's help: every command
])
def test_the_entry_point_names_the_command_it_runs(args: list[str], command: str | None) -> None:
    assert entry_command(args, {}) == command
    assert entry_command(args, {"_KMC_COMPLETE": "bash_complete"}) is None  # completion needs every command


@pytest.mark.parametrize(("args", "loaded", "not_loaded"), [
    (["mirror", "--help"], {"kmc.cli.mirror"}, {"kmc.cli.archive", "kmc.cli.diff", "kmc.cli.sandbox"}),
    (["mirorr"], {"kmc.cli.mirror", "kmc.cli.archive", "kmc.cli.sandbox"}, set()),
    (["--help", "mirror"], {"kmc.cli.mirror", "kmc.cli.archive", "kmc.cli.sandbox"}, set()),
])
def test_the_entry_point_imports_only_the_command_it_runs(args: list[str], loaded: set[str],
                                                          not_loaded: set[str]) -> None:
    """`kmc mirror ...` does not import the other commands (with their options that was a tenth of a short
    copy's CPU seconds); a command line that names no command (a typo, --help) gets them all, and with
    them click's suggestion."""
    code = ("import sys\nfrom kmc.__main__ import run\nsys.argv = ['kmc', *sys.argv[1:]]\n"
            "try:\n    run()\nexcept SystemExit:\n"
            "    print(' '.join(m for m in sys.modules if m.startswith('kmc.cli.')), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    modules = set(proc.stderr.splitlines()[-1].split())
    assert loaded <= modules and not modules & not_loaded, modules
    if args == ["mirorr"]:
        assert "No such command 'mirorr'. Did you mean 'mirror'?" in proc.stderr
    elif args[0] == "--help":
        assert proc.stdout.startswith("Usage: kmc [OPTIONS]") and "  sandbox " in proc.stdout
    else:
        assert proc.stdout.startswith("Usage: kmc mirror")


def test_broken_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`kmc profile list | head -1`: the reader going away is exit 0, with nothing on stderr."""
    path = tmp_path / "many.toml"
    path.write_text("".join(f'[clusters.c{index}]\nbootstrap = "host-{index}:9092"\n' for index in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "kmc", "--config", str(path), "profile", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().split()[0] == b"NAME"
    proc.stdout.close()  # more than a pipe's buffer is still to come
    stderr = proc.stderr.read()
    assert proc.wait(60) == 0, stderr
    assert stderr == b""


def test_a_cluster_with_an_unset_variable_does_not_block_the_others(tmp_path, monkeypatch):
    """Operators keep several clusters in one file but export only some passwords (per cron job)."""
    path = tmp_path / "config.toml"
    path.write_text('[clusters.ok]\nbootstrap = ["h:1"]\n'
                    '[clusters.later]\nbootstrap = ["h:2"]\nsecurity_protocol = "SASL_SSL"\nusername = "u"\n'
                    'password = "${KMC_TEST_LATER_SECRET}"\n')
    monkeypatch.setenv("KMC_CONFIG", str(path))
    monkeypatch.delenv("KMC_TEST_LATER_SECRET", raising=False)
    listed = kmc("profile", "list", "-o", "json")
    assert [row["name"] for row in listed.json() if not row["sandbox"]] == ["ok"]
    assert "KMC_TEST_LATER_SECRET is not set" in listed.stderr and "left out" in listed.stderr
    assert kmc("profile", "show", "ok").code == 0
    used = kmc("topics", "later", expect=3)  # using it is the error; showing it is not (test_profiles.py)
    assert "KMC_TEST_LATER_SECRET is not set" in used.stderr
    assert kmc("profile", "show", "later").code == 0


@pytest.mark.parametrize("args", [[], ["flow"], ["profile"], ["sandbox"]])
def test_a_group_alone_prints_its_help(args):
    result = kmc(*args, expect=2)
    assert result.stderr.startswith(f"Usage: kmc {' '.join(args)}".rstrip() + " ")
    assert "Commands:" in result.stderr and "kmc: error" not in result.stderr
    assert result.stdout == ""
