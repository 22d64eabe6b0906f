"""What can be known without a cluster is checked before kmc contacts one (issue 18): rename templates that
can never give a topic name, a cluster mirrored onto itself, an address standing for {source}; `kmc flow
check` reports flows that can never run. The "clusters" are sockets that accept connections and never
answer (tests.test_signals.SilentBroker): a check made after connecting would hang there, and the test sees
whether kmc connected at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import kmc
from tests.test_signals import SilentBroker

LONG = "x" * 245


@pytest.fixture
def silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, SilentBroker]]:
    brokers = {name: SilentBroker() for name in ("a", "b")}
    path = tmp_path / "config.toml"
    path.write_text("".join(f'[clusters.{name}]\nbootstrap = ["{broker.address}"]\n'
                            for name, broker in brokers.items()))
    monkeypatch.setenv("KMC_CONFIG", str(path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    try:
        yield brokers
    finally:
        for broker in brokers.values():
            broker.close()


def refused(*args: str, code: int = 2) -> str:
    result = kmc(*args, "--timeout", "30", expect=code)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kmc: error: "), result.stderr
    return result.stderr


@pytest.mark.parametrize(("rename", "fragment"), [
    ("{topic}/x", "puts '/' in every target topic name"),
    ("{topic} copy", "puts ' ' in every target topic name"),
    ("kmc.{topic}", "names starting with 'kmc.', reserved for kmc's internal topics"),
    ("__{topic}", "names starting with '__', reserved for Kafka's internal topics"),
    (f"{LONG}xxxx.{{topic}}", "gives names of at least 251 characters; Kafka allows 249"),
])
@pytest.mark.parametrize("command", [["mirror", "a", "b"], ["aggregate", "a", "--into", "b"], ["diff", "a", "b"],
                                     ["mirror", "a", "b", "--dry-run"]])
def test_an_impossible_rename_is_refused_before_connecting(silent: dict[str, SilentBroker], command: list[str],
                                                          rename: str, fragment: str) -> None:
    assert fragment in refused(*command, "--rename", rename)
    assert not any(broker.connected.is_set() for broker in silent.values())


def test_a_cluster_onto_itself_and_an_address_as_source_before_connecting(silent: dict[str, SilentBroker]) -> None:
    address = silent["a"].address
    for command in (["mirror", "a", "a"], ["mirror", "a", address], ["mirror", address, "a", "--dry-run"]):
        message = refused(*command)
        assert "are the same cluster" in message and "mirroring topics onto themselves" in message
        assert "--rename" in message  # what to do: rename the copies
    message = refused("mirror", address, "b", "--rename", "{source}.{topic}")
    assert f"cannot use {address} as {{source}}" in message and "kmc profile add" in message
    assert not any(broker.connected.is_set() for broker in silent.values())


FLOW = '[flows.f]\nfrom = ["a"]\nto = "b"\ntopics = ["orders"]\nrename = "{rename}"\n'


@pytest.mark.parametrize(("rename", "fragment"), [
    ("{topic}/x", "puts '/' in every target topic name"),
    ("kmc.{topic}", "reserved for kmc's internal topics"),
    ("__{topic}", "reserved for Kafka's internal topics"),
    ("{source}" + "y" * 248 + "{topic}", "gives names of at least 250 characters with source a"),
])
def test_flow_check_refuses_a_rename_that_can_never_work(silent: dict[str, SilentBroker], tmp_path: Path,
                                                         rename: str, fragment: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(path.read_text() + FLOW.replace("{rename}", rename))
    message = refused("flow", "check", "--offline", code=3)
    assert f"flows.f.rename: rename template '{rename}'" in message and fragment in message


def test_flow_check_refuses_a_rename_too_long_for_a_topic_it_selects(silent: dict[str, SilentBroker],
                                                                     tmp_path: Path) -> None:
    """The template alone is fine (a short topic fits); the topic the flow names does not."""
    path = tmp_path / "config.toml"
    path.write_text(path.read_text() + FLOW.replace("{rename}", f"{LONG}.{{topic}}"))
    result = kmc("flow", "check", "--offline", expect=3)
    assert f"kmc: error: flows.f.rename: maps a 'orders' to '{LONG[:57]}...': 252 characters, Kafka allows 249" \
        in result.stderr.splitlines()
    assert not any(broker.connected.is_set() for broker in silent.values())
