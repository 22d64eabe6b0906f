"""`kmc flow status --watch`: repeated looks with records/s and a lag sparkline, until Ctrl-C (exit 0)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kmc.cli._watch import _Rows, sparkline
from tests.helpers import create_topic, numbered, produce, wait_for


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0, 4, 8, None, 2]) == "▁▄█ ▂"
    assert sparkline([0, 0]) == "▁▁"


def test_rows_get_a_rate_from_their_position_and_a_lag_history() -> None:
    rows = _Rows("position", "records_behind")
    key = {"flow": "f", "source": "a", "target": "b", "source_topic": "t"}
    first = rows.annotate([{**key, "position": 100, "records_behind": 50}], now=10.0)[0]
    second = rows.annotate([{**key, "position": 160, "records_behind": 0}], now=12.0)[0]
    assert first["records_per_second"] is None and second["records_per_second"] == 30.0
    assert second["lag_history"] == "█▁"


@pytest.mark.kafka
def test_watch_repeats_the_report_off_a_terminal_and_stops_on_ctrl_c(  # noqa: ANN001
        src_cluster, dst_cluster, topic_name: str, tmp_path: Path) -> None:  # noqa: ARG001
    create_topic(src_cluster, topic_name, partitions=2)
    produce(src_cluster, topic_name, numbered(30, 2))
    config = tmp_path / "config.toml"
    config.write_text(f'[flows.w]\nfrom = ["src"]\nto = "dst"\ntopics = ["{topic_name}"]\n')
    for fmt, looks in (("table", lambda text: text.count("flow status w at ")), ("ndjson", lambda text: len(
            [line for line in text.splitlines() if line.strip()]))):
        out = tmp_path / f"watch-{fmt}.out"
        with open(out, "w") as stdout:
            process = subprocess.Popen([sys.executable, "-m", "kmc", "--config", str(config), "-o", fmt, "flow",
                                        "status", "--watch", "--interval", "0.5"], stdout=stdout,
                                       stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: looks(out.read_text()) >= 2, 60, f"two looks ({fmt})")  # noqa: B023
            time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        text = out.read_text()
        if fmt == "table":
            assert "RECORDS/S" in text and "LAG" in text and f"{topic_name}" in text and " 30 " in text
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            assert all(row["records_behind"] == 30 and "time" in row and "lag_history" in row for row in rows)
            assert rows[0]["records_per_second"] is None and rows[1]["records_per_second"] == 0
