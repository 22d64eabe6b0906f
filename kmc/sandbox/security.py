"""Secure sandboxes (``kmc sandbox up NAME --secure | --mtls``): TLS material, users and broker settings.

A secure sandbox keeps everything it needs under ``NAME/security/`` (mode 0700)::

    ca.pem, ca.key               its own certificate authority (the CA file of its profiles)
    broker.p12                   the brokers' key and certificate (CN=broker, IP 127.0.0.1), PKCS#12
    keystore.password            that keystore's password
    admin.password, mirror.password          --secure: the SCRAM users' passwords
    admin.pem, admin.key, admin.keypass      --mtls: client certificates (CN=admin, CN=mirror), their keys
    mirror.pem, mirror.key, mirror.keypass   encrypted with the password in *.keypass

Every secret file is mode 0600. Certificates come from ``openssl`` (EC P-256 keys, ten years). SCRAM users
are created when the storage is formatted (``kafka-storage format --add-scram``), the only way KRaft
offers before the first broker runs; the format command reads its arguments from a 0600 argument file
(``java @file``), so no password is ever on a command line (process titles are world-readable).

Modes:

- ``sasl_ssl`` (``--secure``): one SASL_SSL listener (SCRAM-SHA-512 and SCRAM-SHA-256); the brokers talk to
  each other over it as ``admin``.
- ``mtls`` (``--mtls``): one SSL listener that requires a client certificate; the principal is the
  certificate's CN (``ssl.principal.mapping.rules``).

Both run KRaft's StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``: only ``admin`` and the
brokers (``broker``, the CN of their certificate) are super users, everything else needs ACLs. The
controller listener is SSL with client certificates required, so the brokers and controllers know each
other by certificate and nobody else is let in there.

Library code: no printing; a missing ``openssl`` is a MissingToolError.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmc.errors import ConfigError, MissingToolError, UsageError

PLAINTEXT = "plaintext"
SASL_SSL = "sasl_ssl"
MTLS = "mtls"
MODES = (PLAINTEXT, SASL_SSL, MTLS)
ADMIN_USER = "admin"
MIRROR_USER = "mirror"
USERS = (ADMIN_USER, MIRROR_USER)
BROKER_PRINCIPAL = "broker"  # the CN of the brokers' certificate
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
INTER_BROKER_MECHANISM = "SCRAM-SHA-512"
# The profile of a secure sandbox NAME authenticates as admin; NAME.mirror as the mirror user, which has
# no ACLs until they are granted (a sandbox name never contains '.', so these names cannot collide).
MIRROR_PROFILE_SUFFIX = ".mirror"
CERT_DAYS = 3650
SECURITY_DIR = "security"
OPENSSL_HINT = "install openssl (e.g. apt-get install openssl): secure sandboxes make their certificates with it"


def validate_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"unknown sandbox security mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    return mode


def security_dir(cluster_dir: Path) -> Path:
    return cluster_dir / SECURITY_DIR


def listener_name(mode: str) -> str:
    """The name (and security protocol) of the client listener in this mode."""
    return {PLAINTEXT: "PLAINTEXT", SASL_SSL: "SASL_SSL", MTLS: "SSL"}[validate_mode(mode)]


# ------------------------------------------------------------------------------------------ material


def _openssl() -> str:
    found = shutil.which("openssl", path=os.environ.get("PATH", ""))
    if found is None:
        raise MissingToolError("openssl not found on PATH", hint=OPENSSL_HINT)
    return found


def _run_openssl(openssl: str, directory: Path, *args: str) -> None:
    proc = subprocess.run([openssl, *args], cwd=directory, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise ConfigError(f"openssl {args[0]} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}",
                          hint="check the openssl installation")


def _write_secret(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def _new_password() -> str:
    return secrets.token_urlsafe(18)  # letters, digits, '-' and '_': safe in JAAS and argument files


def _sign(openssl: str, directory: Path, name: str, common_name: str, usage: str, san: str | None,
          key_password_file: str | None) -> None:
    """A key and a certificate ``name.pem`` for CN=``common_name``, signed by the sandbox CA."""
    key_args = (["-passout", f"file:{key_password_file}"] if key_password_file else ["-nodes"])
    _run_openssl(openssl, directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 *key_args, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}")
    extensions = [f"extendedKeyUsage={usage}"]
    if san:
        extensions.append(f"subjectAltName={san}")
    (directory / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _run_openssl(openssl, directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(secrets.randbits(63)), "-days", str(CERT_DAYS), "-extfile", f"{name}.ext",
                 "-out", f"{name}.pem")
    for leftover in (f"{name}.csr", f"{name}.ext"):
        (directory / leftover).unlink()
    os.chmod(directory / f"{name}.key", 0o600)


def create_material(cluster_dir: Path, mode: str, cluster_name: str) -> None:
    """Make the CA, the brokers' keystore, the users' passwords or client certificates of a new sandbox."""
    if validate_mode(mode) == PLAINTEXT:
        return
    openssl = _openssl()
    directory = security_dir(cluster_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _run_openssl(openssl, directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", str(CERT_DAYS),
                 "-subj", f"/CN=kmc sandbox {cluster_name} CA")
    os.chmod(directory / "ca.key", 0o600)
    _write_secret(directory / "keystore.password", _new_password())
    _sign(openssl, directory, "broker", BROKER_PRINCIPAL, "serverAuth,clientAuth", "IP:127.0.0.1", None)
    _run_openssl(openssl, directory, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
                 "-certfile", "ca.pem", "-name", BROKER_PRINCIPAL, "-out", "broker.p12",
                 "-passout", "file:keystore.password")
    (directory / "broker.key").unlink()  # it lives in the keystore now
    os.chmod(directory / "broker.p12", 0o600)
    for user in USERS:
        if mode == SASL_SSL:
            _write_secret(directory / f"{user}.password", _new_password())
        else:
            _write_secret(directory / f"{user}.keypass", _new_password())
            _sign(openssl, directory, user, user, "clientAuth", None, f"{user}.keypass")


# ------------------------------------------------------------------------------------------ broker


def broker_settings(cluster_dir: Path, mode: str, port: int, controller_port: int, host: str) -> dict[str, Any]:
    """server.properties entries of one node in this mode (those that replace or add to the plaintext ones).

    They hold the keystore password (and in sasl_ssl the admin password, in the JAAS entry the brokers log
    in with), so the caller writes server.properties with mode 0600.
    """
    if validate_mode(mode) == PLAINTEXT:
        return {}
    directory = security_dir(cluster_dir)
    listener = listener_name(mode)
    keystore_password = read_secret(directory / "keystore.password")
    settings: dict[str, Any] = {
        "listeners": f"{listener}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{listener}://{host}:{port}",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:SSL",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(directory / "broker.p12"),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(directory / "ca.pem"),
        "listener.name.controller.ssl.client.auth": "required",
        # "CN=mirror" -> User:mirror, so ACLs name users the same way in both modes
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER};User:{BROKER_PRINCIPAL}",
    }
    if mode == SASL_SSL:
        admin_password = read_secret(directory / f"{ADMIN_USER}.password")
        prefix = f"listener.name.{listener.lower()}"
        settings["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
        settings["sasl.mechanism.inter.broker.protocol"] = INTER_BROKER_MECHANISM
        for mechanism in SCRAM_MECHANISMS:
            login = "org.apache.kafka.common.security.scram.ScramLoginModule required"
            if mechanism == INTER_BROKER_MECHANISM:
                login += f' username="{ADMIN_USER}" password="{admin_password}"'
            settings[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = login + ";"
    else:
        settings["ssl.client.auth"] = "required"
    return settings


def format_arguments(cluster_dir: Path, mode: str) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM users (sasl_ssl; none otherwise)."""
    if validate_mode(mode) != SASL_SSL:
        return []
    directory = security_dir(cluster_dir)
    arguments = []
    for user in USERS:
        password = read_secret(directory / f"{user}.password")
        for mechanism in SCRAM_MECHANISMS:
            arguments += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return arguments


def argument_file_text(arguments: list[str]) -> str:
    """A ``java @file`` argument file: one double-quoted argument per line (backslashes and quotes escaped)."""
    return "".join('"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"\n' for argument in arguments)


# ------------------------------------------------------------------------------------------ clients


def profile_tables(name: str, cluster_dir: Path, mode: str, bootstrap: list[str]) -> dict[str, dict[str, Any]]:
    """The profiles a sandbox registers, as config-file tables: ``name`` (admin; the only one of a plaintext
    sandbox) and ``name.mirror`` (the mirror user). Secrets are referenced by file, never inline."""
    if validate_mode(mode) == PLAINTEXT:
        return {name: {"bootstrap": list(bootstrap)}}
    directory = security_dir(cluster_dir)
    tables = {}
    for profile, user in ((name, ADMIN_USER), (name + MIRROR_PROFILE_SUFFIX, MIRROR_USER)):
        table: dict[str, Any] = {"bootstrap": list(bootstrap), "security_protocol": listener_name(mode),
                                 "ssl_cafile": str(directory / "ca.pem")}
        if mode == SASL_SSL:
            table.update(sasl_mechanism=INTER_BROKER_MECHANISM, username=user,
                         password_file=str(directory / f"{user}.password"))
        else:
            table.update(ssl_certfile=str(directory / f"{user}.pem"), ssl_keyfile=str(directory / f"{user}.key"),
                         ssl_password_file=str(directory / f"{user}.keypass"))
        tables[profile] = table
    return tables


def admin_client_settings(cluster_dir: Path, mode: str) -> Mapping[str, Any]:
    """kafka-python settings that connect as admin (the sandbox's own readiness probes)."""
    if validate_mode(mode) == PLAINTEXT:
        return {}
    directory = security_dir(cluster_dir)
    settings: dict[str, Any] = {"security_protocol": listener_name(mode), "ssl_cafile": str(directory / "ca.pem")}
    if mode == SASL_SSL:
        settings.update(sasl_mechanism=INTER_BROKER_MECHANISM, sasl_plain_username=ADMIN_USER,
                        sasl_plain_password=read_secret(directory / f"{ADMIN_USER}.password"))
    else:
        settings.update(ssl_certfile=str(directory / f"{ADMIN_USER}.pem"),
                        ssl_keyfile=str(directory / f"{ADMIN_USER}.key"),
                        ssl_password=read_secret(directory / f"{ADMIN_USER}.keypass"))
    return settings
