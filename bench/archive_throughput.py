"""Throughput and size of `kmc export` and `kmc import` against the broker's consume ceiling and the mirror.

    .venv/bin/python bench/archive_throughput.py [--records 1000000] [--value-size 100] [--compression lz4]

Starts its own pair of sandbox clusters in a temporary XDG home (the Kafka jar cache is shared), writes one
dataset of the mirror benchmark's shape (bench/workload.py: 12 partitions, 12-byte key, one header) into the
source with confluent-kafka, then measures, each as a child process (bench/measure.py: wall time with
start-up, CPU seconds, peak RSS):

- ConsumerPerformance reading the dataset (the broker's consume ceiling, best of three: its fetch rate);
- `kmc export SRC --to DIR` (to a local directory);
- `kmc import DIR DST` (into a new topic) and `kmc mirror --once SRC DST` (into another new topic);
- the export's size on disk against the source broker's log segments (`.log` files) of the topic.

MB/s counts payload (key + value + header) bytes; every copy is checked by end offsets, as bench/run.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import jars
import measure
import runners
import workload
from workload import Dataset

SOURCE, TARGET = "bench-arch-src", "bench-arch-dst"
TIMEOUT = 1800.0


def kmc_row(bench: runners.Bench, name: str, args: list[str], home: Path, dataset: Dataset) -> dict:
    child = measure.Child([sys.executable, "-m", "kmc", *args, "-o", "json", "--timeout", "30"],
                          home / f"{name}.log", stdout=home / f"{name}.json", env=bench.kmc_env)
    usage = child.wait(TIMEOUT)
    if usage.exit_code != 0:
        raise SystemExit(f"kmc {name} exited {usage.exit_code}:\n{child.tail()}")
    return {"seconds": usage.seconds, "cpu_s": usage.cpu_s, "rss": usage.peak_rss_mb,
            "mb_per_s": dataset.total_bytes / 1e6 / usage.seconds,
            "records_per_s": dataset.records / usage.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--compression", choices=["none", "lz4", "zstd", "gzip"], default="lz4")
    args = parser.parse_args()
    dataset = Dataset(f"{args.value_size}B-{args.compression}", "bench-archive", args.records, args.value_size,
                      args.compression)
    home = Path(tempfile.mkdtemp(prefix="kmc-bench-archive-"))
    for variable, directory in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        (home / directory).mkdir()
        os.environ[variable] = str(home / directory)
    os.environ.pop("KMC_CONFIG", None)
    from kmc import sandbox  # after the environment: sandboxes live under XDG_DATA_HOME

    try:
        print(f"starting sandboxes {SOURCE} and {TARGET} ...", file=sys.stderr)
        source, target = sandbox.up([SOURCE, TARGET], timeout=180)
        bench = runners.Bench(",".join(source.bootstrap), ",".join(target.bootstrap), home,
                              runners.environment_for_kmc(home), jars.tools_classpath(), "", 1)
        seconds = workload.generate(bench.source, dataset)
        print(f"wrote {dataset.records:,} records in {seconds:.1f}s", file=sys.stderr)
        ceiling = runners.best_of(runners.consumer_ceiling, 3)(bench, dataset)
        export = kmc_row(bench, "export", ["export", SOURCE, "--topics", dataset.topic, "--to", str(home / "x")], home,
                         dataset)
        imported = kmc_row(bench, "import", ["import", str(home / "x"), TARGET, "--rename", "{topic}.imported"], home,
                           dataset)
        mirrored = kmc_row(bench, "mirror", ["mirror", SOURCE, TARGET, "--topics", dataset.topic, "--rename",
                                             "{topic}.mirrored", "--once"], home, dataset)
        source_counts = workload.end_offsets(bench.source, dataset.topic)
        for copy in ("imported", "mirrored"):
            problem = workload.compare(source_counts, workload.end_offsets(bench.target, f"{dataset.topic}.{copy}"))
            if problem:
                raise SystemExit(f"{copy}: {problem}")
        export_bytes = sum(path.stat().st_size for path in (home / "x").rglob("*.batches"))
        manifest_bytes = sum(path.stat().st_size for path in (home / "x").rglob("manifest.json"))
        log_bytes = sum(path.stat().st_size for broker in source.brokers
                        for path in Path(broker.log_dir).glob(f"{dataset.topic}-*/*.log"))
        total = json.loads((home / "export.json").read_text())["bytes"]
        rows = [
            ("dataset", f"{dataset.records:,} records of {dataset.record_bytes} B ({dataset.name}, "
                        f"{workload.PARTITIONS} partitions), {dataset.total_bytes / 1e6:.0f} MB payload"),
            ("consume ceiling (ConsumerPerformance, best of 3)", f"{ceiling.mb_per_s or 0:.1f} MB/s"),
            ("kmc export --to DIR (start-up included)",
             f"{export['mb_per_s']:.1f} MB/s = {export['mb_per_s'] / (ceiling.mb_per_s or 1):.0%} of the "
             f"ceiling ({export['seconds']:.1f} s, {export['cpu_s']:.1f} CPU s, {export['rss']:.0f} MiB)"),
            ("kmc import DIR", f"{imported['mb_per_s']:.1f} MB/s ({imported['seconds']:.1f} s, "
                               f"{imported['cpu_s']:.1f} CPU s, {imported['rss']:.0f} MiB)"),
            ("kmc mirror --once", f"{mirrored['mb_per_s']:.1f} MB/s ({mirrored['seconds']:.1f} s, "
                                  f"{mirrored['cpu_s']:.1f} CPU s, {mirrored['rss']:.0f} MiB)"),
            ("import / mirror", f"{imported['mb_per_s'] / mirrored['mb_per_s']:.0%}"),
            ("export size (data files; manifests)", f"{export_bytes:,} B; {manifest_bytes:,} B"),
            ("source log segments (.log)", f"{log_bytes:,} B"),
            ("export / log segments", f"{(export_bytes + manifest_bytes) / log_bytes:.1%} "
                                      f"(data files {export_bytes / log_bytes:.1%}; kmc counted {total:,} B)"),
            ("load average at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name.ljust(width)}  {value}")
        return 0
    finally:
        try:
            measure.stop_all()
            workload.close_clients()
            sandbox.down([SOURCE, TARGET])
        finally:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
