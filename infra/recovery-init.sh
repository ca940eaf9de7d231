#!/usr/bin/env bash
# Run by the compose "recovery-init" service: create the Bytewax recovery store DIR once.
# Idempotent: an existing store is kept (re-initialising it would fail and lose the offsets).
#   bash infra/recovery-init.sh DIR [PARTITIONS]
set -euo pipefail
dir=${1:?usage: recovery-init.sh DIR [PARTITIONS]}
parts=${2:-64}  # about one per 16,000 patients, >= workers (docs/operations.md)
if compgen -G "$dir/part-*.sqlite3" >/dev/null; then
  echo "recovery-init: store exists in $dir"
  exit 0
fi
mkdir -p "$dir"
python -m bytewax.recovery "$dir" "$parts"
echo "recovery-init: created $parts partition(s) in $dir"
