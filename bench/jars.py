"""The Java classpaths of the benchmark: Kafka's perf tools and MirrorMaker 2.

Both come from Maven through bench/pom.xml, cached under ``$XDG_CACHE_HOME/kmc/bench-KAFKA_VERSION/`` with
the sandbox's own fetch machinery (lock, temporary directory, completeness marker). With ``KAFKA_HOME`` set,
the distribution's ``libs/`` serves both, as it does for the sandbox brokers.
"""

from __future__ import annotations

import os
from pathlib import Path

from kmc.sandbox import runtime

BENCH_POM = Path(__file__).with_name("pom.xml")

# connect-mirror 4.4.0 is not published on Maven Central (connect-runtime and kafka-tools 4.4.0 are; the
# newest connect-mirror there is 4.3.1), so MM2 runs at this version unless --mm2-version says otherwise.
# The wire protocol is compatible both ways between 4.3 clients and a 4.4 broker.
DEFAULT_MM2_VERSION = "4.3.1"


def bench_cache_dir(version: str = runtime.KAFKA_VERSION) -> Path:
    return runtime.cache_root() / f"bench-{version}"


def tools_classpath(version: str = runtime.KAFKA_VERSION) -> str:
    """``-cp`` for org.apache.kafka.tools.* (ProducerPerformance, ConsumerPerformance)."""
    runtime.find_java()
    if os.environ.get("KAFKA_HOME"):
        return str(runtime.kafka_libs_dir(version) / "*")
    libs = runtime.fetch_jars(
        version, pom=BENCH_POM, libs=bench_cache_dir(version) / "tools", maven_args=("-P", "tools")
    )
    return str(libs / "*")


def mirror_classpath(mm2_version: str, version: str = runtime.KAFKA_VERSION) -> str:
    """``-cp`` for org.apache.kafka.connect.mirror.MirrorMaker at ``mm2_version``."""
    runtime.find_java()
    if os.environ.get("KAFKA_HOME"):
        return str(runtime.kafka_libs_dir(version) / "*")
    libs = runtime.fetch_jars(
        version,
        pom=BENCH_POM,
        libs=bench_cache_dir(version) / f"mirror-{mm2_version}",
        maven_args=("-P", "mirror", f"-Dmirror.version={mm2_version}"),
    )
    return str(libs / "*")


def mirror_version_of(classpath: str) -> str | None:
    """The connect-mirror version on a classpath, from its jar name."""
    for jar in Path(classpath.rstrip("*")).glob("connect-mirror-[0-9]*.jar"):
        return jar.name.removeprefix("connect-mirror-").removesuffix(".jar")
    return None
