#!/usr/bin/env bash
# Run by the compose "setup" service: idempotent, safe to run on every `up`.
set -euo pipefail
es=${BPWATCH_ES_URL:-http://elasticsearch:9200}
echo "setup: kibana_system password"
curl -fsS -u "elastic:${ELASTIC_PASSWORD}" -H 'Content-Type: application/json' \
  -X POST "$es/_security/user/kibana_system/_password" -d "{\"password\":\"${KIBANA_PASSWORD}\"}" >/dev/null
echo "setup: topics, index templates, aliases"
python -m lib.tools.admin setup
echo "setup: Kibana saved objects (data views, Lens panels, dashboard), connector and rules"
KIBANA_USERNAME=elastic KIBANA_PASSWORD="$ELASTIC_PASSWORD" \
  python -m infra.kibana.setup --kibana-url "$KIBANA_URL" --wait 300
echo "setup: done"
