"""The one child-process protocol of kmc: run a task in a process of its own and hear from it.

kafka-python decodes and encodes records in pure Python, so one process keeps one core busy and threads
do not add cores. Where kmc needs more (several mirrors at once, ``kmc mirror --workers``, the two sides of
``kmc diff --data``) it runs a *task* in a child process:

    worker = Worker("kmc.diff.stream:read_side", argument, name="dc1's reader process")
    for event in worker.events():   # what the task sends, in order
        ...
    value = worker.result()        # what it returned; raises what it raised
    worker.close()

A task is a function ``task(argument, channel) -> value`` named ``module:function``. It reports through
``channel.send(*event)`` (a pickled tuple, flushed at once) or ``channel.send_bytes(data)`` (raw bytes, for
hot paths: not pickled, not flushed until the next event), and stops early when ``channel.stop`` is set:
by :meth:`Worker.stop`, by the end of its stdin (the parent went away) or by SIGTERM. Ctrl-C is the
parent's: the child ignores SIGINT and the parent asks its children to stop.

On the wire, both ways, frames of 1 byte kind, 4 bytes length and a payload. Parent to child: one request
(the task, its argument, the parent's log levels), pickled; then ``stop`` or the end of stdin. Child to
parent: events, raw bytes, and last the answer (the value, or the KmcError). The argument travels down a
pipe, never on the command line: it may hold a cluster's password. Library code: no printing.
"""

from __future__ import annotations

import contextlib
import copyreg
import importlib
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from kmc.client import abandon_connections, configure_logging, logging_levels
from kmc.errors import KafkaOperationError, KmcError

COMMAND = (sys.executable, "-c", "from kmc.worker import serve; serve()")

_FRAME = struct.Struct(">cI")  # kind, payload length
_REQUEST, _EVENT, _BYTES, _RESULT, _ERROR = b"q", b"e", b"b", b"r", b"x"
_STOP = b"stop\n"


def _read_only(mapping: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(mapping)


class _Pickler(pickle.Pickler):
    # a Cluster's client settings are a read-only mapping, which pickle cannot take as it is
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[MappingProxyType] = lambda mapping: (_read_only, (dict(mapping),))


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


def _read_frame(read: Any) -> tuple[bytes, bytes] | None:
    """One frame from ``read(size)``; None at the end of the stream (or a frame cut short)."""
    header = read(_FRAME.size)
    if len(header) < _FRAME.size:
        return None
    kind, length = _FRAME.unpack(header)
    payload = read(length) if length else b""
    return None if len(payload) < length else (kind, payload)


# ------------------------------------------------------------------------------------------ parent


class Worker:
    """One task running in a child process (see the module's docstring). ``name`` says what it is in errors:
    "the mirror process", "dc1's reader process"."""

    def __init__(self, task: str, argument: Any, *, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._stopped = False
        self._answer: tuple[bytes, Any] | None = None
        request = _dumps({"task": task, "argument": argument, "log_levels": logging_levels()})
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(_frame(_REQUEST, request))
            self.process.stdin.flush()

    def events(self) -> Iterator[Any]:
        """What the task sends, in order (a tuple for ``send``, bytes for ``send_bytes``), until it answers
        or its process ends."""
        pipe = self.process.stdout
        while self._answer is None:
            frame = _read_frame(pipe.read)
            if frame is None:
                return
            kind, payload = frame
            if kind == _BYTES:
                yield payload
            elif kind == _EVENT:
                yield pickle.loads(payload)  # noqa: S301 - our own child process, over a pipe
            else:
                self._answer = (kind, pickle.loads(payload))  # noqa: S301

    def result(self) -> Any:
        """After :meth:`events`: the task's value; raises its error, or a KafkaOperationError when the
        process ended without an answer."""
        if self._answer is None:
            status = self.process.wait()
            raise KafkaOperationError(f"{self.name} ended unexpectedly (exit status {status})")
        kind, value = self._answer
        if kind == _ERROR:
            raise value
        return value

    def stop(self) -> None:
        """Ask the task to stop (it sees ``channel.stop`` set); it still answers."""
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write(_STOP)
                self.process.stdin.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def close(self, grace: float | None = None) -> int:
        """Stop the task and wait for its process: for ever, or ``grace`` seconds before killing it.
        Returns its exit status."""
        self.stop()
        try:
            status = self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            status = self.process.wait()
        self.process.stdout.close()
        return status


# ------------------------------------------------------------------------------------------ child


class Channel:
    """What a task has of its parent: ``send``, ``send_bytes`` and the ``stop`` event."""

    def __init__(self, out: Any) -> None:
        self.stop = threading.Event()
        self._out = out
        self._lock = threading.Lock()

    def send(self, *event: Any) -> None:
        self._write(_frame(_EVENT, _dumps(event)), flush=True)

    def send_bytes(self, data: bytes) -> None:
        self._write(_frame(_BYTES, data), flush=False)

    def _answer(self, kind: bytes, value: Any) -> None:
        self._write(_frame(kind, _dumps(value)), flush=True)

    def _write(self, data: bytes, flush: bool) -> None:
        with self._lock:
            self._out.write(data)
            if flush:
                self._out.flush()


def serve() -> None:
    """The body of a child process: read the request, run the task, answer (see the module's docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = Channel(sys.stdout.buffer)

    def stop() -> None:
        # a connection being made gives up at once (Cancelled): a task waiting on a cluster that does not
        # answer would otherwise stop only at its timeout; connected clients go on, to finish cleanly
        channel.stop.set()
        abandon_connections(connecting_only=True)

    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=stop, daemon=True).start())

    def read(size: int) -> bytes:
        # the raw file descriptor: a thread blocked in a buffered stdin would hold its lock at exit
        data = b""
        while len(data) < size:
            chunk = os.read(0, size - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    frame = _read_frame(read)
    if frame is None or frame[0] != _REQUEST:
        return  # the parent went away before sending the task
    request = pickle.loads(frame[1])  # noqa: S301 - from our parent
    configure_logging(*request["log_levels"])

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            os.read(0, 64)  # "stop", or the end: the parent is gone
        stop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    module, _, function = request["task"].partition(":")
    try:
        task = getattr(importlib.import_module(module), function)
        channel._answer(_RESULT, task(request["argument"], channel))
    except BrokenPipeError:
        return  # the parent stopped listening
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        error = exc if isinstance(exc, KmcError) else KafkaOperationError(
            f"internal error: {type(exc).__name__}: {exc}", hint="run again with --debug and report it")
        with contextlib.suppress(BrokenPipeError):
            channel._answer(_ERROR, error)
