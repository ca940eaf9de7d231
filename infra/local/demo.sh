#!/usr/bin/env bash
# `make demo`: services, setup, model (if absent), a bounded simulator run into Kafka, the
# monitor over it (stops when caught up), then a reconciled summary.
#
# The demo runs in its own namespace (BPWATCH_NAMESPACE, default "demo") and starts from a
# clean slate each time: its topics, indices, normal-case files and recovery store are reset.
# Tunables: BPWATCH_SIM_COUNT (20000), BPWATCH_SIM_PATIENTS (500), BPWATCH_SIM_FAULT_RATE (0.02),
# BPWATCH_SIM_SEED (42), BPWATCH_SIM_HOME_SHARE (0.1), BPWATCH_SIM_ACK_SHARE (0.5), DEMO_WORKERS (2),
# BPWATCH_SIM_POSTPARTUM_SHARE (0.04), BPWATCH_SIM_LOW_ADHERENCE_SHARE (0.06).
# BPWATCH_SIM_START defaults to the last full hour a day ago, so the home cohort's week lies in
# the past week of wall-clock time: the patients who stop sending are silent for more than
# BPWATCH_NO_DATA_HOURS (48) and within the lookback (7 days), everyone else is recent, and
# the summary can check the monitor's no-data episodes against the ground truth.
# The remote-monitoring cohorts (postpartum patients, enrolled on bp.enrollments before their
# readings, and patients who send on some days only) send their courses in the six weeks before
# time 0, so the bounded run holds them whole: the summary reconciles their bp-adherence cycles
# and the postpartum severe-range episodes against the ground truth.
# The alert loop in two passes: the first pass opens the episodes with the acknowledgement
# deadline held at a day (none falls due); lib.tools.demo_acks then acknowledges
# BPWATCH_SIM_ACK_SHARE of those that need one (severity BPWATCH_ACK_MIN_SEVERITY); the second
# pass reads the acknowledgements with the deadline shortened to a moment, so every other one
# is overdue when it ends. The summary reconciles the acknowledged, overdue and open episodes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=.venv/bin/python

export BPWATCH_NAMESPACE=${BPWATCH_NAMESPACE-demo}
# Quiet by default: one line per stage and the summary. BPWATCH_LOG_LEVEL=INFO shows the
# per-batch lines that the monitor logs in production.
export BPWATCH_LOG_LEVEL=${BPWATCH_LOG_LEVEL:-WARNING}
export BPWATCH_SIM_COUNT=${BPWATCH_SIM_COUNT:-20000}
export BPWATCH_SIM_PATIENTS=${BPWATCH_SIM_PATIENTS:-500}
export BPWATCH_SIM_FAULT_RATE=${BPWATCH_SIM_FAULT_RATE:-0.02}
export BPWATCH_SIM_SEED=${BPWATCH_SIM_SEED:-42}
export BPWATCH_SIM_RATE=${BPWATCH_SIM_RATE:-0}
export BPWATCH_SIM_HOME_SHARE=${BPWATCH_SIM_HOME_SHARE:-0.1}
export BPWATCH_SIM_POSTPARTUM_SHARE=${BPWATCH_SIM_POSTPARTUM_SHARE:-0.04}
export BPWATCH_SIM_LOW_ADHERENCE_SHARE=${BPWATCH_SIM_LOW_ADHERENCE_SHARE:-0.06}
export BPWATCH_SIM_ACK_SHARE=${BPWATCH_SIM_ACK_SHARE:-0.5}
export BPWATCH_SIM_START=${BPWATCH_SIM_START:-$(date -u -d '1 day ago' +%Y-%m-%dT%H:00:00Z)}
DEMO_DIR=${DEMO_DIR:-data/${BPWATCH_NAMESPACE:-default}}
export BPWATCH_NORMAL_DIR=${BPWATCH_NORMAL_DIR:-$DEMO_DIR/normal_cases}
export BPWATCH_SIM_TRUTH=${BPWATCH_SIM_TRUTH:-$DEMO_DIR/ground_truth.jsonl}
WORKERS=${DEMO_WORKERS:-2}
RECOVERY="$DEMO_DIR/recovery"

step() { printf '\n== %s\n' "$*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
missing=()

step "1/7 services (Kafka KRaft + Elasticsearch on 127.0.0.1)"
bash infra/local/services.sh start

step "2/7 reset the demo namespace '${BPWATCH_NAMESPACE}' and set up topics, templates, aliases"
$PY -m lib.tools.admin teardown >/dev/null 2>&1 || true
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"
$PY -m lib.tools.admin setup && echo "topics, index templates and aliases ready"

step "3/7 risk model"
model=${BPWATCH_MODEL_PATH:-models/bp_risk.joblib}
if [[ -f "$model" ]]; then
  echo "using $model (retrain with: make train)"
elif [[ -f models/train.py ]]; then
  $PY -m models.train
else
  missing+=("risk model training (models/train.py)")
fi

step "4/7 simulator: ${BPWATCH_SIM_COUNT} observations, ${BPWATCH_SIM_PATIENTS} patients (home ${BPWATCH_SIM_HOME_SHARE}, postpartum ${BPWATCH_SIM_POSTPARTUM_SHARE}, low adherence ${BPWATCH_SIM_LOW_ADHERENCE_SHARE}), fault rate ${BPWATCH_SIM_FAULT_RATE}, time 0 ${BPWATCH_SIM_START}"
if [[ -f dataflows/simulate.py ]]; then
  t0=$EPOCHREALTIME
  $PY -m bytewax.run dataflows.simulate
  echo "simulator took $(since "$t0")s"
else
  missing+=("simulator (dataflows/simulate.py)")
fi

step "5/7 monitor (${WORKERS} workers, recovery in $RECOVERY, stops when caught up)"
if [[ -f dataflows/monitor.py ]]; then
  mkdir -p "$RECOVERY"
  $PY -m bytewax.recovery "$RECOVERY" "$WORKERS"
  t0=$EPOCHREALTIME
  BPWATCH_KAFKA_TAIL=false BPWATCH_ACK_DEADLINE_MINUTES=1440 \
    $PY -m bytewax.run dataflows.monitor -w "$WORKERS" -r "$RECOVERY" -s 5 -b 0
  echo "monitor took $(since "$t0")s"

  step "6/7 acknowledgements: ${BPWATCH_SIM_ACK_SHARE} of the episodes that need one, then the monitor again"
  $PY -m lib.tools.demo_acks
  t0=$EPOCHREALTIME
  BPWATCH_KAFKA_TAIL=false BPWATCH_ACK_DEADLINE_MINUTES=0.001 \
    $PY -m bytewax.run dataflows.monitor -w "$WORKERS" -r "$RECOVERY" -s 5 -b 0
  echo "monitor (acknowledgements and deadlines) took $(since "$t0")s"
else
  missing+=("monitor (dataflows/monitor.py)")
fi

step "7/7 summary"
$PY -m lib.tools.report --out "$DEMO_DIR/report.html" 2>/dev/null \
  && echo "report of the dashboard views: $DEMO_DIR/report.html" \
  || echo "report: not written (python -m lib.tools.report failed)"
$PY -m lib.tools.summary --truth "$BPWATCH_SIM_TRUTH" || status=$?

if (( ${#missing[@]} )); then
  printf '\nNot built yet, so not run: %s\n' "${missing[*]}"
  exit 1
fi
exit "${status:-0}"
