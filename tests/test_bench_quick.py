"""``bench/run.py --quick`` end to end: every tool ran, every copy is complete, the table has every row.

A smoke test of the benchmark harness, not a timing test: the numbers are not looked at. The harness starts
its own sandboxes (bench-src, bench-dst) in its own temporary directory, which this test points at
``tmp_path`` (through TMPDIR) to check that nothing of it is left running afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MIRROR_TOOLS = ["mm2", "kmc", "kmc-w2", "kmc-walk", "kmc-records", "kmc-sasl-ssl", "floor"]
THROUGHPUT_TOOLS = ["producer-perf", "consumer-perf", *MIRROR_TOOLS]
MANY_PARTITIONS_TOOLS = ["mm2", "kmc"]  # the many-partitions dataset's row
WAN_TOOLS = ["mm2", "kmc-lan", "kmc"]  # the WAN rows: the source behind the latency proxy (kmc-lan: LAN, beside)
ONESHOT_TOOLS = [tool for tool in MIRROR_TOOLS if tool != "kmc-sasl-ssl"]  # TLS's cost: throughput only
PARTITIONS = 12  # of every dataset but the many-partitions one

pytestmark = [pytest.mark.kafka, pytest.mark.bench, pytest.mark.timeout(1200)]


def _processes_naming(path: Path) -> list[str]:
    marker = f"{path}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]!r}")
    return found


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("bench")
    scratch, results = base / "tmp", base / "results"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--results-dir", str(results)],
        capture_output=True, text=True, env=env, timeout=1100,
    )  # fmt: skip
    assert proc.returncode == 0, f"bench exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {
        "stdout": proc.stdout,
        "result": json.loads((results / "latest.json").read_text()),
        "latest_md": (results / "latest.md").read_text(),
        "scratch": scratch,
    }


def _rows(quick_run: dict) -> dict[tuple[str, str, str], dict]:
    return {(r["section"], r["dataset"], r["tool"]): r for r in quick_run["result"]["results"]}


def _tools(dataset: dict) -> list[str]:
    return THROUGHPUT_TOOLS if dataset["partitions"] == PARTITIONS else MANY_PARTITIONS_TOOLS


def test_every_tool_ran_on_every_dataset(quick_run: dict) -> None:
    result = quick_run["result"]
    expected = {
        ("ceiling" if tool.endswith("-perf") else "throughput", dataset["name"], tool)
        for dataset in result["datasets"]
        for tool in _tools(dataset)
    } | {("oneshot", result["small"]["name"], tool) for tool in ONESHOT_TOOLS} | {
        ("wan", dataset["name"], tool) for dataset in result["datasets"] if dataset["partitions"] == PARTITIONS
        for tool in WAN_TOOLS
    }
    rows = _rows(quick_run)
    assert set(rows) == expected
    assert [d["name"] for d in result["datasets"]] == ["100B-none", "100B-lz4", "1KB-none", "1KB-lz4", "100B-zstd",
                                                       "100B-gzip", "10KB-zeros-lz4", "100B-1000p"]
    not_ok = {key: (row["status"], row["error"]) for key, row in rows.items() if row["status"] != "ok"}
    assert not_ok == {}
    for row in rows.values():
        assert row["records_per_s"] > 0 and row["seconds"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 0


def test_every_copy_is_complete(quick_run: dict) -> None:
    result = quick_run["result"]
    sizes = {d["name"]: d["records"] for d in [*result["datasets"], result["small"]]}
    partitions = {d["name"]: d["partitions"] for d in [*result["datasets"], result["small"]]}
    copies = [row for row in result["results"] if row["tool"] in MIRROR_TOOLS]
    # every dataset and the small one-shot topic
    usual = [d for d in result["datasets"] if d["partitions"] == PARTITIONS]
    assert len(copies) == (sum(len(set(_tools(d)) & set(MIRROR_TOOLS)) for d in result["datasets"])
                           + len(ONESHOT_TOOLS) + len(set(WAN_TOOLS) & set(MIRROR_TOOLS)) * len(usual))
    for row in copies:
        source, target = row["detail"]["source_counts"], row["detail"]["target_counts"]
        assert len(source) == partitions[row["dataset"]], row["detail"]
        assert source == target, (row["section"], row["dataset"], row["tool"])
        assert sum(target) == sizes[row["dataset"]] == row["records"]


def test_table_has_every_row(quick_run: dict) -> None:
    table = quick_run["stdout"]
    assert table == quick_run["latest_md"]
    lines = table.splitlines()
    for row in quick_run["result"]["results"]:
        lan = row["tool"].endswith("-lan")  # (the LAN run beside a WAN row: no ratio of its own)
        name = row["tool_name"] + {"ceiling": " (ceiling)", "wan": "" if lan else " (WAN)"}.get(row["section"], "")
        if row["section"] == "oneshot":
            wanted = [line for line in lines if line.startswith(f"| {name} | ")]
        else:
            wanted = [line for line in lines if line.startswith(f"| {row['dataset']} | {name} | ")]
        assert len(wanted) == 1, (row["section"], row["dataset"], name)
        assert "FAILED" not in wanted[0] and ("×" in wanted[0] or lan)
    secured = [row for row in quick_run["result"]["results"] if row["tool"] == "kmc-sasl-ssl"]
    usual = [d for d in quick_run["result"]["datasets"] if d["partitions"] == PARTITIONS]
    assert len(secured) == len(usual) and all(row["vs_plaintext"] > 0 for row in secured)
    assert "The cost of TLS and SASL" in table
    far = [row for row in quick_run["result"]["results"] if row["section"] == "wan" and row["tool"] != "kmc-lan"]
    assert all(row["vs_lan"] > 0 and row["detail"]["delay_ms"] == 25 and row["detail"]["proxy_cpu_s"] > 0
               for row in far)
    rows = _rows(quick_run)
    for dataset in usual:  # kmc's WAN row against the LAN run beside it, not the throughput table's
        wan, lan = rows[("wan", dataset["name"], "kmc")], rows[("wan", dataset["name"], "kmc-lan")]
        assert wan["vs_lan"] == pytest.approx(wan["records_per_s"] / lan["records_per_s"], abs=0.002)
        assert lan["detail"]["target_counts"] == lan["detail"]["source_counts"] and lan["vs_lan"] is None
    machine = quick_run["result"]["machine"]
    assert {"nproc", "memory_gib", "cpu_model", "python", "java"} <= set(machine)
    assert f"{machine['nproc']} CPUs" in table


def test_nothing_left_running(quick_run: dict) -> None:
    scratch = quick_run["scratch"]
    assert _processes_naming(scratch) == []
    assert list(scratch.iterdir()) == []  # the harness removed its scratch directory


def test_failover_bench_runs_both_tools_and_leaves_nothing(tmp_path: Path) -> None:
    """``bench/failover.py`` on small data: both tools measured on every case, kmc losing and repeating
    nothing, and no process of its left behind."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "failover.py"), "--records", "600", "--live-seconds", "4",
         "--settle", "3", "--no-save"],
        capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)}, timeout=1100,
    )  # fmt: skip
    assert proc.returncode == 0, f"failover bench exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-5000:]}"
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    cases = {cells[0].strip(): [cell.strip() for cell in cells[2:]] for cells in rows[1:]}
    assert set(cases) == {"plain", "compacted", "transactional", "trimmed", "live"}
    assert all(cells[:2] == ["0", "0"] for cells in cases.values()), proc.stdout  # kmc: lost, repeated
    assert _processes_naming(scratch) == []
