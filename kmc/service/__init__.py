"""Running kmc as a service: Prometheus metrics and /healthz for the long-running commands (``--follow``),
and structured log lines.

- :mod:`kmc.service.state`: what the mirrors' progress reports and notices say, kept for metrics and health;
- :mod:`kmc.service.metrics`: the Prometheus collector (prometheus_client) built from that state at each scrape;
- :mod:`kmc.service.server`: the HTTP endpoint (``/metrics``, ``/healthz``);
- :mod:`kmc.service.watch`: the sources' end offsets, asked for mirrors that stopped reporting;
- :mod:`kmc.service.runtime`: :class:`~kmc.service.runtime.Service`, all of it for one run of mirror jobs;
- :mod:`kmc.service.logs`: one JSON object per log line (``--log-format json``).

This package imports nothing itself, so kmc.output can use the log lines without the mirror engine, and
prometheus_client (0.2 s to import) is loaded only when a service starts. Library code: no printing.
docs/operations.md describes the metrics, health and log keys for operators.
"""
