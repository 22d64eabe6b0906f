"""kmc benchmarks: kmc mirror against MirrorMaker 2, the broker's ceiling and a plain kafka-python loop.

    python bench/run.py            # full run: millions of records, several minutes (make bench)
    python bench/run.py --quick    # the same pipeline on tiny data, a smoke test (make bench-quick)

Starts two single-broker sandboxes (bench-src, bench-dst) in a temporary XDG_DATA_HOME, generates the
datasets, measures every tool on every dataset in one run, prints a markdown table and writes JSON under
bench/results/. The sandboxes and every tool process are stopped on any exit (normal, error, Ctrl-C,
SIGTERM). Exit status: 0 when every tool ran and copied everything, 1 when a row failed, 130 on Ctrl-C.
See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import jars
import measure
import report
import runners
import wan
import workload

from kmc import sandbox
from kmc.errors import KmcError

BENCH = Path(__file__).resolve().parent

CLUSTERS = ["bench-src", "bench-dst"]
SECURE_CLUSTERS = ["bench-ssrc", "bench-sdst"]  # SASL_SSL sandboxes, for kmc-sasl-ssl
ALL_TOOLS = ["ceiling", "mm2", "kmc", "kmc-w2", "kmc-walk", "kmc-records", "kmc-sasl-ssl", "floor", "wan"]
WAN_DELAY_MS = 25  # one way: a 50 ms round trip between the datacenters (the "wan" rows: kmc and MM2)
WAN_RUNS = 3  # kmc's WAN rate and the LAN rate it is compared with: each the best of this many runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny datasets: checks the harness, not speed")
    parser.add_argument("--tools", default=",".join(ALL_TOOLS),
                        help=f"comma-separated subset of {','.join(ALL_TOOLS)} (default: all)")  # fmt: skip
    parser.add_argument("--no-oneshot", action="store_true", help="skip the small-topic one-shot comparison")
    parser.add_argument("--mm2-version", default=jars.DEFAULT_MM2_VERSION,
                        help=f"connect-mirror version from Maven (default {jars.DEFAULT_MM2_VERSION})")  # fmt: skip
    parser.add_argument("--mm2-tasks", type=int, default=None, help="MirrorMaker 2 tasks.max (default: nproc)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where the JSON and latest.md go (default bench/results, or bench/results/quick "
                             "with --quick)")  # fmt: skip
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directory (tool logs)")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(ALL_TOOLS))
    if unknown:
        parser.error(f"unknown tool {unknown[0]!r}; choose from {', '.join(ALL_TOOLS)}")
    args.tools = tools
    if args.results_dir is None:
        args.results_dir = BENCH / "results" / ("quick" if args.quick else "")
    return args


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ clean-up


class Cleanup:
    """Stops the tools and the sandboxes, removes the scratch directory; safe to call more than once."""

    def __init__(self, home: Path, keep: bool) -> None:
        self.home = home
        self.keep = keep
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut clean-up short
            signal.signal(sig, signal.SIG_IGN)
        measure.stop_all()
        workload.close_clients()
        with contextlib.suppress(Exception):
            existing = {c.name for c in sandbox.list_sandboxes()}
            sandbox.down([n for n in [*CLUSTERS, *SECURE_CLUSTERS] if n in existing])
        for pid in sandbox.kill_jvms_under(self.home):
            say(f"killed leftover JVM {pid}")
        if self.keep:
            say(f"kept the scratch directory {self.home}")
        else:
            shutil.rmtree(self.home, ignore_errors=True)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace, home: Path) -> tuple[dict, list[runners.Row]]:
    started = datetime.now(timezone.utc)
    load_start = report.load_average()
    sets = workload.datasets(args.quick)
    small = workload.SMALL
    machine = report.machine_info()
    mm2_tasks = args.mm2_tasks or machine["nproc"]

    # Jars and kmc first: nothing to clean up yet if they are missing.
    tools_cp = mirror_cp = None
    missing: dict[str, str] = {}
    if "ceiling" in args.tools:
        try:
            tools_cp = jars.tools_classpath()
        except KmcError as exc:
            missing["ceiling"] = exc.one_line()
    if "mm2" in args.tools or "wan" in args.tools:
        try:
            mirror_cp = jars.mirror_classpath(args.mm2_version)
        except KmcError as exc:
            missing["mm2"] = exc.one_line()
    kmc_env = runners.environment_for_kmc(home / "kmc")
    kmc_tools = ("kmc", "kmc-w2", "kmc-walk", "kmc-records", "kmc-sasl-ssl", "kmc-lan")
    if set(kmc_tools) & set(args.tools) or "wan" in args.tools:
        available, why = runners.kmc_available(kmc_env)
        if not available:
            missing.update(dict.fromkeys(kmc_tools, f"kmc mirror is not available: {why}"))
    for tool, why in missing.items():
        say(f"{tool}: not available ({why})")

    say(f"starting sandboxes {', '.join(CLUSTERS)}")
    source, target = sandbox.up(CLUSTERS, timeout=120)
    work = home / "work"
    work.mkdir()
    bench = runners.Bench(
        source=source.bootstrap_servers, target=target.bootstrap_servers, work=work, kmc_env=kmc_env,
        tools_cp=tools_cp or "", mirror_cp=mirror_cp or "", mm2_tasks=mm2_tasks,
    )  # fmt: skip
    secure = "kmc-sasl-ssl" in args.tools and "kmc-sasl-ssl" not in missing
    if secure:
        say(f"starting SASL_SSL sandboxes {', '.join(SECURE_CLUSTERS)}")
        bench = secure_pair(bench, sandbox.up(SECURE_CLUSTERS, timeout=120, security_mode=sandbox.SASL_SSL))
    settle = 1.0 if args.quick else 5.0
    ceiling_runs = 1 if args.quick else 3  # the best of three: the perf tools' rate varies a lot here

    generation: dict[str, float] = {}
    for dataset in [*sets, *([] if args.no_oneshot else [small])]:
        say(f"generating {dataset.records:,} records into {dataset.topic}")
        generation[dataset.name] = round(workload.generate(bench.source, dataset), 2)
        if secure and dataset in sets and dataset.partitions == workload.PARTITIONS:  # same records, same seed
            workload.generate(bench.secure_source, dataset)

    rows: list[runners.Row] = []

    def measure_one(tool: str, section: str, dataset: workload.Dataset, runner: Callable[..., runners.Row],
                    on: runners.Bench | None = None) -> runners.Row | None:
        if tool in missing or (tool in ("producer-perf", "consumer-perf") and "ceiling" in missing):
            why = missing.get(tool) or missing["ceiling"]
            rows.append(runners.not_available(section, dataset, tool, why))
            return None
        time.sleep(settle)  # let the brokers finish flushing the previous run's data
        load = report.load_average()
        far = section == "wan" and on is not None and on is not bench  # (kmc-lan runs beside, on the LAN)
        say(f"{dataset.name}: {runners.TOOL_NAMES[tool]}" + (" (WAN)" if far else ""))
        row = runner(on or bench, dataset) if section == "ceiling" else runner(on or bench, dataset, section)
        row.detail["load_average_before"] = load
        rows.append(row)
        if row.status == "ok":
            say(f"  {row.records_per_s:,.0f} records/s in {row.seconds:.2f}s, {row.cpu_s:.1f} CPU s, "
                f"{row.peak_rss_mb:.0f} MiB")  # fmt: skip
        else:
            say(f"  {row.status}: {row.error}")
        return row

    mirrors = [("mm2", runners.mirror_maker), ("kmc", runners.kmc_mirror),
               ("kmc-w2", functools.partial(runners.kmc_mirror, workers=2)),
               ("kmc-walk", functools.partial(runners.kmc_mirror, copy_path="walk")),
               ("kmc-records", functools.partial(runners.kmc_mirror, copy_path="records")),
               ("kmc-sasl-ssl", functools.partial(runners.kmc_mirror, secure=True)),
               ("floor", runners.floor_loop)]
    for dataset in sets:
        if dataset.partitions != workload.PARTITIONS:  # the many-partitions row: MM2 and kmc only
            for tool, runner in mirrors:
                if tool in ("mm2", "kmc") and tool in args.tools:
                    measure_one(tool, "throughput", dataset, runner)
            continue
        if "ceiling" in args.tools:
            measure_one("producer-perf", "ceiling", dataset, runners.best_of(runners.producer_ceiling, ceiling_runs))
            measure_one("consumer-perf", "ceiling", dataset, runners.best_of(runners.consumer_ceiling, ceiling_runs))
        for tool, runner in mirrors:
            if tool in args.tools:
                measure_one(tool, "throughput", dataset, runner)
    if "wan" in args.tools:
        measure_wan(bench, source, [d for d in sets if d.partitions == workload.PARTITIONS], measure_one,
                    dict(mirrors), runs=1 if args.quick else WAN_RUNS)
    if not args.no_oneshot:
        for tool, runner in mirrors:
            if tool in args.tools and tool != "kmc-sasl-ssl":  # throughput only: TLS's cost is per byte
                measure_one(tool, "oneshot", small, runner)

    report.add_ratios(rows)
    result = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average": {"start": load_start, "end": report.load_average()},
        "settings": {
            "mm2_version": jars.mirror_version_of(mirror_cp) if mirror_cp else args.mm2_version,
            "mm2_tasks": mm2_tasks,
            "poll_interval_s": bench.poll_interval,
            "settle_s": settle,
            "tools": args.tools,
        },
        "datasets": [{**d.to_json(), "generate_s": generation.get(d.name)} for d in sets],
        "small": {**small.to_json(), "generate_s": generation.get(small.name)},
        "results": [row.to_json() for row in rows],
    }
    return result, rows


def measure_wan(bench: runners.Bench, source: sandbox.SandboxCluster, sets: list[workload.Dataset],
                measure_one: Callable[..., runners.Row | None],
                mirrors: dict[str, Callable[..., runners.Row]], runs: int = WAN_RUNS) -> None:
    """The "wan" rows: kmc and MirrorMaker 2 again on each dataset, reading the source through a latency
    proxy (bench/wan.py), each into a target topic of its own."""
    say(f"WAN rows: the source behind a {WAN_DELAY_MS} ms one-way delay")
    link = wan.WanLink(source, WAN_DELAY_MS, bench.work)
    # kmc: the best of ``runs`` runs through the link, and (what "of LAN" divides by) the best of as many on
    # the LAN right beside it: single runs of a few seconds vary by a quarter on this machine
    kmc_lan = runners.best_of(functools.partial(runners.kmc_mirror, section="wan", lan=True), runs)
    kmc_wan = runners.best_of(functools.partial(runners.kmc_mirror, section="wan"), runs)
    try:
        far = dataclasses.replace(bench, source=link.bootstrap)
        for dataset in sets:
            for tool, runner, on in (("mm2", mirrors["mm2"], far), ("kmc-lan", kmc_lan, bench), ("kmc", kmc_wan, far)):
                proxy_cpu = link.child.running_usage()[0]
                row = measure_one(tool, "wan", dataset, runner, on=on)  # type: ignore[call-arg]
                if row is not None and on is far:
                    row.detail.update(delay_ms=WAN_DELAY_MS,
                                      proxy_cpu_s=round(link.child.running_usage()[0] - proxy_cpu, 2))
    finally:
        link.stop()


def secure_pair(bench: runners.Bench, clusters: list[sandbox.SandboxCluster]) -> runners.Bench:
    """``bench`` with the SASL_SSL sandboxes: confluent-kafka settings for the harness (admin over SASL_SSL)
    and a kmc config file naming their admin profiles, secrets read from the sandboxes' files."""
    from kmc.profiles import render_cluster_table

    tables = []
    for cluster in clusters:
        security = cluster.data_dir / "security"
        workload.CLIENT_SETTINGS[cluster.bootstrap_servers] = {
            "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin",
            "sasl.password": (security / "admin.password").read_text().strip(),
            "ssl.ca.location": str(security / "ca.pem")}  # fmt: skip
        tables.append(render_cluster_table(cluster.name, cluster.profile_tables()[cluster.name]))
    config = bench.work / "secure.toml"
    config.write_text("\n".join(tables))
    config.chmod(0o600)
    return dataclasses.replace(bench, secure_source=clusters[0].bootstrap_servers,
                               secure_target=clusters[1].bootstrap_servers,
                               secure_profiles=(clusters[0].name, clusters[1].name), secure_config=config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="kmc-bench-"))
    # The sandboxes live in our own XDG_DATA_HOME: never the user's or the tests' sandboxes.
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    cleanup = Cleanup(home, args.keep_work)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        result, rows = run(args, home)
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except KmcError as exc:
        say(f"error: {exc.one_line()}")
        return int(exc.exit_code)
    finally:
        cleanup()
    table = report.markdown(result, rows)
    print(table, end="")
    if not args.no_save:
        path = report.save(result, table, args.results_dir)
        say(f"wrote {path} and {args.results_dir / 'latest.md'}")
    return 1 if any(row.status == "failed" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
