"""Short chaos runs in both delivery modes and both copy paths (tests/chaos.py): kmc and single brokers of two
three-broker clusters SIGKILLed at random for KMC_CHAOS_SECONDS (default 20) each, under continuous
production; then nothing lost, order kept, duplicates only as reported (none with --exactly-once).
``make chaos`` runs the long version and prints the table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import run_chaos, table
from tests.conftest import sandboxes

pytestmark = pytest.mark.kafka
SECONDS = float(os.environ.get("KMC_CHAOS_SECONDS", "20"))


@pytest.fixture(scope="module")
def chaos_clusters() -> Iterator[tuple[str, str]]:
    with sandboxes(["chaos-src", "chaos-dst"], brokers=3):
        yield "chaos-src", "chaos-dst"


# Both delivery modes and both copy paths, in two runs (make chaos runs all four combinations, longer).
@pytest.mark.parametrize(("exactly_once", "copy_path"), [(False, "batches"), (True, "records")],
                         ids=["at-least-once-batches", "exactly-once-records"])
def test_chaos(chaos_clusters: tuple[str, str], tmp_path: Path, exactly_once: bool, copy_path: str) -> None:
    source, target = chaos_clusters
    result = run_chaos(source, target, seconds=SECONDS, exactly_once=exactly_once, copy_path=copy_path,
                       seed=7 + exactly_once * 2 + (copy_path == "records"), workdir=tmp_path)
    summary = table([result])
    print(f"\n{summary}")  # noqa: T201 - the run's figures, shown with -s
    assert result.kmc_kills + result.source_broker_kills + result.target_broker_kills > 0, summary
    assert result.records > 0 and not result.problems, summary
    assert (result.lost, result.out_of_order, result.gaps) == (0, 0, 0), summary
    assert result.duplicates == (0 if exactly_once else result.redelivered), summary
    assert result.final_exit == 0, summary
