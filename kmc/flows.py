"""Several mirrors as one topology: aggregation (fan-in), fan-out and routing by topic pattern.

A *job* is one source -> target mirror (:class:`MirrorJob`); ``kmc aggregate`` makes one job per source,
a named flow (``[flows.NAME]``) one job per ``from`` cluster. :func:`run_jobs` runs jobs concurrently (in
child processes when several run at once), each through :func:`kmc.mirror.run_mirror` (its own checkpoints
and lock), so one failing source does not stop the others. :func:`check_flows` finds what would go wrong
in a config's flows before anything runs; :func:`flow_status` says how far behind each flow is, from its
checkpoints. Library code: no printing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.admin import OffsetSpec

from kmc.client import DEFAULT_TIMEOUT, KafkaSession, RedactSecrets, gather_clusters, translate_errors
from kmc.errors import (
    ConfigError,
    DataGapError,
    Interrupted,
    KafkaOperationError,
    KmcError,
    PartialFailure,
    UnknownClusterError,
    UnreachableError,
    UsageError,
)
from kmc.metadata import compile_patterns, describe_topics, is_internal, matches, render_topic_name
from kmc.mirror import (
    CHECKPOINT_TOPIC,
    DEFAULT_FLOW,
    Checkpoint,
    CheckpointStore,
    MirrorProgress,
    MirrorResult,
    MirrorSpec,
    TopicProgress,
    TopicResult,
    apply_plan,
    mirror_lock,
    plan_mirror,
    run_mirror,
)
from kmc.profiles import Cluster, Config, Flow, resolve_cluster

try:  # the regex parser, to tell literal topic patterns from open ones
    from re import _constants as sre_constants
    from re import _parser as sre_parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants  # type: ignore[no-redef]
    import sre_parse as sre_parser  # type: ignore[no-redef]

PREFIX_RENAME = "{source}.{topic}"  # kmc aggregate's default: each source's topics apart
MERGE_RENAME = "{topic}"  # kmc aggregate --merge: one target topic for every source's topic
PARTITIONERS = ("same", "key")
RETRY_FIRST = 5.0  # --follow: seconds before a source that could not be reached is tried again
RETRY_MAX = 60.0
MAX_LAPS = 10  # a cycle whose renamed names still match after this many laps grows without end
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

NoticeCallback = Callable[["MirrorJob", str, str], None]  # (job, level "info" | "warn", message)


def cluster_key(cluster: Cluster) -> tuple[str, ...]:
    """What identifies a cluster across profiles: its bootstrap servers (as the mirror lock does)."""
    return tuple(sorted(cluster.bootstrap))


def is_merge(rename: str) -> bool:
    """A rename without ``{source}`` writes every source's topic into the same target topic."""
    return "{source}" not in rename


# ------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class MirrorJob:
    """One source -> target mirror, with what :func:`run_mirror` needs."""

    source: Cluster
    target: Cluster
    spec: MirrorSpec

    @property
    def flow(self) -> str:
        return self.spec.flow

    @property
    def label(self) -> str:
        """How messages name this job: ``dc1 -> central``, with the flow when it is a named one."""
        route = f"{self.source.name} -> {self.target.name}"
        return route if self.flow == DEFAULT_FLOW else f"{self.flow}: {route}"


def aggregate_jobs(sources: Sequence[Cluster], target: Cluster, spec: MirrorSpec, *,
                   allow_self: bool = False) -> list[MirrorJob]:
    """One job per source, all into ``target`` with ``spec``; UsageError for what cannot work at all.

    The target among the sources is refused unless ``allow_self`` (flows, whose cycles ``check_flows``
    analyses): aggregated into itself, a cluster would copy the copies of its topics again at every run.
    """
    spec.validate()
    if not sources:
        raise UsageError("give at least one source cluster")
    seen: dict[tuple[str, ...], str] = {}
    for source in sources:
        key = cluster_key(source)
        if key in seen:
            raise UsageError(f"{source.name} is given twice as a source" if seen[key] == source.name
                             else f"{seen[key]} and {source.name} are the same cluster ({','.join(key)})")
        seen[key] = source.name
        if key == cluster_key(target) and not allow_self:
            raise UsageError(f"{source.name} is both a source and the target",
                             hint="a cluster aggregated into itself would copy its copies again at every run")
        _check_source_name(source, spec.rename, "--rename")
    return [MirrorJob(source, target, spec) for source in sources]


def _check_source_name(source: Cluster, rename: str, where: str) -> None:
    if is_merge(rename):
        return
    sample = render_topic_name(rename, "topic", source.name)
    if not _TOPIC_NAME.fullmatch(sample):
        raise UsageError(f"{where} '{rename}' cannot use {source.name} as {{source}}: it would give '{sample}', "
                         "not a valid topic name", hint="name the source by a profile (kmc profile add NAME ...)")


def spec_options() -> frozenset[str]:
    """The MirrorSpec fields this version of the mirror engine has."""
    return frozenset(item.name for item in dataclasses.fields(MirrorSpec))


def unsupported_settings(flow: Flow) -> list[tuple[str, str]]:
    """(key, reason) for each setting of ``flow`` that the mirror engine cannot honour."""
    options = spec_options()
    found = []
    if flow.exactly_once and "exactly_once" not in options:
        found.append(("exactly_once", "exactly-once delivery is not available in this version of kmc "
                                      "(flows copy at least once); remove the key or set it to false"))
    if flow.sync_groups and "sync_groups" not in options:
        found.append(("sync_groups", "consumer group offset sync is not available in this version of kmc; "
                                     "remove the key"))
    if flow.partitioner != "same" and "partitioner" not in options:
        found.append(("partitioner", "this version of the mirror engine copies partition i to partition i only"))
    return found


def flow_spec(flow: Flow, **options: Any) -> MirrorSpec:
    """The MirrorSpec of a named flow; ``options`` are run options (start, compression, ...)."""
    settings: dict[str, Any] = {
        # topics = [".*"] (the default) selects what an empty selection selects; writing it as () keeps the
        # lock identity equal to an ad-hoc `kmc mirror --flow NAME` of the same clusters
        "topics": () if flow.topics == (".*",) else flow.topics,
        "exclude": flow.exclude,
        "rename": flow.rename,
        "flow": flow.name,
        "sync_configs": flow.sync_configs,
    }
    supported = spec_options()
    if "partitioner" in supported:
        settings["partitioner"] = flow.partitioner
    if "exactly_once" in supported:
        settings["exactly_once"] = flow.exactly_once
    if "sync_groups" in supported:
        settings["sync_groups"] = flow.sync_groups
    settings.update(options)
    return MirrorSpec(**settings)


def flow_clusters(config: Config, flow: Flow) -> tuple[list[Cluster], Cluster]:
    """The flow's source and target clusters; ConfigError naming the flow and key for an unknown one."""
    sources = []
    for name in flow.sources:
        try:
            sources.append(resolve_cluster(config, name))
        except UnknownClusterError as exc:
            raise ConfigError(f"flows.{flow.name}.from: {exc.message}") from None
    try:
        target = resolve_cluster(config, flow.target)
    except UnknownClusterError as exc:
        raise ConfigError(f"flows.{flow.name}.to: {exc.message}") from None
    return sources, target


def flow_jobs(config: Config, flow: Flow, **options: Any) -> list[MirrorJob]:
    """One job per source of ``flow``; ConfigError for what the flow's table gets wrong."""
    for key, reason in unsupported_settings(flow):
        raise ConfigError(f"flows.{flow.name}.{key}: {reason}")
    sources, target = flow_clusters(config, flow)
    spec = flow_spec(flow, **options)
    if flow.rename == MERGE_RENAME and any(cluster_key(source) == cluster_key(target) for source in sources):
        raise ConfigError(f"flows.{flow.name}.rename: {target.name} is also a source: an identity rename would "
                          "copy its topics onto themselves")
    try:
        return aggregate_jobs(sources, target, spec, allow_self=True)
    except UsageError as exc:
        raise ConfigError(f"flows.{flow.name}: {exc.message}", hint=exc.hint) from None


# ------------------------------------------------------------------------------------------ merging


@dataclass(frozen=True)
class MergeConflict:
    """Sources whose topics land in one target topic but cannot share it."""

    target_topic: str
    writers: tuple[tuple[str, str, int], ...]  # (source name, source topic, partitions)
    kind: str  # "partitions": counts differ (merge mode); "names": two sources collide in prefix mode

    def describe(self) -> str:
        if self.kind == "names":
            parts = " and ".join(f"{source} '{topic}'" for source, topic, _ in self.writers)
            return f"{parts} would both be written to {self.target_topic}"
        counts = ", ".join(f"{count} in {source}" + (f" ({topic})" if topic != self.target_topic else "")
                           for source, topic, count in self.writers)
        return f"{self.target_topic} has differing partition counts: {counts}"


def merge_conflicts(listing: Mapping[str, Mapping[str, int]], rename: str, partitioner: str = "same",
                    ) -> list[MergeConflict]:
    """Given each source's topics (source name -> {topic: partitions}), the target topics two sources
    cannot share: with ``{source}`` in the rename any shared name is a collision; without it (merge),
    differing partition counts are, unless records are rehashed by key."""
    writers: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for source, topics in listing.items():
        for topic, partitions in topics.items():
            writers[render_topic_name(rename, topic, source)].append((source, topic, partitions))
    conflicts = []
    for target_topic, found in sorted(writers.items()):
        if len({source for source, _, _ in found}) < 2:
            continue
        if not is_merge(rename):
            conflicts.append(MergeConflict(target_topic, tuple(found), "names"))
        elif partitioner == "same" and len({count for _, _, count in found}) > 1:
            conflicts.append(MergeConflict(target_topic, tuple(found), "partitions"))
    return conflicts


def preflight(jobs: Sequence[MirrorJob], timeout: float = DEFAULT_TIMEOUT,
              notice: NoticeCallback | None = None, *, prepare: bool = True) -> None:
    """Checks that need the sources' topic lists, before any job starts: two sources that cannot share a
    target topic are a UsageError. In merge mode with ``partitioner="key"`` (and ``prepare``), a target
    topic the sources disagree on is created first with the largest partition count (whichever source got
    there first would otherwise decide it). A source that does not answer is left out: its own run
    reports it."""
    groups: dict[tuple[str, tuple[str, ...]], list[MirrorJob]] = defaultdict(list)
    for job in jobs:
        groups[(job.flow, cluster_key(job.target))].append(job)
    shared = [group for group in groups.values() if len(group) > 1]
    if not shared:
        return
    clusters = {cluster_key(job.source): job.source for group in shared for job in group}
    outcomes = gather_clusters(list(clusters.values()),
                               lambda session: describe_topics(session, with_offsets=False), timeout)
    listed = {cluster_key(outcome.cluster): outcome.value for outcome in outcomes if outcome.error is None}
    for group in shared:
        spec = group[0].spec
        include, exclude = compile_patterns(spec.topics, "--topics"), compile_patterns(spec.exclude, "--exclude")
        listing = {job.source.name: {topic.name: len(topic.partitions) for topic in listed[cluster_key(job.source)]
                                     if matches(topic.name, include, exclude)}
                   for job in group if cluster_key(job.source) in listed}
        partitioner = getattr(spec, "partitioner", "same")
        conflicts = merge_conflicts(listing, spec.rename, partitioner)
        if conflicts:
            where = "" if spec.flow == DEFAULT_FLOW else f"flow {spec.flow}: "
            hint = ("merging maps partition i to partition i; use --partitioner key (partitioner = \"key\" in a "
                    "flow) to rehash by key, or give the topics equal partition counts"
                    if conflicts[0].kind == "partitions" else "use a rename that keeps the sources apart")
            raise UsageError(where + "; ".join(conflict.describe() for conflict in conflicts), hint=hint)
        if prepare and is_merge(spec.rename) and partitioner == "key":
            _create_merged_topics(group, listing, timeout, notice)


def _create_merged_topics(group: Sequence[MirrorJob], listing: Mapping[str, Mapping[str, int]], timeout: float,
                          notice: NoticeCallback | None) -> None:
    by_name = {job.source.name: job for job in group}
    widest: dict[str, tuple[int, str, str]] = {}  # target topic -> (partitions, source, source topic)
    counts: dict[str, set[int]] = defaultdict(set)
    for source, topics in listing.items():
        for topic, partitions in topics.items():
            name = render_topic_name(group[0].spec.rename, topic, source)
            counts[name].add(partitions)
            widest[name] = max(widest.get(name, (0, "", "")), (partitions, source, topic))
    differing = {name for name, values in counts.items() if len(values) > 1}
    if not differing:
        return
    by_source: dict[str, list[str]] = defaultdict(list)
    for name in sorted(differing):
        by_source[widest[name][1]].append(widest[name][2])
    target = group[0].target
    with KafkaSession(target, timeout) as target_session:
        existing = {topic.name for topic in describe_topics(target_session, with_offsets=False)}
        for source, topics in by_source.items():
            missing = [topic for topic in topics
                       if render_topic_name(group[0].spec.rename, topic, source) not in existing]
            if not missing:
                continue
            job = by_name[source]
            spec = dataclasses.replace(job.spec, topics=tuple(re.escape(topic) for topic in missing), exclude=())
            with KafkaSession(job.source, timeout) as source_session:
                changes = apply_plan(target_session, plan_mirror(source_session, target_session, spec))
            for change in changes:
                if notice is not None:
                    notice(job, "info", change)


# ------------------------------------------------------------------------------------------ running


@dataclass
class JobOutcome:
    """What one job gave: its result, or the error that stopped it (with --follow, the last one)."""

    job: MirrorJob
    result: MirrorResult | None = None
    error: KmcError | None = None
    attempts: int = 0


def run_jobs(
    jobs: Sequence[MirrorJob],
    *,
    mode: str = "once",
    stop_event: threading.Event | None = None,
    progress_callback: Callable[[MirrorProgress], None] | None = None,
    notice_callback: NoticeCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retry_first: float = RETRY_FIRST,
    processes: bool | None = None,
) -> list[JobOutcome]:
    """Run every job concurrently and wait for all of them.

    A job that fails does not stop the others; its error is in its outcome. With ``mode="follow"`` a
    job whose cluster could not be reached is tried again (after ``retry_first`` seconds, doubling up to
    a minute) until ``stop_event`` is set, so a service outlives a datacenter that is down at its start.
    With ``mode="once"`` jobs that feed others run first (:func:`job_waves`), so one run carries records
    along a chain (dc1 -> central -> dr); a job not started because of a stop has neither result nor error.

    ``processes``: run each job of a wave in a child process (:func:`serve_job`), so several mirrors use
    several cores: one mirror keeps a core busy decoding and encoding records in Python, and threads of one
    process share one core (docs/flows.md has the measurements). None (the default) does so when a wave has
    more than one job and the machine more than one core; a lone job runs in this process.
    """
    stop_event = stop_event or threading.Event()
    outcomes = [JobOutcome(job) for job in jobs]
    by_job = {id(outcome.job): outcome for outcome in outcomes}
    for wave in (job_waves(jobs) if mode == "once" else [list(jobs)]):
        if stop_event.is_set():
            break
        apart = processes if processes is not None else len(wave) > 1 and (os.cpu_count() or 1) > 1
        _run_wave([by_job[id(job)] for job in wave], mode, stop_event, progress_callback, notice_callback, timeout,
                  retry_first, apart)
    return outcomes


def job_waves(jobs: Sequence[MirrorJob]) -> list[list[MirrorJob]]:
    """``jobs`` in waves: a job waits for the jobs whose target is its source (central -> dr after
    dc1 -> central). Jobs that feed each other in a cycle run together, with everything after them."""
    remaining = list(jobs)
    waves = []
    while remaining:
        ready = [job for job in remaining
                 if not any(other is not job and cluster_key(other.target) == cluster_key(job.source)
                            for other in remaining)]
        wave = ready or remaining
        waves.append(wave)
        started = {id(job) for job in wave}
        remaining = [job for job in remaining if id(job) not in started]
    return waves


def _run_wave(outcomes: Sequence[JobOutcome], mode: str, stop_event: threading.Event,
              progress_callback: Callable[[MirrorProgress], None] | None, notice_callback: NoticeCallback | None,
              timeout: float, retry_first: float, apart: bool) -> None:
    """Run the wave's jobs, one thread each (which with ``apart`` drives a child process), until all of them
    are done."""
    children: list[_Child] = []

    def work(outcome: JobOutcome) -> None:
        job = outcome.job

        def notice(level: str, text: str) -> None:
            if notice_callback is not None:
                notice_callback(job, level, text)

        delay = retry_first
        while not stop_event.is_set() or outcome.attempts == 0:
            outcome.attempts += 1
            try:
                if apart:
                    outcome.result = _run_in_child(job, mode, stop_event, progress_callback, notice, timeout,
                                                   children)
                else:
                    outcome.result = run_mirror(job.source, job.target, job.spec, mode=mode, stop_event=stop_event,
                                                progress_callback=progress_callback, notice_callback=notice,
                                                timeout=timeout)
                outcome.error = None
                return
            except KmcError as exc:
                outcome.error = exc
            except Exception as exc:  # noqa: BLE001 - one broken job must not take the others down
                outcome.error = KafkaOperationError(f"internal error: {type(exc).__name__}: {exc}",
                                                    hint="run again with --debug and report it")
                return
            if mode != "follow" or not isinstance(outcome.error, UnreachableError):
                return
            notice("warn", f"{outcome.error.message}; trying again in {delay:g}s")
            if stop_event.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)

    threads = [threading.Thread(target=work, args=(outcome,), name=f"kmc-{outcome.job.label}", daemon=True)
               for outcome in outcomes]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            # joined with a timeout, so the main thread keeps handling signals (a second Ctrl-C gives up)
            while thread.is_alive():
                thread.join(0.2)
                if stop_event.is_set():
                    for child in list(children):
                        child.stop()
    except BaseException:
        for child in list(children):  # giving up: what they did is checkpointed, the rest is copied next time
            child.kill()
        raise


# ------------------------------------------------------------------------------------------ one mirror, sharded


def run_sharded_mirror(
    source: Cluster,
    target: Cluster,
    spec: MirrorSpec,
    workers: int,
    *,
    mode: str = "once",
    stop_event: threading.Event | None = None,
    progress_callback: Callable[[MirrorProgress], None] | None = None,
    notice_callback: Callable[[str, str], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> MirrorResult:
    """What :func:`run_mirror` does, with ``spec``'s source partitions split over ``workers`` child processes
    (``kmc mirror --workers``): worker i copies the partitions p with p % workers == i.

    This process holds the mirror's own (unsharded) lock for the whole run, so any other run of the same
    mirror, sharded or not, exits 75; each worker holds a lock of its own shard. Progress and the result
    are the workers' merged per topic, in the shape of one run_mirror's. ``workers=1`` is run_mirror.
    """
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers == 1:
        return run_mirror(source, target, spec, mode=mode, stop_event=stop_event, progress_callback=progress_callback,
                          notice_callback=notice_callback, timeout=timeout)
    spec.validate()
    stop_event = stop_event or threading.Event()
    jobs = [MirrorJob(source, target, dataclasses.replace(spec, shard=(index, workers))) for index in range(workers)]
    seen: set[tuple[str, str]] = set()
    seen_lock = threading.Lock()

    def notice(job: MirrorJob, level: str, text: str) -> None:  # noqa: ARG001 - every shard is the same mirror
        with seen_lock:  # what every worker says (a plan warning, a created topic) is said once
            if (level, text) in seen:
                return
            seen.add((level, text))
        if notice_callback is not None:
            notice_callback(level, text)

    latest: dict[tuple[int, int] | None, MirrorProgress] = {}

    def progress(event: MirrorProgress) -> None:
        with seen_lock:
            latest[event.shard] = event
            merged = merge_progress(list(latest.values()))
        if progress_callback is not None:
            progress_callback(merged)

    started = time.monotonic()
    with mirror_lock(source, target, spec, timeout):
        outcomes = run_jobs(jobs, mode=mode, stop_event=stop_event, progress_callback=progress, notice_callback=notice,
                            timeout=timeout, retry_first=RETRY_FIRST, processes=True)
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error  # the workers are one mirror: its first failure is the run's
    results = [outcome.result for outcome in outcomes if outcome.result is not None]
    if not results:
        raise Interrupted("stopped before the mirror started")
    return merge_results(results, time.monotonic() - started, complete=len(results) == len(outcomes))


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
                None if seen.total is None or topic.total is None else seen.total + topic.total)
    return dataclasses.replace(events[0], elapsed=max(event.elapsed for event in events),
                               topics=tuple(topics.values()), shard=None)


# ------------------------------------------------------------------------------------------ mirror processes

JOB_COMMAND = (sys.executable, "-c", "from kmc.flows import serve_job; serve_job()")
_LENGTH = struct.Struct(">I")


def _picklable(cluster: Cluster) -> Cluster:
    return dataclasses.replace(cluster, client=dict(cluster.client))  # a mappingproxy does not pickle


class _Child:
    """One job's mirror process: the job goes down its stdin (secrets included: a pipe, never argv), then
    ``stop`` or the end of stdin stops it cleanly; progress, notices and the outcome come back on its stdout
    as length-prefixed pickles. Its stderr is ours."""

    def __init__(self, job: MirrorJob, mode: str, timeout: float) -> None:
        self.job = job
        self.process = subprocess.Popen(JOB_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._stopped = False
        request = {"job": MirrorJob(_picklable(job.source), _picklable(job.target), job.spec), "mode": mode,
                   "timeout": timeout, "log_levels": (logging.getLogger().getEffectiveLevel(),
                                                      logging.getLogger("kafka").getEffectiveLevel())}
        data = pickle.dumps(request)
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(_LENGTH.pack(len(data)) + data)
            self.process.stdin.flush()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write(b"stop\n")
                self.process.stdin.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def events(self) -> Iterator[tuple[Any, ...]]:
        pipe = self.process.stdout
        while True:
            header = pipe.read(_LENGTH.size)
            if len(header) < _LENGTH.size:
                return
            (length,) = _LENGTH.unpack(header)
            payload = pipe.read(length)
            if len(payload) < length:
                return
            yield pickle.loads(payload)  # noqa: S301 - our own child process, over a pipe

    def close(self) -> int:
        self.stop()
        self.process.stdout.close()
        return self.process.wait()


def _run_in_child(job: MirrorJob, mode: str, stop_event: threading.Event,
                  progress_callback: Callable[[MirrorProgress], None] | None, notice: Callable[[str, str], None],
                  timeout: float, children: list[_Child]) -> MirrorResult:
    """What :func:`run_mirror` does, in a child process; raises what it raised."""
    child = _Child(job, mode, timeout)
    children.append(child)
    if stop_event.is_set():
        child.stop()
    outcome: tuple[Any, ...] | None = None
    try:
        for event in child.events():
            if event[0] == "progress":
                if progress_callback is not None:
                    progress_callback(event[1])
            elif event[0] == "notice":
                notice(event[1], event[2])
            else:
                outcome = event
    finally:
        children.remove(child)
        status = child.close()
    if outcome is None:
        raise KafkaOperationError(f"the mirror process ended unexpectedly (exit status {status})")
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


def serve_job() -> None:
    """The body of a mirror process (see :class:`_Child`): run one job, report on stdout.

    Ctrl-C is left to the parent, which asks its children to stop; SIGTERM (systemd stops the whole
    service) stops it cleanly too, as does the parent going away (the end of stdin).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    out = sys.stdout.buffer
    lock = threading.Lock()

    def send(*event: Any) -> None:
        data = pickle.dumps(event)
        with lock:
            out.write(_LENGTH.pack(len(data)) + data)
            out.flush()

    def read(size: int) -> bytes:
        # the raw file descriptor: a thread blocked in a buffered stdin would hold its lock at exit
        data = b""
        while len(data) < size:
            chunk = os.read(0, size - len(data))
            if not chunk:
                raise SystemExit(0)  # the parent went away before sending the job
            data += chunk
        return data

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            os.read(0, 64)  # "stop", or the end: the parent is gone
        stop.set()

    request = pickle.loads(read(_LENGTH.unpack(read(_LENGTH.size))[0]))  # noqa: S301 - from our parent
    root_level, kafka_level = request["log_levels"]
    logging.basicConfig(level=root_level, format="kmc: %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
    logging.getLogger("kafka").setLevel(kafka_level)
    threading.Thread(target=watch_stdin, daemon=True).start()
    job: MirrorJob = request["job"]
    try:
        result = run_mirror(job.source, job.target, job.spec, mode=request["mode"], stop_event=stop,
                            progress_callback=lambda progress: send("progress", progress),
                            notice_callback=lambda level, text: send("notice", level, text),
                            timeout=request["timeout"])
        send("result", result)
    except KmcError as exc:
        send("error", exc)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
        send("error", KafkaOperationError(f"internal error: {type(exc).__name__}: {exc}",
                                          hint="run again with --debug and report it"))


def outcome_failure(outcomes: Sequence[JobOutcome], mode: str = "follow") -> KmcError | None:
    """The error to exit with: None when every job succeeded; PartialFailure (exit 6) naming each failed
    job and why when some did; when all failed, the first one's kind (so all unreachable exits 4, all
    locked 75) with every job named. With every job run, a ``--once`` run that found data gaps exits 7."""
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    if not failed:
        gapped = [outcome.result.gap_error() for outcome in outcomes
                  if mode == "once" and outcome.result is not None and outcome.result.gaps]
        if gapped:
            return DataGapError("; ".join(error.message for error in gapped))
        return None
    reasons = "; ".join(f"{outcome.job.label}: {outcome.error.message}" for outcome in failed)
    if len(failed) < len(outcomes):
        return PartialFailure(f"{len(failed)} of {len(outcomes)} mirrors failed: {reasons}")
    first = failed[0].error
    if len(failed) == 1:
        return first
    error = type(first)(f"all {len(failed)} mirrors failed: {reasons}", hint=first.hint)
    error.__cause__ = first
    return error


def outcomes_document(outcomes: Sequence[JobOutcome], mode: str, elapsed: float) -> dict[str, Any]:
    """The ``-o json`` document of ``kmc aggregate`` and ``kmc flow run`` (keys in docs/flows.md)."""
    results = [outcome.result for outcome in outcomes if outcome.result is not None]
    return {
        "mode": mode,
        "complete": all(outcome.error is None and outcome.result is not None and outcome.result.complete
                        for outcome in outcomes) and mode == "once",
        "elapsed_seconds": round(elapsed, 3),
        "records": sum(result.records for result in results),
        "bytes": sum(result.bytes for result in results),
        "runs": [result.to_dict() for result in results],
        "failures": [{"flow": outcome.job.flow, "source": outcome.job.source.name, "target": outcome.job.target.name,
                      "exit_code": int(outcome.error.exit_code), "error": outcome.error.one_line()}
                     for outcome in outcomes if outcome.error is not None],
    }


# ------------------------------------------------------------------------------------------ status

STATUS_KEYS = ("flow", "source", "target", "source_topic", "target_topic", "partitions", "checkpointed_partitions",
               "records_behind", "seconds_behind", "oldest_uncopied_ms", "checkpoint_ms", "gaps", "error")


@dataclass
class FlowStatus:
    rows: list[dict[str, Any]]  # keys: STATUS_KEYS
    sources: int  # (flow, source) pairs asked
    errors: list[KmcError] = field(default_factory=list)  # one per pair that could not be asked


def flow_status(config: Config, flows: Sequence[Flow], timeout: float = DEFAULT_TIMEOUT,
                now_ms: int | None = None) -> FlowStatus:
    """Per flow, source and source topic: how far the copy is behind, from the checkpoints in the target.

    ``records_behind`` is the source's end offset (last stable offset) minus the checkpoint's next offset,
    summed over partitions (a partition without a checkpoint counts from its earliest offset);
    ``seconds_behind`` is now minus the timestamp of the oldest record not copied yet (0 when caught up),
    the largest over the partitions. A source or target that cannot be asked gives one row with ``error``.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    work: list[tuple[Flow, Cluster, Cluster]] = []
    for flow in flows:
        sources, target = flow_clusters(config, flow)
        work.extend((flow, source, target) for source in sources)

    def one(item: tuple[Flow, Cluster, Cluster]) -> tuple[list[dict[str, Any]], KmcError | None]:
        flow, source, target = item
        try:
            return _source_status(flow, source, target, timeout, now_ms), None
        except KmcError as exc:
            return [dict.fromkeys(STATUS_KEYS) | {"flow": flow.name, "source": source.name, "target": target.name,
                                                  "error": exc.one_line()}], exc

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(work)))) as pool:
        answers = list(pool.map(one, work))
    return FlowStatus([row for rows, _ in answers for row in rows], len(work),
                      [error for _, error in answers if error is not None])


def _source_status(flow: Flow, source: Cluster, target: Cluster, timeout: float, now_ms: int) -> list[dict[str, Any]]:
    spec = flow_spec(flow)
    include, exclude = compile_patterns(spec.topics, "topics"), compile_patterns(spec.exclude, "exclude")
    with KafkaSession(source, timeout) as source_session, KafkaSession(target, timeout) as target_session:
        source_id = source_session.cluster_id()
        topics = describe_topics(source_session, include, exclude, with_offsets=False)
        with translate_errors(target, "list topics"):
            has_checkpoints = CHECKPOINT_TOPIC in set(target_session.admin.list_topics())
        # load() only when the topic exists: asking a consumer about a missing topic may auto-create it
        checkpoints = CheckpointStore(target_session, flow.name, source_id).load() if has_checkpoints else {}
        # offline partitions (no leader) cannot be asked for offsets: they count as not behind
        tps = [TopicPartition(topic.name, part.partition) for topic in topics for part in topic.partitions
               if part.online]
        earliest, latest = _offsets(source_session, tps)
        positions: dict[TopicPartition, int] = {}
        for tp in tps:
            checkpoint = checkpoints.get((tp.topic, tp.partition))
            start = earliest.get(tp, 0)
            positions[tp] = max(start, checkpoint.next_offset) if checkpoint is not None else start
        behind = {tp: max(0, latest.get(tp, 0) - positions[tp]) for tp in tps}
        oldest = _first_timestamps(source_session, {tp: positions[tp] for tp in tps if behind[tp] > 0}, timeout)
    rows = []
    for topic in topics:
        parts = [TopicPartition(topic.name, part.partition) for part in topic.partitions]
        found: list[Checkpoint] = [checkpoints[(tp.topic, tp.partition)] for tp in parts
                                   if (tp.topic, tp.partition) in checkpoints]
        stamps = [oldest[tp] for tp in parts if tp in oldest]
        lagging = any(behind.get(tp) for tp in parts)
        oldest_ms = min(stamps) if stamps else None
        rows.append({
            "flow": flow.name, "source": source.name, "target": target.name,
            "source_topic": topic.name, "target_topic": render_topic_name(flow.rename, topic.name, source.name),
            "partitions": len(parts), "checkpointed_partitions": len(found),
            "records_behind": sum(behind.get(tp, 0) for tp in parts),
            "seconds_behind": (0.0 if not lagging else
                               None if oldest_ms is None else round(max(0, now_ms - oldest_ms) / 1000, 3)),
            "oldest_uncopied_ms": oldest_ms,
            "checkpoint_ms": max((checkpoint.updated_ms for checkpoint in found), default=None),
            # data gaps recorded in the checkpoints (the most recent ones per partition; docs/mirror.md)
            "gaps": sum(len(checkpoint.gaps) for checkpoint in found),
            "error": None,
        })
    return rows


def _offsets(session: KafkaSession, tps: Sequence[TopicPartition]) -> tuple[dict[TopicPartition, int],
                                                                              dict[TopicPartition, int]]:
    """Earliest offsets, and the last stable offsets (what a read_committed mirror copies up to)."""
    if not tps:
        return {}, {}
    admin = session.admin
    with translate_errors(session.cluster, "list offsets"):
        earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
        latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}, isolation_level="read_committed")
    return ({tp: value.offset for tp, value in earliest.items()}, {tp: value.offset for tp, value in latest.items()})


def _first_timestamps(session: KafkaSession, positions: Mapping[TopicPartition, int],
                      timeout: float) -> dict[TopicPartition, int]:
    """The timestamp of the first committed record at or after each position (one fetch per partition)."""
    if not positions:
        return {}
    consumer = session.consumer(isolation_level="read_committed", max_partition_fetch_bytes=64 * 1024)
    found: dict[TopicPartition, int] = {}
    with translate_errors(session.cluster, "read the oldest uncopied records"):
        consumer.assign(list(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + max(5.0, timeout)
        while len(found) < len(positions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                if tp not in found and records:
                    found[tp] = records[0].timestamp
                    consumer.pause(tp)
    return found


# ------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class FlowProblem:
    """One thing wrong with the flows, naming the flows and the config key it is about."""

    flows: tuple[str, ...]
    key: str
    message: str

    def line(self) -> str:
        return ", ".join(f"flows.{name}.{self.key}" for name in self.flows) + f": {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"flows": list(self.flows), "key": self.key, "message": self.message, "line": self.line()}


@dataclass
class FlowCheck:
    flows: list[str]
    errors: list[FlowProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)  # clusters whose real topic lists were used

    def to_dict(self) -> dict[str, Any]:
        """The ``kmc flow check -o json`` document (keys in docs/flows.md)."""
        return {"ok": not self.errors, "flows": list(self.flows), "errors": [error.to_dict() for error in self.errors],
                "warnings": list(self.warnings), "live_clusters": list(self.live)}


@dataclass(frozen=True)
class _Edge:
    """One source of one flow: a copy from a cluster into another."""

    flow: Flow
    source_name: str
    source: tuple[str, ...]  # cluster keys
    target: tuple[str, ...]
    target_name: str
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    def selects(self, topic: str) -> bool:
        return not is_internal(topic) and matches(topic, list(self.include), list(self.exclude))

    def rename(self, topic: str) -> str:
        return render_topic_name(self.flow.rename, topic, self.source_name)


def check_flows(config: Config, *, live: bool = True, timeout: float = DEFAULT_TIMEOUT) -> FlowCheck:
    """Everything that would make the config's flows fail or misbehave, found before they run.

    Always (static): unknown clusters in ``from``/``to``; settings the engine cannot honour; a source that
    is also the target with an identity rename; two flows, or two sources of a prefix-mode flow, writing
    the same target topic, as far as the topic patterns are literal (``orders``, ``orders|payments``); and
    cycles whose renames keep producing names the next flow selects again (topics without end). With
    ``live``, the source clusters that answer are asked for their topics, and the same checks run on the
    real names, plus differing partition counts where a flow merges several sources; a cluster that does
    not answer is a warning, not an error.
    """
    report = FlowCheck(sorted(config.flows))
    edges: list[_Edge] = []
    names_by_cluster: dict[tuple[str, ...], str] = {}
    for name in sorted(config.flows):
        flow = config.flows[name]
        for key, reason in unsupported_settings(flow):
            report.errors.append(FlowProblem((name,), key, reason))
        target = _lookup(config, flow, "to", flow.target, report)
        sources = [(source_name, _lookup(config, flow, "from", source_name, report)) for source_name in flow.sources]
        if target is None:
            continue
        names_by_cluster.setdefault(cluster_key(target), target.name)
        include = tuple(compile_patterns(flow.topics, f"flows.{name}.topics"))
        exclude = tuple(compile_patterns(flow.exclude, f"flows.{name}.exclude"))
        seen: set[tuple[str, ...]] = set()
        for source_name, source in sources:
            if source is None:
                continue
            key = cluster_key(source)
            names_by_cluster.setdefault(key, source.name)
            if key in seen:
                report.errors.append(FlowProblem((name,), "from", f"{source_name} is listed twice "
                                                                  "(or two profiles name the same cluster)"))
                continue
            seen.add(key)
            try:
                _check_source_name(source, flow.rename, "rename")
            except UsageError as exc:
                report.errors.append(FlowProblem((name,), "rename", exc.message.removeprefix("rename ")))
                continue
            if key == cluster_key(target) and flow.rename == MERGE_RENAME:
                report.errors.append(FlowProblem((name,), "rename", f"{source_name} is also the target: "
                                                 "an identity rename would copy its topics onto themselves"))
                continue
            edges.append(_Edge(flow, source.name, key, cluster_key(target), target.name, include, exclude))

    real: dict[tuple[str, ...], dict[str, int]] = {}
    if live and edges:
        clusters = {edge.source: resolve_cluster(config, edge.source_name) for edge in edges}
        outcomes = gather_clusters(list(clusters.values()),
                                   lambda session: describe_topics(session, with_offsets=False), timeout)
        for outcome in outcomes:
            if outcome.error is None:
                real[cluster_key(outcome.cluster)] = {topic.name: len(topic.partitions) for topic in outcome.value}
                report.live.append(outcome.cluster.name)
            else:
                report.warnings.append(f"{outcome.cluster.name}: could not list its topics ({outcome.error.message}); "
                                       "its flows were checked from their literal topic patterns only")
        report.live.sort()
    literal = _literal_names(edges)
    report.errors.extend(_collisions(edges, literal, real, names_by_cluster))
    report.errors.extend(_partition_mismatches(edges, real))
    report.errors.extend(_endless_cycles(edges, real, names_by_cluster))
    return report


def _lookup(config: Config, flow: Flow, key: str, name: str, report: FlowCheck) -> Cluster | None:
    try:
        return resolve_cluster(config, name)
    except (UnknownClusterError, UsageError, ConfigError) as exc:
        report.errors.append(FlowProblem((flow.name,), key, exc.message))
        return None


def _literal_names(edges: Iterable[_Edge]) -> dict[tuple[str, ...], set[str]]:
    """Per source cluster, the topic names the flows' patterns spell out literally: topics that exist
    there, as far as the config can tell without asking the cluster."""
    names: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for edge in edges:
        for pattern in edge.flow.topics:
            for name in pattern_strings(pattern, exact=True) or ():
                if edge.selects(name) and _TOPIC_NAME.fullmatch(name):
                    names[edge.source].add(name)
    return names


def _collisions(edges: Sequence[_Edge], literal: Mapping[tuple[str, ...], set[str]],
                real: Mapping[tuple[str, ...], Mapping[str, int]],
                cluster_names: Mapping[tuple[str, ...], str]) -> list[FlowProblem]:
    writers: dict[tuple[tuple[str, ...], str], dict[tuple[str, str], str]] = defaultdict(dict)
    for edge in edges:
        candidates = set(literal.get(edge.source, ())) | set(real.get(edge.source, {}))
        for topic in sorted(candidates):
            if edge.selects(topic):
                writers[(edge.target, edge.rename(topic))].setdefault((edge.flow.name, edge.source_name), topic)
    flows_by_name = {edge.flow.name: edge.flow for edge in edges}
    problems = []
    for (target, target_topic), found in sorted(writers.items()):
        flows = sorted({flow for flow, _ in found})
        where = f"{cluster_names.get(target, ','.join(target))}/{target_topic}"
        sources = "; ".join(f"{flow} from {source} '{topic}'" for (flow, source), topic in sorted(found.items()))
        if len(flows) > 1:
            problems.append(FlowProblem(tuple(flows), "topics", f"both write {where} ({sources})"))
        elif len(found) > 1 and not is_merge(flows_by_name[flows[0]].rename):
            problems.append(FlowProblem(tuple(flows), "rename", f"two sources write {where} ({sources})"))
    return problems


def _partition_mismatches(edges: Sequence[_Edge],
                          real: Mapping[tuple[str, ...], Mapping[str, int]]) -> list[FlowProblem]:
    by_flow: dict[str, list[_Edge]] = defaultdict(list)
    for edge in edges:
        by_flow[edge.flow.name].append(edge)
    problems = []
    for name, flow_edges in sorted(by_flow.items()):
        flow = flow_edges[0].flow
        if len(flow_edges) < 2 or not is_merge(flow.rename):
            continue
        listing = {edge.source_name: {topic: count for topic, count in real[edge.source].items() if edge.selects(topic)}
                   for edge in flow_edges if edge.source in real}
        for conflict in merge_conflicts(listing, flow.rename, flow.partitioner):
            problems.append(FlowProblem((name,), "partitioner", f"{conflict.describe()}; merging maps partition i "
                                        "to partition i (set partitioner = \"key\" to rehash by key)"))
    return problems


def _endless_cycles(edges: Sequence[_Edge], real: Mapping[tuple[str, ...], Mapping[str, int]],
                    cluster_names: Mapping[tuple[str, ...], str]) -> list[FlowProblem]:
    """Cycles of flows whose renames keep producing new names that the next flow selects again.

    With identity renames all the way round, the ``kmc-origin`` header stops every record before it
    returns to its origin (and the names stay the same), so such a cycle is fine. Otherwise the names of
    a seed topic are followed round the cycle (seeds: examples of each flow's patterns, and the real
    topics when known); if a name still survives after MAX_LAPS laps, each lap creates new topics.
    """
    problems = []
    for cycle in _simple_cycles(edges):
        if all(edge.flow.rename == MERGE_RENAME for edge in cycle):
            continue
        witness: list[str] | None = None
        for shift in range(len(cycle)):
            rotation = cycle[shift:] + cycle[:shift]
            first = rotation[0]
            seeds = set(real.get(first.source, {}))
            for pattern in first.flow.topics:
                seeds.update(pattern_strings(pattern, exact=False) or ())
            for seed in sorted(seed for seed in seeds if _TOPIC_NAME.fullmatch(seed)):
                witness = _follow(rotation, seed)
                if witness is not None:
                    break
            if witness is not None:
                break
        if witness is None:
            continue
        route = " -> ".join([cluster_names.get(rotation[0].source, rotation[0].source_name)]
                            + [cluster_names.get(edge.target, edge.target_name) for edge in rotation])
        flows = tuple(dict.fromkeys(edge.flow.name for edge in rotation))
        shown = " -> ".join(witness[:4]) + " -> ..."
        problems.append(FlowProblem(flows, "rename", f"the cycle {route} creates topics without end ({shown}): "
                                                     "narrow the topics so renamed names are not selected again"))
    return problems


def _follow(rotation: Sequence[_Edge], seed: str) -> list[str] | None:
    """The names of ``seed`` round the cycle; None when the chain stops within MAX_LAPS laps."""
    name, trail = seed, [seed]
    for _ in range(MAX_LAPS):
        for edge in rotation:
            if not edge.selects(name):
                return None
            name = edge.rename(name)
            if not _TOPIC_NAME.fullmatch(name):  # Kafka refuses it: the chain ends there
                return None
            trail.append(name)
    return trail


def _simple_cycles(edges: Sequence[_Edge], limit: int = 1000) -> list[list[_Edge]]:
    """Every simple cycle of the cluster graph (clusters as nodes, one edge per flow source), each once:
    found from its smallest node. The graphs are small (a handful of clusters)."""
    outgoing: dict[tuple[str, ...], list[_Edge]] = defaultdict(list)
    for edge in edges:
        outgoing[edge.source].append(edge)
    nodes = sorted(set(outgoing) | {edge.target for edge in edges})
    cycles: list[list[_Edge]] = []

    def walk(start: tuple[str, ...], node: tuple[str, ...], path: list[_Edge], visited: set[tuple[str, ...]]) -> None:
        for edge in outgoing.get(node, ()):
            if len(cycles) >= limit:
                return
            if edge.target == start:
                cycles.append([*path, edge])
            elif edge.target > start and edge.target not in visited:
                walk(start, edge.target, [*path, edge], visited | {edge.target})

    for start in nodes:
        walk(start, start, [], {start})
    return cycles


# ------------------------------------------------------------------------------------------ patterns

_EXACT_LIMIT = 64  # a pattern matching more names than this is treated as open


def pattern_strings(pattern: str, *, exact: bool) -> list[str] | None:
    """Names a topic pattern matches (anchored, as kmc uses them).

    ``exact=True``: every name it matches when that is a short finite list (``orders``, ``orders|payments``,
    ``dc[12]\\.orders``), else None. ``exact=False``: a few examples of names it matches, for patterns like
    ``payments\\..*`` (``payments.``, ``payments.x``); None when none could be made.
    """
    try:
        tree = sre_parser.parse(pattern)
        compiled = re.compile(pattern)
    except (re.error, RecursionError):
        return None
    found = _sequence(list(tree), exact)
    if found is None:
        return None
    return sorted({name for name in found if compiled.fullmatch(name)})


def _sequence(items: list[Any], exact: bool) -> list[str] | None:
    results = [""]
    for op, argument in items:
        options = _choices(op, argument, exact)
        if options is None:
            return None
        results = [head + tail for head in results for tail in options]
        if len(results) > _EXACT_LIMIT:
            if exact:
                return None
            results = results[:_EXACT_LIMIT]
    return results


def _choices(op: Any, argument: Any, exact: bool) -> list[str] | None:
    constants = sre_constants
    if op is constants.LITERAL:
        return [chr(argument)]
    if op is constants.AT:  # ^, $, \b: match no characters
        return [""]
    if op is constants.SUBPATTERN:
        return _sequence(list(argument[-1]), exact)
    if op is constants.BRANCH:
        found: list[str] = []
        for branch in argument[1]:
            options = _sequence(list(branch), exact)
            if options is None:
                return None
            found.extend(options)
        return found
    if op is constants.IN:
        return _class_choices(argument, exact)
    if op in (constants.MAX_REPEAT, constants.MIN_REPEAT):
        low, high, inner_items = argument
        inner = _sequence(list(inner_items), exact)
        if inner is None:
            return None
        if exact and (high is constants.MAXREPEAT or high > 4):
            return None
        counts = range(low, high + 1) if exact else sorted({low, low + 1})
        found = []
        for count in counts:
            found.extend("".join(parts) for parts in itertools.islice(itertools.product(inner, repeat=count),
                                                                      _EXACT_LIMIT + 1))
        return found
    if exact:
        return None
    if op is constants.NOT_LITERAL:
        return ["x" if argument != ord("x") else "y"]
    if op is constants.ANY:
        return ["x"]
    return [""]


def _class_choices(items: list[Any], exact: bool) -> list[str] | None:
    constants = sre_constants
    chars: list[str] = []
    for op, argument in items:
        if op is constants.LITERAL:
            chars.append(chr(argument))
        elif op is constants.RANGE and (not exact or argument[1] - argument[0] < 16):
            chars.extend(chr(code) for code in range(argument[0], argument[1] + 1))
        elif exact:
            return None
        elif op is constants.CATEGORY:
            chars.append({constants.CATEGORY_DIGIT: "0", constants.CATEGORY_WORD: "a"}.get(argument, "x"))
        else:  # a negated class: "x" is a guess, kept only if the pattern matches it
            chars.append("x")
    return chars if exact else chars[:1]
