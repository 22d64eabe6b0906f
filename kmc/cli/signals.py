"""How kmc stops on SIGINT (Ctrl-C) and SIGTERM, from the first instant of the process to its last.

Three stages, each with its own handler:

1. While Python imports kmc (about half a second, longer on a loaded machine), :func:`record_early` notes the
   signals instead of dying with a traceback or silently by SIGTERM's default action.
2. While a command runs, :func:`stopping` turns a signal into KeyboardInterrupt (SIGINT, exit 130) or
   :class:`~kmc.errors.Terminated` (SIGTERM, exit 143) in the main thread, and a helper thread makes every
   Kafka client of the process give up (``kmc.client.abandon_connections``), so that threads waiting on a
   cluster end now instead of at --timeout. For the commands that stop *cleanly* on a signal (mirror,
   aggregate, flow run: SIGTERM exits 0 with a summary) it only records the signal and abandons the
   connections being made; the command then starts with its stop already requested.
3. Those commands install their own handler while they copy (``kmc.cli.mirror.stop_on_signals``), which
   takes the signals recorded so far from :func:`pending`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from kmc.errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Commands for which a signal means "stop cleanly and report" (command path after `kmc`).
CLEAN_STOP_COMMANDS = {("mirror",), ("aggregate",), ("flow", "run")}

_pending: list[int] = []  # signals received before a clean-stop command installed its own handler


def _handled() -> tuple[int, ...]:
    """The signals kmc handles: both, but SIGINT not when it is ignored (a background job of a script, nohup),
    which Python itself respects."""
    return tuple(sig for sig in SIGNALS if sig != signal.SIGINT or signal.getsignal(sig) is not signal.SIG_IGN)


def record_early() -> list[int]:
    """Stage 1: note SIGINT and SIGTERM from now on, in the returned list (the entry point calls this before
    importing the rest of kmc)."""
    early: list[int] = []
    for sig in _handled():
        signal.signal(sig, lambda signum, frame: early.append(signum))  # noqa: ARG005 - the handler's signature
    return early


def stops_cleanly(command: Sequence[str]) -> bool:
    """Whether the command (its words after `kmc`: ("flow", "run", ...)) stops cleanly on a signal."""
    return tuple(command[:1]) in CLEAN_STOP_COMMANDS or tuple(command[:2]) in CLEAN_STOP_COMMANDS


def abandon_soon(connecting_only: bool) -> None:
    """kmc.client.abandon_connections, for a signal handler: from a thread of its own, because closing
    clients joins their IO threads, which must not wait on a lock the interrupted main thread may hold."""
    # imported here: stage 1 runs before kafka-python is imported
    from kmc.client import abandon_connections

    threading.Thread(target=abandon_connections, kwargs={"connecting_only": connecting_only},
                     name="kmc-abandon", daemon=True).start()


@contextlib.contextmanager
def stopping(clean_stop: bool, early: Sequence[int] = ()) -> Iterator[None]:
    """Stage 2, around a whole command. ``early`` are the signals stage 1 recorded: a clean-stop command
    starts with them pending (the caller ends any other command at once). Only the main thread can handle
    signals (tests may run kmc elsewhere: then this does nothing)."""
    _pending.clear()
    if early:
        _pending.extend(early)
        abandon_soon(connecting_only=True)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
        if clean_stop:
            _pending.append(signum)
            abandon_soon(connecting_only=True)
            return
        abandon_soon(connecting_only=False)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    previous = {sig: signal.signal(sig, handle) for sig in _handled()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pending() -> list[int]:
    """Stage 3: the signals received before now (and forget them): a clean-stop command starts stopped."""
    received = list(_pending)
    _pending.clear()
    return received


def last_received() -> int | None:
    """The last signal recorded and not yet taken (for the exit status of a command stopped early)."""
    return _pending[-1] if _pending else None
