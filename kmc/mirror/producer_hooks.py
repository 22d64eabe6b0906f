"""The kafka-python producer internals the copy engine relies on, in one place.

kmc keeps kafka-python's producer for idempotence, retries, ordering and transactions, but three things
its public API cannot do safely for a mirror:

- **wait for everything sent** without ``producer.flush()``: kafka-python 3.0.12's flush waits on a
  snapshot of the incomplete batches, and a batch split after MESSAGE_TOO_LARGE stays in that snapshot
  while its records move to the halves (its latch is set only when a record future moves with them, and
  the byte path's batches have futures for their last records only). :func:`flush` waits for the set of
  incomplete batches to empty instead;
- **commit a transaction with a deadline**: ``commit_transaction()`` waits without a timeout, which would
  make a target outage hang SIGTERM. :func:`commit_transaction` uses the transaction manager directly;
- **see every failed batch**: the copy loop tracks the future of the last record of each send, and a
  send can span several producer batches (and a batch split after MESSAGE_TOO_LARGE moves records into
  batches whose records have no future of their own). :class:`FailedBatches` watches every batch the
  accumulator releases, so no failure goes unseen: batches of one partition complete in order, so a
  failure is recorded before any later batch of that partition is seen done;
- **send nothing of a partition after one of its batches failed**: after a failure kafka-python bumps the
  idempotent producer's epoch (KIP-360) and sends the partition's later batches with fresh sequence
  numbers, so an early batch could be lost while later ones land: the copy would have a hole, filled in
  out of order when kmc sends again from the last acknowledged offset. :class:`FailedBatches` mutes the
  partition in the accumulator (the sender never drains it again) and fails its queued batches at once;
- **never bump a transactional producer's epoch on its own**: on a produce refused with
  INVALID_PRODUCER_EPOCH (or an out-of-order sequence, an unknown producer id) kafka-python sends
  InitProducerId under the producer's current id and epoch (KIP-360). When another run took the
  transactional id over meanwhile and has a transaction open, the coordinator fences that transaction
  before it checks the epoch (then refuses the bump): a run cut off past its timeouts ended the run that
  took over, and was fenced in turn. Java's producer aborts with EndTxn under its own epoch first, which
  the coordinator refuses once another owner exists. :class:`FailedBatches` makes those errors abortable
  for a transactional producer: the batch fails with its error, no request goes out for it, and the engine
  decides by that error (InvalidProducerEpochError: fenced, exit 8; the others end the run, or restart the
  transaction from the committed checkpoints with a new producer).

kafka-python is pinned to 3.0.x (pyproject.toml); tests/test_engine_internals.py checks each assumption
against the installed version, so an upgrade that breaks one fails a named test, not a copy.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaProducer, TopicPartition
from kafka.producer.producer_batch import FinalState


def flush(producer: KafkaProducer, timeout: float) -> None:
    """Send everything the producer holds now and wait until no batch is incomplete; KafkaTimeoutError
    when that takes longer than ``timeout`` seconds."""
    accumulator = producer._accumulator  # noqa: SLF001
    deadline = time.monotonic() + timeout
    accumulator.begin_flush()  # every batch is ready now, whatever its linger
    try:
        producer._sender.wakeup()  # noqa: SLF001
        while True:
            # (batches queued for a partition stopped after a failure never leave: not waited for; the
            # run that stops the producer closes it with kmc._kafka_internals.close_producer)
            stopped = getattr(accumulator.muted, "stopped", {})
            pending = [batch for batch in accumulator._incomplete.all()  # noqa: SLF001
                       if not (batch.topic_partition in stopped and batch.drained is None)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise kafka_errors.KafkaTimeoutError(f"the target did not acknowledge within {timeout:g}s")
            pending[0].produce_future.wait(timeout=0.05)
    finally:
        accumulator._flushes_in_progress.decrement()  # noqa: SLF001


def commit_transaction(producer: KafkaProducer, timeout: float) -> None:
    """Commit the open transaction within ``timeout`` seconds (KafkaTimeoutError otherwise) and begin the
    next one. The caller flushed first. Raises the commit's error, if it failed."""
    _end_transaction(producer, "commit", timeout)


def abort_transaction(producer: KafkaProducer, timeout: float) -> None:
    """Abort the open transaction within ``timeout`` seconds (KafkaTimeoutError otherwise), dropping what is
    not sent yet, and begin the next one. Raises the abort's error (e.g. ProducerFencedError: the id was
    fenced, and the fence aborted the transaction already)."""
    _end_transaction(producer, "abort", timeout)


def _end_transaction(producer: KafkaProducer, how: str, timeout: float) -> None:
    manager = producer._transaction_manager  # noqa: SLF001
    result = manager.begin_commit() if how == "commit" else manager.begin_abort()
    producer._sender.wakeup()  # noqa: SLF001
    if not result.wait(timeout_ms=int(timeout * 1000)):  # raises the transaction's error, if it failed
        raise kafka_errors.KafkaTimeoutError(f"the transaction did not {how} within {timeout:g}s")
    producer.begin_transaction()


def transaction_error(producer: KafkaProducer, error: BaseException) -> BaseException:
    """The error behind ``error``: kafka-python refuses a transactional call (commit, abort, begin) made in
    an error state with a bare KafkaError that has only the text of the error that caused it ("Cannot execute
    transactional method because we are in an error state: ... ProducerFencedError"); its transaction
    manager keeps that error. Once the manager is in its fatal state, its error is the answer whatever
    ``error`` is. Any other error is returned as it is."""
    manager = transaction_manager(producer)
    if manager is None or manager.last_error is None:
        return error
    if type(error) is kafka_errors.KafkaError or manager.has_fatal_error():
        # (fatal: whatever reached the caller, a flush's timeout or an earlier batch's error, the producer
        # is done for; a fence must be seen as one, or the next producer would undo it)
        return manager.last_error
    return error


def transaction_manager(producer: KafkaProducer) -> Any:
    """The producer's transaction manager when it is transactional, else None."""
    manager = producer._transaction_manager  # noqa: SLF001
    return manager if manager is not None and manager.is_transactional() else None


class FailedBatches:
    """Every batch of ``producer`` that completed other than successfully, first failure per partition.

    Installed on the accumulator's ``deallocate``, which the sender calls once for each batch it is done
    with: acknowledged, failed, expired, aborted, or replaced by the halves of a split (then the batch has
    no final state and is not a failure; its halves are released in turn)."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._lock = threading.Lock()
        self.failed: dict[TopicPartition, BaseException] = {}
        manager = transaction_manager(producer)
        if manager is not None:
            _never_bump_the_epoch(manager)
        accumulator = producer._accumulator  # noqa: SLF001
        accumulator.muted = _StickyMuted(accumulator.muted)  # (keeps the partitions stopped after a failure)
        release = accumulator.deallocate

        def deallocate(batch: Any) -> None:
            state = batch.final_state
            first: BaseException | None = None
            if state is not None and state is not FinalState.SUCCEEDED:
                with self._lock:
                    if batch.topic_partition not in self.failed:
                        first = self.failed[batch.topic_partition] = _batch_error(batch)
            release(batch)
            # Only a batch that FAILED stops its partition, on the sender's thread, which runs every other
            # abort: an ABORTED one comes from an abort loop (fatal error, transaction abort, forced close)
            # that completes the partition's other batches itself, and completing one twice raises.
            if first is not None and state is FinalState.FAILED:
                _stop_partition(accumulator, batch.topic_partition, first)

        accumulator.deallocate = deallocate

    def __bool__(self) -> bool:
        return bool(self.failed)

    def first(self) -> tuple[TopicPartition, BaseException] | None:
        with self._lock:
            return next(iter(self.failed.items()), None)


class _StickyMuted(set):
    """The accumulator's set of muted partitions, whose drain the sender skips. With idempotence the sender
    mutes a partition while one of its batches is in flight and unmutes it when the batch completes,
    failed or not; a partition stopped after a failure (``stopped``: partition -> the error) stays muted."""

    def __init__(self, muted: set) -> None:
        super().__init__(muted)
        self.stopped: dict[TopicPartition, BaseException] = {}

    def stop(self, tp: TopicPartition, error: BaseException) -> None:
        self.stopped.setdefault(tp, error)
        self.add(tp)

    def discard(self, tp: TopicPartition) -> None:
        if tp not in self.stopped:
            super().discard(tp)

    def remove(self, tp: TopicPartition) -> None:
        if tp not in self.stopped:
            super().remove(tp)


def _never_bump_the_epoch(manager: Any) -> None:
    """A batch error for which kafka-python would bump the transactional producer's epoch (KIP-360) makes
    the transaction abortable instead (module docstring): the batch fails with it and no InitProducerId
    goes out. (Only ``Sender`` calls ``classify_batch_error``, for a batch sent in a transaction: the state
    is then IN_TRANSACTION, from which ABORTABLE_ERROR is a valid move.)"""
    classify = manager.classify_batch_error

    def classify_batch_error(error: Any, batch: Any, log_start_offset: int = -1) -> str:
        outcome = classify(error, batch, log_start_offset=log_start_offset)
        return manager.ERROR_CLASS_ABORTABLE if outcome == manager.ERROR_CLASS_NEEDS_EPOCH_BUMP else outcome

    manager.classify_batch_error = classify_batch_error


def _stop_partition(accumulator: Any, tp: TopicPartition, error: BaseException) -> None:
    """Nothing more of ``tp`` leaves this producer: it stays muted (:class:`_StickyMuted`), and the
    batches already queued fail with ``error`` now (as ``abort_undrained_batches`` fails them); those
    queued later stay until the producer is closed (:func:`flush` does not wait for them). No later batch
    of ``tp`` is in flight when one fails: with idempotence kafka-python sends one batch of a partition at
    a time. Runs on the sender's thread, after the failure is recorded (:class:`FailedBatches`): a flush
    that ends between the stop and the queued batches' abort finds them unfinished, so the engine counts
    every unacknowledged send of a partition with a failed batch as failed, finished or not."""
    accumulator.muted.stop(tp, error)
    with accumulator._tp_lock(tp):  # noqa: SLF001
        queued = [batch for batch in accumulator._batches.get(tp, ())  # noqa: SLF001
                  if batch.final_state is None and batch.drained is None]
        for batch in queued:
            batch.records.close()
            accumulator._batches[tp].remove(batch)  # noqa: SLF001
    for batch in queued:
        with contextlib.suppress(kafka_errors.IllegalStateError):  # completed meanwhile: nothing to do
            batch.abort(error)
            accumulator.deallocate(batch)


def _batch_error(batch: Any) -> BaseException:
    """The exception a failed batch completed with (its future carries a per-record exception function)."""
    future = batch.produce_future
    value = future.value if future.is_done else None
    if isinstance(value, tuple) and len(value) == 3 and callable(value[2]):
        try:
            error = value[2](0)
        except Exception as exc:  # noqa: BLE001 - any answer is better than none here
            error = exc
        if isinstance(error, BaseException):
            return error
    if future.exception is not None:
        return future.exception
    return kafka_errors.KafkaError(f"a batch for {batch.topic_partition} was {batch.final_state.name.lower()}")
