"""The HTTP endpoint of a running kmc: ``/metrics`` (Prometheus text format, by prometheus_client) and
``/healthz`` (200 or 503 with a JSON body), on a thread of its own. Library code: no printing."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from kmc.errors import UsageError
from kmc.profiles import parse_listen_address
from kmc.service.state import Health

Start = Callable[[str, list[tuple[str, str]]], Any]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the end of the run


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - no access log on stderr
        return


class Endpoint:
    """The server, started on construction; :meth:`close` stops it. UsageError when the address cannot be
    listened on (in use, not this host's)."""

    def __init__(self, address: str, registry: CollectorRegistry, health: Callable[[], Health]) -> None:
        host, port = parse_listen_address(address, "--metrics-addr")
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/healthz":
                answer = health()
                body = json.dumps(answer.to_dict()).encode()
                start("200 OK" if answer.ok else "503 Service Unavailable",
                      [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            if path in ("/metrics", "/"):
                return metrics(environ, start)
            start("404 Not Found", [("Content-Type", "text/plain")])
            return [b"kmc serves /metrics and /healthz\n"]

        server_class = _IPv6Server if ":" in host else _Server
        try:
            self.server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        except OSError as exc:
            raise UsageError(f"cannot listen on {address} for metrics: {exc.strerror or exc}",
                             hint="choose another --metrics-addr (or metrics_addr in the config)") from None
        self.port = self.server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="kmc-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
