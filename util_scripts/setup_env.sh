#!/usr/bin/env bash
# Create or refresh ./.venv with sharded_mix and its test dependencies.
# Our own set-up pins a CPU torch (util_scripts/constraints.txt); the package itself never pins torch.
# litdata pulls in torchvision, whose PyPI wheel breaks a CPU torch as soon as torchmetrics is imported
# (which kills `litgpt pretrain`); litdata only needs it for image serializers, so it is removed here.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SHARDED_MIX_VENV:-.venv}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.sharded_mix_setup"
want=$(cat pyproject.toml util_scripts/constraints.txt util_scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import litgpt.pretrain, sharded_mix" 2>/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi

echo "setup: installing into $VENV (CPU torch from util_scripts/constraints.txt)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install -c util_scripts/constraints.txt torch
"${pip[@]}" install -c util_scripts/constraints.txt -e ".[test]"
"${pip[@]}" uninstall -y torchvision >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import litgpt.pretrain, litdata, sharded_mix" || {
  echo "setup: 'import litgpt.pretrain' fails in $VENV; see the error above" >&2
  exit 1
}
echo "$want" > "$stamp"
"$VENV/bin/python" -c "import torch, litgpt, litdata; print(f'setup: torch {torch.__version__}, litdata {litdata.__version__}')"
