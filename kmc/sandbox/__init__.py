"""Local real Apache Kafka clusters (KRaft mode) for demos and tests.

    from kmc import sandbox
    src, dst = sandbox.up(["src", "dst"])          # parallel start; returns when metadata answers
    src.bootstrap                                  # ["127.0.0.1:PORT"]
    sandbox.status()                               # [{"name", "bootstrap", "brokers", "health", ...}]
    sandbox.down(["src", "dst"])                   # or down() for all; keep_data=True keeps the files

A library: it never prints or exits; errors are kmc.errors exceptions.
"""

from kmc.sandbox.cluster import (
    SandboxBroker,
    SandboxCluster,
    down,
    free_ports,
    get,
    kill_broker,
    kill_jvms_under,
    list_sandboxes,
    sandbox_root,
    start_broker,
    status,
    stop_broker,
    up,
    validate_name,
)
from kmc.sandbox.runtime import KAFKA_VERSION, find_java, find_mvn, kafka_classpath
from kmc.sandbox.security import MTLS, PLAINTEXT, SASL_SSL

__all__ = [
    "KAFKA_VERSION",
    "MTLS",
    "PLAINTEXT",
    "SASL_SSL",
    "SandboxBroker",
    "SandboxCluster",
    "down",
    "find_java",
    "find_mvn",
    "free_ports",
    "get",
    "kafka_classpath",
    "kill_jvms_under",
    "list_sandboxes",
    "sandbox_root",
    "kill_broker",
    "start_broker",
    "status",
    "stop_broker",
    "up",
    "validate_name",
]
