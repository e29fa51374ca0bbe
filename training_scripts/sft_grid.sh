#!/usr/bin/env bash
# The paper's SFT grid as a SLURM array: every checkpoint × task × seed fine-tuned with `litgpt finetune_full` on an
# SFTMixture, then `sharded-mix val-loss` of the result on every task's validation file and on --forgetting-val:
#   n=$(bash training_scripts/sft_grid.sh CHECKPOINTS.txt TASKS.txt --count)
#   sbatch --array=0-$((n - 1)) training_scripts/sft_grid.sh CHECKPOINTS.txt TASKS.txt --forgetting-val data/c4/val
# CHECKPOINTS.txt: one LitGPT checkpoint directory a line (lit_model.pth, model_config.yaml, tokenizer files).
# TASKS.txt: `NAME TRAIN_FILE VAL_FILE [mask]` a line, e.g. `gsm8k data/gsm8k/train.json data/gsm8k/val.json mask`.
# Array task i is checkpoint i / (tasks·seeds), task (i / seeds) % tasks, seed i % seeds. A finished cell (its
# val_loss.json exists) is skipped; an interrupted one resumes from its newest checkpoint (--resume auto).
#
#SBATCH --job-name=sharded-mix-sft
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x_%A_%a.log
set -euo pipefail

fail() { echo "[sharded-mix sft] error: $*" >&2; exit 2; }
usage() {
    cat <<'USAGE'
usage: sft_grid.sh CHECKPOINTS.txt TASKS.txt [options] [-- extra litgpt finetune_full options]

options:
  --seeds CSV            fine-tuning seeds (default: 1)
  --epochs N             train.epochs (default: 4, as the paper)
  --config FILE          a finetune_full YAML with the rest (precision, batch sizes, optimizer, ...)
  --out-dir DIR          cells go to DIR/<checkpoint>/<task>/seed-<seed> (default: out/sft)
  --forgetting-val PATH  token shards also scored by val-loss, e.g. the C4 validation shard
  --index I              the cell to run (default: $SLURM_ARRAY_TASK_ID)
  --count                print the number of cells (the array size) and exit
  --dry-run              print the cell's commands, run nothing
  -h, --help             this help
environment: LITGPT (default: litgpt), SHARDED_MIX (default: sharded-mix), SHARDED_MIX_SITE_ENV, SHARDED_MIX_ACTIVATE
USAGE
}

if [ -n "${SHARDED_MIX_SITE_ENV:-}" ]; then
    [ -f "$SHARDED_MIX_SITE_ENV" ] || fail "SHARDED_MIX_SITE_ENV=$SHARDED_MIX_SITE_ENV does not exist"
    # shellcheck disable=SC1090
    source "$SHARDED_MIX_SITE_ENV"
fi
: "${LITGPT:=litgpt}" "${SHARDED_MIX:=sharded-mix}"
if [ -n "${SHARDED_MIX_ACTIVATE:-}" ]; then eval "$SHARDED_MIX_ACTIVATE"; fi

seeds=1 epochs=4 config='' out_dir=out/sft forgetting='' index=${SLURM_ARRAY_TASK_ID:-} count=0 dry_run=0 files=() extra=()
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --count) count=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --seeds|--epochs|--config|--out-dir|--forgetting-val|--index)
            [ $# -ge 2 ] || fail "$1 needs a value (see --help)"
            case $1 in
                --seeds) seeds=$2 ;; --epochs) epochs=$2 ;; --config) config=$2 ;; --out-dir) out_dir=$2 ;;
                --forgetting-val) forgetting=$2 ;; --index) index=$2 ;;
            esac
            shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -*) fail "unknown option $1 (see --help)" ;;
        *) files+=("$1"); shift ;;
    esac
done
[ ${#files[@]} -eq 2 ] || fail "give CHECKPOINTS.txt and TASKS.txt (see --help)"
for file in "${files[@]}"; do [ -f "$file" ] || fail "$file does not exist"; done
[[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]] || fail "--seeds $seeds must be whole numbers separated by commas, e.g. 1,2,3"
[[ $epochs =~ ^[1-9][0-9]*$ ]] || fail "--epochs $epochs must be a whole number >= 1"
[ -z "$config" ] || [ -f "$config" ] || fail "--config $config does not exist"

mapfile -t checkpoints < <(grep -v '^[[:space:]]*\(#\|$\)' "${files[0]}")
mapfile -t tasks < <(grep -v '^[[:space:]]*\(#\|$\)' "${files[1]}")
IFS=, read -r -a seed_list <<< "$seeds"
[ ${#checkpoints[@]} -gt 0 ] || fail "${files[0]} lists no checkpoint"
[ ${#tasks[@]} -gt 0 ] || fail "${files[1]} lists no task"
cells=$(( ${#checkpoints[@]} * ${#tasks[@]} * ${#seed_list[@]} ))
if [ $count = 1 ]; then echo "$cells"; exit 0; fi
[[ $index =~ ^[0-9]+$ ]] || fail "no cell to run: submit as an array (sbatch --array=0-$((cells - 1))) or give --index"
[ "$index" -lt "$cells" ] || fail "--index $index is beyond the $cells cells (0-$((cells - 1)))"

checkpoint=${checkpoints[index / (${#tasks[@]} * ${#seed_list[@]})]}
read -r name train val mask rest <<< "${tasks[(index / ${#seed_list[@]}) % ${#tasks[@]}]}"
seed=${seed_list[index % ${#seed_list[@]}]}
[ -n "$val" ] && [ -z "$rest" ] || fail "task line '${tasks[(index / ${#seed_list[@]}) % ${#tasks[@]}]}' must be NAME TRAIN_FILE VAL_FILE [mask]"
case ${mask:-} in mask) mask=true ;; ''|nomask) mask=false ;; *) fail "task $name: 4th column '$mask' must be mask or nomask" ;; esac
checkpoint=${checkpoint%/}
cell=$out_dir/$(basename "$(dirname "$checkpoint")")_$(basename "$checkpoint")/$name/seed-$seed

val_files=()
for line in "${tasks[@]}"; do read -r _ _ task_val _ <<< "$line"; val_files+=("$task_val"); done
finetune=("$LITGPT" finetune_full "$checkpoint" ${config:+--config "$config"} --out_dir "$cell" --seed "$seed" --resume auto
          --data sharded_mix.SFTMixture --data.train_data "$train" --data.val_data "$val" --data.mask_prompt "$mask"
          --train.epochs "$epochs" "${extra[@]}")
score=("$SHARDED_MIX" val-loss "$cell/final" "${val_files[@]}" ${forgetting:+"$forgetting"} --json)
[ "$mask" = true ] && score+=(--mask-prompt)

echo "[sharded-mix sft] cell $index of $cells: checkpoint $checkpoint, task $name, seed $seed -> $cell" >&2
if [ $dry_run = 1 ]; then
    printf '%q ' "${finetune[@]}"; echo
    printf '%q ' "${score[@]}"; printf '> %q\n' "$cell/val_loss.json"
    exit 0
fi
if [ -f "$cell/val_loss.json" ]; then echo "[sharded-mix sft] $cell/val_loss.json exists; nothing to do" >&2; exit 0; fi
[ -f "$cell/final/lit_model.pth" ] || "${finetune[@]}"
"${score[@]}" > "$cell/val_loss.json.tmp"
mv "$cell/val_loss.json.tmp" "$cell/val_loss.json"
