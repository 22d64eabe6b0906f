"""Session setup: an isolated home for kmc, real sandbox Kafka clusters, unique topic names.

At import time XDG_CONFIG_HOME, XDG_DATA_HOME and XDG_STATE_HOME point at a fresh temporary directory
(in os.environ, so CLI subprocesses inherit it): tests never see the developer's config or sandboxes.
XDG_CACHE_HOME is left alone so the Kafka jar cache is shared and warm.

Clusters start once per session: ``src`` and ``dst`` together in one ``up`` call (parallel start),
``three_broker_cluster`` only when a test asks for it. Whatever happens, the session ends with
``sandbox.down()`` of everything under the temporary directory, and an atexit hook kills any JVM
that still names that directory on its command line.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SESSION_HOME = Path(tempfile.mkdtemp(prefix="kmc-tests-"))
for _var, _dir in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
    (SESSION_HOME / _dir).mkdir()
    os.environ[_var] = str(SESSION_HOME / _dir)
os.environ.pop("KMC_CONFIG", None)  # a developer's KMC_CONFIG must not leak into the tests

from kmc import sandbox  # noqa: E402 - after the environment is set up
from tests import helpers  # noqa: E402 - imports kmc: after the environment is set up

START_TIMEOUT = 120.0


# ---------------------------------------------------------------------------------------- clean-up


def _stop_all_sandboxes() -> None:
    """down() every sandbox of this session; never raises (it runs in teardown paths)."""
    try:
        sandbox.down()
    except Exception as exc:  # noqa: BLE001
        print(f"conftest: sandbox.down() failed: {exc}")  # noqa: T201 - teardown diagnostics
    _kill_session_jvms()


def _kill_session_jvms() -> None:
    """Last resort: SIGKILL any JVM whose command line names this session's temporary directory."""
    for pid in sandbox.kill_jvms_under(SESSION_HOME):
        print(f"conftest: killed leftover JVM {pid}")  # noqa: T201 - teardown diagnostics


def _at_exit() -> None:
    _kill_session_jvms()
    time.sleep(0.2)
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


atexit.register(_at_exit)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs real Kafka brokers (the session's sandbox clusters)")
    config.addinivalue_line("markers", "slow: takes a minute or more (kill -9 and broker-restart runs); "
                                       "`make test-fast` leaves these out")
    config.addinivalue_line("markers", "known_failure: pins an open defect that its issue's closing note names; "
                                       "`make test` leaves these out, `make test-all` runs them")
    config.addinivalue_line("markers", "bench: runs the benchmark pipeline (MirrorMaker 2, perf tools); "
                                       "`make test` and `make test-fast` leave these out, `make test-all` runs them")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Tests' confluent-kafka clients that nothing references any more are destroyed now, while their
    # brokers still run: otherwise librdkafka logs "Connection refused" after pytest's summary.
    gc.collect()
    _stop_all_sandboxes()


# ---------------------------------------------------------------------------------------- clusters


@contextlib.contextmanager
def sandboxes(names: list[str], brokers: int = 1, security_mode: str | None = None,
              ) -> Iterator[list[sandbox.SandboxCluster]]:
    """Start sandboxes for a fixture and always stop them (test modules use it for extra clusters);
    ``security_mode`` "sasl_ssl" or "mtls" makes secure ones (kmc sandbox up --secure / --mtls)."""
    try:
        clusters = sandbox.up(names, brokers=brokers, timeout=START_TIMEOUT, security_mode=security_mode)
    except BaseException:
        _stop_all_sandboxes()  # a half-started set must not outlive the failure
        raise
    try:
        yield clusters
    finally:
        existing = {c.name for c in sandbox.list_sandboxes()}
        with contextlib.suppress(Exception):
            sandbox.down([n for n in names if n in existing])


@pytest.fixture(scope="session")
def _src_dst() -> Iterator[dict[str, sandbox.SandboxCluster]]:
    with sandboxes(["src", "dst"]) as clusters:
        yield {c.name: c for c in clusters}


@pytest.fixture(scope="session")
def src_cluster(_src_dst: dict[str, sandbox.SandboxCluster]) -> sandbox.SandboxCluster:
    """A single-broker sandbox named ``src`` (started together with ``dst``)."""
    return _src_dst["src"]


@pytest.fixture(scope="session")
def dst_cluster(_src_dst: dict[str, sandbox.SandboxCluster]) -> sandbox.SandboxCluster:
    """A single-broker sandbox named ``dst`` (started together with ``src``)."""
    return _src_dst["dst"]


@pytest.fixture(scope="session")
def three_broker_cluster() -> Iterator[sandbox.SandboxCluster]:
    """A sandbox named ``trio`` with three broker+controller nodes (default RF 3, min.insync.replicas 2).

    Tests that stop one of its brokers must start it again before they return.
    """
    with sandboxes(["trio"], brokers=3) as clusters:
        yield clusters[0]


@pytest.fixture(scope="module", autouse=True)
def _drop_admin_clients() -> Iterator[None]:
    """Close the cached confluent-kafka admin clients (tests.helpers.admin) with each module, before the
    brokers stop (else librdkafka logs connection errors at interpreter exit, after pytest's summary)."""
    yield
    helpers.drop_admin_clients()


@pytest.fixture
def followers(tmp_path: Path) -> Iterator[Callable[..., helpers.Follower]]:
    """Start ``kmc mirror ... --follow`` child processes (or ``command=("flow", "run")``: tests.helpers.Follower);
    whatever happens, none outlives the test."""
    started: list[helpers.Follower] = []

    def start(*args: str, command: tuple[str, ...] = ("mirror",)) -> helpers.Follower:
        follower = helpers.Follower(tmp_path, *args, command=command)
        started.append(follower)
        return follower

    yield start
    for follower in started:
        if follower.proc.poll() is None:
            follower.kill()


CONFIG = """\
# test config -- this comment must survive edits
[clusters.dc1]
bootstrap = ["localhost:19092"]

[clusters.central]
bootstrap = ["central-1:9093", "central-2:9093"]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
username = "mirror"
password = "${KMC_TEST_PASSWORD}"
ssl_password = "${KMC_TEST_PASSWORD}"
"""
CONFIG_PASSWORD = "hunter2-never-shown"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's config file (:data:`CONFIG`: two clusters that need no broker, dc1 and central), found
    through KMC_CONFIG; central's password (:data:`CONFIG_PASSWORD`) comes from the environment."""
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("KMC_CONFIG", str(path))
    monkeypatch.setenv("KMC_TEST_PASSWORD", CONFIG_PASSWORD)
    return path


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test: ``t-<test name>-<6 hex digits>`` (letters, digits and '-')."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:100]
    return f"t-{base}-{uuid.uuid4().hex[:6]}"
