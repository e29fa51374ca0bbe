#!/usr/bin/env bash
# Submit every config in a list as one SLURM array (task i runs line i):
#   bash training_scripts/submit.sh configs.txt [sbatch options ...]
# Extra options go to sbatch, e.g. --partition=gpu --gres=gpu:1 --time=24:00:00; give --array=3 (or 2,5) to
# (re)submit only some tasks. The job is named after the list (configs.txt -> configs) unless you give --job-name.
# Logs: $SHARDED_MIX_LOG_DIR/<job name>_<task>.log (default logs/), appended to on every relaunch of that task.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CONFIG_LIST [sbatch options ...]" >&2; exit 2; }
list=$(realpath "$1"); shift
[ -f "$list" ] || { echo "error: $list does not exist" >&2; exit 2; }
count=$(grep -c -v -E '^[[:space:]]*(#|$)' "$list" || true)
[ "$count" -ge 1 ] || { echo "error: $list lists no configs" >&2; exit 2; }
log_dir=${SHARDED_MIX_LOG_DIR:-logs}
mkdir -p "$log_dir"
array=(--array="1-$count${SHARDED_MIX_MAX_PARALLEL:+%$SHARDED_MIX_MAX_PARALLEL}")
name=(--job-name="$(basename "${list%.*}")")
for arg in "$@"; do
    case $arg in
        --array|--array=*|-a*) array=() ;;
        --job-name|--job-name=*|-J*) name=() ;;
    esac
done
exec sbatch "${array[@]}" "${name[@]}" --output="$log_dir/%x_%a.log" --export=ALL,CONFIG_LIST="$list" "$@" \
    "$(dirname "$(realpath "$0")")/small_model_pretrain.sh"
