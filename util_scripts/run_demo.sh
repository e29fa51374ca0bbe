#!/usr/bin/env bash
# The demo: set up ./.venv, build tokenizer + typed shards from the Python standard library,
# then pretrain and midtrain pythia-14m on CPU with upstream `litgpt pretrain`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash util_scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"

start=$SECONDS
sharded-mix demo-data --workdir out/demo
litgpt pretrain --config midtrain_configs/demo/pretrain.yaml
# Midtraining: resume the pretraining run at step 40 with a new blend (logs a DATA MIX TRANSITION).
litgpt pretrain --config midtrain_configs/demo/midtrain.yaml
sharded-mix data-position out/demo/midtrain-code/final
echo "demo: done in $((SECONDS - start)) s; checkpoints in out/demo/pretrain/final and out/demo/midtrain-code/final"
