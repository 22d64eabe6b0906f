"""`--group NAME`: kmc members that share a mirror's partitions through Kafka's group protocol, against real
sandboxes. Members are child processes (``kmc mirror ... --group NAME --follow``); data is produced and every
copy verified with confluent-kafka (tests/helpers.py), never with kmc's own reading code."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import NewPartitions

from kmc.mirror.membership import (
    assign,
    decode_assignment,
    encode_metadata,
    settings_difference,
)
from tests.helpers import (
    Follower,
    admin,
    assert_exact_copy,
    count,
    create_topic,
    kmc,
    numbered,
    produce,
    producer,
    read_all,
    wait_for,
)

SESSION = "6"  # seconds: the brokers' smallest session timeout (group.min.session.timeout.ms)


def _member(followers, topic: str, group: str, *extra: str) -> Follower:  # noqa: ANN001
    return followers("src", "dst", "--topics", topic, "--group", group, "--session-timeout", SESSION,
                     "--refresh", "1", "-o", "json", *extra)


def _shares(member: Follower) -> list[int]:
    """The partition counts this member was given, one per generation (from its notices)."""
    return [int(found) for found in re.findall(r"generation \d+: (\d+) partition", member.stderr)]


def _result(member: Follower) -> dict:
    return json.loads(member.stdout)


class _Production:
    """Records produced to ``topic`` (numbered, round-robin over its partitions) in the background, 30 at a
    time with a pause, until :meth:`stop`, so that they keep arriving through every event of a test however
    fast or slow the machine is; :meth:`stop` returns how many were produced."""

    def __init__(self, cluster, topic: str, partitions: int) -> None:  # noqa: ANN001
        self.stopping = threading.Event()
        self.total = 0
        self.thread = threading.Thread(target=self._run, args=(cluster, topic, partitions), daemon=True)
        self.thread.start()

    def _run(self, cluster, topic: str, partitions: int) -> None:  # noqa: ANN001
        client = producer(cluster)
        while not self.stopping.is_set():
            for record in numbered(30, partitions, start=self.total):
                client.produce(topic, key=record.key, value=record.value, partition=record.partition,
                               headers=record.headers, timestamp=record.timestamp)
            while client.flush(10):  # a loaded machine may take longer than one flush's time
                pass
            self.total += 30
            time.sleep(0.05)

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(60)
        return self.total


@pytest.fixture
def producing() -> Iterator[Callable[..., _Production]]:
    """Start a :class:`_Production`; whatever happens, none outlives the test."""
    started: list[_Production] = []

    def start(cluster, topic: str, partitions: int) -> _Production:  # noqa: ANN001
        started.append(_Production(cluster, topic, partitions))
        return started[-1]

    yield start
    for production in started:
        production.stop()


def _records(partitions: dict[int, list]) -> list[tuple]:
    return sorted((partition, record.key, record.value) for partition, records in partitions.items()
                  for record in records)


# ------------------------------------------------------------------------------------------ the assignment


def _metadata(universe: dict[str, int], owned: frozenset = frozenset()) -> bytes:
    return encode_metadata({"flow": "f"}, "host:1", universe, owned)


def test_the_leader_balances_every_partition_any_member_sees_and_keeps_what_members_had() -> None:
    given = assign({"b": _metadata({"t": 5}), "a": _metadata({"t": 4, "u": 2}), "c": _metadata({})})
    shares = {member: decode_assignment(data) for member, data in given.items()}
    assert sorted(len(parts) for parts in shares.values()) == [2, 2, 3]  # 7 partitions: t 0-4, u 0-1
    assert set().union(*shares.values()) == {("t", p) for p in range(5)} | {("u", 0), ("u", 1)}
    assert sum(len(parts) for parts in shares.values()) == 7  # none twice
    # sticky: a member keeps what it copied, up to its share; the rest goes to the others
    again = assign({"a": _metadata({"t": 4}, frozenset({("t", 0), ("t", 1), ("t", 2)})), "b": _metadata({"t": 4})})
    assert decode_assignment(again["a"]) == {("t", 0), ("t", 1)}
    assert decode_assignment(again["b"]) == {("t", 2), ("t", 3)}


def test_the_refusal_names_what_differs() -> None:
    mine = {"flow": "a", "topics": ["x"], "rename": "{topic}"}
    assert settings_difference(mine, {**mine, "flow": "b"}) == "flow: 'a' here, 'b' in the group"


# ------------------------------------------------------------------------------------------ members


@pytest.mark.kafka
def test_two_members_share_the_partitions_and_pick_up_new_ones(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                               followers, producing) -> None:
    create_topic(src_cluster, topic_name, 6)
    production = producing(src_cluster, topic_name, 6)
    first = _member(followers, topic_name, topic_name)
    wait_for(lambda: count(dst_cluster, topic_name) > 0, 60, "the first member to copy", first)
    second = _member(followers, topic_name, topic_name)
    wait_for(lambda: _shares(second)[-1:] == [3] and _shares(first)[-1:] == [3], 60, "a share of 3 each",
             first, second)
    # the source gains two partitions: the group rebalances and someone copies them
    for future in admin(src_cluster).create_partitions([NewPartitions(topic_name, 8)]).values():
        future.result(30)
    wait_for(lambda: _shares(second)[-1:] == [4] and _shares(first)[-1:] == [4], 60, "a share of 4 each",
             first, second)
    produced = production.stop()
    produce(src_cluster, topic_name, [dataclasses.replace(record, partition=6 + index % 2)
                                      for index, record in enumerate(numbered(40, 1, start=produced))])
    total = produced + 40
    wait_for(lambda: count(dst_cluster, topic_name) >= total, 90, "every record copied", first, second)
    assert first.stop() == 0 and second.stop() == 0
    ones, twos = _result(first), _result(second)
    assert ones["records"] > 0 and twos["records"] > 0  # both copied
    # hand-overs at rebalances are checkpointed first: nothing copied twice, nothing redelivered
    assert ones["records"] + twos["records"] == total
    assert ones["redelivered"] == twos["redelivered"] == 0
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


@pytest.mark.kafka
def test_a_member_started_with_other_settings_is_refused(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                         followers) -> None:
    create_topic(src_cluster, topic_name, 2)
    first = _member(followers, topic_name, topic_name)
    wait_for(lambda: _shares(first), 60, "the first member to join", first)
    refused = kmc("mirror", "src", "dst", "--topics", topic_name, "--rename", "{topic}.other", "--group", topic_name,
                  "--follow", expect=2)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "rename: '{topic}.other' here, '{topic}' in the group" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert first.stop() == 0


def test_group_needs_follow_and_excludes_workers() -> None:
    assert "--group needs --follow" in kmc("mirror", "a:1", "b:2", "--group", "g", expect=2).stderr
    both = kmc("mirror", "a:1", "b:2", "--group", "g", "--workers", "2", "--follow", expect=2).stderr
    assert "give --group or --workers, not both" in both


# ------------------------------------------------------------------------------------------ hand-over


@pytest.mark.kafka
def test_sigterm_hands_over_without_redelivery(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                               followers, producing) -> None:
    create_topic(src_cluster, topic_name, 4)
    production = producing(src_cluster, topic_name, 4)
    leaving, staying = (_member(followers, topic_name, topic_name) for _ in range(2))
    wait_for(lambda: _shares(leaving)[-1:] == [2] and _shares(staying)[-1:] == [2], 60, "a share each",
             leaving, staying)
    wait_for(lambda: count(dst_cluster, topic_name) > 500, 60, "copying", leaving, staying)
    started = time.monotonic()
    assert leaving.stop() == 0  # checkpoints its partitions, then leaves the group
    wait_for(lambda: _shares(staying)[-1:] == [4], 30, "the other member to take them", staying)
    taken_over = time.monotonic() - started
    total = production.stop()
    wait_for(lambda: count(dst_cluster, topic_name) >= total, 90, "every record copied", staying)
    assert staying.stop() == 0
    left, stayed = _result(leaving), _result(staying)
    assert left["records"] > 0 and left["redelivered"] == stayed["redelivered"] == 0
    assert left["records"] + stayed["records"] == total
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))
    assert taken_over < float(SESSION)  # a LeaveGroup: no waiting for the session timeout


@pytest.mark.kafka
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_killed_members_partitions_are_taken_over(src_cluster, dst_cluster, topic_name: str, followers, producing,  # noqa: ANN001
                                                    exactly_once: bool) -> None:
    create_topic(src_cluster, topic_name, 4)
    extra = ("--exactly-once",) if exactly_once else ()
    production = producing(src_cluster, topic_name, 4)
    killed, survivor = (_member(followers, topic_name, topic_name, *extra) for _ in range(2))
    wait_for(lambda: _shares(killed)[-1:] == [2] and _shares(survivor)[-1:] == [2], 60, "a share each",
             killed, survivor)
    wait_for(lambda: count(dst_cluster, topic_name) > 500, 60, "copying", killed, survivor)
    killed.kill()  # SIGKILL, under production
    started = time.monotonic()
    wait_for(lambda: _shares(survivor)[-1:] == [4], 60, "the survivor to take over", survivor)
    taken_over = time.monotonic() - started
    total = production.stop()
    wait_for(lambda: count(dst_cluster, topic_name) >= total, 90, "every record copied", survivor)
    assert survivor.stop() == 0
    source, target = read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name)
    result = _result(survivor)
    if exactly_once:
        assert_exact_copy(source, target)  # read_committed: no record twice, none lost
    else:
        # nothing lost; what was copied twice is exactly what the survivor counted as redelivered
        assert set(_records(target)) == set(_records(source))
        assert len(_records(target)) == total + result["redelivered"]
    assert float(SESSION) - 1 < taken_over < float(SESSION) + 15


@pytest.mark.kafka
def test_a_paused_member_is_fenced_when_it_resumes(src_cluster, dst_cluster, topic_name: str,  # noqa: ANN001
                                                   followers, producing) -> None:
    create_topic(src_cluster, topic_name, 4)
    production = producing(src_cluster, topic_name, 4)
    zombie, survivor = (_member(followers, topic_name, topic_name, "--exactly-once") for _ in range(2))
    wait_for(lambda: _shares(zombie)[-1:] == [2] and _shares(survivor)[-1:] == [2], 60, "a share each",
             zombie, survivor)
    wait_for(lambda: count(dst_cluster, topic_name) > 500, 60, "copying", zombie, survivor)
    zombie.proc.send_signal(signal.SIGSTOP)  # past its session timeout, with a transaction open
    generations = len(_shares(zombie))
    try:
        wait_for(lambda: _shares(survivor)[-1:] == [4], 60, "the survivor to take over", survivor)
        copied = count(dst_cluster, topic_name)
        wait_for(lambda: count(dst_cluster, topic_name) > copied, 30, "the survivor to copy", survivor)
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    # (it may first meet the fence anywhere: a send, a commit, a checkpoint's send; each means "join again")
    wait_for(lambda: len(_shares(zombie)) > generations, 60, "the zombie to join again", zombie, survivor)
    total = production.stop()
    wait_for(lambda: count(dst_cluster, topic_name) >= total, 90, "every record copied", zombie, survivor)
    assert zombie.stop() == 0 and survivor.stop() == 0
    assert "fenced" in survivor.stderr  # the survivor fenced the zombie's transactional id before copying
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))


@pytest.mark.kafka
def test_a_flows_group_and_status_per_partition(src_cluster, dst_cluster, topic_name: str, followers,  # noqa: ANN001
                                                tmp_path: Path) -> None:
    create_topic(src_cluster, topic_name, 4)
    produce(src_cluster, topic_name, numbered(400, 4))
    config = tmp_path / "flows.toml"
    config.write_text(textwrap.dedent(f"""
        [flows.shared]
        from = ["src"]
        to = "dst"
        topics = ['{re.escape(topic_name)}']
        rename = "{{topic}}.shared"
        group = "{topic_name}"
    """))
    members = [followers("shared", "--config", str(config), "--session-timeout", SESSION, "-o", "json",
                         command=("flow", "run")) for _ in range(2)]
    wait_for(lambda: all(_shares(member)[-1:] == [2] for member in members), 60, "a share each", *members)
    wait_for(lambda: count(dst_cluster, f"{topic_name}.shared") == 400, 60, "every record copied", *members)

    def owners() -> dict[int, str | None]:
        rows = kmc("flow", "status", "shared", "--partitions", "--config", str(config), "-o", "json").json()
        return {row["partition"]: row["member"] for row in rows}

    expected = {f"{socket.gethostname()}:{member.proc.pid}" for member in members}
    wait_for(lambda: set(owners().values()) == expected, 30, "each member named in the checkpoints", *members)
    assert sorted(list(owners().values()).count(name) for name in expected) == [2, 2]
    rows = kmc("flow", "status", "shared", "--partitions", "--config", str(config), "-o", "json").json()
    assert [(row["partition"], row["records_behind"]) for row in rows] == [(p, 0) for p in range(4)]
    assert all(member.stop() == 0 for member in members)
    results = [_result(member)["runs"][0] for member in members]
    assert sum(result["records"] for result in results) == 400


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_issue_scenario_joins_kill_pause_and_stop(src_cluster, dst_cluster, topic_name: str, followers,  # noqa: ANN001
                                                      producing) -> None:
    """Issue 15's scenario, --exactly-once: three members copy 12 partitions under production; a fourth
    joins; one is SIGKILLed; one is SIGSTOPped past its session timeout, then SIGCONTed; all stop with
    SIGTERM: exit 0, every partition checkpointed by a live member, each record once for read_committed."""
    create_topic(src_cluster, topic_name, 12)
    production = producing(src_cluster, topic_name, 12)

    def start() -> Follower:
        return _member(followers, topic_name, topic_name, "--exactly-once")

    def shares(*members: Follower) -> list[int]:
        return [(_shares(member) or [0])[-1] for member in members]

    def grows(*running: Follower) -> None:
        copied = count(dst_cluster, topic_name)
        wait_for(lambda: count(dst_cluster, topic_name) > copied, 60, "copying to go on", *running)

    members = [start() for _ in range(3)]
    wait_for(lambda: shares(*members) == [4, 4, 4], 90, "4 partitions each", *members)
    grows(*members)
    members.append(start())  # a fourth joins
    wait_for(lambda: shares(*members) == [3, 3, 3, 3], 90, "3 partitions each", *members)
    grows(*members)
    killed, paused, *others = members
    killed.kill()
    wait_for(lambda: shares(paused, *others) == [4, 4, 4], 90, "the killed member's partitions shared", *others)
    grows(paused, *others)
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: shares(*others) == [6, 6], 90, "the paused member's partitions shared", *others)
        grows(*others)
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: shares(paused, *others) == [4, 4, 4], 90, "the paused member back", paused, *others)
    total = production.stop()
    # the resumed member was fenced and rejoins: a rebalance or two, slow on a loaded machine
    wait_for(lambda: count(dst_cluster, topic_name) >= total, 240, "every record copied", paused, *others)
    assert [member.stop() for member in (paused, *others)] == [0, 0, 0]
    assert_exact_copy(read_all(src_cluster, topic_name), read_all(dst_cluster, topic_name))
    rows = kmc("mirror", "status", "src", "dst", "--topics", topic_name, "--partitions", "-o", "json").json()
    assert [(row["partition"], row["records_behind"]) for row in rows] == [(p, 0) for p in range(12)]
    live = {f"{socket.gethostname()}:{member.proc.pid}" for member in (paused, *others)}
    assert {row["member"] for row in rows} <= live  # the killed member named nowhere
