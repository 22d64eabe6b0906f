"""A mirror job: one source -> target mirror with its spec, the unit :func:`kmc.mirror.runner.run` runs.

``kmc mirror`` is one job (``workers`` > 1 shards it over processes), ``kmc aggregate`` one job per source,
a named flow one job per ``from`` cluster (kmc/flows/jobs.py makes those). Library code: no printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kmc.errors import UsageError
from kmc.metadata import is_valid_topic_name, render_topic_name
from kmc.mirror.plan import DEFAULT_FLOW, SAME_CLUSTER_HINT, MirrorSpec
from kmc.profiles import Cluster


def cluster_key(cluster: Cluster) -> tuple[str, ...]:
    """What identifies a cluster across profiles: its bootstrap servers (as the mirror lock does)."""
    return tuple(sorted(cluster.bootstrap))


def is_merge(rename: str) -> bool:
    """A rename without ``{source}`` writes every source's topic into the same target topic."""
    return "{source}" not in rename


@dataclass(frozen=True)
class MirrorJob:
    """One source -> target mirror: what :func:`kmc.mirror.run_mirror` needs, and in how many processes
    (``workers``: worker i copies the source partitions p with p % workers == i)."""

    source: Cluster
    target: Cluster
    spec: MirrorSpec
    workers: int = 1

    @property
    def flow(self) -> str:
        return self.spec.flow

    @property
    def label(self) -> str:
        """How messages name this job: ``dc1 -> central``, with the flow when it is a named one."""
        route = f"{self.source.name} -> {self.target.name}"
        return route if self.flow == DEFAULT_FLOW else f"{self.flow}: {route}"

    def validate(self) -> None:
        """UsageError for what the user typed wrong, before any cluster is contacted: the spec, a source and
        target that are one cluster (by their addresses) without a rename, an address as ``{source}``. (A
        cluster reached by two different addresses is found when it answers: by its cluster id.)"""
        self.spec.validate()
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.workers > 1 and self.spec.group is not None:
            raise UsageError("give --group or --workers, not both",
                             hint="start several members of the group instead, each a process with its share")
        if cluster_key(self.source) == cluster_key(self.target) and self.spec.rename == "{topic}":
            raise UsageError(f"{self.source.name} and {self.target.name} are the same cluster "
                             f"({','.join(cluster_key(self.source))}): mirroring topics onto themselves",
                             hint=SAME_CLUSTER_HINT)
        check_source_name(self.source, self.spec.rename, "--rename" if self.flow == DEFAULT_FLOW else
                          f"flow {self.flow}: rename")


def check_source_name(source: Cluster, rename: str, where: str) -> None:
    """UsageError when ``rename`` (naming ``{source}``) would give no valid topic name with this source's
    name (a host:port source)."""
    if is_merge(rename):
        return
    sample = render_topic_name(rename, "topic", source.name)
    if not is_valid_topic_name(sample):
        raise UsageError(f"{where} '{rename}' cannot use {source.name} as {{source}}: it would give '{sample}', "
                         "not a valid topic name",
                         hint="name the source by a profile: kmc profile add NAME --bootstrap ...")


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
