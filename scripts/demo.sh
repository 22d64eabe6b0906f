#!/usr/bin/env bash
# The kmc demo: the classic multi-datacenter topology on real Kafka clusters on this machine.
#
#     dc1 --\
#            >-- aggregate --> central -- fanout --> dr
#     dc2 --/
#
# Run it with `make demo` (which sets up .venv and puts kmc on PATH). It can be run again: the clusters
# stay up, seeding adds records, and the flows copy only what is new. Tear down with `kmc sandbox down`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Commands in bold on a terminal only (kmc itself colours only there): piped to a file, plain text.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; "$@"; }

started=$(date +%s)
export KMC_CONFIG=examples/demo.toml   # the flows; the sandboxes below are profiles automatically

# Four single-broker KRaft clusters, started in parallel (already running ones are left as they are).
step kmc sandbox up dc1 dc2 central dr
# Sample data in the two datacenters: orders, payments, clicks (null keys), customers (compacted, with
# tombstones); every record has keys and headers.
step kmc sandbox seed dc1 --records 2000
step kmc sandbox seed dc2 --records 1500
step kmc flow list
step kmc flow check
# Both flows in one run, --once as cron would: dc1 and dc2 into central first, then central into dr.
step kmc flow run aggregate fanout --once
step kmc flow status
step kmc inventory --view topics
# The proof: every record of dc1 and dc2 is in central under its new name, and central equals dr;
# keys, values, headers (apart from kmc-origin) and order, partition by partition. Exit 1 on a difference.
step kmc diff dc1 central --rename '{source}.{topic}' --data
step kmc diff dc2 central --rename '{source}.{topic}' --data
step kmc diff central dr --data

cat <<TXT

Demo done in $(($(date +%s) - started))s. The flows are in examples/demo.toml (KMC_CONFIG=examples/demo.toml).
Try next:
  export KMC_CONFIG=examples/demo.toml
  kmc sandbox seed dc2 --records 500 && kmc flow status           records behind, and how long
  kmc flow run --all --follow                                      copy continuously; Ctrl-C stops cleanly
  kmc aggregate dc1 dc2 --into central --merge --topics orders     one merged 'orders' topic in central
  kmc topics central -o json                                       the same listings, for scripts
  kmc sandbox status                                               the clusters, their ports and pids
Tear down with:
  kmc sandbox down
TXT
