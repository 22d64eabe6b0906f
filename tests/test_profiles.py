"""Unit tests of the profile layer: config lookup, TOML parsing, ${VAR} interpolation, validation of
every key, flows, password files, masking of secrets, and editing the file (profile add/remove).

No Kafka here: these run in milliseconds. Every test uses files under tmp_path, never the user's config.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kmc import profiles
from kmc.errors import ConfigError, ExitCode, UnknownClusterError, UsageError
from kmc.profiles import (
    MASK,
    Cluster,
    Flow,
    Secret,
    add_cluster,
    adhoc_cluster,
    compile_regexes,
    config_path,
    interpolate,
    load_config,
    parse_bootstrap,
    remove_cluster,
    resolve_cluster,
    validate_rename,
)

PASSWORD = "hunter2-do-not-show"


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every lookup away from the real user's config."""
    monkeypatch.delenv("KMC_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> profiles.Config:
    path = write(tmp_path / "config.toml", text)
    return load_config(path, include_sandboxes=False, environ=environ or {})


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config = load(tmp_path, text, environ)
        for name in config.unresolved:  # an unset ${VAR} or unreadable password file: raised when named
            config.cluster(name)
    assert info.value.exit_code == ExitCode.CONFIG
    line = info.value.one_line()
    assert "\n" not in line
    return line


# --- lookup ----------------------------------------------------------------------------------------


def test_lookup_order_explicit_then_env_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMC_CONFIG", str(tmp_path / "from-env.toml"))
    assert config_path(tmp_path / "explicit.toml") == (tmp_path / "explicit.toml", True)
    assert config_path(None) == (tmp_path / "from-env.toml", True)
    monkeypatch.delenv("KMC_CONFIG")
    assert config_path(None) == (tmp_path / "xdg-config" / "kmc" / "config.toml", False)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path(None) == (tmp_path / "home" / ".config" / "kmc" / "config.toml", False)


def test_default_config_missing_is_empty(tmp_path: Path) -> None:
    config = load_config(None, include_sandboxes=False)
    assert config.exists is False
    assert dict(config.clusters) == {}
    assert config.path == tmp_path / "xdg-config" / "kmc" / "config.toml"


def test_default_config_is_read_from_xdg(tmp_path: Path) -> None:
    path = tmp_path / "xdg-config" / "kmc" / "config.toml"
    path.parent.mkdir(parents=True)
    write(path, '[clusters.dc1]\nbootstrap = ["localhost:19092"]\n')
    assert list(load_config(None, include_sandboxes=False).clusters) == ["dc1"]


def test_named_config_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", include_sandboxes=False)
    monkeypatch.setenv("KMC_CONFIG", str(tmp_path / "nope-env.toml"))
    with pytest.raises(ConfigError, match="nope-env.toml does not exist"):
        load_config(None, include_sandboxes=False)


# --- the full example of DESIGN.md ------------------------------------------------------------------

DESIGN_EXAMPLE = """\
[clusters.dc1]
bootstrap = ["localhost:19092"]

[clusters.central]
bootstrap = ["central-1:9093", "central-2:9093"]
security_protocol = "SASL_SSL"          # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
sasl_mechanism = "SCRAM-SHA-512"        # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
username = "mirror"
password = "${CENTRAL_PASSWORD}"
ssl_cafile = "/etc/kmc/central-ca.pem"
[clusters.central.client]
request_timeout_ms = 30000

[flows.aggregate]
from = ["dc1", "dc2"]
to = "central"
topics = ["orders", "payments\\\\..*"]
exclude = ["__.*"]
rename = "{source}.{topic}"
sync_configs = true
sync_groups = ["billing-.*"]
exactly_once = true
"""


def test_design_example_parses(tmp_path: Path) -> None:
    config = load(tmp_path, DESIGN_EXAMPLE, {"CENTRAL_PASSWORD": PASSWORD})
    dc1 = config.cluster("dc1")
    assert dc1.bootstrap == ("localhost:19092",)
    assert dc1.security_protocol == "PLAINTEXT"
    assert dc1.sasl_mechanism is None and dc1.password is None
    assert dc1.source == str(tmp_path / "config.toml")
    central = config.cluster("central")
    assert central.bootstrap == ("central-1:9093", "central-2:9093")
    assert central.security_protocol == "SASL_SSL"
    assert central.sasl_mechanism == "SCRAM-SHA-512"
    assert central.username == "mirror"
    assert central.password == Secret(PASSWORD)
    assert central.password.reveal() == PASSWORD
    assert central.ssl_cafile == "/etc/kmc/central-ca.pem"
    assert dict(central.client) == {"request_timeout_ms": 30000}
    flow = config.flow("aggregate")
    assert flow == Flow(
        name="aggregate", sources=("dc1", "dc2"), target="central", topics=("orders", "payments\\..*"),
        exclude=("__.*",), rename="{source}.{topic}", sync_configs=True, sync_groups=("billing-.*",),
        exactly_once=True, partitioner="same",
    )


def test_flow_defaults(tmp_path: Path) -> None:
    flow = load(tmp_path, '[flows.f]\nfrom = "a"\nto = "b"\n').flow("f")
    assert flow == Flow(name="f", sources=("a",), target="b")
    assert (flow.topics, flow.exclude, flow.rename, flow.sync_configs, flow.sync_groups, flow.exactly_once,
            flow.partitioner) == ((".*",), (), "{topic}", False, (), False, "same")


def test_unknown_cluster_and_flow_are_usage_errors(tmp_path: Path) -> None:
    config = load(tmp_path, DESIGN_EXAMPLE, {"CENTRAL_PASSWORD": "x"})
    with pytest.raises(UnknownClusterError, match=r"unknown cluster 'nope' \(known: central, dc1\)") as info:
        config.cluster("nope")
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageError, match="unknown flow 'nope'"):
        config.flow("nope")


# --- TOML syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[clusters.a]\nbootstrap = \n', 2),
        ('# a comment\n\n[clusters.a]\nbootstrap = ["localhost:9092"]\nbootstrap = ["x:1"]\n', 5),
        ('[clusters.a]\nbootstrap = ["localhost:9092"\n', 2),  # unclosed at the end of the document
        ('[clusters.a]\nusername = "unterminated\n', 2),
        ('[clusters.a]\nbootstrap = ["a:1"]\nusername = "no end', 3),
    ],
)
def test_malformed_toml_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    message = config_error(tmp_path, text)
    assert str(tmp_path / "config.toml") in message
    assert "invalid TOML" in message
    assert f"line {line}" in message


# --- interpolation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("${HOST}:9092", "kafka.example:9092"),
        ("plain", "plain"),
        ("pa$$word", "pa$word"),
        ("$${HOST}", "${HOST}"),  # $$ escapes: no interpolation after it
        ("$$$${HOST}", "$${HOST}"),
        ("$$${HOST}", "$kafka.example"),
        ("a$b", "a$b"),  # a lone $ is kept
        ("${A}${B}", "12"),
        ("", ""),
    ],
)
def test_interpolate(raw: str, expected: str) -> None:
    assert interpolate(raw, {"HOST": "kafka.example", "A": "1", "B": "2"}, "where") == expected


def test_interpolated_value_is_not_interpolated_again() -> None:
    assert interpolate("${A}", {"A": "${B}", "B": "no"}, "where") == "${B}"


def test_undefined_variable_is_config_error_naming_variable_and_key(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        '[clusters.c]\nbootstrap = ["h:1"]\nsecurity_protocol = "SASL_PLAINTEXT"\nusername = "u"\n'
        'password = "${KMC_TEST_UNSET_VAR}"\n',
    )
    assert "KMC_TEST_UNSET_VAR is not set" in message
    assert "clusters.c.password" in message
    assert str(tmp_path / "config.toml") in message


@pytest.mark.parametrize("reference", ["${1X}", "${A-B}", "${}", "${OPEN"])
def test_malformed_reference_is_config_error(reference: str) -> None:
    with pytest.raises(ConfigError, match="malformed variable reference"):
        interpolate(f"x{reference}", {"OPEN": "1", "A": "1"}, "f: clusters.c.username")


def test_malformed_reference_in_a_password_does_not_echo_it(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        '[clusters.c]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_PLAINTEXT"\nusername = "u"\n'
        'password = "abc${hunter2-part"\n',
    )
    assert "malformed variable reference" in message
    assert "hunter2" not in message


def test_interpolation_reaches_lists_subtables_and_flows(tmp_path: Path) -> None:
    text = (
        '[clusters.c]\nbootstrap = ["${HOST}:9092", "other:${PORT}"]\nusername = "${USER_NAME}"\n'
        'security_protocol = "SASL_PLAINTEXT"\npassword = "${PW}"\n'
        '[clusters.c.client]\nclient_id = "${CLIENT}"\nrequest_timeout_ms = 1000\n'
        '[flows.f]\nfrom = ["${SRC}"]\nto = "${DST}"\nrename = "${PREFIX}.{topic}"\n'
    )
    environ = {"HOST": "h", "PORT": "1234", "USER_NAME": "me", "PW": PASSWORD, "CLIENT": "cid",
               "SRC": "dc1", "DST": "central", "PREFIX": "dc"}
    config = load(tmp_path, text, environ)
    cluster = config.cluster("c")
    assert cluster.bootstrap == ("h:9092", "other:1234")
    assert cluster.username == "me"
    assert cluster.password.reveal() == PASSWORD
    assert dict(cluster.client) == {"client_id": "cid", "request_timeout_ms": 1000}
    flow = config.flow("f")
    assert (flow.sources, flow.target, flow.rename) == (("dc1",), "central", "dc.{topic}")


def test_unset_variable_in_a_flow_is_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[flows.f]\nfrom = "a"\nto = "${KMC_TEST_NOPE}"\n')
    assert "flows.f.to" in message and "KMC_TEST_NOPE" in message


def test_load_config_reads_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMC_TEST_HOST", "from-env")
    path = write(tmp_path / "c.toml", '[clusters.c]\nbootstrap = "${KMC_TEST_HOST}:1"\n')
    assert load_config(path, include_sandboxes=False).cluster("c").bootstrap == ("from-env:1",)


# --- validation: cluster tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[clusters.a]\nbootstrap = ["h:1"]\nfoo = 1\n', "clusters.a: unknown key 'foo'"),
        ('[clusters.a]\nbootstrap = ["h:1"]\nbootstrap_servers = "h:1"\n', "unknown key 'bootstrap_servers'"),
        ('[clusters.a]\nbootstrap = ["h:1"]\n[clusters.a.client]\nfoo_ms = 1\n',
         "clusters.a.client: unknown kafka-python setting 'foo_ms'"),
        ('[clusters.a]\nbootstrap = ["h:1"]\n[clusters.a.client]\nbootstrap_servers = "x:1"\n',
         "unknown kafka-python setting 'bootstrap_servers' (set it with the profile's own key)"),
        ('[clusters.a]\nbootstrap = ["h:1"]\n[clusters.a.client]\nsasl_plain_password = "x"\n',
         "unknown kafka-python setting 'sasl_plain_password'"),
        ('[clusters.a]\nbootstrap = ["h:1"]\nclient = 5\n', "'clusters.a.client' must be a table"),
        ('[clusters.a]\nsecurity_protocol = "SSL"\n', "clusters.a: missing key 'bootstrap'"),
        ('[clusters.a]\nbootstrap = []\n', "bootstrap is empty"),
        ('[clusters.a]\nbootstrap = ""\n', "bootstrap is empty"),
        ('[clusters.a]\nbootstrap = 9092\n', "clusters.a.bootstrap must be a string or a list"),
        ('[clusters.a]\nbootstrap = ["localhost"]\n', "bootstrap server 'localhost' is not host:port"),
        ('[clusters.a]\nbootstrap = ["h:0"]\n', "bootstrap server 'h:0' is not host:port"),
        ('[clusters.a]\nbootstrap = ["h:70000"]\n', "bootstrap server 'h:70000' is not host:port"),
        ('[clusters.a]\nbootstrap = [":9092"]\n', "bootstrap server ':9092' is not host:port"),
        ('[clusters.a]\nbootstrap = ["h:x"]\n', "bootstrap server 'h:x' is not host:port"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "TLS"\n',
         "clusters.a.security_protocol: 'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = 1\n',
         "'clusters.a.security_protocol' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "GSSAPI"\n'
         'username = "u"\npassword = "p"\n',
         "sasl_mechanism: 'GSSAPI' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ('[clusters.a]\nbootstrap = "h:1"\nsasl_mechanism = "PLAIN"\n',
         "sasl_mechanism is set but security_protocol is PLAINTEXT"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_PLAINTEXT"\nusername = "u"\n',
         "SASL_PLAINTEXT needs 'username' and 'password'"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\npassword = "p"\n',
         "SASL_SSL needs 'username' and 'password'"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\nusername = "u"\npassword = "p"\n'
         'password_file = "/x"\n', "set either 'password' or 'password_file', not both"),
        ('[clusters.a]\nbootstrap = "h:1"\nusername = 5\n', "'clusters.a.username' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\nusername = "u"\npassword = ""\n',
         "'clusters.a.password' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\nusername = "u"\npassword = 1234\n',
         "'clusters.a.password' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nssl_cafile = 1\n', "'clusters.a.ssl_cafile' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nssl_certfile = ""\n',
         "'clusters.a.ssl_certfile' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nssl_keyfile = []\n', "'clusters.a.ssl_keyfile' must be a non-empty string"),
        ('[clusters.a]\nbootstrap = "h:1"\nssl_password = 7\n', "'clusters.a.ssl_password' must be a non-empty string"),
        ('[clusters."bad name"]\nbootstrap = "h:1"\n', "'clusters.bad name': name must be letters"),
        ('clusters = 1\n', "'clusters' must be a table"),
        ('[clusters]\na = 1\n', "'clusters.a' must be a table"),
        ('[cluster.a]\nbootstrap = "h:1"\n', "unknown top-level key 'cluster'"),
    ],
)
def test_invalid_cluster_settings(tmp_path: Path, text: str, fragment: str) -> None:
    message = config_error(tmp_path, text)
    assert fragment in message
    assert str(tmp_path / "config.toml") in message


def test_unknown_key_hint_lists_known_keys_and_client_table(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[clusters.a]\nbootstrap = ["h:1"]\nrequest_timeout_ms = 1\n')
    assert "known keys: bootstrap, client, password" in message
    assert "[clusters.a.client]" in message


def test_valid_cluster_settings_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cluster = load(
        tmp_path,
        '[clusters.a]\nbootstrap = " h1:1 , h2:2 ,"\nsecurity_protocol = "sasl_ssl"\nusername = "u"\n'
        'password = "p"\nssl_cafile = "~/ca.pem"\nssl_certfile = "/c.pem"\nssl_keyfile = "/k.pem"\n'
        'ssl_password = "kp"\n[clusters.a.client]\nrequest_timeout_ms = 30000\nclient_id = "me"\n'
        'max_poll_records = 10\nacks = 1\nmetadata_max_age_ms = 1000\n',
    ).cluster("a")
    assert cluster.bootstrap == ("h1:1", "h2:2")
    assert cluster.security_protocol == "SASL_SSL"
    assert cluster.sasl_mechanism == "PLAIN"  # the default mechanism for SASL
    assert cluster.ssl_cafile == str(tmp_path / "home" / "ca.pem")
    assert (cluster.ssl_certfile, cluster.ssl_keyfile) == ("/c.pem", "/k.pem")
    assert cluster.ssl_password == Secret("kp")
    assert dict(cluster.client) == {"request_timeout_ms": 30000, "client_id": "me", "max_poll_records": 10,
                                    "acks": 1, "metadata_max_age_ms": 1000}
    assert cluster.sandbox is False


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_every_sasl_mechanism_is_accepted(tmp_path: Path, mechanism: str) -> None:
    cluster = load(
        tmp_path,
        f'[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "{mechanism}"\n'
        'username = "u"\npassword = "p"\n',
    ).cluster("a")
    assert cluster.sasl_mechanism == mechanism.upper()


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_non_sasl_protocols_need_no_credentials(tmp_path: Path, protocol: str) -> None:
    cluster = load(tmp_path, f'[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "{protocol}"\n').cluster("a")
    assert cluster.security_protocol == protocol and cluster.password is None


def test_parse_bootstrap_accepts_string_and_list() -> None:
    assert parse_bootstrap("a:1,b:2", "w") == ("a:1", "b:2")
    assert parse_bootstrap(["a:1", " b:2 "], "w") == ("a:1", "b:2")
    assert parse_bootstrap("[::1]:9092", "w") == ("[::1]:9092",)


# --- validation: flows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('to = "b"\n', "flows.f: missing key 'from'"),
        ('from = "a"\n', "flows.f: missing key 'to'"),
        ('from = "a"\nto = "b"\nfoo = 1\n', "flows.f: unknown key 'foo'"),
        ('from = []\nto = "b"\n', "flows.f.from is empty"),
        ('from = "a"\nto = "b"\ntopics = []\n', "flows.f.topics is empty"),  # not "every topic"
        ('from = [1]\nto = "b"\n', "'flows.f.from' must be a string or a list of strings"),
        ('from = "a"\nto = ["b"]\n', "'flows.f.to' must be a non-empty string"),
        ('from = "a"\nto = "b"\ntopics = ["(unclosed"]\n', "flows.f.topics: bad regex '(unclosed'"),
        ('from = "a"\nto = "b"\nexclude = ["*x"]\n', "flows.f.exclude: bad regex '*x'"),
        ('from = "a"\nto = "b"\nsync_groups = ["[a"]\n', "flows.f.sync_groups: bad regex '[a'"),
        ('from = "a"\nto = "b"\nrename = "prefix.{name}"\n', "unknown placeholder '{name}'"),
        ('from = "a"\nto = "b"\nrename = "{source}"\n', "must contain {topic}"),
        ('from = "a"\nto = "b"\nsync_configs = "yes"\n', "'flows.f.sync_configs' must be true or false"),
        ('from = "a"\nto = "b"\nexactly_once = 1\n', "'flows.f.exactly_once' must be true or false"),
        ('from = "a"\nto = "b"\npartitioner = "random"\n', "flows.f.partitioner: 'random' is not 'same' or 'key'"),
        ('from = "a"\nto = "b"\ntopics = 5\n', "'flows.f.topics' must be a string or a list of strings"),
    ],
)
def test_invalid_flows(tmp_path: Path, body: str, fragment: str) -> None:
    text = "[flows.f]\n" + body
    message = config_error(tmp_path, text)
    assert fragment in message
    assert str(tmp_path / "config.toml") in message


def test_flow_string_fields_become_tuples(tmp_path: Path) -> None:
    flow = load(tmp_path, '[flows.f]\nfrom = "a"\nto = "b"\ntopics = "t.*"\nexclude = "x"\nsync_groups = "g"\n'
                          'partitioner = "key"\n').flow("f")
    assert (flow.sources, flow.topics, flow.exclude, flow.sync_groups, flow.partitioner) == (
        ("a",), ("t.*",), ("x",), ("g",), "key")


def test_flow_name_must_be_valid(tmp_path: Path) -> None:
    assert "'flows.a b': name must be letters" in config_error(tmp_path, '[flows."a b"]\nfrom = "a"\nto = "b"\n')


def test_compile_regexes_and_rename_raise_the_given_error() -> None:
    compile_regexes(["a.*", "b|c"], "w")
    with pytest.raises(UsageError, match="--topics: bad regex"):
        compile_regexes(["("], "--topics", UsageError)
    validate_rename("{source}.{topic}", "w")
    validate_rename("{topic}", "w")
    with pytest.raises(UsageError, match="unknown placeholder '{x}'"):
        validate_rename("{x}.{topic}", "--rename", UsageError)
    with pytest.raises(ConfigError, match="must contain {topic}"):
        validate_rename("fixed", "w")


# --- password_file -------------------------------------------------------------------------------


def password_file_config(tmp_path: Path, password_path: Path) -> str:
    return (f'[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_PLAINTEXT"\nusername = "u"\n'
            f'password_file = "{password_path}"\n')


def test_password_file_owner_only_is_read(tmp_path: Path) -> None:
    secret = write(tmp_path / "pw", PASSWORD + "\n")
    secret.chmod(0o600)
    cluster = load(tmp_path, password_file_config(tmp_path, secret)).cluster("a")
    assert cluster.password.reveal() == PASSWORD  # the trailing newline is not part of it


def test_password_file_with_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    secret = write(tmp_path / "pw", PASSWORD)
    secret.chmod(0o400)
    cluster = load(tmp_path, password_file_config(tmp_path, Path("~/pw"))).cluster("a")
    assert cluster.password.reveal() == PASSWORD


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_password_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    secret = write(tmp_path / "pw", PASSWORD)
    secret.chmod(mode)
    message = config_error(tmp_path, password_file_config(tmp_path, secret))
    assert "readable by others" in message
    assert f"chmod 600 {secret}" in message
    assert PASSWORD not in message


def test_missing_password_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, password_file_config(tmp_path, tmp_path / "absent"))
    assert "password_file: cannot read" in message and "absent" in message


# --- masking ----------------------------------------------------------------------------------------


def secret_cluster(tmp_path: Path) -> Cluster:
    return load(
        tmp_path,
        '[clusters.a]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\nusername = "u"\npassword = "${PW}"\n'
        'ssl_password = "${KEYPW}"\n[clusters.a.client]\nrequest_timeout_ms = 1000\n',
        {"PW": PASSWORD, "KEYPW": "key-" + PASSWORD},
    ).cluster("a")


def test_secret_never_shows_itself() -> None:
    secret = Secret(PASSWORD)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", format(secret, ""),
                  repr([secret]), repr({"p": secret})):
        assert PASSWORD not in shown
        assert MASK in shown
    assert secret.reveal() == PASSWORD
    assert secret == Secret(PASSWORD) and secret != Secret("other") and secret != PASSWORD


def test_cluster_repr_str_and_masked_hide_secrets(tmp_path: Path) -> None:
    cluster = secret_cluster(tmp_path)
    assert cluster.password.reveal() == PASSWORD
    assert cluster.ssl_password.reveal() == "key-" + PASSWORD
    masked = cluster.masked()
    for shown in (repr(cluster), str(cluster), json.dumps(masked), repr(masked)):
        assert PASSWORD not in shown
    assert masked["password"] == MASK and masked["ssl_password"] == MASK
    assert masked == {
        "name": "a", "bootstrap": ["h:1"], "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
        "username": "u", "password": MASK, "ssl_password": MASK, "client": {"request_timeout_ms": 1000},
        "sandbox": False, "source": str(tmp_path / "config.toml"),
    }


def test_config_repr_hides_secrets(tmp_path: Path) -> None:
    config = load(tmp_path, DESIGN_EXAMPLE, {"CENTRAL_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(config)


def test_masked_client_settings_that_look_secret() -> None:
    cluster = Cluster(name="a", bootstrap=("h:1",), client={"sasl_kerberos_secret": "s3cr3t", "request_timeout_ms": 5})
    assert cluster.masked()["client"] == {"sasl_kerberos_secret": MASK, "request_timeout_ms": 5}


def test_masked_omits_unset_optional_keys() -> None:
    assert Cluster(name="a", bootstrap=("h:1",)).masked() == {
        "name": "a", "bootstrap": ["h:1"], "security_protocol": "PLAINTEXT", "sandbox": False, "source": ""}


# --- ad-hoc clusters -------------------------------------------------------------------------------


def test_adhoc_cluster_from_bootstrap() -> None:
    cluster = adhoc_cluster("h1:1,h2:2")
    assert (cluster.name, cluster.bootstrap, cluster.security_protocol, cluster.source) == (
        "h1:1", ("h1:1", "h2:2"), "PLAINTEXT", "--bootstrap")


@pytest.mark.parametrize("bad", ["h", "h:", ",", "h:abc"])
def test_adhoc_cluster_bad_bootstrap_is_usage_error(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        adhoc_cluster(bad)
    assert info.value.exit_code == ExitCode.USAGE


def test_resolve_cluster_name_or_address(tmp_path: Path) -> None:
    config = load(tmp_path, '[clusters.dc1]\nbootstrap = "h:1"\n')
    assert resolve_cluster(config, "dc1").bootstrap == ("h:1",)
    assert resolve_cluster(config, "other:2").bootstrap == ("other:2",)
    with pytest.raises(UnknownClusterError):
        resolve_cluster(config, "dc2")


# --- editing: add / remove --------------------------------------------------------------------------

EXISTING = """\
# my kafka clusters -- keep this comment
[clusters.dc1]   # the first data centre
bootstrap = ["localhost:19092"]  # inline comment
[clusters.dc1.client]
request_timeout_ms = 30000

# flows below
[flows.aggregate]
from = ["dc1"]
to = "central"
"""


def test_add_creates_file_with_mode_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a permissive umask must not matter
    try:
        path = tmp_path / "new" / "dir" / "config.toml"
        add_cluster(path, "dc1", {"bootstrap": ["localhost:19092"]})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == '[clusters.dc1]\nbootstrap = ["localhost:19092"]\n'
    assert load_config(path, include_sandboxes=False).cluster("dc1").bootstrap == ("localhost:19092",)
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left


def test_add_keeps_comments_and_other_tables(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EXISTING)
    add_cluster(path, "central", {"bootstrap": ["c1:9093", "c2:9093"], "security_protocol": "SASL_SSL",
                                  "sasl_mechanism": "SCRAM-SHA-512", "username": "mirror",
                                  "password": "${CENTRAL_PASSWORD}", "ssl_cafile": None})
    text = path.read_text()
    assert text.startswith(EXISTING)  # every byte of the original, comments included
    assert text[len(EXISTING):] == (
        '\n[clusters.central]\nbootstrap = ["c1:9093", "c2:9093"]\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\nusername = "mirror"\npassword = "${CENTRAL_PASSWORD}"\n'
    )
    config = load_config(path, include_sandboxes=False, environ={"CENTRAL_PASSWORD": PASSWORD})
    assert sorted(config.clusters) == ["central", "dc1"]
    assert list(config.flows) == ["aggregate"]


def test_an_unresolvable_cluster_leaves_the_others_usable(tmp_path: Path) -> None:
    config = load(tmp_path, '[clusters.ok]\nbootstrap = ["h:1"]\n'
                            '[clusters.later]\nbootstrap = ["${KMC_TEST_NOT_SET_YET}:9092"]\n', {})
    assert config.cluster("ok").bootstrap == ("h:1",)
    assert list(config.unresolved) == ["later"]
    with pytest.raises(ConfigError, match="KMC_TEST_NOT_SET_YET is not set"):
        config.cluster("later")


def test_profile_show_of_an_unresolvable_cluster_shows_it_as_written_with_secrets_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import kmc

    monkeypatch.delenv("KMC_TEST_NOT_SET_YET", raising=False)
    path = write(tmp_path / "c.toml", '[clusters.later]\nbootstrap = ["h:1"]\nsecurity_protocol = "SASL_SSL"\n'
                                      'sasl_mechanism = "PLAIN"\nusername = "${KMC_TEST_NOT_SET_YET}"\n'
                                      f'password = "{PASSWORD}"\n[clusters.later.client]\n'
                                      f'ssl_password = "{PASSWORD}"\nrequest_timeout_ms = 5000\n')
    result = kmc("--config", str(path), "profile", "show", "later", "-o", "json")
    shown = json.loads(result.stdout)
    assert shown["username"] == "${KMC_TEST_NOT_SET_YET}"  # a reference, not a secret: as written
    assert shown["password"] == MASK and shown["client"] == {"ssl_password": MASK, "request_timeout_ms": 5000}
    assert "KMC_TEST_NOT_SET_YET is not set" in shown["unresolved"]
    assert "KMC_TEST_NOT_SET_YET is not set" in result.stderr and PASSWORD not in result.stdout + result.stderr


def test_add_with_a_password_variable_that_is_not_set_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--password-env stores ${VAR}: it is read when a command runs, so it need not be set while adding."""
    monkeypatch.delenv("KMC_TEST_LATER_PW", raising=False)
    path = tmp_path / "config.toml"
    add_cluster(path, "c", {"bootstrap": ["h:1"], "security_protocol": "SASL_PLAINTEXT", "username": "u",
                            "password": "${KMC_TEST_LATER_PW}"})
    assert 'password = "${KMC_TEST_LATER_PW}"' in path.read_text()
    config = load_config(path, include_sandboxes=False)
    with pytest.raises(ConfigError, match="KMC_TEST_LATER_PW is not set"):
        config.cluster("c")


def test_add_appends_newline_to_file_without_one(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[clusters.a]\nbootstrap = "h:1"')
    add_cluster(path, "b", {"bootstrap": ["h:2"]})
    assert path.read_text() == '[clusters.a]\nbootstrap = "h:1"\n\n[clusters.b]\nbootstrap = ["h:2"]\n'


def test_add_existing_without_force_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EXISTING)
    before = path.read_bytes()
    with pytest.raises(UsageError, match="cluster 'dc1' already exists") as info:
        add_cluster(path, "dc1", {"bootstrap": ["other:1"]})
    assert "--force" in info.value.one_line()
    assert path.read_bytes() == before


def test_add_force_replaces_only_that_table(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EXISTING)
    add_cluster(path, "dc1", {"bootstrap": ["other:1"]}, force=True)
    text = path.read_text()
    assert text.startswith("# my kafka clusters -- keep this comment\n")
    assert "# flows below\n[flows.aggregate]\nfrom = [\"dc1\"]\nto = \"central\"\n" in text
    assert "localhost:19092" not in text and "request_timeout_ms" not in text  # its client subtable went too
    config = load_config(path, include_sandboxes=False)
    assert config.cluster("dc1").bootstrap == ("other:1",)
    assert dict(config.cluster("dc1").client) == {}
    assert list(config.flows) == ["aggregate"]


def test_add_force_finds_headers_with_spaces_and_quotes(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml",
                 '[ clusters.a ]  # spaced\nbootstrap = "h:1"\n\n[clusters."b"]\nbootstrap = "h:2"\n')
    add_cluster(path, "a", {"bootstrap": ["new:1"]}, force=True)
    add_cluster(path, "b", {"bootstrap": ["new:2"]}, force=True)
    config = load_config(path, include_sandboxes=False)
    assert {name: c.bootstrap for name, c in config.clusters.items()} == {"a": ("new:1",), "b": ("new:2",)}


def test_add_quotes_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    add_cluster(path, "a", {"bootstrap": ["h:1"], "security_protocol": "SSL",
                            "ssl_cafile": '/certs\\x/"ca".pem'})
    assert load_config(path, include_sandboxes=False).cluster("a").ssl_cafile == '/certs\\x/"ca".pem'


def test_add_and_remove_a_name_with_a_dot(tmp_path: Path) -> None:
    """'.' is allowed in a name (a secure sandbox's NAME.mirror): the table header quotes it."""
    path = write(tmp_path / "config.toml", EXISTING)
    add_cluster(path, "edge.mirror", {"bootstrap": ["h:1"]})
    assert path.read_text().endswith('\n[clusters."edge.mirror"]\nbootstrap = ["h:1"]\n')
    config = load_config(path, include_sandboxes=False)
    assert sorted(config.clusters) == ["dc1", "edge.mirror"]
    assert config.cluster("edge.mirror").bootstrap == ("h:1",)
    add_cluster(path, "edge.mirror", {"bootstrap": ["h:2"]}, force=True)
    assert load_config(path, include_sandboxes=False).cluster("edge.mirror").bootstrap == ("h:2",)
    remove_cluster(path, "edge.mirror")
    assert path.read_text().rstrip("\n") == EXISTING.rstrip("\n")


@pytest.mark.parametrize("name", ["bad name", "-x", "a/b", ""])
def test_add_invalid_name_is_usage_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(UsageError, match="not a valid cluster name"):
        add_cluster(path, name, {"bootstrap": ["h:1"]})
    assert not path.exists()


def test_add_refuses_a_result_that_would_not_load(tmp_path: Path) -> None:
    """The whole file is validated before writing: a broken neighbour table stops the add."""
    path = write(tmp_path / "config.toml", '[clusters.a]\nbootstrap = "h:1"\nfoo = 1\n')
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="unknown key 'foo'"):
        add_cluster(path, "b", {"bootstrap": ["h:2"]})
    assert path.read_bytes() == before


def test_add_to_malformed_toml_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[clusters.a]\nbootstrap = [\n')
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="line 2"):
        add_cluster(path, "b", {"bootstrap": ["h:2"]})
    assert path.read_bytes() == before


def test_add_keeps_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[clusters.a]\nbootstrap = "h:1"\n')
    path.chmod(0o640)
    add_cluster(path, "b", {"bootstrap": ["h:2"]})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_is_atomic_rename(tmp_path: Path) -> None:
    """The new content is written to a temporary file and renamed over the old one."""
    path = write(tmp_path / "config.toml", EXISTING)
    inode = path.stat().st_ino
    add_cluster(path, "b", {"bootstrap": ["h:2"]})
    assert path.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "config.toml", EXISTING)
    before = path.read_bytes()

    def replace_fails(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(profiles.os, "replace", replace_fails)
    with pytest.raises(ConfigError, match=f"cannot write {path}: No space left"):
        add_cluster(path, "b", {"bootstrap": ["h:2"]})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_remove_keeps_comments_and_other_tables(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EXISTING + '\n[clusters.central]\nbootstrap = "c:1"\n')
    remove_cluster(path, "dc1")
    assert path.read_text() == (
        "# my kafka clusters -- keep this comment\n"
        "\n# flows below\n[flows.aggregate]\nfrom = [\"dc1\"]\nto = \"central\"\n"
        '\n[clusters.central]\nbootstrap = "c:1"\n'
    )
    config = load_config(path, include_sandboxes=False)
    assert list(config.clusters) == ["central"] and list(config.flows) == ["aggregate"]


def test_remove_the_last_table(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EXISTING + '\n[clusters.central]\nbootstrap = "c:1"\n')
    remove_cluster(path, "central")
    assert path.read_text() == EXISTING + "\n"


def test_remove_unknown_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EXISTING)
    before = path.read_bytes()
    with pytest.raises(UnknownClusterError, match="cluster 'nope' is not in") as info:
        remove_cluster(path, "nope")
    assert info.value.exit_code == ExitCode.USAGE
    assert path.read_bytes() == before


def test_remove_from_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnknownClusterError):
        remove_cluster(tmp_path / "absent.toml", "a")
    assert not (tmp_path / "absent.toml").exists()


def test_adding_a_sandbox_name_warns_that_it_takes_the_sandbox_place(src_cluster, tmp_path: Path) -> None:  # noqa: ANN001, ARG001
    from tests.helpers import kmc

    path = tmp_path / "config.toml"
    result = kmc("--config", str(path), "profile", "add", "src", "--bootstrap", "h:1")
    assert result.stderr.splitlines()[1] == (
        "kmc: warning: 'src' is also a sandbox's profile: this cluster now takes its place everywhere (name it "
        "differently, or 'kmc profile remove src' to reach the sandbox again)")
    shown = kmc("--config", str(path), "profile", "show", "src", "-o", "json").json()
    assert shown["bootstrap"] == ["h:1"] and shown["sandbox"] is False
    assert "warning" not in kmc("--config", str(path), "profile", "add", "elsewhere", "--bootstrap", "h:1").stderr
