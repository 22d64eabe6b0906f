"""One service for one run of mirror jobs: the state their reports feed, the metrics endpoint and the
watcher of silent mirrors' sources, started and stopped together.

    with Service(jobs, ServiceOptions(metrics_addr="127.0.0.1:9464"), timeout) as service:
        runner.run(jobs, mode="follow", progress_callback=service.progress,
                   notice_callback=service.notice, ...)

Library code: no printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from kmc.client import DEFAULT_TIMEOUT
from kmc.errors import UsageError
from kmc.mirror.engine import MirrorProgress
from kmc.mirror.jobs import MirrorJob
from kmc.mirror.telemetry import RUNNER_EVENTS
from kmc.profiles import parse_listen_address
from kmc.service.state import Health, ServiceState

DEFAULT_STALL_TIMEOUT = 300.0
WATCH_INTERVAL = 5.0  # seconds between looks at the sources of mirrors that stopped reporting


@dataclass(frozen=True)
class ServiceOptions:
    """``metrics_addr``: HOST:PORT of /metrics and /healthz (None: no endpoint); ``stall_timeout``: seconds a
    checkpoint may stand still while records wait before /healthz answers 503; ``partitions``: a
    ``partition`` label on the per-partition metrics (bounded cardinality without it)."""

    metrics_addr: str | None = None
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    partitions: bool = False
    watch_interval: float = WATCH_INTERVAL

    def validate(self) -> None:
        if self.stall_timeout <= 0:
            raise UsageError(f"the stall timeout must be positive, not {self.stall_timeout:g}")
        if self.metrics_addr is not None:
            parse_listen_address(self.metrics_addr, "--metrics-addr")


class Service:
    """The state of a run's mirrors, served on ``options.metrics_addr`` while the ``with`` block runs."""

    def __init__(self, jobs: Sequence[MirrorJob], options: ServiceOptions, timeout: float = DEFAULT_TIMEOUT) -> None:
        options.validate()
        self.options = options
        self.timeout = timeout
        self.sources = {job.source.name: job.source for job in jobs}
        self.state = ServiceState((job.flow, job.source.name, job.target.name) for job in jobs)
        self.endpoint = None
        self.watcher = None

    @property
    def url(self) -> str | None:
        return self.endpoint.url if self.endpoint is not None else None

    def __enter__(self) -> Service:
        from kmc.service.metrics import registry
        from kmc.service.server import Endpoint
        from kmc.service.watch import EndWatcher

        if self.options.metrics_addr is not None:
            self.endpoint = Endpoint(self.options.metrics_addr,
                                     registry(self.state, self.options.stall_timeout, self.options.partitions),
                                     self.health)
        self.watcher = EndWatcher(self.state, self.sources, self.options.watch_interval, self.timeout)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.endpoint is not None:
            self.endpoint.close()

    def progress(self, event: MirrorProgress) -> None:
        self.state.progress(event)

    def notice(self, job: MirrorJob, level: str, text: str) -> None:  # noqa: ARG002 - a notice callback
        """A notice of one of the jobs: the runner's own errors are counted here (the engine's arrive
        counted in its reports)."""
        event = getattr(text, "event", None)
        if event in RUNNER_EVENTS:
            self.state.notice((job.flow, job.source.name, job.target.name), event)

    def health(self) -> Health:
        return self.state.health(self.options.stall_timeout)
