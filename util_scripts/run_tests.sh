#!/usr/bin/env bash
# The test command: set up ./.venv if needed (and, as root, the SLURM packages for the cluster test), then run
# the whole suite; skip reasons are printed (-rs). Extra pytest args pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
bash util_scripts/setup_env.sh
bash util_scripts/setup_slurm.sh
exec .venv/bin/python -m pytest -rs "$@"
