"""The benchmark's output: ratios between rows, machine facts, the markdown table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from runners import MIRROR_TOOLS, TOOL_NAMES, Row

import kmc
from kmc.sandbox import runtime

REPO = Path(__file__).resolve().parent.parent


def add_ratios(rows: list[Row]) -> None:
    """Fill ``vs_mm2`` and ``vs_ceiling`` of every measured row, per dataset.

    Throughput rows: records/s ÷ MM2's records/s (same data, so the MB/s ratio is the same number), and
    records/s ÷ the broker ceiling, the slower of ProducerPerformance and ConsumerPerformance on that data
    (a mirror both reads and writes). One-shot rows: MM2's seconds ÷ the tool's seconds (above 1 is faster).
    """
    by_dataset: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows:
        section = row.section if row.section in ("oneshot", "wan") else "throughput"
        by_dataset.setdefault((section, row.dataset), {})[row.tool] = row
    for (section, dataset), tools in by_dataset.items():
        mm2 = tools.get("mm2")
        mm2_ok = mm2 is not None and mm2.status == "ok"
        ceilings = [tools[t].records_per_s for t in ("producer-perf", "consumer-perf") if _ok(tools.get(t))]
        ceiling = min(ceilings) if len(ceilings) == 2 else None  # type: ignore[type-var]
        for row in tools.values():
            if row.status != "ok":
                continue
            if section == "oneshot":
                row.vs_mm2 = mm2.seconds / row.seconds if mm2_ok else None  # type: ignore[union-attr,operator]
                continue
            if row.tool.endswith("-lan"):
                continue  # the LAN run beside a WAN row: what that row's "of LAN" divides by
            row.vs_mm2 = row.records_per_s / mm2.records_per_s if mm2_ok else None  # type: ignore[union-attr,operator]
            # a WAN row against the LAN rate measured beside it (kmc), else the same tool's throughput row
            lan = tools.get(f"{row.tool}-lan") or by_dataset.get(("throughput", dataset), {}).get(row.tool)
            if section == "wan" and _ok(lan):
                row.vs_lan = row.records_per_s / lan.records_per_s  # type: ignore[union-attr,operator]
            if row.tool in MIRROR_TOOLS and ceiling:
                row.vs_ceiling = row.records_per_s / ceiling  # type: ignore[operator]
            if row.tool == "kmc-sasl-ssl" and _ok(tools.get("kmc")):
                plaintext = tools["kmc"]
                row.vs_plaintext = row.records_per_s / plaintext.records_per_s  # type: ignore[operator]
                if row.cpu_s and plaintext.cpu_s:  # steadier than the rate on a busy machine
                    row.detail["cpu_vs_plaintext"] = round(row.cpu_s / plaintext.cpu_s, 3)


def _ok(row: Row | None) -> bool:
    return row is not None and row.status == "ok" and row.records_per_s is not None


# ------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPUs, memory, versions, and how busy the machine was."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": _java_version(),
        "kafka_broker": runtime.KAFKA_VERSION,
        "kmc": kmc.__version__,
        "kmc_commit": _git_commit(),
    }
    for package in ("kafka-python", "confluent-kafka"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _java_version() -> str | None:
    try:
        proc = subprocess.run([runtime.find_java(), "-version"], capture_output=True, text=True, timeout=30)
    except Exception:  # noqa: BLE001 - a fact for the report, never a reason to fail
        return None
    first = (proc.stderr or proc.stdout).strip().splitlines()
    return first[0] if first else None


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10)  # fmt: skip
    except OSError:
        return None
    return proc.stdout.strip() or None


# --------------------------------------------------------------------------------------- table


def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}{suffix}"


def _status(row: Row) -> str:
    return "FAILED" if row.status == "failed" else row.status


def _table(names: list[str], figures: list[str], rows: list[Row], label: Callable[[Row], list[str]],
           cells: Callable[[Row], list[str]]) -> list[str]:
    """A markdown table: ``label(row)`` under the ``names`` columns, left-aligned, ``cells(row)`` under the
    ``figures``, right-aligned; a row that did not run says so (FAILED, not available) in its first
    figure's column."""
    lines = ["| " + " | ".join([*names, *figures]) + " |",
             "| " + " | ".join(["---"] * len(names) + ["---:"] * len(figures)) + " |"]
    for row in rows:
        if row.status != "ok":
            lines.append("| " + " | ".join([*label(row), _status(row)]) + " |" + " |" * (len(figures) - 1))
        else:
            lines.append("| " + " | ".join([*label(row), *cells(row)]) + " |")
    return lines


def markdown(result: dict[str, Any], rows: list[Row]) -> str:
    """The report as markdown: a machine line, the throughput table, the one-shot table, the failures."""
    machine = result["machine"]
    lines = [
        f"### kmc benchmark, {result['mode']} run, {result['started']}",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB RAM, "
        f"{machine['os']}; Python {machine['python']}, {machine['java']}; Kafka {machine['kafka_broker']} "
        f"sandboxes (1 broker each); MirrorMaker 2 {result['settings']['mm2_version']} "
        f"(tasks.max={result['settings']['mm2_tasks']}); kmc {machine['kmc']} ({machine['kmc_commit']}). "
        f"Load average at start {result['load_average']['start']}, at end {result['load_average']['end']}.",
        "",
        "Throughput: 12 partitions, a key and one header per record. Mirroring tools are timed from process "
        "start (start-up included) to the end of the copy; the ceiling rows are the perf tools' own rates. "
        "MB = 10^6 bytes of key + value + header. × MM2 = records/s ÷ MirrorMaker 2's; "
        "% ceiling = records/s ÷ the slower of ProducerPerformance and ConsumerPerformance.",
        "",
    ]
    lines += _table(
        ["dataset", "tool"], ["records", "seconds", "records/s", "MB/s", "CPU s", "peak RSS MiB", "× MM2", "% ceiling"],
        [row for row in rows if row.section not in ("oneshot", "wan")],
        lambda row: [row.dataset, TOOL_NAMES[row.tool] + (" (ceiling)" if row.section == "ceiling" else "")],
        lambda row: [_num(row.records), _num(row.seconds, 2), _num(row.records_per_s), _num(row.mb_per_s, 1),
                     _num(row.cpu_s, 1), _num(row.peak_rss_mb), _num(row.vs_mm2, 2, "×"),
                     _num(row.vs_ceiling and row.vs_ceiling * 100, 0, " %")])
    secured = [row for row in rows if row.tool == "kmc-sasl-ssl" and row.vs_plaintext is not None]
    if secured:
        costs = ", ".join(f"{row.dataset} {row.vs_plaintext * 100:.0f} %"
                          + (f" (CPU {row.detail['cpu_vs_plaintext'] * 100:.0f} %)"
                             if "cpu_vs_plaintext" in row.detail else "") for row in secured)
        lines += ["", "The cost of TLS and SASL: kmc mirror --once between two SASL_SSL sandboxes (SCRAM-SHA-512, "
                  "TLS 1.3) runs at this share of its PLAINTEXT rate on the same data (and uses this share of its "
                  "CPU seconds): " + costs + "."]
    wan = [row for row in rows if row.section == "wan"]
    if wan:
        delay = next((row.detail["delay_ms"] for row in wan if "delay_ms" in row.detail), "?")
        runs = {1: "one run", 2: "two runs", 3: "three runs"}.get(
            max((len(row.detail.get("runs_records_per_s", ())) for row in wan), default=0) or 1, "several runs")
        lines += [
            "",
            f"WAN: the same datasets with the source behind a {delay} ms one-way delay (a {2 * delay} ms round "
            "trip, bench/latency_proxy.py; no bandwidth limit), the target local, as a mirror runs in the "
            f"target's datacenter. Of LAN = records/s ÷ the same tool's LAN rate: for kmc the best of {runs} "
            f"through the link ÷ the best of {runs} on the LAN right beside them (its own row), for MirrorMaker 2 "
            "one run ÷ its row in the table above.",
            "",
        ]
        lines += _table(
            ["dataset", "tool"], ["seconds", "records/s", "MB/s", "CPU s", "× MM2", "of LAN"], wan,
            lambda row: [row.dataset, TOOL_NAMES[row.tool] + ("" if row.tool.endswith("-lan") else " (WAN)")],
            lambda row: [_num(row.seconds, 2), _num(row.records_per_s), _num(row.mb_per_s, 1), _num(row.cpu_s, 1),
                         _num(row.vs_mm2, 2, "×"), _num(row.vs_lan and row.vs_lan * 100, 0, " %")])
    oneshot = [row for row in rows if row.section == "oneshot"]
    if oneshot:
        lines += [
            "",
            f"Small topic, one shot: {oneshot[0].records or result['small']['records']:,} records "
            f"({oneshot[0].dataset}), wall time from command start to everything copied, start-up included. "
            "× MM2 = MirrorMaker 2's time ÷ the tool's time.",
            "",
        ]
        lines += _table(
            ["tool"], ["seconds", "CPU s", "peak RSS MiB", "× MM2"], oneshot, lambda row: [TOOL_NAMES[row.tool]],
            lambda row: [_num(row.seconds, 2), _num(row.cpu_s, 1), _num(row.peak_rss_mb), _num(row.vs_mm2, 2, "×")])
    notes = [row for row in rows if row.status != "ok"]
    if notes:
        lines += [""] + [
            f"- {_status(row)}: {TOOL_NAMES[row.tool]} on {row.dataset} ({row.section}): {row.error}" for row in notes
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- files


def save(result: dict[str, Any], table: str, directory: Path) -> Path:
    """Write ``<timestamp>.json``, ``latest.json`` and ``latest.md`` into ``directory``; returns the first."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(result["started"]).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=1) + "\n"
    path = directory / f"{stamp}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    (directory / "latest.md").write_text(table)
    return path
