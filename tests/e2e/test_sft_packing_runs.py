"""`litgpt finetune_full` with ``packing: true`` (pythia-14m, CPU): it trains on packed rows under document
attention, its losses are not the padded run's, a resumed run gives the straight run's losses, and its ``data/``
counts are the samples of the rows it trained on."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import yaml
from litgpt.tokenizer import Tokenizer
from litgpt_runs import LITGPT, task, train_losses, write_checkpoint

from sharded_mix import SFTMixture

TASKS = ("math", "chat")
BATCH, SEQ = 2, 192


def init_args(root: Path, packing: bool) -> dict:
    return {
        "train_data": {name: str(root / f"{name}.json") for name in TASKS},
        "val_data": str(root / "math_val.json"),
        "weights": "math:0.75,chat:0.25",
        "epoch_size": 16,
        "mask_prompt": True,
        "num_workers": 1,
        "packing": packing,
        "packing_window": 8,
    }


def finetune(root: Path, out: str, packing: bool, *extra: str) -> str:
    config = {
        "checkpoint_dir": str(root / "base"),
        "out_dir": str(root / out),
        "precision": "32-true",
        "data": {"class_path": "sharded_mix.SFTMixture", "init_args": init_args(root, packing)},
        "train": {
            "global_batch_size": BATCH,
            "micro_batch_size": BATCH,
            "epochs": 2,
            "max_seq_length": SEQ,
            "lr_warmup_steps": 1,
            "save_interval": 2,
            "log_interval": 1,
        },
        "eval": {"interval": 1000, "max_iters": 1, "initial_validation": False, "final_validation": True},
        "logger_name": "csv",
    }
    (root / f"{out}.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [LITGPT, "finetune_full", "--config", str(root / f"{out}.yaml"), *extra],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft_packing")
    texts = ["Below is an instruction that describes a task. ### Instruction: ### Response:", "math plus it is"] * 10
    write_checkpoint(root / "base", texts)
    for name, count in (("math", 12), ("chat", 12), ("math_val", 4)):
        task(root / f"{name}.json", name.split("_")[0], count)
    (root / "packed.txt").write_text(finetune(root, "packed", True))
    finetune(root, "padded", False)
    (root / "resumed.txt").write_text(
        finetune(root, "resumed", True, "--resume", str(root / "packed" / "step-000002" / "lit_model.pth"))
    )
    return root


def module(root: Path) -> SFTMixture:
    data = SFTMixture(**init_args(root, True))
    data.connect(Tokenizer(root / "base"), batch_size=BATCH, max_seq_length=SEQ)
    data.setup()
    return data


def test_a_packed_run_trains_on_fewer_fuller_rows_than_the_padded_run(runs):
    output = (runs / "packed.txt").read_text()
    assert "packing: epoch 0's 16 samples fill" in output and "Final evaluation" in output
    data = module(runs)
    rows = [data.train_dataset.packing.rows(epoch) for epoch in range(2)]
    iters = sum(-(-count // BATCH) for count in rows)  # each epoch's own rows
    packed, padded = train_losses(runs / "packed"), train_losses(runs / "padded")
    assert sorted(packed) == list(range(1, iters + 1)) and sorted(padded) == list(range(1, 16 + 1))
    assert packed[1] != padded[1]
    assert (runs / "packed" / "final" / "lit_model.pth").is_file()


def test_the_first_loss_is_the_packed_batchs_loss_under_document_attention(runs):
    """Before any update the run's loss is its first packed batch's under the starting weights: with attention kept
    inside each example (the bridge put it around LitGPT's fit), not across the row."""
    import torch
    from litgpt import GPT, Config
    from litgpt.utils import chunked_cross_entropy

    from sharded_mix.training import document_attention

    data = module(runs)
    batch = next(iter(data.train_dataloader()))
    model = GPT(Config.from_file(runs / "base" / "model_config.yaml"))
    model.load_state_dict(torch.load(runs / "base" / "lit_model.pth"))
    model.max_seq_length = SEQ  # as finetune_full sizes it: the longest row
    with torch.no_grad():
        with document_attention(model, data.tokenizer.eos_id):
            packed = chunked_cross_entropy(model(batch["input_ids"])[..., :-1, :], batch["labels"][..., 1:])
        causal = chunked_cross_entropy(model(batch["input_ids"])[..., :-1, :], batch["labels"][..., 1:])
    logged = train_losses(runs / "packed")[1]
    assert logged == pytest.approx(packed.item(), abs=1e-4) and abs(logged - causal.item()) > 1e-3


def test_a_resumed_packed_run_gives_the_straight_runs_losses(runs):
    assert "Resuming data loader finished" in (runs / "resumed.txt").read_text()
    straight, resumed = train_losses(runs / "packed"), train_losses(runs / "resumed")
    assert min(resumed) == 3 and {step: straight[step] for step in resumed} == resumed  # bit for bit, CPU 32-true


def test_the_counts_are_the_samples_of_the_rows_trained(runs):
    data = module(runs)
    batches = [batch for epoch in range(2) for batch in epoch_batches(data, epoch)]
    assert sum(len(batch) for batch in batches) == 2 * data.epochs.epoch_size  # every sample of both epochs once
    (metrics,) = (runs / "packed").glob("logs/csv/version_*/metrics.csv")
    logged = [row for row in csv.DictReader(metrics.open()) if row.get("loss")]
    assert len(logged) == len(batches)
    for step, row in enumerate(logged, start=1):
        samples = [pair for batch in batches[:step] for pair in batch]
        for name in TASKS:
            assert float(row[f"data/samples/{name}"]) == sum(source == name for source, _ in samples), (step, name)
            in_batch = any(source == name for source, _ in batches[step - 1])
            loss = row.get(f"data/loss/{name}", "")  # a packed row mixes tasks: its loss is attributed per token
            assert (0 < float(loss) < 20) if in_batch else loss == "", (step, name, loss)


def epoch_batches(data: SFTMixture, epoch: int) -> list[list[tuple[str, int]]]:
    """The micro-batches of epoch ``epoch``'s pass, each as the samples of its rows."""
    packing = data.train_dataset.packing
    rows = [packing.row(epoch, number) for number in range(packing.rows(epoch))]
    return [[pair for row in rows[at : at + BATCH] for pair in row] for at in range(0, len(rows), BATCH)]
