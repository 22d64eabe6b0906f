"""Fast tests of the security pieces that need no broker: ACL rules, TLS diagnosis, profile keys, sandbox files."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from kmc.acls import (
    AclBinding,
    Need,
    Permission,
    Verdict,
    expected_target_acls,
    grant_command,
    grants,
    literal_topic_names,
    mirrored_acl,
    missing_line,
    principal_of,
    regex_prefix,
)
from kmc.errors import ConfigError, ExitCode, TlsError
from kmc.profiles import Cluster, Secret, build_config, readable_secret_warnings
from kmc.sandbox import security
from kmc.tls import _certificate_problem, explain_close, ssl_context

# ------------------------------------------------------------------------------------------ ACLs


def test_kafkas_implied_operations() -> None:
    assert grants("DESCRIBE", ["READ"]) and grants("DESCRIBE", ["WRITE"]) and grants("DESCRIBE", ["ALTER"])
    assert grants("DESCRIBE_CONFIGS", ["ALTER_CONFIGS"]) and grants("CREATE", ["ALL"])
    assert not grants("READ", ["DESCRIBE"]) and not grants("ALTER_CONFIGS", ["DESCRIBE_CONFIGS"])
    assert not grants("DESCRIBE_CONFIGS", ["READ"])


def test_literal_topic_names_are_plain_names_only() -> None:
    assert literal_topic_names(["orders", "payments\\.eu", "a.b", "clicks-.*", "x|y", "[ab]c", "."]) == \
        ["orders", "payments.eu", "a.b"]


def binding(operation: str, permission: str = "ALLOW", name: str = "orders", pattern: str = "literal",
            principal: str = "User:alice", host: str = "*") -> AclBinding:
    return AclBinding("topic", name, pattern, principal, host, operation, permission)


def test_the_literal_start_of_a_group_regex_names_a_prefixed_acl() -> None:
    assert [regex_prefix(pattern) for pattern in ("billing-.*", "payments\\.(eu|us)", "app[0-9]+", "orders",
                                                  "ab?c", "a\\.?b", "x{2}y")] == \
        ["billing-", "payments.", "app", "orders", "a", "a", ""]
    assert [regex_prefix(pattern) for pattern in (".*-billing", "a|b", "billing-.*|audit", "[ab]c", "")] == [""] * 5
    assert regex_prefix("(billing|audit)-.*") == ""  # the alternatives start differently: no prefix


def test_mirrored_acls_follow_mirrormaker_2() -> None:
    assert mirrored_acl(binding("READ"), "dc1.orders") == binding("READ", name="dc1.orders")
    assert mirrored_acl(binding("WRITE"), "dc1.orders") is None  # only the mirror writes to a mirrored topic
    assert mirrored_acl(binding("ALL"), "dc1.orders") == binding("READ", name="dc1.orders")
    assert mirrored_acl(binding("WRITE", "DENY"), "dc1.orders") == binding("WRITE", "DENY", name="dc1.orders")
    assert mirrored_acl(binding("DESCRIBE_CONFIGS"), "x") == binding("DESCRIBE_CONFIGS", name="x")
    assert mirrored_acl(binding("READ", pattern="prefixed"), "x") is None  # a prefix cannot be renamed exactly


def test_expected_target_acls_rename_and_report_what_is_left_out() -> None:
    source = [binding("READ"), binding("WRITE", principal="User:bob"), binding("READ", name="other")]
    expected, skipped = expected_target_acls(source, {"orders": "copy.orders"})
    assert expected == {binding("READ", name="copy.orders")}
    assert skipped == [binding("WRITE", principal="User:bob")]


def test_which_acls_apply_to_a_permission() -> None:
    wanted = Permission("topic", "orders.eu", "READ")
    assert binding("READ", name="orders.eu").applies_to(wanted, "User:alice")
    assert binding("READ", name="*").applies_to(wanted, "User:alice")
    assert binding("READ", name="orders.", pattern="prefixed").applies_to(wanted, "User:alice")
    assert binding("READ", name="orders.eu", principal="User:*").applies_to(wanted, "User:alice")
    assert not binding("READ", name="orders.eu", principal="User:bob").applies_to(wanted, "User:alice")
    assert not binding("READ", name="orders.eu", host="10.0.0.1").applies_to(wanted, "User:alice")
    prefixed = Permission("transactional_id", "kmc/", "WRITE", "prefixed")
    assert AclBinding("transactional_id", "kmc/", "prefixed", "User:alice", "*", "WRITE", "ALLOW").applies_to(
        prefixed, "User:alice")
    assert not AclBinding("transactional_id", "kmc/x", "literal", "User:alice", "*", "WRITE", "ALLOW").applies_to(
        prefixed, "User:alice")


def test_the_principal_kmc_can_name() -> None:
    assert principal_of(Cluster("c", ("h:1",), "SASL_SSL", "SCRAM-SHA-512", "mirror", Secret("x"))) == "User:mirror"
    assert principal_of(Cluster("c", ("h:1",))) == "User:ANONYMOUS"
    assert principal_of(Cluster("c", ("h:1",), "SSL", ssl_certfile="/c.pem")) is None


def test_a_missing_line_names_operations_resource_and_the_grant() -> None:
    cluster = Cluster("dst", ("h:1",), "SASL_SSL", "SCRAM-SHA-512", "mirror", Secret("x"))
    verdicts = [
        Verdict(Need(Permission("topic", "orders", "DESCRIBE"), "list it"), "missing"),
        Verdict(Need(Permission("topic", "orders", "WRITE"), "write the records"), "missing"),
        Verdict(Need(Permission("topic", "kmc.checkpoints", "READ"), "resume"), "missing"),
        Verdict(Need(Permission("topic", "other", "READ"), "copy"), "granted"),
    ]
    message, hint = missing_line(cluster, verdicts)
    assert message == ("dst: not authorized: DESCRIBE and WRITE on topic orders (to list it, write the records); "
                       "1 more resource lacks ACLs too")
    assert hint == "grant it: kafka-acls --add --allow-principal User:mirror --operation Write --topic orders"
    assert missing_line(cluster, verdicts[3:]) is None
    assert grant_command(cluster, Permission("transactional_id", "kmc/", "WRITE", "prefixed"), ["WRITE"]) == (
        "kafka-acls --add --allow-principal User:mirror --operation Write --transactional-id kmc/ "
        "--resource-pattern-type prefixed")
    assert Permission("cluster", "kafka-cluster", "DESCRIBE").label() == "DESCRIBE on the cluster"


# ------------------------------------------------------------------------------------------ TLS


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code, error.verify_message = code, message
    return error


@pytest.mark.parametrize(("code", "message", "expected"), [
    (19, "self-signed certificate in certificate chain", "is not trusted"),
    (20, "unable to get local issuer certificate", "is not trusted"),
    (62, "Hostname mismatch, certificate is not valid for 'kafka-1'.", "TLS hostname mismatch"),
    (64, "IP address mismatch, certificate is not valid for '10.0.0.1'.", "TLS hostname mismatch"),
    (10, "certificate has expired", "has expired"),
])
def test_certificate_problems_are_named(code: int, message: str, expected: str) -> None:
    cluster = Cluster("c", ("kafka-1:9093",), "SSL", ssl_cafile="/etc/ca.pem")
    found = _certificate_problem(cluster, "kafka-1:9093", "kafka-1", verify_error(code, message))
    assert isinstance(found, TlsError) and found.exit_code == ExitCode.AUTH and expected in found.message


def test_an_untrusted_certificate_says_which_cas_lack_its_ca() -> None:
    problem = verify_error(19, "self-signed certificate in certificate chain")
    with_file = _certificate_problem(Cluster("c", ("k:1",), "SSL", ssl_cafile="/etc/ca.pem"), "k:1", "k", problem)
    assert with_file.hint.startswith("ssl_cafile /etc/ca.pem does not hold the CA that signed")
    system = _certificate_problem(Cluster("c", ("k:1",), "SSL"), "k:1", "k", problem)
    assert system.hint.startswith("the system's CA certificates do not hold the CA that signed")


def test_alerts_from_the_broker_are_named() -> None:
    without_certificate = Cluster("c", ("h:1",), "SSL")
    alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    assert "requires a client certificate" in _certificate_problem(without_certificate, "h:1", "h", alert).message
    with_certificate = Cluster("c", ("h:1",), "SSL", ssl_certfile="/c.pem")
    assert "rejected the client certificate" in _certificate_problem(with_certificate, "h:1", "h", alert).message
    version = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert "does not speak TLS" in _certificate_problem(with_certificate, "h:1", "h", version).message


def test_an_unexplained_close_of_a_closed_port_is_not_a_tls_problem() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for protocol in ("PLAINTEXT", "SSL"):
        cluster = Cluster("c", (f"127.0.0.1:{port}",), protocol)
        assert explain_close(cluster, "127.0.0.1", port, ConnectionRefusedError(), answered=False) is None


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    (directory / "pass").write_text("s3cret\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-passout", "file:pass", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=x"],
                   cwd=directory, check=True, capture_output=True)
    return directory / "cert.pem", directory / "key.pem", directory / "pass"


def test_ssl_context_problems_are_config_errors_naming_the_key(key_pair, tmp_path: Path) -> None:  # noqa: ANN001
    cert, key, _ = key_pair
    base = {"name": "c", "bootstrap": ("h:1",), "security_protocol": "SSL", "source": "/cfg.toml"}
    with pytest.raises(ConfigError, match=r"clusters\.c\.ssl_cafile: cannot use /nowhere/ca\.pem"):
        ssl_context(Cluster(**base, ssl_cafile="/nowhere/ca.pem"))
    with pytest.raises(ConfigError, match=r"ssl_password: the key is encrypted: set ssl_password"):
        ssl_context(Cluster(**base, ssl_cafile=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key)))
    with pytest.raises(ConfigError, match=r"cannot be decrypted with the configured ssl_password"):
        ssl_context(Cluster(**base, ssl_cafile=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key),
                            ssl_password=Secret("wrong")))
    context = ssl_context(Cluster(**base, ssl_cafile=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key),
                                  ssl_password=Secret("s3cret")))
    assert context.check_hostname is True and context.verify_mode == ssl.CERT_REQUIRED
    relaxed = ssl_context(Cluster(**base, ssl_cafile=str(cert), ssl_check_hostname=False))
    assert relaxed.check_hostname is False and relaxed.verify_mode == ssl.CERT_REQUIRED  # the CA still counts


# ------------------------------------------------------------------------------------------ profile keys


def test_ssl_password_file_and_the_hostname_opt_out(key_pair, tmp_path: Path) -> None:  # noqa: ANN001
    cert, key, password = key_pair
    password.chmod(0o600)
    data = {"clusters": {"m": {"bootstrap": "h:1", "security_protocol": "SSL", "ssl_cafile": str(cert),
                               "ssl_certfile": str(cert), "ssl_keyfile": str(key),
                               "ssl_password_file": str(password), "ssl_check_hostname": False}}}
    cluster = build_config(data, tmp_path / "c.toml", environ={}).clusters["m"]
    assert cluster.ssl_password.reveal() == "s3cret" and cluster.ssl_check_hostname is False
    shown = cluster.masked()
    assert shown["ssl_password"] == "***" and shown["ssl_password_file"] == str(password)
    assert shown["ssl_check_hostname"] is False
    password.chmod(0o640)
    config = build_config(data, tmp_path / "c.toml", environ={})
    assert "readable by others" in config.unresolved["m"].message
    password.chmod(0o600)
    for bad, fragment in (({"ssl_check_hostname": "no"}, "must be true or false"),
                          ({"ssl_password": "x"}, "either 'ssl_password' or 'ssl_password_file'")):
        body = {**data["clusters"]["m"], **bad}
        with pytest.raises(ConfigError, match=fragment):
            build_config({"clusters": {"m": body}}, tmp_path / "c.toml", environ={})
    with pytest.raises(ConfigError) as raised:
        build_config({"clusters": {"m": {"bootstrap": "h:1", "client": {"ssl_check_hostname": False}}}},
                     tmp_path / "c.toml", environ={})
    assert raised.value.hint == "set it with the profile's own key"


def test_inline_secrets_in_a_readable_file_are_found(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("")
    data = {"clusters": {"a": {"password": "inline", "ssl_password": "${KEY}", "password_file": "/p"},
                         "b": {"client": {"sasl_oauth_secret": "x"}}}}
    path.chmod(0o600)
    assert readable_secret_warnings(data, path) == ()
    path.chmod(0o604)
    warnings = readable_secret_warnings(data, path)
    assert len(warnings) == 2 and "clusters.a.password is written" in warnings[0] and "(mode 0604)" in warnings[0]
    assert "clusters.b.client.sasl_oauth_secret" in warnings[1]


# ------------------------------------------------------------------------------------------ sandbox files


def test_the_format_argument_file_quotes_every_argument() -> None:
    assert security.argument_file_text(["format", 'a "b"', "c\\d"]) == '"format"\n"a \\"b\\""\n"c\\\\d"\n'


def test_secure_sandbox_settings(tmp_path: Path) -> None:
    security.create_material(tmp_path, security.SASL_SSL, "t")
    settings = security.broker_settings(tmp_path, security.SASL_SSL, 9093, 9094, "127.0.0.1")
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert settings["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert settings["listeners"] == "SASL_SSL://127.0.0.1:9093,CONTROLLER://127.0.0.1:9094"
    assert settings["listener.name.controller.ssl.client.auth"] == "required"
    arguments = security.format_arguments(tmp_path, security.SASL_SSL)
    assert arguments.count("--add-scram") == 4  # admin and mirror, SCRAM-SHA-512 and -256
    tables = security.profile_tables("t", tmp_path, security.SASL_SSL, ["127.0.0.1:9093"])
    assert set(tables) == {"t", "t.mirror"}
    assert tables["t.mirror"]["password_file"].endswith("mirror.password") and "password" not in tables["t.mirror"]
    assert security.profile_tables("p", tmp_path, security.PLAINTEXT, ["h:1"]) == {"p": {"bootstrap": ["h:1"]}}
