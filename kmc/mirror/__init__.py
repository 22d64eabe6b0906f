"""The mirror engine: copy topics from one cluster to another, once or continuously, with checkpoints.

    from kmc.mirror import MirrorSpec, plan_mirror, apply_plan, run_mirror

    spec = MirrorSpec(topics=("orders", "payments\\\\..*"), rename="{source}.{topic}", flow="dc1-central")
    with KafkaSession(src) as s, KafkaSession(dst) as d:
        plan = plan_mirror(s, d, spec)               # reads only: what would be created, added, synced
    result = run_mirror(src, dst, spec, mode="once") # or mode="follow", stop_event=threading.Event()
    result.records, result.to_dict()

    report = runner.run([MirrorJob(src, dst, spec, workers=2)], mode="once")  # any set of jobs, one call
    report.failure(), report.to_dict(), report.rows()

Library code: it never prints; progress and notices arrive through callbacks.
"""

from kmc.mirror.checkpoints import (
    CHECKPOINT_TOPIC,
    Checkpoint,
    CheckpointStore,
    checkpoint_key,
    ensure_checkpoint_topic,
)
from kmc.mirror.copypath import ORIGIN_HEADER, CopyPath, RecordCopyPath
from kmc.mirror.engine import (
    Gap,
    MirrorProgress,
    MirrorResult,
    NoticeCallback,
    ProgressCallback,
    TopicProgress,
    TopicResult,
    mirror_identity,
    mirror_lock,
    run_mirror,
)
from kmc.mirror.jobs import MirrorJob
from kmc.mirror.lock import hold_lock, lock_dir, lock_identity, lock_left_by_a_dead_run, lock_path
from kmc.mirror.plan import DEFAULT_FLOW, MirrorSpec, Plan, TopicPlan, apply_plan, parse_start, plan_mirror
from kmc.mirror.runner import JobOutcome, RunReport

__all__ = [
    "CHECKPOINT_TOPIC",
    "DEFAULT_FLOW",
    "ORIGIN_HEADER",
    "Checkpoint",
    "CheckpointStore",
    "CopyPath",
    "Gap",
    "JobOutcome",
    "MirrorJob",
    "MirrorProgress",
    "MirrorResult",
    "MirrorSpec",
    "NoticeCallback",
    "Plan",
    "ProgressCallback",
    "RecordCopyPath",
    "RunReport",
    "TopicPlan",
    "TopicProgress",
    "TopicResult",
    "apply_plan",
    "checkpoint_key",
    "ensure_checkpoint_topic",
    "hold_lock",
    "lock_dir",
    "lock_identity",
    "lock_left_by_a_dead_run",
    "lock_path",
    "mirror_identity",
    "mirror_lock",
    "parse_start",
    "plan_mirror",
    "run_mirror",
]
