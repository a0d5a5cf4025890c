#!/usr/bin/env bash
# Runs scripts/chat-page-test.py in a venv with websocket-client (made once, in target/chat-venv);
# needs chromium (apt-get install -y chromium). Usage: scripts/chat-page-test.sh [infer] [png]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/chat-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q websocket-client
fi
exec "$venv/bin/python" scripts/chat-page-test.py "$@"
