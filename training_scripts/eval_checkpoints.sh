#!/usr/bin/env bash
# Evaluate every checkpoint of a litgpt pretrain run with `litgpt evaluate` (lm-eval-harness), then collect one CSV:
#   bash training_scripts/eval_checkpoints.sh RUN_DIR [options] [-- extra litgpt evaluate options]
#   sbatch training_scripts/eval_checkpoints.sh RUN_DIR [options]
# RUN_DIR/step-* (by step) and RUN_DIR/final, each holding a lit_model.pth, are converted to weights only
# (`litgpt convert_pretrained_checkpoint` into EVAL_DIR/<name>/model) and evaluated into EVAL_DIR/<name>/results.json.
# A checkpoint that has its results.json is skipped, so running the script again resumes an interrupted sweep.
# `python` must import sharded_mix; site settings as in small_model_pretrain.sh. See training_scripts/README.md.
#
#SBATCH --job-name=sharded-mix-eval
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x_%j.log
set -euo pipefail

say() { echo "[sharded-mix eval $(date '+%F %T')] $*" >&2; }
fail() { echo "[sharded-mix eval] error: $*" >&2; exit 2; }
usage() {
    cat <<'USAGE'
usage: eval_checkpoints.sh RUN_DIR [options] [-- extra litgpt evaluate options, e.g. --dtype bfloat16]

Evaluates RUN_DIR/step-* (by step) and RUN_DIR/final with `litgpt evaluate`, skipping those already evaluated,
then writes one CSV (checkpoint,step,task,metric,value,stderr,is_group).

options:
  --tasks CSV          lm-eval tasks (default: arc_easy,asdiv,sciq,commonsense_qa,hellaswag,logiqa2,piqa,mmlu,mathqa)
  --num-fewshot N      few-shot examples (default: 5)
  --batch-size B       a positive integer, auto or auto:N (default: 16)
  --limit N            at most N examples per task (a fraction if < 1); smoke runs, with their own --eval-dir
  --eval-dir DIR       where conversions and results go (default: RUN_DIR/eval)
  --csv FILE           the collected results (default: EVAL_DIR/results.csv)
  --only LIST          only these checkpoints: names or step numbers, e.g. final or 2000,step-00010000
  --dry-run            print each command it would run, one a line; run nothing, write nothing
  -h, --help           this help
environment: LITGPT (default: litgpt), SHARDED_MIX_SITE_ENV, SHARDED_MIX_ACTIVATE, SHARDED_MIX_CACHE_DIR
USAGE
}

if [ -n "${SHARDED_MIX_SITE_ENV:-}" ]; then
    [ -f "$SHARDED_MIX_SITE_ENV" ] || fail "SHARDED_MIX_SITE_ENV=$SHARDED_MIX_SITE_ENV does not exist"
    # shellcheck disable=SC1090
    source "$SHARDED_MIX_SITE_ENV"
fi
: "${SHARDED_MIX_ACTIVATE:=}"
: "${LITGPT:=litgpt}"
if [ -n "$SHARDED_MIX_ACTIVATE" ]; then eval "$SHARDED_MIX_ACTIVATE"; fi
if [ -n "${SHARDED_MIX_CACHE_DIR:-}" ]; then  # HF_HOME also holds the lm-eval datasets
    export TORCHINDUCTOR_CACHE_DIR="$SHARDED_MIX_CACHE_DIR/torchinductor" TRITON_CACHE_DIR="$SHARDED_MIX_CACHE_DIR/triton" HF_HOME="$SHARDED_MIX_CACHE_DIR/huggingface"
fi

tasks=arc_easy,asdiv,sciq,commonsense_qa,hellaswag,logiqa2,piqa,mmlu,mathqa
fewshot=5 batch=16 limit='' eval_dir='' csv='' only='' dry_run=0 run_dir='' extra=()
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --dry-run) dry_run=1; shift ;;
        --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
        --tasks|--num-fewshot|--batch-size|--limit|--eval-dir|--csv|--only)
            [ $# -ge 2 ] || fail "$1 needs a value (see --help)"
            case $1 in
                --tasks) tasks=$2 ;; --num-fewshot) fewshot=$2 ;; --batch-size) batch=$2 ;; --limit) limit=$2 ;;
                --eval-dir) eval_dir=$2 ;; --csv) csv=$2 ;; --only) only=$2 ;;
            esac
            shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -*) fail "unknown option $1 (see --help)" ;;
        *) [ -z "$run_dir" ] || fail "one RUN_DIR only, got $run_dir and $1"; run_dir=$1; shift ;;
    esac
done

[ -n "$run_dir" ] || fail "missing RUN_DIR, the out_dir of a litgpt pretrain run (usage: eval_checkpoints.sh RUN_DIR [options])"
[ -d "$run_dir" ] || fail "RUN_DIR $run_dir is not a directory; give the out_dir of a litgpt pretrain run"
run_dir=${run_dir%/}
[[ $tasks =~ ^[^[:space:]]+$ ]] || fail "--tasks '$tasks' must be a comma-separated list of lm-eval tasks without spaces"
[[ $fewshot =~ ^[0-9]+$ ]] || fail "--num-fewshot $fewshot must be a whole number, e.g. 5"
[[ $batch =~ ^([1-9][0-9]*|auto(:[1-9][0-9]*)?)$ ]] || fail "--batch-size $batch must be a positive integer, auto or auto:N"
[[ -z $limit || $limit =~ ^([1-9][0-9]*|0?\.0*[1-9][0-9]*)$ ]] || fail "--limit $limit must be a positive number, e.g. 20 (or 0.1 for 10%)"
eval_dir=${eval_dir:-$run_dir/eval}
csv=${csv:-$eval_dir/results.csv}

shopt -s nullglob
mapfile -t names < <(for dir in "$run_dir"/step-*/; do
    dir=${dir%/} name=$(basename "$dir")
    if [[ $name =~ ^step-[0-9]+$ && -f $dir/lit_model.pth ]]; then echo "$name"; else say "skipping $dir: no lit_model.pth"; fi
done | sort -t- -k2,2n)
if [ -f "$run_dir/final/lit_model.pth" ]; then names+=(final); fi
(( ${#names[@]} )) || fail "$run_dir has no checkpoints (no step-*/lit_model.pth, no final/lit_model.pth)"
if [ -n "$only" ]; then
    wanted=()
    IFS=, read -ra picks <<< "$only"
    for name in "${names[@]}"; do
        for pick in "${picks[@]}"; do
            if [[ $pick == "$name" || ($pick =~ ^[0-9]+$ && $name == step-* && $((10#${name#step-})) -eq $((10#$pick))) ]]; then wanted+=("$name"); break; fi
        done
    done
    (( ${#wanted[@]} )) || fail "--only $only matches no checkpoint of $run_dir (it has: ${names[*]})"
    names=("${wanted[@]}")
fi

quote() {  # the words as one copy-pasteable line
    local word words=()
    for word in "$@"; do if [[ $word =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then words+=("$word"); else words+=("${word@Q}"); fi; done
    echo "${words[*]}"
}
run() { if (( dry_run )); then quote "$@"; else "$@"; fi; }

failed=()
for name in "${names[@]}"; do
    out=$eval_dir/$name
    if [ -f "$out/results.json" ]; then say "$name: already evaluated ($out/results.json), skipping"; continue; fi
    if [ ! -f "$out/model/lit_model.pth" ]; then  # convert into model.partial, so a killed conversion never looks done
        for stale in "$out/model.partial" "$out/model"; do if [ -e "$stale" ]; then run rm -rf "$stale"; fi; done
        # shellcheck disable=SC2086
        if ! run $LITGPT convert_pretrained_checkpoint "$run_dir/$name" "$out/model.partial" \
            || ! run mv "$out/model.partial" "$out/model"; then
            say "$name: conversion failed"; failed+=("$name"); continue
        fi
    fi
    (( dry_run )) || say "$name: evaluating $tasks, $fewshot-shot"
    # --force_conversion: the HF copy in $out may be half-written by an interrupted evaluation.
    # shellcheck disable=SC2086
    if ! run $LITGPT evaluate "$out/model" --tasks "$tasks" --num_fewshot "$fewshot" --batch_size "$batch" ${limit:+--limit "$limit"} \
        --out_dir "$out" --save_filepath "$out/results.json" --force_conversion true "${extra[@]}"; then
        say "$name: evaluation failed"; failed+=("$name")
    fi
done

collected=0
run python -m sharded_mix.cli eval-results "$eval_dir" --csv "$csv" || collected=$?
(( ${#failed[@]} == 0 )) || { say "failed: ${failed[*]} (the lines above say why); run the script again to retry them"; exit 1; }
exit "$collected"
