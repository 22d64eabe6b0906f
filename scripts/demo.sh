#!/usr/bin/env bash
# The kmc demo: real Kafka clusters on this machine, data in them, and kmc looking at it.
# Run it with `make demo` (which sets up .venv and puts kmc on PATH).
set -euo pipefail

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

export KMC_DEMO=1
started=$(date +%s)

step kmc sandbox up dc1 dc2
step kmc sandbox seed dc1 --records 2000
step kmc profile test
step kmc topics dc1

cat <<'TXT'

Try next:
  kmc sandbox status          the clusters, their ports and pids
  kmc groups dc1              consumer groups and lag
  kmc topics dc1 -o json      the same listing for scripts
Tear down with:
  kmc sandbox down
TXT
