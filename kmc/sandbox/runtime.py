"""Locate a Java runtime and the Apache Kafka jars the sandbox brokers run on.

The jars come from ``$KAFKA_HOME/libs`` when ``KAFKA_HOME`` is set, otherwise from a per-user cache
(``$XDG_CACHE_HOME/kmc/kafka-VERSION/libs``) that is filled once with Maven from the ``kafka-pom.xml``
shipped next to this module. The cache is filled in a temporary directory and renamed into place, so an
interrupted download never leaves a half cache behind, and an ``fcntl`` lock keeps two processes that
fetch at the same time from stepping on each other.

Every lookup reads the environment (``PATH``, ``JAVA_HOME``, ``KAFKA_HOME``, ``XDG_CACHE_HOME``) at call
time, so tests steer it by setting variables rather than by patching.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from kmc.errors import ConfigError, MissingToolError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
MIN_JAVA_MAJOR = 17
MARKER = ".kmc-complete"
POM_RESOURCE = "kafka-pom.xml"

JAVA_HINT = "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
MVN_HINT = "install Maven, or set KAFKA_HOME to an unpacked Kafka distribution"


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", ""))


def find_java() -> str:
    """Path of the ``java`` to run: ``$JAVA_HOME/bin/java`` if that exists, else ``java`` on ``PATH``.

    Raises MissingToolError when there is none, or when it is older than Java 17.
    """
    java: str | None = None
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            java = str(candidate)
        else:
            log.debug("JAVA_HOME=%s has no bin/java; looking on PATH", java_home)
    if java is None:
        java = _which("java")
    if java is None:
        raise MissingToolError("java not found", hint=JAVA_HINT)
    major = java_major_version(java)
    if major is not None and major < MIN_JAVA_MAJOR:
        raise MissingToolError(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR}+", hint=JAVA_HINT
        )
    return java


@functools.lru_cache(maxsize=8)
def java_version_text(java: str) -> str:
    """What ``java -version`` prints (it prints to stderr)."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingToolError(f"{java} does not run: {exc}", hint=JAVA_HINT) from None
    return proc.stderr + proc.stdout


def java_major_version(java: str) -> int | None:
    """Major version of a java binary (``17`` for 17.0.15, ``8`` for 1.8.0), None if it cannot tell."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', java_version_text(java))
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # 1.8.0 style
        major = int(match.group(2))
    return major


def cds_archive(java: str, libs: Path) -> Path:
    """Where the broker's class-data-sharing archive for this java and this jar set lives (may not exist yet).

    A dynamic AppCDS archive halves a broker's start-up time (about 2.7 s to 1.2 s). It only fits the exact
    JVM build and jars it was made with, so its name is a digest of both.
    """
    digest = hashlib.sha256()
    digest.update(os.path.realpath(java).encode() + b"\0" + java_version_text(java).encode() + b"\0")
    digest.update(str(libs).encode() + b"\0")
    for jar in sorted(libs.glob("*.jar")):
        stat = jar.stat()
        digest.update(f"{jar.name}:{stat.st_size}:{int(stat.st_mtime)}\0".encode())
    return cache_root() / "cds" / f"kafka-broker-{digest.hexdigest()[:20]}.jsa"


def find_mvn() -> str:
    mvn = _which("mvn")
    if mvn is None:
        raise MissingToolError("mvn not found", hint=MVN_HINT)
    return mvn


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kmc"


def jar_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of Kafka ``version`` are cached (the directory may not exist yet)."""
    return cache_root() / f"kafka-{version}" / "libs"


def kafka_classpath(version: str = KAFKA_VERSION) -> str:
    """A java ``-cp`` value for the Kafka broker: ``$KAFKA_HOME/libs/*`` or the jar cache (fetched if needed).

    Checks that java is there first: without it the jars are of no use, and fetching them would waste time.
    """
    find_java()
    return str(kafka_libs_dir(version) / "*")


def kafka_libs_dir(version: str = KAFKA_VERSION) -> Path:
    """The directory holding the Kafka jars, fetching them into the cache when needed."""
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home).expanduser() / "libs"
        if not libs.is_dir():
            raise ConfigError(
                f"KAFKA_HOME={kafka_home} has no libs/ directory",
                hint="point KAFKA_HOME at an unpacked Kafka distribution (with bin/ and libs/), or unset it",
            )
        return libs
    libs = jar_cache_dir(version)
    if _cache_complete(libs):
        return libs
    return fetch_jars(version)


def libs_kafka_version(libs: Path) -> str | None:
    """The Kafka version of a libs directory, read from the broker jar's name (``kafka_2.13-4.4.0.jar``)."""
    for jar in sorted(libs.glob("kafka_2.1*-*.jar")):
        match = re.fullmatch(r"kafka_2\.1\d-(.+?)\.jar", jar.name)
        if match and not match.group(1).endswith(("-test", "-sources", "-javadoc")):
            return match.group(1)
    return None


def _cache_complete(libs: Path) -> bool:
    try:
        marker = json.loads((libs / MARKER).read_text())
        jars = marker["jars"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(jars) and all((libs / jar).is_file() for jar in jars)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_jars(
    version: str = KAFKA_VERSION, *, pom: Path | None = None, libs: Path | None = None, maven_args: tuple[str, ...] = ()
) -> Path:
    """Fill the jar cache for ``version`` with Maven (no-op if another process completed it meanwhile).

    ``pom``, ``libs`` and ``maven_args`` (e.g. ``("-P", "mirror")``) fetch another jar set into another cache
    directory with the same locking and completeness marker; bench/ uses them for the perf tools and MM2.
    """
    libs = libs or jar_cache_dir(version)
    version_dir = libs.parent
    with _file_lock(version_dir.parent / f"{version_dir.name}.lock"):
        if _cache_complete(libs):
            return libs
        mvn = find_mvn()
        version_dir.mkdir(parents=True, exist_ok=True)
        for stale in version_dir.glob(".fetch-*"):  # left by a fetch that was killed (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        log.info("fetching Apache Kafka %s jars with Maven into %s", version, libs)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=version_dir))
        try:
            pom_copy = work / "pom.xml"
            pom_bytes = pom.read_bytes() if pom else resources.files(__package__).joinpath(POM_RESOURCE).read_bytes()
            pom_copy.write_bytes(pom_bytes)
            out = work / "libs"
            cmd = [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom_copy), *maven_args,
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies", f"-DoutputDirectory={out}", "-DincludeScope=runtime",
            ]  # fmt: skip
            try:
                proc = subprocess.run(cmd, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            except OSError as exc:
                raise MissingToolError(f"mvn does not run: {exc}", hint=MVN_HINT) from None
            jars = sorted(p.name for p in out.glob("*.jar")) if out.is_dir() else []
            if proc.returncode != 0 or not jars:
                line = mvn_error_line(proc.stdout + "\n" + proc.stderr) or f"mvn exited with status {proc.returncode}"
                raise ConfigError(
                    f"fetching Kafka {version} with Maven failed: {line}",
                    hint="check network access to Maven Central (or ~/.m2/settings.xml), or set KAFKA_HOME",
                )
            (out / MARKER).write_text(json.dumps({"version": version, "jars": jars}, indent=1) + "\n")
            if libs.exists():  # incomplete leftover from an older kmc or a manual edit
                shutil.rmtree(libs)
            os.replace(out, libs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("fetched %d jars in %.1fs", len(jars), time.monotonic() - started)
        return libs


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MVN_NOISE = re.compile(
    r"^(to see the full stack trace|re-run maven|for more information about the errors|\[help \d+\]|"
    r"after correcting the problems|-> \[help|$)",
    re.IGNORECASE,
)


def mvn_error_line(output: str) -> str | None:
    """The last line of Maven output that says what went wrong (boilerplate and colour codes dropped)."""
    best: str | None = None
    fallback: str | None = None
    for raw in _ANSI.sub("", output).splitlines():
        line = raw.strip()
        is_error = line.startswith("[ERROR]")
        line = re.sub(r"^\[(ERROR|WARNING|INFO)\]\s*", "", line)
        line = re.sub(r"\s*->\s*\[Help \d+\]\s*$", "", line).strip()
        if not line or _MVN_NOISE.match(line):
            continue
        if is_error:
            best = line
        fallback = line
    line = best or fallback
    if line and len(line) > 400:
        line = line[:397] + "..."
    return line
