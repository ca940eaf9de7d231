#!/usr/bin/env bash
# The README's test command (`make test`): all tiers, against the real local services.
# The integration fixtures start Kafka and Elasticsearch themselves (infra/local/services.sh).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# style first: it takes a second and names the file and line
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || { echo "ci: run .venv/bin/ruff format ." >&2; exit 1; }
.venv/bin/python -m pytest tests "$@"
rc=$?
# pytest exit 5 = no tests collected: that is a failure for us, not a pass.
if [[ $rc -eq 5 ]]; then echo "ci: pytest collected no tests" >&2; exit 1; fi
exit $rc
