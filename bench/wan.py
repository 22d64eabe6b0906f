"""Put a sandbox cluster behind an emulated WAN link: every client connection to it crosses a delay line.

Each broker gets a listener of its own, ``WAN`` (PLAINTEXT; through the node's ``overrides.properties``
and a restart: KRaft brokers refuse a new advertised listener while they run), which advertises the port
of bench/latency_proxy.py in front of it. A
client that bootstraps from the proxy gets metadata naming the proxy's ports (Kafka answers with the
addresses of the listener a request came in on), so its metadata, fetch and produce requests all pay the
round trip; clients of the ordinary listener do not (the bench's own harness, the target side).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import measure
import workload

from kmc import sandbox

LISTENER = "WAN"


def _add_listener(cluster: sandbox.SandboxCluster, broker: sandbox.SandboxBroker, port: int,
                  advertised_port: int) -> None:
    """Give the node a WAN listener on ``port`` advertising ``advertised_port`` (the node's
    overrides.properties, read at its next start: listeners cannot be advertised anew while it runs)."""
    config = dict(line.split("=", 1) for line in broker.config_file.read_text().splitlines()
                  if "=" in line and not line.startswith("#"))
    overrides = {
        "listeners": f"{config['listeners']},{LISTENER}://127.0.0.1:{port}",
        "advertised.listeners": f"{config['advertised.listeners']},{LISTENER}://127.0.0.1:{advertised_port}",
        "listener.security.protocol.map": f"{config['listener.security.protocol.map']},{LISTENER}:PLAINTEXT",
    }
    (broker.node_dir / "overrides.properties").write_text("".join(f"{k}={v}\n" for k, v in overrides.items()))
    workload.close_clients()  # (the harness's clients would log every refused connection while it restarts)
    sandbox.stop_broker(cluster.name, broker.node_id)
    sandbox.start_broker(cluster.name, broker.node_id)


class WanLink:
    """The proxy process and the bootstrap address that reaches the cluster through it."""

    def __init__(self, cluster: sandbox.SandboxCluster, delay_ms: float, work: Path) -> None:
        routes = []
        proxies = []
        ports = sandbox.free_ports(2 * len(cluster.brokers))  # (all at once: none of them is bound yet)
        for broker, listen, proxy in zip(cluster.brokers, ports[::2], ports[1::2], strict=True):
            _add_listener(cluster, broker, listen, proxy)
            routes.append(f"{proxy}=127.0.0.1:{listen}")
            proxies.append(f"127.0.0.1:{proxy}")
        self.bootstrap = ",".join(proxies)
        log = work / "latency-proxy.log"
        self.child = measure.Child([sys.executable, str(Path(__file__).with_name("latency_proxy.py")),
                                    "--delay-ms", str(delay_ms), *routes], log)
        deadline = time.monotonic() + 30
        while "ready" not in log.read_text():
            if self.child.poll() or time.monotonic() > deadline:
                raise RuntimeError(f"the latency proxy did not start: {self.child.tail(5)}")
            time.sleep(0.1)
        self._check(proxies)

    def _check(self, proxies: list[str]) -> None:
        """Metadata through the proxy names the proxy's ports."""
        admin = workload.admin(self.bootstrap)
        brokers = sorted(f"{b.host}:{b.port}" for b in admin.list_topics(timeout=30).brokers.values())
        if brokers != sorted(proxies):
            raise RuntimeError(f"the WAN listener advertises {brokers}, not the proxy's {sorted(proxies)}")

    def stop(self) -> None:
        self.child.stop(grace=5)
