"""What `kmc aggregate` and `kmc flow run` share: their run options, and running several mirrors at once
with kmc mirror's signal handling, progress display and notices (kmc.cli.mirror), then one summary."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kmc.cli import context
from kmc.cli.mirror import notice_printer, progress_display, stop_on_signals
from kmc.client import KafkaSession
from kmc.errors import Interrupted, KmcError, UsageError
from kmc.flows import JobOutcome, MirrorJob, outcome_failure, outcomes_document, preflight, run_jobs
from kmc.mirror import plan_mirror
from kmc.output import Column, OutputFormat, columns

RESULT_KEYS = ("flow", "source", "target", "source_topic", "target_topic", "partitions", "records", "bytes",
               "skipped", "redelivered", "lag", "gaps")
_NUMBERS = (Column("records", numeric=True), Column("bytes", numeric=True), Column("skipped", numeric=True),
            Column("redelivered", numeric=True), Column("lag", numeric=True), Column("gaps", numeric=True))
AGGREGATE_COLUMNS = columns("source", "source_topic", "target_topic", *_NUMBERS)
FLOW_COLUMNS = columns("flow", "source", "target", "source_topic", "target_topic", *_NUMBERS)
PLAN_COLUMNS = columns("flow", "source", "source_topic", "target_topic", Column("partitions", numeric=True),
                       Column("target_partitions", "TARGET PARTS", numeric=True), "actions")


def mode(once: bool, follow: bool) -> str:
    if once and follow:
        raise UsageError("give --once or --follow, not both")
    return "follow" if follow else "once"


def run_options(start: str, replication_factor: int | None, refresh: float, checkpoint_interval: float,
                compression: str, delivery_timeout: float) -> dict[str, Any]:
    """The MirrorSpec fields the run options set."""
    return {"start": start, "replication_factor": replication_factor, "refresh_interval": refresh,
            "checkpoint_interval": checkpoint_interval,
            "compression": None if compression.lower() == "none" else compression.lower(),
            "delivery_timeout": delivery_timeout}


def execute(app_ctx: context.AppContext, jobs: Sequence[MirrorJob], *, run_mode: str, dry_run: bool, title: str,
            by_flow: bool) -> None:
    """Check, then run (or with ``dry_run`` plan) every job at once; render; raise the combined failure.

    ``title`` names the whole run in the summary line; ``by_flow`` adds flow and target columns.
    """
    printer = notice_printer(app_ctx)

    def notice(job: MirrorJob, level: str, text: str) -> None:
        printer(level, f"{job.label}: {text}")

    if dry_run:
        _dry_run(app_ctx, jobs)
        return
    preflight(jobs, app_ctx.timeout, notice)
    stop = threading.Event()
    started = time.monotonic()
    with stop_on_signals(stop) as received, progress_display(app_ctx, label_sources=True) as progress:
        outcomes = run_jobs(jobs, mode=run_mode, stop_event=stop, progress_callback=progress,
                            notice_callback=notice, timeout=app_ctx.timeout)
    _render(app_ctx, outcomes, run_mode, time.monotonic() - started, title, by_flow)
    failure = outcome_failure(outcomes, run_mode)
    if received and received[-1] == signal.SIGINT:
        if failure is not None:
            app_ctx.messages.error(failure.one_line())
        raise Interrupted("interrupted; progress up to the interruption is checkpointed")
    if failure is not None:
        raise failure


def _render(app_ctx: context.AppContext, outcomes: Sequence[JobOutcome], run_mode: str, elapsed: float, title: str,
            by_flow: bool) -> None:
    render = app_ctx.render
    if render.fmt is OutputFormat.json:
        render.document(outcomes_document(outcomes, run_mode, elapsed))
        return
    rows = [{"flow": result.flow, "source": result.source, "target": result.target, **topic.to_dict()}
            for result in (outcome.result for outcome in outcomes) if result is not None
            for topic in result.topics]
    render.rows(rows, FLOW_COLUMNS if by_flow else AGGREGATE_COLUMNS)
    records = sum(row["records"] for row in rows)
    megabytes = sum(row["bytes"] for row in rows) / 1e6
    rate = records / elapsed if elapsed > 0 else 0.0
    succeeded = sum(1 for outcome in outcomes if outcome.result is not None)
    app_ctx.messages.info(f"{title}: {records:,} records ({megabytes:.1f} MB) in {elapsed:.1f}s ({rate:,.0f}/s); "
                          f"{succeeded} of {len(outcomes)} mirrors succeeded")


def _dry_run(app_ctx: context.AppContext, jobs: Sequence[MirrorJob]) -> None:
    """Each job's plan; a source that cannot be planned is reported like a failed run."""

    def plan(job: MirrorJob) -> Any:
        try:
            with KafkaSession(job.source, app_ctx.timeout) as source, \
                    KafkaSession(job.target, app_ctx.timeout) as target:
                return plan_mirror(source, target, job.spec)
        except KmcError as exc:
            return exc

    preflight(jobs, app_ctx.timeout, prepare=False)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        plans = list(pool.map(plan, jobs))
    pairs = list(zip(jobs, plans, strict=True))
    outcomes = [JobOutcome(job, error=found if isinstance(found, KmcError) else None) for job, found in pairs]
    good = [(job, found) for job, found in pairs if not isinstance(found, KmcError)]
    render = app_ctx.render
    if render.fmt is OutputFormat.json:
        render.document({"plans": [found.to_dict() for _, found in good],
                         "failures": outcomes_document(outcomes, "once", 0.0)["failures"]})
    else:
        rows = [{"flow": job.flow, "source": job.source.name, **topic.to_dict()} for job, found in good
                for topic in found.topics]
        if not render.machine:
            for row in rows:
                row["actions"] = ",".join(row["actions"]) or "-"
        render.rows(rows, PLAN_COLUMNS)
        for job, found in good:
            for warning in found.warnings:
                app_ctx.messages.warn(f"{job.label}: {warning}")
        app_ctx.messages.info(f"dry run: nothing changed ({sum(len(found.topics) for _, found in good)} topics "
                              f"planned)")
    failure = outcome_failure(outcomes)
    if failure is not None:
        raise failure
