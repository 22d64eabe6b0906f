"""Run a benchmarked tool as a child process and measure it: wall time, CPU seconds, peak RSS.

Each tool runs in its own process group, so stopping it stops everything it started. CPU and memory come
from the kernel: ``wait4`` gives the CPU time of a child that exited (user+sys of it and its reaped
children), and ``/proc/PID/stat`` that of one still running, which is how MirrorMaker 2 is measured at the
moment its copy is complete.

Peak memory is never ``ru_maxrss``: Linux starts a child's ``maxrss`` at its parent's high-water mark when
it execs (the harness, after generating datasets, holds hundreds of MiB, and every tool would inherit that
figure). It is sampled instead, every ``SAMPLE`` seconds while the tool runs: the sum of ``VmHWM`` (the
peak resident set of the exec'd image) over the processes of the tool's process group (``--workers``
children included), the largest sum seen. Every live child is recorded in ``LIVE`` so that the harness's
clean-up can stop it whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL
POLL = 0.05
SAMPLE = 0.25  # seconds between samples of the process group's peak memory


@dataclass(frozen=True)
class Usage:
    """What one run of a tool cost."""

    seconds: float  # wall time from start to done (exit, or the moment the copy was seen complete)
    cpu_s: float  # user + system CPU seconds of the process and its children
    peak_rss_mb: float  # peak resident set size, MiB
    exit_code: int | None  # None when the harness stopped it (MirrorMaker 2)


class ToolTimeout(Exception):
    """The tool did not finish within its time limit (it has been stopped)."""


class Child:
    """One tool process in its own process group, with its output in ``log``."""

    def __init__(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None, stdout: Path | None = None
    ) -> None:
        """Start ``cmd`` with stderr (and stdout, unless ``stdout`` names a file of its own) into ``log``."""
        self.cmd = cmd
        self.log = log
        self.stdout = stdout
        with open(log, "wb") as err, open(stdout or os.devnull, "wb") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out if stdout else err, stderr=err,
                env=env, start_new_session=True,
            )  # fmt: skip
        self.pid = self.proc.pid
        self.rusage: os.struct_rusage | None = None
        self.ended: float | None = None
        self.peak_kb = 0  # the largest sum of the group's VmHWM seen (see the module's docstring)
        self.next_sample = 0.0
        LIVE[self.pid] = self

    # ------------------------------------------------------------------------------------ running

    def poll(self) -> bool:
        """True once the process has exited (and been reaped, with its rusage kept)."""
        if self.rusage is not None:
            return True
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self.ended = time.monotonic()
        self.rusage = rusage
        # Tell Popen the child is gone, so it never waits for (or signals) a pid that may be reused.
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        LIVE.pop(self.pid, None)
        return True

    def sample(self, force: bool = False) -> None:
        """Every SAMPLE seconds (or now, with ``force``): the group's peak memory, kept if the largest yet."""
        now = time.monotonic()
        if not force and now < self.next_sample:
            return
        self.next_sample = now + SAMPLE
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if int(Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()[2]) != self.pid:
                    continue
                for line in Path(f"/proc/{entry.name}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
        self.peak_kb = max(self.peak_kb, total)

    def running_usage(self) -> tuple[float, float]:
        """(CPU seconds, peak RSS MiB) of the running process, from /proc."""
        stat = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        utime, stime, cutime, cstime = (int(x) for x in stat[11:15])
        cpu = (utime + stime + cutime + cstime) / CLOCK_TICKS
        self.sample(force=True)
        return cpu, self.peak_kb / 1024

    def wait(self, timeout: float) -> Usage:
        """Wait for the process to exit by itself; stop it and raise ToolTimeout after ``timeout`` seconds."""
        deadline = self.started + timeout
        while not self.poll():
            if time.monotonic() >= deadline:
                self.stop()
                raise ToolTimeout(f"still running after {timeout:.0f}s")
            self.sample()
            time.sleep(POLL)
        return self.exit_usage()

    def wait_until(self, done: Callable[[], bool], timeout: float, interval: float) -> Usage:
        """Poll ``done()`` every ``interval`` seconds; when it holds, measure the process, then stop it.

        Raises ToolTimeout (after stopping it) when ``done()`` never holds within ``timeout``, and
        RuntimeError when the process exits before.
        """
        deadline = self.started + timeout
        while True:
            if self.poll():
                raise RuntimeError(f"exited with status {self.proc.returncode} before the copy was complete")
            if done():
                seen = time.monotonic()
                cpu, rss = self.running_usage()
                self.stop()
                return Usage(seen - self.started, cpu, rss, None)
            if time.monotonic() >= deadline:
                self.stop()
                raise ToolTimeout(f"copy not complete after {timeout:.0f}s")
            self.sample()
            time.sleep(interval)

    def exit_usage(self) -> Usage:
        assert self.rusage is not None and self.ended is not None
        cpu = self.rusage.ru_utime + self.rusage.ru_stime
        return Usage(self.ended - self.started, cpu, self.peak_kb / 1024, self.proc.returncode)

    # ----------------------------------------------------------------------------------- stopping

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the process."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if self.poll() and not self._group_alive():
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.poll() and not self._group_alive():
                    return
                time.sleep(POLL)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def tail(self, lines: int = 15) -> str:
        """The last lines of the tool's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


LIVE: dict[int, Child] = {}


def stop_all() -> None:
    """Stop every tool process still running (clean-up path; never raises)."""
    for child in list(LIVE.values()):
        with contextlib.suppress(Exception):
            child.stop(grace=5.0)
        LIVE.pop(child.pid, None)
