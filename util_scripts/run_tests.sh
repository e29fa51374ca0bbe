#!/usr/bin/env bash
# The test command: set up ./.venv if needed, then run the whole suite (extra pytest args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash util_scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
