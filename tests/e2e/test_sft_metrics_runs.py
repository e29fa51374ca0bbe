"""Per-task ``data/`` metrics of an SFTMixture in LitGPT's own CSV log, through the real `litgpt finetune_full`
(pythia-14m, CPU): counts and target tokens equal to the plan's, finite losses, the summary, and a resumed run; and
through `litgpt finetune_lora`, whose loss takes the ``lm_head`` output as a list of chunks."""

from __future__ import annotations

import csv
import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from litgpt.tokenizer import Tokenizer
from litgpt_runs import LITGPT, task, write_checkpoint

from sharded_mix import SFTMixture

TASKS = ("math", "chat")
BATCH, ITERS = 2, 8  # 2 epochs of 8 samples


def init_args(root: Path) -> dict:
    return {
        "train_data": {name: str(root / f"{name}.json") for name in TASKS},
        "val_data": str(root / "math_val.json"),
        "weights": "math:0.75,chat:0.25",
        "epoch_size": 8,
        "mask_prompt": True,
        "num_workers": 1,
    }


def finetune(root: Path, out: str, *extra: str, command: str = "finetune_full", epochs: int = 2) -> str:
    config = {
        "checkpoint_dir": str(root / "base"),
        "out_dir": str(root / out),
        "precision": "32-true",
        "data": {"class_path": "sharded_mix.SFTMixture", "init_args": init_args(root)},
        "train": {
            "global_batch_size": BATCH,
            "micro_batch_size": BATCH,
            "epochs": epochs,
            "max_seq_length": 96,
            "lr_warmup_steps": 1,
            "save_interval": 4,
            "log_interval": 1,
        },
        "eval": {"interval": 1000, "max_iters": 1, "initial_validation": False, "final_validation": False},
        "logger_name": "csv",
    }
    (root / f"{out}.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [LITGPT, command, "--config", str(root / f"{out}.yaml"), *extra],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def logged(out_dir: Path) -> list[dict[str, str]]:
    (metrics,) = out_dir.glob("logs/csv/version_*/metrics.csv")
    return [row for row in csv.DictReader(metrics.open()) if row.get("loss")]


def planned(root: Path, samples: int) -> tuple[Counter, Counter]:
    """Per task, the first ``samples`` samples of the data module's plan and their target tokens."""
    data = SFTMixture(**init_args(root))
    data.connect(Tokenizer(root / "base"), batch_size=BATCH, max_seq_length=96)
    data.setup()
    rows, tokens = Counter(), Counter()
    for sample in range(samples):
        source, index = data.epochs.example(sample)
        rows[source] += 1
        tokens[source] += int((data.tasks[source].examples[index]["labels"][1:] != -100).sum())
    return rows, tokens


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft_metrics")
    texts = ["Below is an instruction that describes a task. ### Instruction: ### Response:", "math plus it is"] * 10
    write_checkpoint(root / "base", texts)
    for name, count in (("math", 12), ("chat", 12), ("math_val", 4)):
        task(root / f"{name}.json", name.split("_")[0], count)
    (root / "output.txt").write_text(finetune(root, "out"))
    return root


def check_the_log(rows: list[dict[str, str]], run: Path, iters: int) -> None:
    assert [int(row["iter"]) for row in rows] == list(range(1, iters + 1))
    for step, row in enumerate(rows, start=1):
        samples, tokens = planned(run, step * BATCH)
        before, _ = planned(run, (step - 1) * BATCH)
        for name in TASKS:
            assert float(row[f"data/samples/{name}"]) == samples[name], (step, name)
            assert float(row[f"data/tokens/{name}"]) == tokens[name], (step, name)
            assert float(row[f"data/share/{name}"]) == pytest.approx(samples[name] / (step * BATCH))
            assert float(row[f"data/target/{name}"]) == pytest.approx(0.75 if name == "math" else 0.25)
            assert float(row[f"data/epoch/{name}"]) == pytest.approx(samples[name] / 12)
            loss = row[f"data/loss/{name}"]  # log_interval 1: the window is the step
            assert (loss != "") == (samples[name] > before[name]), (step, name, loss)
            assert loss == "" or (math.isfinite(float(loss)) and float(loss) > 0)


def test_the_csv_log_holds_the_plans_per_task_counts_and_finite_losses(run):
    check_the_log(logged(run / "out"), run, ITERS)
    assert planned(run, ITERS * BATCH)[0] == Counter(math=12, chat=4)


def test_finetune_lora_logs_the_same_counts_and_per_task_losses(run):
    output = finetune(run, "lora", command="finetune_lora", epochs=1)
    check_the_log(logged(run / "lora"), run, ITERS // 2)
    assert "===== DATA SUMMARY: 8 samples over all ranks, SFT mixture =====" in output


def test_the_run_ends_with_a_per_task_summary(run):
    output = (run / "output.txt").read_text()
    summary = output[output.index("===== DATA SUMMARY: 16 samples over all ranks, SFT mixture =====") :]
    samples, tokens = planned(run, ITERS * BATCH)  # the batch fetched past the 2nd epoch is left out
    for name in TASKS:
        assert re.search(rf"\n{name} +{samples[name]} +{tokens[name]:,} ", summary), name


def test_a_resumed_run_keeps_the_counts_exact(run):
    output = finetune(run, "resumed", "--resume", str(run / "out" / "step-000004" / "lit_model.pth"))
    assert "Resuming data loader finished" in output
    straight, again = logged(run / "out"), logged(run / "resumed")
    assert [int(row["iter"]) for row in again] == list(range(5, ITERS + 1))
    for before, after in zip(straight[4:], again):
        for name in TASKS:
            for measure in ("samples", "tokens", "share", "epoch", "target"):
                key = f"data/{measure}/{name}"
                assert after[key] == before[key], (after["iter"], key)
            assert (after[f"data/loss/{name}"] == "") == (before[f"data/loss/{name}"] == "")
