#!/usr/bin/env bash
# One task of a SLURM array: `litgpt pretrain --config <line i of $CONFIG_LIST>` for array task i.
#
# Submit with training_scripts/submit.sh (see training_scripts/README.md), or by hand:
#   CONFIG_LIST=$PWD/configs.txt sbatch --array=1-N training_scripts/small_model_pretrain.sh
#
# The config file is never edited. A relaunch (requeue after preemption, or a resubmission) continues from
# the newest complete checkpoint in the run's own out_dir (one half-written by a killed job is skipped; none
# complete is an error); a first launch keeps the config's `resume` (a midtraining config's pretraining
# checkpoint); a run whose out_dir/final exists is done and exits 0 at once. `python` must import sharded_mix.
#
#SBATCH --job-name=sharded-mix
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x_%a.log
set -euo pipefail

say() { echo "[sharded-mix $(date '+%F %T')] $*"; }
fail() { echo "[sharded-mix] error: $*" >&2; exit 2; }

# Site settings: a sourced env file (SHARDED_MIX_SITE_ENV), then the environment, then these defaults.
if [ -n "${SHARDED_MIX_SITE_ENV:-}" ]; then
    [ -f "$SHARDED_MIX_SITE_ENV" ] || fail "SHARDED_MIX_SITE_ENV=$SHARDED_MIX_SITE_ENV does not exist"
    # shellcheck disable=SC1090
    source "$SHARDED_MIX_SITE_ENV"
fi
: "${SHARDED_MIX_ACTIVATE:=}"   # shell code that makes litgpt and a python that imports sharded_mix available, e.g. "source ~/venvs/lm/bin/activate"
: "${LITGPT:=litgpt}"           # the litgpt command
: "${SHARDED_MIX_SRUN=srun}"    # launcher for the training step; empty runs it directly
if [ -n "$SHARDED_MIX_ACTIVATE" ]; then eval "$SHARDED_MIX_ACTIVATE"; fi
if [ -n "${SHARDED_MIX_CACHE_DIR:-}" ]; then  # compiler and hub caches off the home directory
    export TORCHINDUCTOR_CACHE_DIR="$SHARDED_MIX_CACHE_DIR/torchinductor" TRITON_CACHE_DIR="$SHARDED_MIX_CACHE_DIR/triton" HF_HOME="$SHARDED_MIX_CACHE_DIR/huggingface"
fi

[ -n "${CONFIG_LIST:-}" ] || fail "CONFIG_LIST is not set; export CONFIG_LIST=/path/to/configs.txt (one config path a line)"
[ -f "$CONFIG_LIST" ] || fail "CONFIG_LIST=$CONFIG_LIST does not exist"
task=${SLURM_ARRAY_TASK_ID:-}
[ -n "$task" ] || fail "SLURM_ARRAY_TASK_ID is not set; submit as an array job (sbatch --array=1-N) or set it to run one task by hand"
mapfile -t configs < <(grep -v -E '^[[:space:]]*(#|$)' "$CONFIG_LIST")
count=${#configs[@]}
if ! [[ "$task" =~ ^[0-9]+$ ]] || (( task < 1 || task > count )); then
    fail "array task $task is out of range: $CONFIG_LIST lists $count config(s), so use --array=1-$count"
fi
config=${configs[task - 1]}
[ -f "$config" ] || fail "task $task: config $config (line $task of $CONFIG_LIST) does not exist"

out_dir=$(python - "$config" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1])) or {}
print(config.get("out_dir") or "")
PY
)
[ -n "$out_dir" ] || fail "task $task: $config has no out_dir; every run needs its own"

say "job ${SLURM_JOB_ID:-?} task $task (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname): $config -> $out_dir"
if [ -f "$out_dir/final/lit_model.pth" ]; then
    say "$out_dir/final exists: this run is finished, nothing to do"
    exit 0
fi
resume=()
rc=0
checkpoint=$(python -m sharded_mix.cli resume-checkpoint "$out_dir") || rc=$?
shopt -s nullglob
step_dirs=("$out_dir"/step-*)
shopt -u nullglob
if [ "$rc" = 0 ] && [ -n "$checkpoint" ]; then
    say "relaunch: resuming from $checkpoint, the newest complete checkpoint in out_dir"
    resume=(--resume "$checkpoint")
elif [ "$rc" != 1 ]; then
    fail "task $task: checking the checkpoints in $out_dir failed (python -m sharded_mix.cli resume-checkpoint exited $rc; see above)"
elif (( ${#step_dirs[@]} )); then
    fail "task $task: $out_dir has step-* directories (${step_dirs[*]##*/}) but no complete checkpoint in them (the lines above say why), so the run neither resumes nor restarts over them. Restore a checkpoint, or delete those step-* directories to start the run over from the config's own resume setting."
else
    say "first launch: the config's own resume setting applies"
fi
# shellcheck disable=SC2086
$SHARDED_MIX_SRUN $LITGPT pretrain --config "$config" "${resume[@]}"
say "task $task finished: $out_dir"
