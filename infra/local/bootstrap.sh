#!/usr/bin/env bash
# Creates .venv and installs bpwatch's dependencies (read from pyproject.toml, pinned by
# constraints.txt). Re-runs only when pyproject.toml or constraints.txt changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.bpwatch-installed"

command -v "$PYTHON" >/dev/null || { echo "bootstrap: $PYTHON not found: install Python 3.11+" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "bootstrap: Python 3.11+ is needed ($("$PYTHON" --version)): set PYTHON=python3.11" >&2; exit 1; }

if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt constraints.txt ]]; then exit 0; fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV" || { echo "bootstrap: venv failed: apt-get install python3-venv" >&2; exit 1; }
fi
deps=$("$VENV/bin/python" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(p["dependencies"])
for extra in ("dev", "report"):
    deps += p.get("optional-dependencies", {}).get(extra, [])
print("\n".join(deps))
PY
)
echo "bootstrap: installing dependencies into $VENV (first run takes a minute) ..." >&2
mapfile -t reqs <<<"$deps"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt "${reqs[@]}"
touch "$stamp"
echo "bootstrap: ready ($("$VENV/bin/python" --version))" >&2
