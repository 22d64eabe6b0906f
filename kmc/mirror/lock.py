"""One run at a time per mirror: an fcntl file lock per mirror identity.

Cron starts ``kmc mirror --once`` every few minutes; when a run takes longer than the interval, the next
one must not copy the same partitions concurrently (it would write every record twice). The identity is
what is copied, not how the command was spelled: the clusters by id, the flow, the topic selection and
excludes as sets, the rename and the shard. The lock lives under ``$XDG_STATE_HOME/kmc/locks/`` (default
``~/.local/state``); the kernel releases it when the process dies, so a ``kill -9`` never leaves a
stale lock behind, and a run that ends removes its lock file, so they do not pile up.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kmc.errors import ConfigError, LockedError
from kmc.profiles import Cluster


def lock_dir() -> Path:
    """``$XDG_STATE_HOME/kmc/locks`` (default ``~/.local/state/kmc/locks``), read at call time."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "kmc" / "locks"


def lock_identity(source: Cluster | str, target: Cluster | str, topics: tuple[str, ...], exclude: tuple[str, ...],
                  rename: str, flow: str, shard: tuple[int, int] | None = None) -> dict[str, object]:
    """What makes two runs "the same mirror". A cluster is its id (a str) or, before kmc has connected,
    its sorted bootstrap servers. Topic patterns and excludes count as sets: ``--topics a --topics b`` and
    ``--topics b --topics a`` are one mirror.

    A ``shard`` (a worker of ``kmc mirror --workers``) has a lock of its own, so the workers of one run do
    not exclude each other; their parent holds the unsharded lock, which keeps other runs out.
    """
    identity: dict[str, object] = {
        "source": source if isinstance(source, str) else sorted(source.bootstrap),
        "target": target if isinstance(target, str) else sorted(target.bootstrap),
        "topics": sorted(set(topics)),
        "exclude": sorted(set(exclude)),
        "rename": rename,
        "flow": flow,
    }
    if shard is not None:
        identity["shard"] = list(shard)
    return identity


def lock_path(identity: dict[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return lock_dir() / f"mirror-{digest}.lock"


def lock_left_by_a_dead_run(identity: dict[str, object]) -> bool:
    """Whether the lock file of ``identity`` is there with a holder written in it: a run that ends removes
    its file, so one left behind belonged to a run that died (or holds it now: then taking it fails)."""
    try:
        return lock_path(identity).stat().st_size > 0
    except OSError:
        return False


def settled_ends(read: Callable[[], dict], stop_event: threading.Event, timeout: float = 30.0) -> dict:
    """Partitions' end offsets (``read()``) once they stay put for two seconds (at most ``timeout``, or until a
    stop). After a run died, its last produce requests may still be in the brokers' queues, or appended by a
    leader waiting for its followers (acks=all: the end a client sees moves only once they have the records):
    the next run waits for them to land before it counts what is there and writes anything (they would
    otherwise be uncounted repeats, landing after records it wrote)."""
    ends = read()
    deadline = time.monotonic() + timeout
    still = 0
    while ends and time.monotonic() < deadline and not stop_event.is_set() and still < 2:
        stop_event.wait(1.0)
        again = read()
        still = still + 1 if again == ends else 0
        ends = again
    return ends


@contextlib.contextmanager
def hold_lock(identity: dict[str, object], description: str) -> Iterator[Path]:
    """Hold the lock of ``identity`` for the duration of the block; LockedError (exit 75) if taken.

    The file is removed when the block ends. A run that opened the file just before it was removed would
    lock a file nobody else can see, so after locking, the path must still name the locked file; if not,
    the lock is taken again on the new file."""
    path = lock_path(identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the lock directory {path.parent}: {exc.strerror}",
                          hint="check XDG_STATE_HOME (kmc keeps its locks under $XDG_STATE_HOME/kmc/locks)") from None
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip().splitlines()
            handle.close()
            pid = holder[0] if holder else "unknown"
            raise LockedError(f"{description}: another run holds the lock {path} (pid {pid})") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_ino, current.st_dev) == (os.fstat(handle.fileno()).st_ino,
                                                                       os.fstat(handle.fileno()).st_dev):
            break
        handle.close()  # the holder removed it as we opened it: lock the file that is there now
    try:
        # Who holds it, for the message above and for an operator looking at the file.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n{json.dumps(identity, sort_keys=True)}\n")
        handle.flush()
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still locked: a run waiting on the old file sees it gone and starts over
        handle.close()  # closing releases the flock
