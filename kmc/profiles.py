"""The profile layer: the config file becomes validated Cluster and Flow objects.

Lookup order: ``--config``, then ``$KMC_CONFIG``, then ``$XDG_CONFIG_HOME/kmc/config.toml``.
Strings may use ``${VAR}`` (``$$`` for a literal ``$``); secrets are held in :class:`Secret`,
which never shows its value in ``repr``/``str``.

Longer than 600 lines: it is the one reader, validator and editor of the config file (``profile add`` and
``remove`` rewrite a table and keep the rest of the file, comments included), and its parts share the
file's grammar and error messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kmc.errors import ConfigError, KmcError, UnknownClusterError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MASK = "***"
ADHOC_SOURCE = "--bootstrap"


class Secret:
    """A string that never prints itself; ``.reveal()`` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Cluster:
    """One named Kafka cluster and how to reach it."""

    name: str
    bootstrap: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: Secret | None = None
    password_file: str | None = None  # where ``password`` was read from (a path, not a secret: shown)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = None
    # False only by the profile's explicit (unsafe) ssl_check_hostname = false
    ssl_check_hostname: bool = True
    ssl_password_file: str | None = None  # where ``ssl_password`` was read from (shown, as password_file is)
    client: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sandbox: bool = False
    source: str = ""  # the file it came from, "sandbox", or "--bootstrap"

    def masked(self) -> dict[str, Any]:
        """A plain dict for display: every secret replaced by ``***``."""
        shown: dict[str, Any] = {
            "name": self.name,
            "bootstrap": list(self.bootstrap),
            "security_protocol": self.security_protocol,
        }
        for key in ("sasl_mechanism", "username", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                shown[key] = value
        for key in ("password", "ssl_password"):  # the value masked, and the file it came from (a path: shown)
            if getattr(self, key) is not None:
                shown[key] = MASK
            if getattr(self, f"{key}_file") is not None:
                shown[f"{key}_file"] = getattr(self, f"{key}_file")
        if not self.ssl_check_hostname:
            shown["ssl_check_hostname"] = False
        if self.client:
            shown["client"] = {
                key: (MASK if _is_secret_key(key) else value) for key, value in self.client.items()
            }
        shown["sandbox"] = self.sandbox
        shown["source"] = self.source
        return shown


@dataclass(frozen=True)
class Flow:
    """A named copy job from the config's ``[flows.NAME]`` table."""

    name: str
    sources: tuple[str, ...]
    target: str
    topics: tuple[str, ...] = (".*",)
    exclude: tuple[str, ...] = ()
    rename: str = "{topic}"
    sync_configs: bool = False
    sync_groups: tuple[str, ...] = ()
    exactly_once: bool = False
    partitioner: str = "same"  # "same": partition i -> i; "key": rehash by key (merge mode)
    metrics_addr: str | None = None  # kmc flow run NAME --follow serves /metrics and /healthz here
    sync_acls: bool = False  # copy the mirrored topics' ACLs to the target (kmc.acls)
    group: str | None = None  # kmc flow run NAME --follow joins this group (docs/scale-out.md)


@dataclass(frozen=True)
class ServiceSettings:
    """The config's ``[service]`` table: defaults of the long-running commands (``--follow``)."""

    metrics_addr: str | None = None  # HOST:PORT of /metrics and /healthz
    metrics_partitions: bool = False  # a partition label on the per-partition metrics
    stall_timeout: float | None = None  # seconds before /healthz says a checkpoint stalled (None: kmc's default)


# How a mirror picks a record's target partition: "same" (source partition i -> target partition i) or "key"
# (murmur2 of the key, as Kafka's producer would); MirrorSpec.partitioner and a flow's partitioner key.
PARTITIONERS = ("same", "key")


class UnresolvedValueError(ConfigError):
    """A cluster setting that needs the environment or a file that is not there right now (an unset
    ``${VAR}``, an unreadable password file). Only the cluster that needs it is unusable: commands that
    work on other clusters still run."""


@dataclass(frozen=True)
class Config:
    path: Path
    exists: bool
    clusters: Mapping[str, Cluster]
    flows: Mapping[str, Flow]
    # clusters that are well formed but cannot be resolved now; naming one raises its error
    unresolved: Mapping[str, ConfigError] = field(default_factory=lambda: MappingProxyType({}))
    # their tables as written (``${VAR}`` references not expanded), for ``profile show``
    unresolved_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    service: ServiceSettings = field(default_factory=ServiceSettings)
    # what the user should know but that does not stop kmc (e.g. an inline password others can read)
    warnings: tuple[str, ...] = ()

    def unresolved_view(self, name: str) -> dict[str, Any]:
        """An unresolved cluster as written in the file, secrets masked, with why it cannot be used now."""
        table = self.unresolved_tables.get(name, {})
        shown: dict[str, Any] = {"name": name}
        for key, value in table.items():
            if isinstance(value, Mapping):
                shown[key] = {k: (MASK if _is_secret_key(k) else v) for k, v in value.items()}
            else:
                shown[key] = MASK if _is_secret_key(key) and not _is_reference(value) else value
        shown["unresolved"] = self.unresolved[name].one_line()
        return shown

    def cluster(self, name: str) -> Cluster:
        if name in self.unresolved:
            raise self.unresolved[name]
        try:
            return self.clusters[name]
        except KeyError:
            known = ", ".join(sorted([*self.clusters, *self.unresolved])) or "none configured"
            raise UnknownClusterError(f"unknown cluster '{name}' (known: {known})") from None

    def flow(self, name: str) -> Flow:
        try:
            return self.flows[name]
        except KeyError:
            if not self.flows:
                raise UsageError(f"unknown flow '{name}': no flows in {self.path}",
                                 hint="add a [flows.NAME] table, see docs/flows.md") from None
            raise UsageError(f"unknown flow '{name}' (known: {', '.join(sorted(self.flows))})",
                             hint="run 'kmc flow list'") from None


# --- lookup -----------------------------------------------------------------------------


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kmc" / "config.toml"


def config_path(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The config file to use and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit).expanduser(), True
    env = os.environ.get("KMC_CONFIG")
    if env:
        return Path(env).expanduser(), True
    return default_config_path(), False


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    include_sandboxes: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, interpolate and validate the config file; sandboxes are merged in as clusters."""
    path, named = config_path(explicit)
    environ = os.environ if environ is None else environ
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        data = parse_toml(text, path)
    elif named:
        raise ConfigError(
            f"config file {path} does not exist",
            hint="create it with 'kmc profile add NAME --bootstrap host:port' or fix --config/KMC_CONFIG",
        )
    else:
        data = {}
    config = build_config(data, path, environ=environ, exists=path.exists())
    if path.exists():
        config = dataclasses.replace(config, warnings=config.warnings + readable_secret_warnings(data, path))
    if include_sandboxes:
        config = _with_sandboxes(config, environ)
    return config


def readable_secret_warnings(data: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    """A warning for each secret written into the config file itself (not a ``${VAR}`` reference) when the
    file is readable by its group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return ()
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return ()
    warnings = []
    clusters = data.get("clusters", {})
    for name, body in (clusters.items() if isinstance(clusters, dict) else ()):
        if not isinstance(body, dict):
            continue
        tables = [(f"clusters.{name}", body)]
        if isinstance(body.get("client"), dict):
            tables.append((f"clusters.{name}.client", body["client"]))
        for where, table in tables:
            for key, value in table.items():
                if _is_secret_key(key) and not key.endswith("_file") and isinstance(value, str) \
                        and not _is_reference(value):
                    warnings.append(f"{path}: {where}.{key} is written in a file that others can read "
                                    f"(mode {mode:04o}); chmod 600 {path}, or use a ${{VAR}} reference or "
                                    "password_file")
    return tuple(warnings)


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts "(at line N, column M)" in its message; keep it, it is what the user needs.
        # For an error found at the end of the input (an unclosed array or string) it says only
        # "(at end of document)": name the last line then, so every message carries a line number.
        message = str(exc).replace("at end of document", f"at end of document, line {max(1, len(text.splitlines()))}")
        raise ConfigError(f"{path}: invalid TOML: {message}") from exc


def _with_sandboxes(config: Config, environ: Mapping[str, str]) -> Config:
    from kmc.sandbox import list_sandboxes  # local import: the sandbox imports nothing of ours back

    clusters = dict(config.clusters)
    unresolved = dict(config.unresolved)
    for sandbox in list_sandboxes():
        # a secure sandbox registers NAME (admin) and NAME.mirror, reading their secrets from its files
        for name, table in sandbox.profile_tables().items():
            if name in clusters or name in unresolved:
                continue
            try:
                cluster = parse_cluster(name, table, sandbox.state_file, environ)
            except UnresolvedValueError as exc:  # e.g. its password file was removed by hand
                unresolved[name] = exc
                continue
            clusters[name] = dataclasses.replace(cluster, sandbox=True, source="sandbox")
    return dataclasses.replace(config, clusters=MappingProxyType(clusters), unresolved=MappingProxyType(unresolved))


# --- interpolation -------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")


def interpolate(value: str, environ: Mapping[str, str], where: str) -> str:
    """Replace ``${VAR}`` with the environment's value; ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name is None:
            # the reference may be a fragment of a password written without $$: never echo a secret
            shown = "" if _is_secret_key(where.rpartition(".")[2]) else f" '{match.group(0)}'"
            raise ConfigError(f"{where}: malformed variable reference{shown}",
                              hint="write ${NAME} with letters, digits and _ only, or $$ for a literal $")
        if name not in environ:
            raise UnresolvedValueError(
                f"{where}: environment variable {name} is not set",
                hint=f"export {name}=... before running kmc, or remove the reference",
            )
        return environ[name]

    return _VAR_RE.sub(replace, value)


def _interpolate_tree(value: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, environ, where)
    if isinstance(value, list):
        return [_interpolate_tree(item, environ, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _interpolate_tree(item, environ, f"{where}.{key}") for key, item in value.items()}
    return value


# --- validation ----------------------------------------------------------------------------

CLUSTER_KEYS = {
    "bootstrap", "security_protocol", "sasl_mechanism", "username", "password", "password_file",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_password_file", "ssl_check_hostname", "client",
}
FLOW_KEYS = {
    "from", "to", "topics", "exclude", "rename", "sync_configs", "sync_groups", "exactly_once",
    "partitioner", "metrics_addr", "sync_acls", "group",
}
SERVICE_KEYS = {"metrics_addr", "metrics_partitions", "stall_timeout"}
# Keys kmc sets itself from the profile; setting them under [clusters.X.client] would be ambiguous.
_MANAGED_CLIENT_KEYS = {
    "bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_plain_username",
    "sasl_plain_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname",
    "key_deserializer", "value_deserializer", "key_serializer", "value_serializer",
    "ssl_context", "selector", "kafka_client", "metric_reporters", "socket_options",
    "sasl_oauth_token_provider", "partitioner", "default_offset_commit_callback",
}


def known_client_keys() -> frozenset[str]:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    keys = set(KafkaAdminClient.DEFAULT_CONFIG) | set(KafkaConsumer.DEFAULT_CONFIG)
    keys |= set(KafkaProducer.DEFAULT_CONFIG)
    return frozenset(keys - _MANAGED_CLIENT_KEYS)


# What each kafka-python setting takes, where its default (None, or a float for "infinite") does not say.
_CLIENT_VALUE_KINDS = {
    "acks": "acks", "api_version": "version", "compression_type": "codec", "retries": "number",
    "consumer_timeout_ms": "number", "receive_buffer_bytes": "int", "send_buffer_bytes": "int",
    "partition_assignment_strategy": "list",
}
_KIND_NAMES = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
               "list": "a list", "acks": '0, 1, -1 or "all"', "version": 'a version such as "3.7" or "2.8.1"',
               "codec": '"gzip", "snappy", "lz4" or "zstd"'}


def _client_kind(key: str) -> str:
    if key in _CLIENT_VALUE_KINDS:
        return _CLIENT_VALUE_KINDS[key]
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    for defaults in (KafkaConsumer.DEFAULT_CONFIG, KafkaProducer.DEFAULT_CONFIG, KafkaAdminClient.DEFAULT_CONFIG):
        default = defaults.get(key)
        if isinstance(default, bool):
            return "bool"
        if isinstance(default, int):
            return "int"
        if isinstance(default, float):
            return "number"
        if isinstance(default, (list, tuple)):
            return "list"
    return "str"  # a string default, or None for an optional name, path or id


def _client_value(key: str, value: Any, where: str) -> Any:
    """A ``[clusters.X.client]`` value checked against what kafka-python takes (a wrong type would
    otherwise fail deep inside kafka-python, as an internal error)."""
    kind = _client_kind(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    valid = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": number,
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "acks": value in (0, 1, -1, "all") and not isinstance(value, bool),
        "version": isinstance(value, str) and re.fullmatch(r"\d+(\.\d+){1,2}", value) is not None,
        "codec": value in ("gzip", "snappy", "lz4", "zstd"),
    }[kind]
    if not valid:
        shown = MASK if _is_secret_key(key) else _toml_value(value)
        raise ConfigError(f"{where} must be {_KIND_NAMES[kind]}, not {shown}")
    return value


def _toml_value(value: Any) -> str:
    """A value as TOML writes it (for messages): true, "abc", [1, 2]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return str(value)


def _is_secret_key(key: str) -> bool:
    """A setting whose value is a secret; a path to one (``password_file``, ``ssl_keyfile``) is not."""
    lowered = key.lower()
    return any(word in lowered for word in ("password", "secret", "token")) and not lowered.endswith("file")


def _is_reference(value: Any) -> bool:
    """A value that is only ``${VAR}`` references (and text around none): safe to show as written."""
    return isinstance(value, str) and re.fullmatch(r"(\$\{[A-Za-z_][A-Za-z0-9_]*\})+", value) is not None


def build_config(
    data: Mapping[str, Any], path: Path, *, environ: Mapping[str, str], exists: bool = True
) -> Config:
    unknown = set(data) - {"clusters", "flows", "service"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{path}: unknown top-level key '{key}' (expected [clusters.NAME], [flows.NAME] or "
                          "[service])")
    clusters_data = _table(data.get("clusters", {}), path, "clusters")
    flows_data = _table(data.get("flows", {}), path, "flows")
    clusters: dict[str, Cluster] = {}
    unresolved: dict[str, ConfigError] = {}
    tables: dict[str, Mapping[str, Any]] = {}
    for name, body in clusters_data.items():
        try:
            clusters[name] = parse_cluster(name, _table(body, path, f"clusters.{name}"), path, environ)
        except UnresolvedValueError as exc:
            unresolved[name] = exc
            tables[name] = MappingProxyType(dict(body))
    flows = {
        name: parse_flow(name, _table(body, path, f"flows.{name}"), path, environ)
        for name, body in flows_data.items()
    }
    service = parse_service(_table(data.get("service", {}), path, "service"), path, environ)
    return Config(path, exists, MappingProxyType(clusters), MappingProxyType(flows), MappingProxyType(unresolved),
                  MappingProxyType(tables), service)


def _table(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a table, e.g. [{key}]")
    return value


def _check_name(name: str, path: Path, key: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(f"{path}: '{key}': name must be letters, digits, '.', '_' or '-'")


def _string(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: '{key}' must be a non-empty string")
    return value


def _string_list(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{path}: '{key}' must be a string or a list of strings")
    return tuple(value)


def _bool(value: Any, path: Path, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: '{key}' must be true or false")
    return value


def parse_listen_address(value: str, where: str, error: type[KmcError] = UsageError) -> tuple[str, int]:
    """``HOST:PORT`` to listen on (``[::1]:9464`` for IPv6; an empty host is every interface) as (host, port)."""
    host, colon, port = value.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not port.isdigit() or int(port) > 65535 or (":" in bare and bare == host):
        raise error(f"{where} '{value}' is not HOST:PORT (e.g. 127.0.0.1:9464, :9464 for every interface, "
                    "[::1]:9464)")
    return bare or "0.0.0.0", int(port)  # noqa: S104 - an empty host asks for every interface


def parse_service(body: dict[str, Any], path: Path, environ: Mapping[str, str]) -> ServiceSettings:
    """The ``[service]`` table."""
    unknown = set(body) - SERVICE_KEYS
    if unknown:
        raise ConfigError(f"{path}: service: unknown key '{sorted(unknown)[0]}'",
                          hint=f"known keys: {', '.join(sorted(SERVICE_KEYS))}")
    body = _interpolate_tree(body, environ, f"{path}: service")
    address = body.get("metrics_addr")
    if address is not None:
        parse_listen_address(_string(address, path, "service.metrics_addr"), f"{path}: service.metrics_addr",
                             ConfigError)
    stall = body.get("stall_timeout")
    if stall is not None and (isinstance(stall, bool) or not isinstance(stall, (int, float)) or stall <= 0):
        raise ConfigError(f"{path}: 'service.stall_timeout' must be a positive number of seconds")
    return ServiceSettings(address, _bool(body.get("metrics_partitions", False), path, "service.metrics_partitions"),
                           None if stall is None else float(stall))


def parse_bootstrap(value: str | Iterable[str], where: str) -> tuple[str, ...]:
    """``"h1:9092,h2:9092"`` or a list of ``host:port`` → a tuple; a port is required."""
    items = value.split(",") if isinstance(value, str) else list(value)
    servers = tuple(item.strip() for item in items if item.strip())
    if not servers:
        raise ConfigError(f"{where}: bootstrap is empty", hint="give host:port, e.g. localhost:9092")
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{where}: bootstrap server '{server}' is not host:port",
                hint="write it as host:port, e.g. localhost:9092",
            )
    return servers


def parse_cluster(name: str, body: dict[str, Any], path: Path, environ: Mapping[str, str]) -> Cluster:
    where = f"{path}: clusters.{name}"
    _check_name(name, path, f"clusters.{name}")
    unknown = set(body) - CLUSTER_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: unknown key '{key}'",
            hint=f"known keys: {', '.join(sorted(CLUSTER_KEYS))}; "
                 f"kafka-python settings go under [clusters.{name}.client]",
        )
    body = _interpolate_tree(body, environ, f"{path}: clusters.{name}")
    if "bootstrap" not in body:
        raise ConfigError(f"{where}: missing key 'bootstrap'", hint='add bootstrap = ["host:port"]')
    bootstrap_value = body["bootstrap"]
    if not isinstance(bootstrap_value, (str, list)):
        raise ConfigError(f"{where}.bootstrap must be a string or a list of host:port strings")
    bootstrap = parse_bootstrap(bootstrap_value, f"{where}.bootstrap")

    protocol = _string(body.get("security_protocol", "PLAINTEXT"), path, f"clusters.{name}.security_protocol").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"{where}.security_protocol: '{protocol}' is not one of {', '.join(SECURITY_PROTOCOLS)}")
    mechanism = body.get("sasl_mechanism")
    if mechanism is not None:
        mechanism = _string(mechanism, path, f"clusters.{name}.sasl_mechanism").upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"{where}.sasl_mechanism: '{mechanism}' is not one of {', '.join(SASL_MECHANISMS)}")
    username = body.get("username")
    if username is not None:
        username = _string(username, path, f"clusters.{name}.username")
    if "password" in body and "password_file" in body:
        raise ConfigError(f"{where}: set either 'password' or 'password_file', not both")
    password: Secret | None = None
    password_file = ssl_password_file = None
    if "password" in body:
        password = Secret(_string(body["password"], path, f"clusters.{name}.password"))
    elif "password_file" in body:
        password_file = _file_path(_string(body["password_file"], path, f"clusters.{name}.password_file"), path)
        password = Secret(_read_password_file(password_file, f"{where}.password_file"))
    if protocol.startswith("SASL_"):
        mechanism = mechanism or "PLAIN"
        if username is None or password is None:
            raise ConfigError(f"{where}: {protocol} needs 'username' and 'password' (or 'password_file')")
    elif mechanism is not None:
        raise ConfigError(f"{where}: sasl_mechanism is set but security_protocol is {protocol}",
                          hint="use SASL_PLAINTEXT or SASL_SSL")
    ssl: dict[str, str | None] = {}
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = body.get(key)
        ssl[key] = None if value is None else _file_path(_string(value, path, f"clusters.{name}.{key}"), path)
    if "ssl_password" in body and "ssl_password_file" in body:
        raise ConfigError(f"{where}: set either 'ssl_password' or 'ssl_password_file', not both")
    ssl_password: Secret | None = None
    if "ssl_password" in body:
        ssl_password = Secret(_string(body["ssl_password"], path, f"clusters.{name}.ssl_password"))
    elif "ssl_password_file" in body:
        ssl_password_file = _file_path(_string(body["ssl_password_file"], path,
                                               f"clusters.{name}.ssl_password_file"), path)
        ssl_password = Secret(_read_password_file(ssl_password_file, f"{where}.ssl_password_file"))
    if ssl["ssl_keyfile"] is not None and ssl["ssl_certfile"] is None:
        raise ConfigError(f"{where}: ssl_keyfile needs ssl_certfile (the client certificate)")
    check_hostname = _bool(body.get("ssl_check_hostname", True), path, f"clusters.{name}.ssl_check_hostname")
    client = _table(body.get("client", {}), path, f"clusters.{name}.client")
    allowed = known_client_keys()
    for key in client:
        if key not in allowed:
            hint = ("set it with the profile's own key" if key in _MANAGED_CLIENT_KEYS
                    else "see kafka-python's KafkaConsumer/KafkaProducer/KafkaAdminClient settings")
            raise ConfigError(f"{where}.client: unknown kafka-python setting '{key}'", hint=hint)
        client[key] = _client_value(key, client[key], f"{where}.client.{key}")
    return Cluster(
        name=name,
        bootstrap=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        username=username,
        password=password,
        password_file=password_file,
        ssl_cafile=ssl["ssl_cafile"],
        ssl_certfile=ssl["ssl_certfile"],
        ssl_keyfile=ssl["ssl_keyfile"],
        ssl_password=ssl_password,
        ssl_check_hostname=check_hostname,
        ssl_password_file=ssl_password_file,
        client=MappingProxyType(dict(client)),
        source=str(path),
    )


def _file_path(value: str, config: Path) -> str:
    """A path setting: ``~`` expanded; a relative path is relative to the config file's directory, so the
    file is found whatever directory kmc runs in (cron starts in $HOME)."""
    expanded = Path(value).expanduser()
    return str(expanded if expanded.is_absolute() else Path(os.path.abspath(config)).parent / expanded)


def _read_password_file(name: str, where: str) -> str:
    """The secret in file ``name`` (one line); ``where`` names the key that gave it, for errors."""
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UnresolvedValueError(
                f"{where}: {path} is readable by others",
                hint=f"chmod 600 {path}",
            )
        return path.read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise UnresolvedValueError(f"{where}: cannot read {path}: {exc.strerror}") from exc


def compile_regexes(patterns: Iterable[str], where: str, error: type[KmcError] = ConfigError,
                    hint: str | None = None) -> list[re.Pattern[str]]:
    """The patterns compiled; a bad one is ``error`` naming ``where`` (a config key, an option)."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise error(f"{where}: bad regex '{pattern}': {exc}", hint=hint) from None
    return compiled


_TEMPLATE_FIELDS = re.compile(r"\{([^{}]*)\}")


TOPIC_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]")
MAX_TOPIC_NAME = 249  # Kafka's limit
INTERNAL_PREFIXES = ("__", "kmc.")  # Kafka's internal topics, kmc's own (kmc.checkpoints)


def validate_rename(template: str, where: str, error: type[Exception] = ConfigError,
                    sources: Iterable[str] = ()) -> None:
    """A rename template uses only ``{topic}`` and ``{source}``, contains ``{topic}``, and can give a topic
    name at all: none of its own text outside what topic names allow, not a name reserved for internal
    topics whatever the topic, not longer than Kafka allows for the shortest topic. ``sources``: the source
    cluster names ``{source}`` stands for, when known (a flow's ``from``); all checked without a cluster."""
    for field_name in _TEMPLATE_FIELDS.findall(template):
        if field_name not in ("topic", "source"):
            raise error(f"{where}: unknown placeholder '{{{field_name}}}' in rename template '{template}'",
                        hint="use {topic} and {source}")
    if "{topic}" not in template:
        raise error(f"{where}: rename template '{template}' must contain {{topic}}")
    wrong = sorted({char for char in _TEMPLATE_FIELDS.sub("", template) if not TOPIC_NAME_CHARS.fullmatch(char)})
    if wrong:
        raise error(f"{where}: rename template '{template}' puts {' '.join(repr(char) for char in wrong)} in "
                    "every target topic name", hint="topic names use letters, digits, '.', '_' and '-' only")
    for source in list(sources) or ["x"]:  # "x": a source name of one character, when the names are not known
        sample = template.replace("{source}", source)
        prefix = sample.split("{topic}", 1)[0]
        reserved = next((start for start in INTERNAL_PREFIXES if prefix.startswith(start)), None)
        if reserved is not None:
            owner = "Kafka's" if reserved == "__" else "kmc's"
            raise error(f"{where}: rename template '{template}' gives names starting with '{reserved}', "
                        f"reserved for {owner} internal topics", hint="start the template otherwise")
        shortest = len(sample.replace("{topic}", "x"))
        if shortest > MAX_TOPIC_NAME:
            named = f" with source {source}" if "{source}" in template and sources else ""
            raise error(f"{where}: rename template '{template}' gives names of at least {shortest} "
                        f"characters{named}; Kafka allows {MAX_TOPIC_NAME}", hint="shorten the template")


def parse_flow(name: str, body: dict[str, Any], path: Path, environ: Mapping[str, str]) -> Flow:
    where = f"{path}: flows.{name}"
    _check_name(name, path, f"flows.{name}")
    unknown = set(body) - FLOW_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where}: unknown key '{key}'", hint=f"known keys: {', '.join(sorted(FLOW_KEYS))}")
    body = _interpolate_tree(body, environ, where)
    for key in ("from", "to"):
        if key not in body:
            raise ConfigError(f"{where}: missing key '{key}'")
    sources = _string_list(body["from"], path, f"flows.{name}.from")
    target = _string(body["to"], path, f"flows.{name}.to")
    topics = _string_list(body.get("topics", [".*"]), path, f"flows.{name}.topics")
    # an empty list would mean "no source" or, to the matcher, "every topic": neither is what was written
    for key, value in (("from", sources), ("topics", topics)):
        if not value:
            raise ConfigError(f"{where}.{key} is empty", hint="give at least one entry, or leave the key out")
    exclude = _string_list(body.get("exclude", []), path, f"flows.{name}.exclude")
    compile_regexes(topics, f"{where}.topics")
    compile_regexes(exclude, f"{where}.exclude")
    rename = _string(body.get("rename", "{topic}"), path, f"flows.{name}.rename")
    validate_rename(rename, f"{where}.rename", sources=sources)
    sync_groups = _string_list(body.get("sync_groups", []), path, f"flows.{name}.sync_groups")
    compile_regexes(sync_groups, f"{where}.sync_groups")
    partitioner = _string(body.get("partitioner", "same"), path, f"flows.{name}.partitioner")
    if partitioner not in PARTITIONERS:
        raise ConfigError(f"{where}.partitioner: '{partitioner}' is not 'same' or 'key'")
    metrics_addr = body.get("metrics_addr")
    if metrics_addr is not None:
        parse_listen_address(_string(metrics_addr, path, f"flows.{name}.metrics_addr"), f"{where}.metrics_addr",
                             ConfigError)
    group = body.get("group")
    if group is not None and not NAME_RE.match(_string(group, path, f"flows.{name}.group")):
        raise ConfigError(f"{where}.group: invalid group name '{group}'", hint="use letters, digits, '.', '_' or '-'")
    return Flow(
        name=name,
        sources=sources,
        target=target,
        topics=topics,
        exclude=exclude,
        rename=rename,
        sync_configs=_bool(body.get("sync_configs", False), path, f"flows.{name}.sync_configs"),
        sync_groups=sync_groups,
        exactly_once=_bool(body.get("exactly_once", False), path, f"flows.{name}.exactly_once"),
        partitioner=partitioner,
        metrics_addr=metrics_addr,
        sync_acls=_bool(body.get("sync_acls", False), path, f"flows.{name}.sync_acls"),
        group=group,
    )


# --- resolving a cluster argument -------------------------------------------------------------


def looks_like_bootstrap(value: str) -> bool:
    return ":" in value


def adhoc_cluster(bootstrap: str, where: str = "--bootstrap") -> Cluster:
    """A cluster from ``host:port[,host:port]``, PLAINTEXT, named after its address. ``where`` names what
    gave it in a message: the option, or the argument (a cluster name or address)."""
    try:
        servers = parse_bootstrap(bootstrap, where)
    except ConfigError as exc:
        hint = exc.hint if where.startswith("--") else \
            "a cluster is a profile name, or host:port[,host:port] such as localhost:9092; names hold no ':'"
        raise UsageError(exc.message, hint=hint) from None
    return Cluster(name=servers[0], bootstrap=servers, source=ADHOC_SOURCE)


def resolve_cluster(config: Config, reference: str) -> Cluster:
    """A profile name, or an ad-hoc ``host:port[,host:port]`` list."""
    if looks_like_bootstrap(reference):
        return adhoc_cluster(reference, f"cluster '{reference}'")
    return config.cluster(reference)


# --- editing the file (profile add / remove) -----------------------------------------------------


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_cluster_table(name: str, settings: Mapping[str, Any]) -> str:
    """TOML text for one ``[clusters.NAME]`` table from plain settings (a NAME with '.' quoted, or TOML
    would read ``[clusters.ssrc.mirror]`` as a table ``mirror`` inside cluster ``ssrc``)."""
    lines = [f"[clusters.{name if re.fullmatch(r'[A-Za-z0-9_-]+', name) else _toml_string(name)}]"]
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            lines.append(f"{key} = [{', '.join(_toml_string(str(item)) for item in value)}]")
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {_toml_string(str(value))}")
    return "\n".join(lines) + "\n"


def _key_path(fragment: str) -> tuple[str, ...]:
    """The key path that one table header or one key/value statement sets, read by tomllib itself (so
    quoted, spaced and dotted keys are all understood): ``[clusters.dc1.client]`` gives
    ``("clusters", "dc1", "client")``, ``dc2 = { bootstrap = ["h:1"] }`` gives ``("dc2", "bootstrap")``."""
    data: Any = tomllib.loads(fragment)
    path: list[str] = []
    while isinstance(data, dict) and len(data) == 1:
        key, data = next(iter(data.items()))
        path.append(key)
    return tuple(path)


def _statements(lines: list[str]) -> Iterator[tuple[int, int, tuple[str, ...]]]:
    """Each table header and key/value statement of a valid TOML text: its lines [start, end) and the full
    key path it sets (a header's own path; a statement's table path plus its key). Blank and comment lines
    between statements are skipped. A statement ends at the first line where it parses on its own, which is
    where a multi-line array or string closes."""
    table: tuple[str, ...] = ()
    start = 0
    while start < len(lines):
        stripped = lines[start].strip()
        if not stripped or stripped.startswith("#"):
            start += 1
            continue
        end = start + 1
        while True:
            try:
                path = _key_path("".join(lines[start:end]))
                break
            except tomllib.TOMLDecodeError:
                if end >= len(lines):
                    raise
                end += 1
        if stripped.startswith("["):
            table = path
            yield start, end, path
        else:
            yield start, end, table + path
        start = end


def _cluster_blocks(lines: list[str], name: str) -> list[tuple[int, int]]:
    """The line ranges that define cluster ``name``, whatever the layout: ``[clusters.NAME]`` and its
    subtables, dotted keys (``clusters.NAME.bootstrap = ...``, or ``NAME.bootstrap`` under ``[clusters]``)
    and inline tables (``NAME = { ... }``). Comment and blank lines inside a block go with it; those after
    its last statement stay (they sit above what follows)."""
    own = ("clusters", name)
    blocks: list[list[int]] = []
    open_block = False
    for start, end, path in _statements(lines):
        if path[:2] == own:
            if open_block:
                blocks[-1][1] = end
            else:
                blocks.append([start, end])
            open_block = True
        else:
            open_block = False
    return [(start, end) for start, end in blocks]


def _without_cluster(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    result = dict(data)
    clusters = {key: value for key, value in result.get("clusters", {}).items() if key != name}
    result.pop("clusters", None)
    if clusters:
        result["clusters"] = clusters
    return result


def _remove_cluster_text(text: str, path: Path, name: str) -> str:
    """``text`` without cluster ``name``, the rest kept byte for byte; checked by parsing the result."""
    before = parse_toml(text, path)
    lines = text.splitlines(keepends=True)
    for start, end in reversed(_cluster_blocks(lines, name)):
        del lines[start:end]
    body = "".join(lines)
    try:
        after = parse_toml(body, path)
    except ConfigError:
        after = None
    if after is None or _without_cluster(after, name) != _without_cluster(before, name) \
            or name in after.get("clusters", {}):
        raise ConfigError(f"{path}: cluster '{name}' is written in a form kmc cannot edit",
                          hint="edit the file by hand")
    return body


def _check_writable(path: Path) -> None:
    """Refuse to rewrite a file its owner made read-only (even root would otherwise replace it)."""
    real = Path(os.path.realpath(path))
    if real.exists() and not real.stat().st_mode & stat.S_IWUSR:
        mode = stat.S_IMODE(real.stat().st_mode)
        raise ConfigError(f"{path} is read-only (mode {mode:04o}): not changed",
                          hint=f"chmod u+w {real} to let kmc edit it, or edit it by hand")


def add_cluster(path: Path, name: str, settings: Mapping[str, Any], *, force: bool = False) -> None:
    """Append (or with ``force`` replace) a cluster table, keeping the rest of the file as written."""
    if not NAME_RE.match(name):
        raise UsageError(f"'{name}' is not a valid cluster name", hint="use letters, digits, '.', '_' or '-'")
    text = _read_for_edit(path)
    data = parse_toml(text, path)
    exists = name in data.get("clusters", {})
    if exists and not force:
        raise UsageError(f"cluster '{name}' already exists in {path}", hint="pass --force to replace it")
    _check_writable(path)
    body = _remove_cluster_text(text, path, name) if exists else text
    if body and not body.endswith("\n"):
        body += "\n"
    if body.strip():
        body += "\n"
    table = render_cluster_table(name, settings)
    body += table
    try:
        result = tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:  # e.g. `clusters = { ... }` written as one inline table
        raise ConfigError(f"{path}: kmc cannot append [clusters.{name}] to this file's layout: {exc}",
                          hint="edit the file by hand") from None
    # Validate the whole result before anything is written. A variable the new table refers to
    # (--password-env) is read when a command runs, so it need not be set while adding.
    environ = dict(os.environ)
    for match in _VAR_RE.finditer(table):
        if match.group(1):
            environ.setdefault(match.group(1), "set-at-run-time")
    build_config(result, path, environ=environ)
    _write_private(path, body)


def remove_cluster(path: Path, name: str) -> None:
    """Remove cluster ``name`` (any layout: tables, dotted keys, inline tables), keeping the rest as written."""
    text = _read_for_edit(path)
    if name not in parse_toml(text, path).get("clusters", {}):
        raise UnknownClusterError(f"cluster '{name}' is not in {path}",
                                  hint="run 'kmc profile list' to see the configured clusters")
    _check_writable(path)
    _write_private(path, _remove_cluster_text(text, path, name))


def _read_for_edit(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def _write_private(path: Path, body: str) -> None:
    """Write atomically, through a symbolic link to the file it points at (a dotfiles repository keeps
    the link); an existing file keeps its mode and owner, a new one gets mode 0600 (it may hold passwords).
    A directory or file that cannot be written is a ConfigError naming it."""
    real = Path(os.path.realpath(path))
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of {path}: {exc.strerror or exc}",
                          hint="pass --config with a writable path, or fix the directory") from exc
    existing = real.stat() if real.exists() else None
    mode = stat.S_IMODE(existing.st_mode) if existing else 0o600
    temporary = real.with_name(f".{real.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.chmod(temporary, mode)
            if existing is not None and os.geteuid() == 0:  # root editing someone's file: keep it theirs
                with contextlib.suppress(OSError):
                    os.chown(temporary, existing.st_uid, existing.st_gid)
            os.replace(temporary, real)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="pass --config with a writable path, or fix the file's permissions") from exc
