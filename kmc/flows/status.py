"""``kmc flow status``: how far each flow is behind, per source and topic, from its checkpoints in the
target (kmc/mirror/status.py does the measuring). Reads only. Library code: no printing.
"""

from __future__ import annotations

from collections.abc import Sequence

from kmc.client import DEFAULT_TIMEOUT
from kmc.flows.jobs import flow_clusters, flow_spec
from kmc.mirror.jobs import MirrorJob
from kmc.mirror.status import STATUS_KEYS, LagReport, mirror_lags
from kmc.profiles import Config, Flow

__all__ = ["STATUS_KEYS", "flow_status"]


def flow_status(config: Config, flows: Sequence[Flow], timeout: float = DEFAULT_TIMEOUT,
                now_ms: int | None = None) -> LagReport:
    """Per flow and source: how far the copy is behind, from the checkpoints in the target.

    Rows (:meth:`LagReport.rows`): per flow, source and source topic, ``records_behind`` is the source's end
    offset (last stable offset) minus the checkpoint's next offset, summed over partitions (a partition
    without a checkpoint counts from its earliest offset); ``seconds_behind`` is now minus the timestamp of
    the oldest record not copied yet (0 when caught up), the largest over the partitions. A source or target
    that cannot be asked gives one row with ``error``.
    """
    jobs = []
    for flow in flows:
        sources, target = flow_clusters(config, flow)
        jobs.extend(MirrorJob(source, target, flow_spec(flow)) for source in sources)
    return mirror_lags(jobs, timeout, now_ms)
