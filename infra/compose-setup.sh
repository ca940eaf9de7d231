#!/usr/bin/env bash
# Run by the compose "setup" service: idempotent, safe to run on every `up`.
#   bash infra/compose-setup.sh [STEP...]     (default: every step, in this order)
# Steps: kibana-system-password, topics (topics, index templates, aliases), kibana (saved
# objects, connector, rules). Elasticsearch credentials: BPWATCH_ES_USERNAME/_PASSWORD (and
# BPWATCH_ES_CA_CERTS for https), as for every other bpwatch command.
set -euo pipefail
es=${BPWATCH_ES_URL:-http://elasticsearch:9200}
es_user=${BPWATCH_ES_USERNAME:-elastic}
es_password=${BPWATCH_ES_PASSWORD:?set BPWATCH_ES_PASSWORD}
ca=()
if [ -n "${BPWATCH_ES_CA_CERTS:-}" ]; then ca=(--cacert "$BPWATCH_ES_CA_CERTS"); fi

kibana_system_password() {
  echo "setup: kibana_system password"
  curl -fsS "${ca[@]}" -u "$es_user:$es_password" -H 'Content-Type: application/json' \
    -X POST "$es/_security/user/kibana_system/_password" \
    -d "{\"password\":\"${KIBANA_PASSWORD:?set KIBANA_PASSWORD}\"}" >/dev/null
}

topics() {
  echo "setup: topics, index templates, aliases"
  python -m lib.tools.admin setup
}

kibana() {
  echo "setup: Kibana saved objects (data views, Lens panels, dashboard), connector and rules"
  KIBANA_USERNAME="$es_user" KIBANA_PASSWORD="$es_password" \
    python -m infra.kibana.setup --kibana-url "${KIBANA_URL:?set KIBANA_URL}" --wait 300
}

steps=(kibana-system-password topics kibana)
if [ $# -gt 0 ]; then steps=("$@"); fi
for step in "${steps[@]}"; do
  case $step in
    kibana-system-password) kibana_system_password ;;
    topics) topics ;;
    kibana) kibana ;;
    *) echo "setup: unknown step $step" >&2; exit 2 ;;
  esac
done
echo "setup: done"
