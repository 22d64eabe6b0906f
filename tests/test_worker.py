"""kmc.worker, the one child-process protocol (mirror processes, diff readers): real child processes running
the small tasks below, no Kafka."""

from __future__ import annotations

import os
import pickle
import signal
import time
from types import MappingProxyType
from typing import Any

import pytest

from kmc.errors import AuthError, KafkaOperationError
from kmc.profiles import Cluster, Secret
from kmc.worker import Channel, Worker, _dumps

pytestmark = pytest.mark.timeout(60)

# ------------------------------------------------------------------------------------ tasks (run in the child)


def echo(argument: Any, channel: Channel) -> Any:
    """Sends back its argument as an event, then some raw bytes, and returns it."""
    channel.send("argument", argument)
    channel.send_bytes(b"\x00raw\xff")
    return argument


def fail(argument: str, channel: Channel) -> None:  # noqa: ARG001
    raise AuthError(argument, hint="a hint of its own")


def crash(argument: None, channel: Channel) -> None:  # noqa: ARG001
    raise ZeroDivisionError("boom")


def die(argument: None, channel: Channel) -> None:  # noqa: ARG001
    os._exit(3)


def wait_for_stop(argument: None, channel: Channel) -> str:
    channel.send("waiting", os.getpid())
    assert channel.stop.wait(30)
    return "stopped"


# ------------------------------------------------------------------------------------ tests


CLUSTER = Cluster("c", ("h1:9092", "h2:9092"), security_protocol="SASL_SSL", sasl_mechanism="PLAIN", username="u",
                  password=Secret("p"), ssl_password=Secret("s"), client=MappingProxyType({"request_timeout_ms": 5000}),
                  source="file")


def test_a_cluster_crosses_with_its_secrets_and_client_settings() -> None:
    copy = pickle.loads(_dumps(CLUSTER))
    assert copy == CLUSTER and copy.password.reveal() == "p" and dict(copy.client) == {"request_timeout_ms": 5000}
    worker = Worker("tests.test_worker:echo", {"cluster": CLUSTER}, name="the echo process")
    events = list(worker.events())
    assert events == [("argument", {"cluster": CLUSTER}), b"\x00raw\xff"]
    assert worker.result() == {"cluster": CLUSTER}
    assert worker.close() == 0


def test_an_error_arrives_with_its_class_message_and_hint() -> None:
    worker = Worker("tests.test_worker:fail", "denied", name="the failing process")
    assert list(worker.events()) == []
    with pytest.raises(AuthError) as raised:
        worker.result()
    assert (raised.value.message, raised.value.hint, raised.value.exit_code) == ("denied", "a hint of its own", 5)
    worker.close()


def test_any_other_exception_is_an_internal_error() -> None:
    worker = Worker("tests.test_worker:crash", None, name="the crashing process")
    list(worker.events())
    with pytest.raises(KafkaOperationError, match="internal error: ZeroDivisionError: boom"):
        worker.result()
    worker.close()


def test_a_process_that_dies_is_named_with_its_exit_status() -> None:
    worker = Worker("tests.test_worker:die", None, name="the dying process")
    list(worker.events())
    with pytest.raises(KafkaOperationError, match="the dying process ended unexpectedly \\(exit status 3\\)"):
        worker.result()
    worker.close()


@pytest.mark.parametrize("how", ["stop", "sigterm"])
def test_stop_and_sigterm_set_the_tasks_stop_event_and_sigint_is_ignored(how: str) -> None:
    worker = Worker("tests.test_worker:wait_for_stop", None, name="the waiting process")
    events = worker.events()
    _, pid = next(events)
    os.kill(pid, signal.SIGINT)  # Ctrl-C is the parent's: the child carries on
    time.sleep(0.2)
    assert worker.process.poll() is None
    if how == "stop":
        worker.stop()
    else:
        os.kill(pid, signal.SIGTERM)
    assert list(events) == []
    assert worker.result() == "stopped"
    assert worker.close() == 0
