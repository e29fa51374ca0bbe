"""training_scripts/sft_grid.sh: the cell an array index runs, and its refusals (dry runs, no SLURM)."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "training_scripts" / "sft_grid.sh"


def grid(tmp_path, *args):
    (tmp_path / "ck.txt").write_text("runs/a/final\n# a comment\nruns/b/step-00001000\n")
    (tmp_path / "tasks.txt").write_text("gsm8k g/train.json g/val.json mask\nlima l/train.jsonl l/val.jsonl\n")
    return subprocess.run(
        ["bash", str(SCRIPT), "ck.txt", "tasks.txt", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_array_covers_checkpoints_times_tasks_times_seeds(tmp_path):
    assert grid(tmp_path, "--seeds", "1,2,3", "--count").stdout.strip() == "12"
    result = grid(tmp_path, "--seeds", "1,2,3", "--index", "8", "--dry-run", "--forgetting-val", "c4/val")
    finetune, score = result.stdout.splitlines()
    assert finetune.startswith(
        "litgpt finetune_full runs/b/step-00001000 --out_dir out/sft/b_step-00001000/gsm8k/seed-3 --seed 3"
    )
    assert (
        "--data.train_data g/train.json --data.val_data g/val.json --data.mask_prompt true --train.epochs 4" in finetune
    )
    assert score == (
        "sharded-mix val-loss out/sft/b_step-00001000/gsm8k/seed-3/final g/val.json l/val.jsonl c4/val "
        "--json --mask-prompt > out/sft/b_step-00001000/gsm8k/seed-3/val_loss.json"
    )
    lima = grid(tmp_path, "--index", "1", "--dry-run").stdout
    assert "a_final/lima/seed-1" in lima and "--data.mask_prompt false" in lima and "--mask-prompt" not in lima


def test_refusals_name_the_fix(tmp_path):
    assert "beyond the 4 cells (0-3)" in grid(tmp_path, "--index", "4").stderr
    assert "submit as an array" in grid(tmp_path).stderr
    assert "--seeds x must be whole numbers" in grid(tmp_path, "--seeds", "x", "--index", "0").stderr
