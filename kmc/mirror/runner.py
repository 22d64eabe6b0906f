"""Run any set of mirror jobs: one call for ``kmc mirror`` (with or without ``--workers``), ``kmc aggregate``
and ``kmc flow run``.

:func:`run` checks the jobs (:mod:`kmc.mirror.preflight`), then runs them all at once (``--follow``) or in
waves (``--once``: the jobs that feed others first, :func:`kmc.mirror.jobs.job_waves`), each through
:func:`kmc.mirror.run_mirror` with its own checkpoints and lock, so one failing job does not stop the others.
Several jobs at once run in child processes (kmc.worker), so that they use several cores; a job with
``workers`` > 1 is split into shards (one process each) and their results merged into one. A job with
``sync_groups`` also translates consumer groups' offsets into its target (:class:`kmc.mirror.offsets.GroupSync`),
from this process: in a thread every ``sync_interval`` while it follows, and once when it ends. With
``dry_run`` it plans instead. Everything comes back in a :class:`RunReport`, which owns the JSON shape.
Library code: no printing; progress and notices arrive through callbacks.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kmc.client import DEFAULT_TIMEOUT, KafkaSession
from kmc.errors import (
    Cancelled,
    DataGapError,
    Interrupted,
    KafkaOperationError,
    KmcError,
    PartialFailure,
    UnreachableError,
    UsageError,
)
from kmc.mirror.engine import MODES, MirrorProgress, MirrorResult, TopicProgress, TopicResult, mirror_lock, run_mirror
from kmc.mirror.groups import GroupSync, TranslationReport
from kmc.mirror.jobs import MirrorJob, job_waves
from kmc.mirror.member import run_member
from kmc.mirror.plan import Plan, checked_plan
from kmc.mirror.preflight import NoticeCallback, preflight
from kmc.mirror.telemetry import EMPTY_LATENCY, Notice
from kmc.worker import Channel, Worker

RETRY_FIRST = 5.0  # seconds before a job whose cluster could not be reached is tried again (retry=True)
RETRY_MAX = 60.0
ProgressCallback = Callable[[MirrorProgress], None]


@dataclass
class JobOutcome:
    """What one job gave: its result (or with a dry run its plan), or the error that stopped it (with
    retries, the last one). ``stopped``: the run was stopped (SIGTERM, Ctrl-C) before the job had a result,
    while it connected, waited to try again or had not started; that is no failure of the job, and
    ``error`` is then only what it last met, if anything."""

    job: MirrorJob
    result: MirrorResult | None = None
    plan: Plan | None = None
    error: KmcError | None = None
    attempts: int = 0
    stopped: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.stopped


@dataclass
class RunReport:
    """What :func:`run` did: one outcome per job, in the order of the jobs."""

    mode: str
    outcomes: list[JobOutcome]
    elapsed: float = 0.0
    dry_run: bool = False

    @property
    def results(self) -> list[MirrorResult]:
        return [outcome.result for outcome in self.outcomes if outcome.result is not None]

    @property
    def plans(self) -> list[Plan]:
        return [outcome.plan for outcome in self.outcomes if outcome.plan is not None]

    @property
    def records(self) -> int:
        return sum(result.records for result in self.results)

    @property
    def bytes(self) -> int:
        return sum(result.bytes for result in self.results)

    @property
    def complete(self) -> bool:
        """--once, and every job ran to the end offsets it saw at its start."""
        return self.mode == "once" and all(outcome.error is None and outcome.result is not None
                                           and outcome.result.complete for outcome in self.outcomes)

    def failure(self) -> KmcError | None:
        """The error to exit with: None when every job succeeded; PartialFailure (exit 6) naming each failed
        job and why when some did; when all failed, the first one's kind (so all unreachable exits 4, all
        locked 75) with every job named. With every job run, a ``--once`` run that found data gaps exits 7."""
        failed = [outcome for outcome in self.outcomes if outcome.failed]
        if not failed:
            gapped = [result.gap_error() for result in self.results if self.mode == "once" and result.gaps]
            if len(gapped) == 1:
                return gapped[0]
            if gapped:
                return DataGapError("; ".join(error.message for error in gapped))
            # --once --sync-groups: groups active on the target were not committed (exit 6)
            refused = [result.group_sync.failure() for result in self.results
                       if self.mode == "once" and result.group_sync is not None and result.group_sync.refused]
            if refused:
                return PartialFailure("; ".join(error.message for error in refused), hint=refused[0].hint)
            return None
        reasons = "; ".join(f"{outcome.job.label}: {outcome.error.message}" for outcome in failed)
        if len(failed) < len([outcome for outcome in self.outcomes if not outcome.stopped]):
            return PartialFailure(f"{len(failed)} of {len(self.outcomes)} mirrors failed: {reasons}")
        first = failed[0].error
        if len(failed) == 1:
            return first
        error = type(first)(f"all {len(failed)} mirrors failed: {reasons}", hint=first.hint)
        error.__cause__ = first
        return error

    def failures(self) -> list[dict[str, Any]]:
        return [{"flow": outcome.job.flow, "source": outcome.job.source.name, "target": outcome.job.target.name,
                 "exit_code": int(outcome.error.exit_code), "error": outcome.error.one_line()}
                for outcome in self.outcomes if outcome.failed]

    @property
    def stopped(self) -> list[JobOutcome]:
        """The jobs the run was stopped before (see JobOutcome.stopped)."""
        return [outcome for outcome in self.outcomes if outcome.stopped]

    def stopped_jobs(self) -> list[dict[str, Any]]:
        return [{"flow": outcome.job.flow, "source": outcome.job.source.name, "target": outcome.job.target.name,
                 "error": None if outcome.error is None else outcome.error.one_line()} for outcome in self.stopped]

    def to_dict(self) -> dict[str, Any]:
        """The ``-o json`` document of ``kmc aggregate`` and ``kmc flow run`` (keys in docs/flows.md)."""
        if self.dry_run:
            return {"plans": [plan.to_dict() for plan in self.plans], "failures": self.failures(),
                    "stopped": self.stopped_jobs()}
        return {"mode": self.mode, "complete": self.complete, "elapsed_seconds": round(self.elapsed, 3),
                "records": self.records, "bytes": self.bytes, "runs": [result.to_dict() for result in self.results],
                "failures": self.failures(), "stopped": self.stopped_jobs()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per job and source topic: flow, source, target and the topic's counts (a dry run: flow,
        source and the topic's plan)."""
        if self.dry_run:
            return [{"flow": outcome.job.flow, "source": outcome.job.source.name, **row}
                    for outcome in self.outcomes if outcome.plan is not None for row in outcome.plan.rows()]
        return [{"flow": result.flow, "source": result.source, "target": result.target, **row}
                for result in self.results for row in result.rows()]


def run(
    jobs: Sequence[MirrorJob],
    *,
    mode: str = "once",
    dry_run: bool = False,
    stop_event: threading.Event | None = None,
    progress_callback: ProgressCallback | None = None,
    notice_callback: NoticeCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retry: bool = False,
    processes: bool | None = None,
) -> RunReport:
    """Run (or with ``dry_run`` plan) every job and wait for all of them.

    Raises UsageError for what cannot work at all (a bad spec, sources that cannot share a target topic);
    a job that fails does not stop the others: its error is in its outcome. With ``retry`` and
    ``mode="follow"`` a job whose cluster could not be reached is tried again (after 5 s, doubling up to
    a minute) until ``stop_event`` is set, so a service outlives a datacenter that is down at its start.
    With ``mode="once"`` jobs that feed others run first, so one run carries records along a chain
    (dc1 -> central -> dr).

    ``processes``: run each job of a wave in a child process, so several mirrors use several cores: one
    mirror keeps a core busy decoding and encoding records in Python, and threads of one process share one
    core (docs/flows.md has the measurements). None (the default) does so when a wave has more than one job
    and the machine more than one core; a lone job runs in this process. The shards of a job with
    ``workers`` > 1 always run in processes of their own.
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    for job in jobs:
        job.validate()
        if job.spec.group is not None and mode != "follow" and not dry_run:
            raise UsageError("--group needs --follow",
                             hint="the members of a group share a mirror while they run; a --once run copies alone")
    started = time.monotonic()
    stop_event = stop_event or threading.Event()
    outcomes = [JobOutcome(job) for job in jobs]
    if stop_event.is_set():  # stopped before it began (a signal in kmc's first second): nothing to do
        return RunReport(mode, [dataclasses.replace(outcome, stopped=True) for outcome in outcomes], 0.0,
                         dry_run=dry_run)
    try:
        preflight(jobs, timeout, None if dry_run else notice_callback, prepare=not dry_run)
    except (Cancelled, UnreachableError):
        if not stop_event.is_set():
            raise
        # stopped while the targets were being checked: no job started, none failed
        return RunReport(mode, [dataclasses.replace(outcome, stopped=True) for outcome in outcomes],
                         time.monotonic() - started, dry_run=dry_run)
    if dry_run:
        _plan_all(outcomes, timeout, stop_event)
        return RunReport(mode, outcomes, time.monotonic() - started, dry_run=True)
    runner = _Runner(mode, stop_event, progress_callback, notice_callback, timeout, RETRY_FIRST if retry else None)
    by_job = {id(outcome.job): outcome for outcome in outcomes}
    for wave in (job_waves(jobs) if mode == "once" else [list(jobs)]):
        if runner.stop_event.is_set():
            break
        apart = processes if processes is not None else len(wave) > 1 and (os.cpu_count() or 1) > 1
        runner.run_wave([by_job[id(job)] for job in wave], apart)
    for outcome in outcomes:  # a later wave's jobs, never started
        if outcome.attempts == 0 and outcome.result is None:
            outcome.stopped = True
    return RunReport(mode, outcomes, time.monotonic() - started)


def stopped_result(job: MirrorJob, mode: str, elapsed: float) -> MirrorResult:
    """The result of a mirror the run was stopped before it connected: nothing copied, not complete, the
    clusters' ids unknown (null in JSON)."""
    return MirrorResult(flow=job.flow, source=job.source.name, target=job.target.name, source_cluster_id=None,
                        target_cluster_id=None, mode=mode, complete=False, elapsed=elapsed, topics=[])


def _plan_all(outcomes: Sequence[JobOutcome], timeout: float, stop_event: threading.Event) -> None:
    """Each job's plan, with every permission it needs checked (kmc.acls); a job that cannot be planned, or
    lacks a permission, gets its error (its plan says what is missing; stopped while it connected, the job
    is marked stopped)."""

    def plan(outcome: JobOutcome) -> None:
        job = outcome.job
        try:
            with KafkaSession(job.source, timeout) as source, KafkaSession(job.target, timeout) as target:
                outcome.plan, outcome.error = checked_plan(source, target, job.spec)
        except KmcError as exc:
            outcome.error = exc
            outcome.stopped = stop_event.is_set() and isinstance(exc, (Cancelled, UnreachableError))

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(outcomes)))) as pool:
        list(pool.map(plan, outcomes))


class _Runner:
    """The state of one run: its callbacks, and the child processes running now (to stop or kill them)."""

    def __init__(self, mode: str, stop_event: threading.Event, progress: ProgressCallback | None,
                 notice: NoticeCallback | None, timeout: float, retry_first: float | None) -> None:
        self.mode = mode
        self.stop_event = stop_event
        self.progress = progress
        self.notice = notice
        self.timeout = timeout
        self.retry_first = retry_first
        self.children: list[Worker] = []

    def run_wave(self, outcomes: Sequence[JobOutcome], apart: bool) -> None:
        """Run the wave's jobs, one thread each (which with ``apart`` drives a child process), until all of
        them are done."""
        threads = [threading.Thread(target=self._work, args=(outcome, apart), name=f"kmc-{outcome.job.label}",
                                    daemon=True) for outcome in outcomes]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                # joined with a timeout, so the main thread keeps handling signals (a second Ctrl-C gives up)
                while thread.is_alive():
                    thread.join(0.2)
                    if self.stop_event.is_set():
                        for child in list(self.children):
                            child.stop()
        except BaseException:
            for child in list(self.children):  # giving up: what they did is checkpointed, the rest is copied next time
                child.kill()
            raise

    def _work(self, outcome: JobOutcome, apart: bool) -> None:
        job = outcome.job

        def notice(level: str, text: str) -> None:
            if self.notice is not None:
                self.notice(job, level, text)

        delay = self.retry_first
        if self.stop_event.is_set():  # an earlier job of the wave took long enough for the run to be stopped
            outcome.stopped = True
            return
        while not self.stop_event.is_set():
            outcome.attempts += 1
            try:
                outcome.result = self._attempt(job, apart, notice)
                outcome.error = None
                return
            except KmcError as exc:
                outcome.error = exc
            except Exception as exc:  # noqa: BLE001 - one broken job must not take the others down
                outcome.error = KafkaOperationError(f"internal error: {type(exc).__name__}: {exc}",
                                                    hint="run again with --debug and report it")
                return
            # Stopped while it connected (the connection abandoned, or given up at the same moment): the
            # stop came first, the job did not fail.
            if self.stop_event.is_set() and isinstance(outcome.error, (Cancelled, UnreachableError)):
                outcome.stopped = True
                return
            if delay is None or self.mode != "follow" or not isinstance(outcome.error, UnreachableError):
                return
            notice("warn", Notice(f"{outcome.error.message}; trying again in {delay:g}s", "source-unreachable"))
            if self.stop_event.wait(delay):
                outcome.stopped = True  # stopped while it waited to try again: a service stopping in an outage
                return
            delay = min(delay * 2, RETRY_MAX)

    def _attempt(self, job: MirrorJob, apart: bool, notice: Callable[[str, str], None]) -> MirrorResult:
        if not job.spec.sync_groups:
            return self._mirror(job, apart, notice)
        spec = job.spec
        with GroupSync(job.source, job.target, flow=spec.flow, rename=spec.rename, groups=spec.sync_groups,
                       topics=spec.topics, exclude=spec.exclude, timeout=self.timeout) as sync:
            syncing = _SyncRounds(sync, notice)
            if self.mode != "follow":
                result = self._mirror(job, apart, notice)
                return dataclasses.replace(result, group_sync=syncing.round(final=True, raise_errors=True))
            done = threading.Event()
            thread = threading.Thread(target=syncing.every, args=(spec.sync_interval, done, self.stop_event),
                                      name=f"kmc-sync-{job.label}", daemon=True)
            thread.start()
            try:
                result = self._mirror(job, apart, notice)
            finally:
                done.set()
                thread.join()
            # stopped: one last round, so the target's groups are as current as the mirror (a planned failover);
            # not when the last round failed (the source is gone: an unplanned failover must not wait for it)
            final = syncing.round(final=True) if syncing.healthy else None
            return dataclasses.replace(result, group_sync=final or syncing.last)

    def _mirror(self, job: MirrorJob, apart: bool, notice: Callable[[str, str], None]) -> MirrorResult:
        if job.workers > 1:
            return self._sharded(job, notice)
        if apart:
            return self._in_child(job, notice)
        return run_job(job, self.mode, self.stop_event, self.progress, notice, self.timeout)

    def _in_child(self, job: MirrorJob, notice: Callable[[str, str], None]) -> MirrorResult:
        """What :func:`run_mirror` does, in a child process (:func:`mirror_task`); raises what it raised."""
        child = Worker("kmc.mirror.runner:mirror_task", {"job": job, "mode": self.mode, "timeout": self.timeout},
                       name="the mirror process")
        self.children.append(child)
        if self.stop_event.is_set():
            child.stop()
        try:
            for event in child.events():
                if event[0] == "progress":
                    if self.progress is not None:
                        self.progress(event[1])
                else:
                    notice(event[1], event[2])
            return child.result()
        finally:
            self.children.remove(child)
            child.close()

    def _sharded(self, job: MirrorJob, notice: Callable[[str, str], None]) -> MirrorResult:
        """``job``'s source partitions split over ``job.workers`` child processes: worker i copies the
        partitions p with p % workers == i. This process holds the mirror's own (unsharded) lock for the
        whole run, so any other run of the same mirror, sharded or not, exits 75; each worker holds a lock
        of its own shard. Progress and the result are the workers' merged per topic, in the shape of one
        run_mirror's."""
        spec, workers = job.spec, job.workers
        shards = [JobOutcome(MirrorJob(job.source, job.target, dataclasses.replace(spec, shard=(index, workers))))
                  for index in range(workers)]
        seen: set[tuple[str, str]] = set()
        latest: dict[tuple[int, int] | None, MirrorProgress] = {}
        lock = threading.Lock()

        def shard_notice(shard: MirrorJob, level: str, text: str) -> None:  # noqa: ARG001 - all one mirror
            with lock:  # what every worker says (a plan warning, a created topic) is said once
                if (level, text) in seen:
                    return
                seen.add((level, text))
            notice(level, text)

        def shard_progress(event: MirrorProgress) -> None:
            with lock:
                latest[event.shard] = event
                merged = merge_progress(list(latest.values()))
            if self.progress is not None:
                self.progress(merged)

        started = time.monotonic()
        shard_runner = _Runner(self.mode, self.stop_event, shard_progress, shard_notice, self.timeout,
                               self.retry_first)
        shard_runner.children = self.children  # one list: a second Ctrl-C kills every process
        with mirror_lock(job.source, job.target, spec, self.timeout):
            shard_runner.run_wave(shards, apart=True)
        for shard in shards:
            if shard.failed:
                raise shard.error  # the workers are one mirror: its first failure is the run's
        results = [shard.result for shard in shards if shard.result is not None]
        if not results:
            raise Cancelled("stopped before the mirror started")
        return merge_results(results, time.monotonic() - started, complete=len(results) == len(shards))


class _SyncRounds:
    """The rounds of one job's group sync, with what they say: a group refused (active on the target) or a
    failed round is said once, until it changes."""

    def __init__(self, sync: GroupSync, notice: Callable[[str, str], None]) -> None:
        self.sync = sync
        self.notice = notice
        self.last: TranslationReport | None = None
        self._refused: set[str] = set()
        self._failure: str | None = None

    @property
    def healthy(self) -> bool:
        """The last round (if any) succeeded."""
        return self._failure is None

    def every(self, interval: float, done: threading.Event, stop: threading.Event) -> None:
        """A round every ``interval`` seconds until ``done`` or ``stop`` is set (which also ends a round that
        is reading records)."""
        while not done.is_set() and not stop.is_set():
            self.round(abandon=done)
            if done.wait(interval):
                return

    def round(self, final: bool = False, raise_errors: bool = False,
              abandon: threading.Event | None = None) -> TranslationReport | None:
        """One round; ``final`` says what it committed. A failure is raised (``raise_errors``) or said."""
        try:
            report = self.sync.round(abandon)
        except Interrupted:
            return None
        except KmcError as exc:
            if raise_errors:
                raise
            if exc.message != self._failure:
                self._failure = exc.message
                self.notice("warn", f"group offset sync failed, trying again: {exc.one_line()}")
            return None
        self._failure = None
        refused = {group.group: group.refused for group in report.refused}
        for name in sorted(refused.keys() - self._refused):
            self.notice("warn", f"group {name}: offsets not synced: {refused[name]}")
        self._refused = set(refused)
        if final and report.committed:
            self.notice("info", f"group offsets synced: {report.committed} partition(s) of "
                                f"{sum(1 for group in report.groups if any(p.committed for p in group.partitions))} "
                                f"group(s) moved forward on {report.target}")
        self.last = report
        return report


def run_job(job: MirrorJob, mode: str, stop_event: threading.Event, progress: ProgressCallback | None,
            notice: Callable[[str, str], None], timeout: float) -> MirrorResult:
    """One job in this process: its mirror, or with ``spec.group`` this process's membership of the group
    (kmc/mirror/member.py), its generations' results merged into one."""
    if job.spec.group is None:
        return run_mirror(job.source, job.target, job.spec, mode=mode, stop_event=stop_event,
                          progress_callback=progress, notice_callback=notice, timeout=timeout)
    started = time.monotonic()
    results = run_member(job, stop_event=stop_event, progress_callback=progress or (lambda event: None),
                         notice_callback=notice, timeout=timeout)
    return merge_results(results, time.monotonic() - started, complete=False)


def mirror_task(request: dict[str, Any], channel: Channel) -> MirrorResult:
    """The task of a mirror process (kmc.worker): run one job, sending progress and notices."""
    job: MirrorJob = request["job"]
    if channel.stop.is_set():
        raise Cancelled(f"{job.label}: stopped before the mirror started")
    return run_job(job, request["mode"], channel.stop, lambda progress: channel.send("progress", progress),
                   lambda level, text: channel.send("notice", level, text), request["timeout"])


# ------------------------------------------------------------------------------------------ merging shards


def merge_results(results: Sequence[MirrorResult], elapsed: float, complete: bool = True) -> MirrorResult:
    """The shards' results of one mirror as one: per topic, counts and lags summed (a lag is unknown when any
    shard's is); changes and warnings once each, in order."""
    first = results[0]
    topics: dict[str, TopicResult] = {}
    for result in results:
        for topic in result.topics:
            merged = topics.get(topic.source_topic)
            if merged is None:
                topics[topic.source_topic] = dataclasses.replace(topic)
                continue
            merged.partitions = max(merged.partitions, topic.partitions)
            merged.records += topic.records
            merged.bytes += topic.bytes
            merged.skipped += topic.skipped
            merged.redelivered += topic.redelivered
            merged.gaps += topic.gaps
            merged.lag = None if merged.lag is None or topic.lag is None else merged.lag + topic.lag
    return dataclasses.replace(
        first, complete=complete and all(result.complete for result in results), elapsed=elapsed,
        topics=list(topics.values()),
        changes=list(dict.fromkeys(change for result in results for change in result.changes)),
        warnings=list(dict.fromkeys(warning for result in results for warning in result.warnings)),
        gaps=[gap for result in results for gap in result.gaps])


def merge_progress(events: Sequence[MirrorProgress]) -> MirrorProgress:
    """The shards' latest progress reports as one (see :func:`merge_results`)."""
    topics: dict[str, TopicProgress] = {}
    for event in events:
        for topic in event.topics:
            seen = topics.get(topic.source_topic)
            if seen is None:
                topics[topic.source_topic] = topic
                continue
            topics[topic.source_topic] = TopicProgress(
                topic.source_topic, topic.target_topic, seen.records + topic.records, seen.bytes + topic.bytes,
                seen.rate + topic.rate, None if seen.lag is None or topic.lag is None else seen.lag + topic.lag,
                None if seen.total is None or topic.total is None else seen.total + topic.total,
                seen.redelivered + topic.redelivered, seen.skipped + topic.skipped, seen.gaps + topic.gaps)
    errors: dict[str, int] = {}
    for event in events:
        for kind, count in event.errors:
            errors[kind] = errors.get(kind, 0) + count
    return dataclasses.replace(
        events[0], elapsed=max(event.elapsed for event in events), topics=tuple(topics.values()), shard=None,
        partitions=tuple(part for event in events for part in event.partitions), errors=tuple(sorted(errors.items())),
        send_latency=sum((event.send_latency for event in events), EMPTY_LATENCY),
        fetch_latency=sum((event.fetch_latency for event in events), EMPTY_LATENCY))

