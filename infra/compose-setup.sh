#!/usr/bin/env bash
# Run by the compose "setup" service: idempotent, safe to run on every `up`.
set -euo pipefail
es=${BPWATCH_ES_URL:-http://elasticsearch:9200}
echo "setup: kibana_system password"
curl -fsS -u "elastic:${ELASTIC_PASSWORD}" -H 'Content-Type: application/json' \
  -X POST "$es/_security/user/kibana_system/_password" -d "{\"password\":\"${KIBANA_PASSWORD}\"}" >/dev/null
echo "setup: topics, index templates, aliases"
python -m lib.connectors.admin setup
if [[ -f infra/kibana/setup.py ]]; then
  echo "setup: waiting for Kibana, then saved objects, connectors and rules"
  until curl -fsS "${KIBANA_URL}/api/status" >/dev/null 2>&1; do sleep 5; done
  python infra/kibana/setup.py --kibana-url "$KIBANA_URL" --username elastic --password "$ELASTIC_PASSWORD"
fi
echo "setup: done"
