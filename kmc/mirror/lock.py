"""One run at a time per mirror: an fcntl file lock per (source, target, topic selection, rename, flow).

Cron starts ``kmc mirror --once`` every few minutes; when a run takes longer than the interval, the next
one must not copy the same partitions concurrently (it would write every record twice). The lock lives
under ``$XDG_STATE_HOME/kmc/locks/`` (default ``~/.local/state``); the kernel releases it when the
process dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from kmc.errors import LockedError
from kmc.profiles import Cluster


def lock_dir() -> Path:
    """``$XDG_STATE_HOME/kmc/locks`` (default ``~/.local/state/kmc/locks``), read at call time."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "kmc" / "locks"


def lock_identity(source: Cluster, target: Cluster, topics: tuple[str, ...], exclude: tuple[str, ...],
                  rename: str, flow: str, shard: tuple[int, int] | None = None) -> dict[str, object]:
    """What makes two runs "the same mirror". Clusters are identified by their bootstrap servers (not
    their profile names), so a profile and an ad-hoc ``host:port`` for one cluster share a lock.

    A ``shard`` (a worker of ``kmc mirror --workers``) has a lock of its own, so the workers of one run do
    not exclude each other; their parent holds the unsharded lock, which keeps other runs out.
    """
    identity: dict[str, object] = {
        "source": sorted(source.bootstrap),
        "target": sorted(target.bootstrap),
        "topics": list(topics),
        "exclude": list(exclude),
        "rename": rename,
        "flow": flow,
    }
    if shard is not None:
        identity["shard"] = list(shard)  # absent otherwise: unsharded runs keep the lock file they always had
    return identity


def lock_path(identity: dict[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return lock_dir() / f"mirror-{digest}.lock"


@contextlib.contextmanager
def hold_lock(identity: dict[str, object], description: str) -> Iterator[Path]:
    """Hold the lock of ``identity`` for the duration of the block; LockedError (exit 75) if taken."""
    path = lock_path(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip().splitlines()
            pid = holder[0] if holder else "unknown"
            raise LockedError(f"{description}: another run holds the lock {path} (pid {pid})") from None
        # Who holds it, for the message above and for an operator looking at the file.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n{json.dumps(identity, sort_keys=True)}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the flock
