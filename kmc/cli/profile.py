"""`kmc profile`: the named clusters of the config file (and the sandboxes)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import typer

from kmc.cli import context
from kmc.cli.completion import complete_cluster, complete_from
from kmc.client import Outcome, probe_clusters
from kmc.errors import AuthError, KmcError, UnknownClusterError, UsageError, combined_failure
from kmc.output import Column, columns
from kmc.profiles import (
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    Cluster,
    add_cluster,
    config_path,
    looks_like_bootstrap,
    parse_bootstrap,
    remove_cluster,
)
from kmc.sandbox import list_sandboxes
from kmc.tls import uses_tls

app = typer.Typer(help="Named clusters: list, show, add, remove, test.", no_args_is_help=True)

LIST_COLUMNS = columns("name", "bootstrap", "security_protocol", Column("sandbox"), "source")
TEST_COLUMNS = columns(
    "name", "status", "authentication", "cluster_id", Column("brokers", numeric=True),
    Column("controller", numeric=True), Column("rtt_ms", "RTT MS", numeric=True), Column("error", free=True),
)


@app.command("list")
def list_profiles(ctx: typer.Context) -> None:
    """List the configured clusters (sandboxes included). JSON keys: name, bootstrap,
    security_protocol, sandbox, source."""
    app_ctx = context.get(ctx)
    config = app_ctx.config()
    rows = [
        {"name": cluster.name, "bootstrap": list(cluster.bootstrap),
         "security_protocol": cluster.security_protocol, "sandbox": cluster.sandbox, "source": cluster.source}
        for cluster in app_ctx.all_clusters()
    ]
    app_ctx.render.rows(rows, LIST_COLUMNS)
    if not rows and not config.unresolved:
        app_ctx.messages.info(
            f"no clusters in {config.path}; add one with 'kmc profile add NAME --bootstrap host:port' "
            "or start a sandbox with 'kmc sandbox up NAME'"
        )


@app.command("show")
def show(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME", help="Cluster name.",
                                                      autocompletion=complete_cluster)) -> None:
    """Show one cluster's settings, secrets masked."""
    app_ctx = context.get(ctx)
    config = None if looks_like_bootstrap(name) else app_ctx.config()
    if config is not None and name in config.unresolved:  # shown as written, and why it is unusable now
        app_ctx.messages.warn(config.unresolved[name].one_line())
        app_ctx.render.document(config.unresolved_view(name))
        return
    app_ctx.render.document(app_ctx.cluster(name).masked())


@app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Name for the cluster: letters, digits, '.', '_', '-'."),
    bootstrap: str = typer.Option(..., "--bootstrap", "-b", metavar="HOST:PORT",
                                  help="The cluster's brokers: host:port[,host:port...]."),
    security_protocol: str = typer.Option("PLAINTEXT", "--security-protocol", metavar="PROTOCOL",
                                          autocompletion=complete_from(dict.fromkeys(SECURITY_PROTOCOLS, "")),
                                          help=f"One of {', '.join(SECURITY_PROTOCOLS)}."),
    sasl_mechanism: str | None = typer.Option(None, "--sasl-mechanism", metavar="MECHANISM",
                                              autocompletion=complete_from(dict.fromkeys(SASL_MECHANISMS, "")),
                                              help=f"One of {', '.join(SASL_MECHANISMS)} [default with SASL: PLAIN]."),
    username: str | None = typer.Option(None, "--username", metavar="USER",
                                        help="SASL user name (SASL_PLAINTEXT, SASL_SSL)."),
    password_env: str | None = typer.Option(None, "--password-env", metavar="VAR",
                                               help="Store password = \"${VAR}\": read from the environment "
                                                    "at run time."),
    password_file: str | None = typer.Option(None, "--password-file", metavar="PATH",
                                                help="A file (mode 0600) holding the password."),
    ssl_cafile: str | None = typer.Option(None, "--ssl-cafile", metavar="PATH",
                                          help="CA certificates (PEM) to verify the brokers (SSL, SASL_SSL)."),
    ssl_certfile: str | None = typer.Option(None, "--ssl-certfile", metavar="PATH",
                                            help="Client certificate (PEM), when the brokers ask for one."),
    ssl_keyfile: str | None = typer.Option(None, "--ssl-keyfile", metavar="PATH",
                                           help="The client certificate's private key (PEM)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing cluster of that name."),
) -> None:
    """Add a cluster to the config file (created with mode 0600; comments and the rest kept).

    Passwords are never written in clear: use --password-env or --password-file.
    """
    app_ctx = context.get(ctx)
    try:
        servers = parse_bootstrap(bootstrap, "--bootstrap")
    except Exception as exc:  # noqa: BLE001 - ConfigError from the shared parser; this is usage
        raise UsageError(str(exc), hint="write it as host:port, e.g. localhost:9092") from None
    if password_env and password_file:
        raise UsageError("give --password-env or --password-file, not both")
    if password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", password_env):
        raise UsageError(f"--password-env: '{password_env}' is not a variable name",
                         hint="letters, digits and _, not starting with a digit")
    # Checked here so that a bad option is a usage error (2), not an invalid config file (3).
    if security_protocol.upper() not in SECURITY_PROTOCOLS:
        raise UsageError(f"--security-protocol: '{security_protocol}' is not one of {', '.join(SECURITY_PROTOCOLS)}")
    if sasl_mechanism is not None and sasl_mechanism.upper() not in SASL_MECHANISMS:
        raise UsageError(f"--sasl-mechanism: '{sasl_mechanism}' is not one of {', '.join(SASL_MECHANISMS)}")
    if security_protocol.upper().startswith("SASL_") and not (username and (password_env or password_file)):
        raise UsageError(f"{security_protocol.upper()} needs --username and --password-env or --password-file")
    if sasl_mechanism is not None and not security_protocol.upper().startswith("SASL_"):
        raise UsageError("--sasl-mechanism needs --security-protocol SASL_PLAINTEXT or SASL_SSL")
    settings = {
        "bootstrap": list(servers),
        "security_protocol": security_protocol.upper() if security_protocol.upper() != "PLAINTEXT" else None,
        "sasl_mechanism": sasl_mechanism,
        "username": username,
        "password": f"${{{password_env}}}" if password_env else None,
        # stored absolute: a path relative to where `profile add` ran means nothing to a later run
        "password_file": _absolute(password_file),
        "ssl_cafile": _absolute(ssl_cafile),
        "ssl_certfile": _absolute(ssl_certfile),
        "ssl_keyfile": _absolute(ssl_keyfile),
    }
    path, _ = config_path(app_ctx.config_path)
    add_cluster(path, name, settings, force=force)
    app_ctx.messages.info(f"added cluster '{name}' to {path}")
    if any(name in sandbox.profile_tables() for sandbox in list_sandboxes()):
        app_ctx.messages.warn(f"'{name}' is also a sandbox's profile: this cluster now takes its place everywhere "
                              f"(name it differently, or 'kmc profile remove {name}' to reach the sandbox again)")


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


@app.command("remove")
def remove(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME", help="Cluster name.",
                                                        autocompletion=complete_cluster)) -> None:
    """Remove a cluster from the config file (the rest of the file is kept as written).

    Any layout is found: [clusters.NAME] tables, dotted keys and inline tables. Flows that name the
    cluster are kept and named in a warning (they fail until it is added again or they are edited).
    """
    app_ctx = context.get(ctx)
    path, _ = config_path(app_ctx.config_path)
    try:
        remove_cluster(path, name)
    except UnknownClusterError:
        sandboxes = [cluster.name for cluster in list_sandboxes()]
        if name in sandboxes:
            raise UnknownClusterError(f"'{name}' is a sandbox, not a cluster of {path}",
                                      hint=f"stop it with 'kmc sandbox down {name}'") from None
        raise
    app_ctx.messages.info(f"removed cluster '{name}' from {path}")
    with contextlib.suppress(KmcError):  # the file was valid before the edit; the warning is a courtesy
        users = sorted(flow.name for flow in app_ctx.reload_config().flows.values()
                       if name in (*flow.sources, flow.target))
        if users:
            app_ctx.messages.warn(f"cluster '{name}' is still named by flows: {', '.join(users)} (they fail until "
                                  f"the cluster is added again or they are edited in {path})")


def _authentication(cluster: Cluster, error: KmcError | None) -> str | None:
    """How the profile authenticates, and "failed" when that is what went wrong (None: not known yet)."""
    if not cluster.bootstrap:  # a cluster that could not be resolved
        return None
    tls = uses_tls(cluster)
    if cluster.sasl_mechanism:
        how = f"{cluster.sasl_mechanism} as {cluster.username}" + (", TLS" if tls else "")
    elif tls and cluster.ssl_certfile:
        how = f"TLS client certificate {Path(cluster.ssl_certfile).name}"
    elif tls:
        how = "TLS, no client authentication"
    else:
        how = "none"
    if isinstance(error, AuthError):
        return f"{how}: failed"
    if error is not None:
        return f"{how}: not tried"
    return how


@app.command("test")
def test(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, metavar="NAME", help="Clusters to test [default: all].",
                                             autocompletion=complete_cluster),
    bootstrap: str | None = typer.Option(None, "--bootstrap", "-b", metavar="HOST:PORT",
                                         help="Test an ad-hoc host:port[,host:port] instead."),
) -> None:
    """Connect to clusters and report how each authenticates, cluster id, brokers, controller and round-trip time.

    authentication says how kmc proved who it is (e.g. "SCRAM-SHA-512 as mirror, TLS", "TLS client certificate
    mirror.pem", "none") and whether that worked; a failure names its cause (wrong password, untrusted
    certificate, TLS expected, ...). Exit 4 when a cluster is unreachable, 5 when authentication or TLS
    fails, 6 when only some fail.
    JSON keys: name, status, authentication, cluster_id, brokers, controller, rtt_ms, error.
    """
    app_ctx = context.get(ctx)
    if bootstrap:
        clusters = [app_ctx.one_cluster(None, bootstrap)]
    elif names:
        clusters = [app_ctx.cluster(name) for name in names]
    else:
        clusters = app_ctx.all_clusters()
        if not clusters and not app_ctx.config().unresolved:
            raise UsageError("no clusters configured", hint="add one with 'kmc profile add' or 'kmc sandbox up'")
    outcomes = probe_clusters(clusters, app_ctx.timeout) if clusters else []
    if not (bootstrap or names):  # a cluster that cannot be resolved fails its test too
        outcomes += [Outcome(Cluster(name=name, bootstrap=()), error=error)
                     for name, error in sorted(app_ctx.config().unresolved.items())]
    rows = []
    for outcome in outcomes:
        row = {"name": outcome.cluster.name, "status": "ok" if outcome.error is None else "error",
               "authentication": _authentication(outcome.cluster, outcome.error),
               "cluster_id": None, "brokers": None, "controller": None, "rtt_ms": None, "error": None}
        if outcome.error is None:
            row.update(outcome.value)
        else:
            row["error"] = outcome.error.one_line()
        rows.append(row)
    app_ctx.render.rows(rows, TEST_COLUMNS, styles={"ok": "green", "error": "red"})
    failure = combined_failure([o.error for o in outcomes if o.error], sum(o.error is None for o in outcomes))
    if failure is not None:
        raise failure
