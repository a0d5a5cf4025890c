#!/usr/bin/env bash
# Runs scripts/openai-client-test.py in a venv with the official `openai` client and `jsonschema` (made once, in
# target/openai-venv). Usage: scripts/openai-client-test.sh [path/to/infer]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/openai-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q openai jsonschema
fi
"$venv/bin/python" -c "import jsonschema" 2>/dev/null || "$venv/bin/pip" install -q jsonschema
exec "$venv/bin/python" scripts/openai-client-test.py "$@"
