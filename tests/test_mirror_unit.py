"""`kmc mirror` without brokers: option validation, start positions, checkpoint format, the run lock."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap

import pytest

from kmc.cli import _run as cli_run
from kmc.cli.context import AppContext
from kmc.errors import ExitCode, LockedError, UsageError
from kmc.mirror import (
    Checkpoint,
    MirrorProgress,
    MirrorSpec,
    TopicProgress,
    checkpoint_key,
    hold_lock,
    lock_identity,
    lock_left_by_a_dead_run,
    lock_path,
    parse_start,
)
from kmc.output import Messages
from kmc.profiles import adhoc_cluster
from tests.helpers import kmc


@pytest.mark.parametrize(("value", "expected"), [
    ("earliest", "earliest"),
    ("LATEST", "latest"),
    ("1714564800000", 1714564800000),
    ("2024-05-01T12:00:00Z", 1714564800000),
    ("2024-05-01T12:00:00", 1714564800000),  # no offset: UTC
    ("2024-05-01T14:00:00+02:00", 1714564800000),
    ("2024-05-01T12:00:00.250+00:00", 1714564800250),
])
def test_parse_start(value: str, expected: str | int) -> None:
    assert parse_start(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "-5", "2024-13-01", ""])
def test_parse_start_rejects_nonsense(value: str) -> None:
    with pytest.raises(UsageError):
        parse_start(value)


@pytest.mark.parametrize(("spec", "message"), [
    (MirrorSpec(rename="{nope}.{topic}"), "unknown placeholder"),
    (MirrorSpec(rename="fixed"), "must contain {topic}"),
    (MirrorSpec(topics=("(",)), "bad regex"),
    (MirrorSpec(exclude=("[",)), "--exclude"),
    (MirrorSpec(flow="a/b"), "invalid flow name"),
    (MirrorSpec(compression="brotli"), "unknown codec"),
    (MirrorSpec(replication_factor=0), "at least 1"),
    (MirrorSpec(delivery_timeout=1), "at least 2 seconds"),
    # each checkpoint commits a transaction: one open longer than its timeout is aborted by the coordinator
    (MirrorSpec(exactly_once=True, checkpoint_interval=600), "not shorter than the transaction timeout (360 s)"),
    (MirrorSpec(exactly_once=True, delivery_timeout=10, checkpoint_interval=70), "timeout (70 s)"),
])
def test_spec_validation(spec: MirrorSpec, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        spec.validate()


@pytest.mark.parametrize(("args", "message"), [
    (["--once", "--follow"], "not both"),
    (["--rename", "{nope}"], "unknown placeholder"),
    (["--topics", "("], "bad regex"),
    (["--from", "yesterday"], "--from"),
    (["--flow", "a/b"], "invalid flow name"),
    (["--compression", "brotli"], "unknown codec"),
])
def test_bad_options_exit_2_before_any_cluster_is_contacted(args: list[str], message: str) -> None:
    # unreachable addresses: the checks must come first
    result = kmc("mirror", "127.0.0.1:1", "127.0.0.1:2", *args, expect=2)
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_checkpoint_key_and_value_format() -> None:
    assert checkpoint_key("mirror", "AbC123", "orders.eu", 7) == "mirror/AbC123/orders.eu/7"
    value = json.loads(Checkpoint(42, "dc1.orders", 40, 1700000000000).to_json())
    assert value == {"next_offset": 42, "target_topic": "dc1.orders", "target_next_offset": 40,
                     "updated_ms": 1700000000000}


def test_the_lock_is_per_mirror_and_held_by_another_process_exits_75() -> None:
    source, target = adhoc_cluster("127.0.0.1:9092"), adhoc_cluster("127.0.0.1:9093")
    identity = lock_identity(source, target, ("orders",), (), "{topic}", "mirror")
    assert identity != lock_identity(source, target, ("orders",), (), "{topic}", "other-flow")
    assert identity != lock_identity(target, source, ("orders",), (), "{topic}", "mirror")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kmc.mirror import hold_lock
        with hold_lock({identity!r}, "holder"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as caught, hold_lock(identity, "second run"):
            pass
        assert caught.value.exit_code == ExitCode.LOCKED == 75
        assert f"pid {holder.pid}" in str(caught.value)
        with hold_lock(lock_identity(source, target, ("orders",), (), "{topic}", "other"), "another mirror"):
            pass  # a different mirror is not blocked
    finally:
        holder.kill()  # like kill -9: the kernel releases the lock
        holder.wait(10)
    assert lock_left_by_a_dead_run(identity)  # its file stays, with its pid: the next run waits for stragglers
    with hold_lock(identity, "after the holder died"):
        pass
    assert not lock_path(identity).exists() and not lock_left_by_a_dead_run(identity)  # a clean end removes it


def _progress_event(records: int) -> MirrorProgress:
    return MirrorProgress("mirror", "dc1", "central", "once", 1.0, (
        TopicProgress("orders", "orders", records, records * 100, 1234.0, 50, records + 50),
        TopicProgress("payments", "payments", 7, 700, 3.0, None, None),
    ))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "quiet"), [(io.StringIO, False), (_Terminal, False), (_Terminal, True)])
def test_progress_is_bars_on_a_terminal_a_line_elsewhere_and_nothing_with_quiet(
        stream: type[io.StringIO], quiet: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_run, "LOG_INTERVAL", 0.0)
    app_ctx = AppContext(quiet=quiet)
    err = stream()
    app_ctx.messages = Messages(quiet=quiet, err=err)
    with cli_run.progress_display(app_ctx) as callback:
        if quiet:
            assert callback is None
            return
        callback(_progress_event(100))
        callback(_progress_event(200))
    text = err.getvalue()
    if stream is _Terminal:
        assert "orders" in text and "payments" in text and "records" in text and "lag 50" in text
    else:
        assert text.splitlines()[-1] == "mirror dc1 -> central: 207 records, 1,237/s, lag 50"


# ------------------------------------------------------------------------------------ the offset map


def test_partition_maps_count_the_checkpoint_and_drop_anchors_older_than_a_recreation() -> None:
    from kmc.mirror.checkpoints import Checkpoint
    from kmc.mirror.offsets import partition_maps

    plain = Checkpoint(500, "orders", 480, updated_ms=9000)
    recreated = Checkpoint(70, "orders", 60, updated_ms=9000,
                           gaps=({"kind": "target-recreated", "detected_ms": 5000},
                                 {"kind": "expired", "detected_ms": 7000}))
    anchors = {("orders", 0): [[0, 0, 1000], [100, 90, 2000], [100, 95, 3000]],  # a restart at 100: the later wins
               ("orders", 1): [[0, 0, 1000], [200, 150, 4000], [10, 0, 5000]]}
    maps = partition_maps({("orders", 0): plain, ("orders", 1): recreated}, anchors)
    assert [(a.source, a.target) for a in maps[("orders", 0)].anchors] == [(0, 0), (100, 95), (500, 480)]
    # the target topic was recreated at 5000: only what was written since describes it (expired gaps do not count)
    assert [(a.source, a.target) for a in maps[("orders", 1)].anchors] == [(10, 0), (70, 60)]
