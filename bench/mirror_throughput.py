"""kmc mirror throughput on its own: records/s, MB/s, CPU and peak RSS for 100 B and 1 KB values.

    python bench/mirror_throughput.py                     # 300k x 100 B and 200k x 1 KB, 12 partitions
    python bench/mirror_throughput.py --records 50000     # smaller, both sizes
    python bench/mirror_throughput.py --profile           # also one in-process run under cProfile
    python bench/mirror_throughput.py --workers 1 2       # one row per dataset and worker count

Starts two single-broker sandboxes (mt-src, mt-dst) in a temporary XDG home, generates each dataset with
confluent-kafka (bench/workload.py), runs ``kmc mirror --once -q -o json`` as a child process (timed from
start to exit by bench/measure.py: wall time, CPU seconds, peak RSS), checks the target's end offsets, and
prints a table. The sandboxes are stopped on every exit. For kmc against MirrorMaker 2 and the broker's
own ceiling, see bench/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # run from a checkout without installing kmc
sys.path.insert(0, str(BENCH))

import measure  # noqa: E402
import workload  # noqa: E402

CLUSTERS = ["mt-src", "mt-dst"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=None,
                        help="records per dataset [default: 300000 for 100 B, 200000 for 1 KB]")
    parser.add_argument("--compression", choices=["none", "lz4"], default="lz4",
                        help="codec of the source topics (kmc sends lz4 to the target either way)")
    parser.add_argument("--profile", action="store_true", help="also profile one in-process run (100 B)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], metavar="N",
                        help="kmc mirror --workers values to run, each into its own target topic [default: 1]")
    parser.add_argument("--sizes", nargs="+", choices=["100B", "1KB"], default=["100B", "1KB"],
                        help="value sizes to run [default: both]")
    return parser.parse_args(argv)


def run_kmc(env: dict[str, str], work: Path, dataset: workload.Dataset, workers: int = 1) -> dict[str, object]:
    # each worker count copies into its own target topic and flow, so every run copies everything
    target, name = (dataset.topic, dataset.name) if workers == 1 else (f"{dataset.topic}.w{workers}",
                                                                       f"{dataset.name}-w{workers}")
    cmd = [str(Path(sys.executable).with_name("kmc")), "mirror", CLUSTERS[0], CLUSTERS[1],
           "--topics", re.escape(dataset.topic), "--once", "-q", "-o", "json", "--workers", str(workers)]
    if workers != 1:
        cmd += ["--rename", "{topic}" + f".w{workers}", "--flow", f"w{workers}"]
    child = measure.Child(cmd, work / f"{name}.log", env=env, stdout=work / f"{name}.json")
    usage = child.wait(600)
    if usage.exit_code != 0:
        raise RuntimeError(f"kmc mirror exited {usage.exit_code}: {child.tail(5)}")
    output = json.loads((work / f"{name}.json").read_text())
    copied = sum(workload.end_offsets(env["MT_DST"], target).values())
    if copied != dataset.records or output["records"] != dataset.records:
        raise RuntimeError(f"{dataset.name}: target has {copied} records, kmc says {output['records']}, "
                           f"expected {dataset.records}")
    engine = float(output["elapsed_seconds"])
    return {
        "dataset": dataset.name, "workers": workers, "records": dataset.records,
        "wall_s": round(usage.seconds, 2), "copy_s": round(engine, 2),
        "records_per_s": round(dataset.records / engine), "mb_per_s": round(dataset.total_bytes / engine / 1e6, 1),
        "records_per_s_wall": round(dataset.records / usage.seconds),
        "cpu_s": round(usage.cpu_s, 1), "records_per_cpu_s": round(dataset.records / max(usage.cpu_s, 1e-3)),
        "peak_rss_mib": round(usage.peak_rss_mb), "load_average": round(os.getloadavg()[0], 1),
    }


def profile(dataset: workload.Dataset) -> str:
    """One in-process copy of ``dataset`` into ``<topic>.prof`` under cProfile: the top functions."""
    from kmc import sandbox
    from kmc.mirror import MirrorSpec, run_mirror
    from kmc.profiles import Cluster

    source, target = (Cluster(name=c.name, bootstrap=tuple(c.bootstrap)) for c in sandbox.up(CLUSTERS))
    spec = MirrorSpec(topics=(re.escape(dataset.topic),), rename="{topic}.prof", flow="profile")
    profiler = cProfile.Profile()
    profiler.enable()
    result = run_mirror(source, target, spec, mode="once")
    profiler.disable()
    out = io.StringIO()
    out.write(f"profile: {result.records} records in {result.elapsed:.1f}s "
              f"({result.records / result.elapsed:,.0f}/s under cProfile)\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="kmc-mirror-bench-"))
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        os.environ[name] = str(home / name.lower())
    from kmc import sandbox

    datasets = [
        workload.Dataset(f"{label}-{args.compression}", f"mt-{label.lower()}-{args.compression}",
                         args.records or default, size, args.compression)
        for label, size, default in (("100B", 100, 300_000), ("1KB", 1000, 200_000)) if label in args.sizes
    ]
    rows = []
    succeeded = False
    try:
        started = time.monotonic()
        clusters = sandbox.up(CLUSTERS)
        env = dict(os.environ, MT_DST=clusters[1].bootstrap_servers)
        print(f"sandboxes up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        for dataset in datasets:
            seconds = workload.generate(clusters[0].bootstrap_servers, dataset)
            print(f"{dataset.name}: generated {dataset.records} records in {seconds:.1f}s", file=sys.stderr)
            for workers in args.workers:
                rows.append(run_kmc(env, home, dataset, workers))
                print(json.dumps(rows[-1]), file=sys.stderr)
        if args.profile:
            print(profile(datasets[0]))
        succeeded = True
    finally:
        measure.stop_all()
        with contextlib.suppress(Exception):
            sandbox.down(CLUSTERS)
        if succeeded:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kmc's output and the sandboxes' state are in {home}", file=sys.stderr)
    keys = ["dataset", "workers", "records", "records_per_s", "mb_per_s", "copy_s", "wall_s", "records_per_s_wall",
            "cpu_s", "records_per_cpu_s", "peak_rss_mib", "load_average"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")
    print("MB/s counts key + value + header bytes (bench/workload.py); copy_s is kmc's own elapsed_seconds "
          "(start-up excluded), wall_s the process from start to exit; cpu_s and records_per_cpu_s include start-up. "
          f"The machine has {os.cpu_count()} CPUs; load_average is the 1-minute load when the run ended.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
