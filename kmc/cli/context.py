"""The context every command receives: resolved global options, lazily loaded config, and the
clients to close when the command ends (whatever way it ends)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import typer

from kmc.client import DEFAULT_TIMEOUT
from kmc.errors import UsageError
from kmc.output import Messages, OutputFormat, Renderer
from kmc.profiles import Cluster, Config, adhoc_cluster, load_config, looks_like_bootstrap


@dataclass
class AppContext:
    config_path: str | None = None
    output: OutputFormat = OutputFormat.table
    quiet: bool = False
    verbose: int = 0
    debug: bool = False
    color: bool = False
    timeout: float = DEFAULT_TIMEOUT
    log_format: str = "text"
    _config: Config | None = field(default=None, repr=False)
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def __post_init__(self) -> None:
        self.render = Renderer(self.output, color=self.color)
        self.messages = Messages(quiet=self.quiet, verbose=self.verbose, color=self.color, log_format=self.log_format)

    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
            for warning in self._config.warnings:
                self.messages.warn(warning)
        return self._config

    def reload_config(self) -> Config:
        self._config = None
        return self.config()

    def cluster(self, reference: str) -> Cluster:
        """A profile name or an ad-hoc ``host:port[,host:port]``."""
        if looks_like_bootstrap(reference):  # needs no config: a broken file must not matter
            return adhoc_cluster(reference, f"cluster '{reference}'")
        return self.config().cluster(reference)

    def all_clusters(self) -> list[Cluster]:
        """Every configured cluster, sorted; a warning for each that cannot be resolved right now
        (an unset ${VAR}), which is left out."""
        config = self.config()
        for error in config.unresolved.values():
            self.messages.warn(f"{error.one_line()}; left out")
        return sorted(config.clusters.values(), key=lambda cluster: cluster.name)

    def one_cluster(self, reference: str | None, bootstrap: str | None) -> Cluster:
        """For commands taking ``CLUSTER`` or ``--bootstrap``: exactly one of them."""
        if reference and bootstrap:
            raise UsageError("give a cluster name or --bootstrap, not both")
        if bootstrap:
            return adhoc_cluster(bootstrap)
        if not reference:
            raise UsageError("missing cluster name", hint="give a profile name or --bootstrap host:port")
        return self.cluster(reference)

    def call_on_close(self, callback) -> None:  # noqa: ANN001 - any callable
        self._cleanup.callback(callback)

    def close(self) -> None:
        self._cleanup.close()


def get(ctx: typer.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    if obj is None:  # a command invoked without the root callback (tests calling it directly)
        obj = AppContext()
        ctx.obj = obj
    return obj
