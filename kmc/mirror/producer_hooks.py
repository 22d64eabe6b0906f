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
  batches whose records have no future of their own). After an epoch bump (KIP-360) an early batch can
  fail while a later one of the same partition succeeds. :class:`FailedBatches` watches every batch the
  accumulator releases, so no failure goes unseen: batches of one partition complete in order, so a
  failure is recorded before any later batch of that partition is seen done.

kafka-python is pinned to 3.0.x (pyproject.toml); tests/test_producer_hooks.py checks each assumption
against the installed version, so an upgrade that breaks one fails a named test, not a copy.
"""

from __future__ import annotations

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
            pending = accumulator._incomplete.all()  # noqa: SLF001
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise kafka_errors.KafkaTimeoutError(f"the target did not acknowledge within {timeout:g}s")
            pending[0].produce_future.wait(timeout=0.05)
    finally:
        accumulator._flushes_in_progress.decrement()  # noqa: SLF001


def commit_transaction(producer: KafkaProducer, timeout: float) -> None:
    """Commit the open transaction within ``timeout`` seconds (KafkaTimeoutError otherwise) and begin the
    next one. The caller flushed first."""
    manager = producer._transaction_manager  # noqa: SLF001
    result = manager.begin_commit()
    producer._sender.wakeup()  # noqa: SLF001
    if not result.wait(timeout_ms=int(timeout * 1000)):  # raises the commit's error, if it failed
        raise kafka_errors.KafkaTimeoutError(f"the transaction did not commit within {timeout:g}s")
    producer.begin_transaction()


def abort_transaction(producer: KafkaProducer, timeout: float) -> None:
    """Abort the open transaction within ``timeout`` seconds (KafkaTimeoutError otherwise), dropping what is
    not sent yet, and begin the next one. Raises the abort's error (e.g. ProducerFencedError: the id was
    fenced, and the fence aborted the transaction already)."""
    manager = producer._transaction_manager  # noqa: SLF001
    result = manager.begin_abort()
    producer._sender.wakeup()  # noqa: SLF001
    if not result.wait(timeout_ms=int(timeout * 1000)):
        raise kafka_errors.KafkaTimeoutError(f"the transaction did not abort within {timeout:g}s")
    producer.begin_transaction()


def transaction_error(producer: KafkaProducer, error: BaseException) -> BaseException:
    """The error behind ``error``: kafka-python refuses a transactional call (commit, abort, begin) made in
    an error state with a bare KafkaError that has only the text of the error that caused it ("Cannot execute
    transactional method because we are in an error state: ... ProducerFencedError"); its transaction
    manager keeps that error. Any other error is returned as it is."""
    manager = transaction_manager(producer)
    if type(error) is kafka_errors.KafkaError and manager is not None and manager.last_error is not None:
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
        accumulator = producer._accumulator  # noqa: SLF001
        release = accumulator.deallocate

        def deallocate(batch: Any) -> None:
            state = batch.final_state
            if state is not None and state is not FinalState.SUCCEEDED:
                with self._lock:
                    self.failed.setdefault(batch.topic_partition, _batch_error(batch))
            release(batch)

        accumulator.deallocate = deallocate

    def __bool__(self) -> bool:
        return bool(self.failed)

    def first(self) -> tuple[TopicPartition, BaseException] | None:
        with self._lock:
            return next(iter(self.failed.items()), None)


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
