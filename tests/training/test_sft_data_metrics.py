"""The ``data/`` metrics of an SFTMixture against the rows its training loader hands out: counts and target tokens
over all ranks (Fabric's split of the sampler), across epochs and a fast-forwarded resume, losses per task, the
summary."""

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import write_source
from lightning.fabric.utilities.data import _update_dataloader
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from litgpt.tokenizer import Tokenizer
from litgpt.utils import CycleIterator

from sharded_mix import SFTMixture
from sharded_mix.streaming.sft_examples import EpochSampler
from sharded_mix.tools.demo import train_tokenizer
from sharded_mix.training.data_metrics import DataMetrics, PlanCounts

WEIGHTS = {"math": 0.3, "chat": 0.7}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    texts = ["Below is an instruction that describes a task. ### Instruction: ### Response:", "math chat answer"] * 20
    return Tokenizer(train_tokenizer(texts, 300, tmp_path_factory.mktemp("tok")))


def write_task(path: Path, count: int, tag: str) -> str:
    records = [
        {"instruction": f"{tag} {i}" + " more" * (i % 4), "output": "answer" + " x" * (i % 3)} for i in range(count)
    ]
    path.write_text(json.dumps(records))
    return str(path)


def module(tmp_path, tokenizer, batch_size=2, num_workers=0, **fields) -> SFTMixture:
    fields.setdefault("train_data", {"math": write_task(tmp_path / "math.json", 7, "math")})
    fields["train_data"].setdefault("chat", write_task(tmp_path / "chat.json", 13, "chat"))
    fields.setdefault("weights", WEIGHTS)
    data = SFTMixture(
        val_data=fields["train_data"]["math"], epoch_size=11, mask_prompt=True, num_workers=num_workers, **fields
    )
    data.connect(tokenizer, batch_size=batch_size, max_seq_length=200)
    data.setup()
    data.data_metrics = DataMetrics()  # what connect keeps under LitGPT
    return data


def counts(data: SFTMixture) -> dict:
    return PlanCounts(data.train_progress, data.train_files).measures()


def trained(data: SFTMixture, samples) -> tuple[Counter, Counter]:
    """Per task, the samples and their target tokens, from the plan and the encoded examples."""
    rows, tokens = Counter(), Counter()
    for sample in samples:
        source, index = data.epochs.example(sample)
        rows[source] += 1
        tokens[source] += int((data.tasks[source].examples[index]["labels"][1:] != -100).sum())
    return rows, tokens


def rows_read(data: SFTMixture, loader, batches: int) -> tuple[Counter, Counter]:
    """Per task, the rows of ``batches`` micro-batches (LitGPT's CycleIterator, across epochs) and their targets."""
    rows, tokens, iterator = Counter(), Counter(), CycleIterator(loader)
    for _ in range(batches):
        batch = next(iterator)
        names, tasks = data.train_progress.last_rows
        for row, task in enumerate(tasks):
            rows[names[task]] += 1
            tokens[names[task]] += int((batch["labels"][row, 1:] != -100).sum())
    return rows, tokens


@pytest.mark.parametrize("num_workers", [0, 2])
def test_counts_are_the_samples_of_the_plan_on_one_rank(tmp_path, tokenizer, num_workers):
    data = module(tmp_path, tokenizer, num_workers=num_workers)
    rows, tokens = rows_read(data, data.train_dataloader(), 15)  # 6 batches an epoch (11 samples): 2.5 epochs
    assert (rows, tokens) == trained(data, range(2 * 11 + 3 * 2))
    measures = counts(data)
    assert {name: measures[f"data/samples/{name}"] for name in WEIGHTS} == dict(rows)
    assert {name: measures[f"data/tokens/{name}"] for name in WEIGHTS} == dict(tokens) and tokens["chat"] > 0
    assert measures["data/share/math"] == rows["math"] / 28 and measures["data/target/chat"] == pytest.approx(0.7)
    assert measures["data/epoch/math"] == rows["math"] / 7 and measures["data/epoch/chat"] == rows["chat"] / 13


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_counts_the_rows_of_all_ranks(tmp_path, tokenizer, world_size):
    all_rows, all_tokens, measures = Counter(), Counter(), []
    for rank in range(world_size):  # as Fabric splits the loader over ranks (setup_dataloaders)
        data = module(tmp_path, tokenizer)
        loader = data.train_dataloader()
        split = DistributedSamplerWrapper(loader.sampler, num_replicas=world_size, rank=rank, shuffle=False)
        loader = _update_dataloader(loader, split)
        rows, tokens = rows_read(data, loader, 7)
        all_rows, all_tokens = all_rows + rows, all_tokens + tokens
        measures.append(counts(data))
        passes = [
            DistributedSamplerWrapper(EpochSampler(11, 11 * epoch), world_size, rank, False) for epoch in range(4)
        ]
        own = [sample for split in passes for sample in split]  # 2 (3) batches of 2 a pass on 3 (2) ranks
        assert (rows, tokens) == trained(data, own[:14]), rank
    assert all(other == measures[0] for other in measures)
    assert {name: measures[0][f"data/samples/{name}"] for name in WEIGHTS} == dict(all_rows)
    assert {name: measures[0][f"data/tokens/{name}"] for name in WEIGHTS} == dict(all_tokens)


def test_a_fast_forwarded_resume_counts_the_run_so_far(tmp_path, tokenizer):
    straight = module(tmp_path, tokenizer)
    rows_read(straight, straight.train_dataloader(), 10)
    resumed = module(tmp_path, tokenizer)
    iterator = CycleIterator(resumed.train_dataloader())
    for _ in range(4):  # LitGPT's finetune_full replays the batches a resumed run trained
        next(iterator)
    for _ in range(6):
        next(iterator)
    assert counts(resumed) == counts(straight) and counts(straight)["data/samples/chat"] > 0


def test_a_task_left_out_of_the_blend_and_replay_blocks(tmp_path, tokenizer):
    write_source(tmp_path / "pre", "1", 1, 2000)
    files = {"math": write_task(tmp_path / "math.json", 7, "math"), "idle": write_task(tmp_path / "i.json", 3, "i")}
    data = module(
        tmp_path,
        tokenizer,
        train_data=files,
        weights={"math": 0.3, "chat": 0.7, "idle": 0},
        replay_data_path=str(tmp_path / "pre"),
        replay_share=0.2,
        replay_block_size=16,
        verify_chunks="off",  # synthetic ids past the tokenizer's vocabulary
    )
    rows, tokens = rows_read(data, data.train_dataloader(), 8)
    names = [*files, "replay"]  # math, idle, chat
    measures = PlanCounts(data.train_progress, names).measures()
    assert rows["replay"] > 0 and tokens["replay"] == 15 * rows["replay"]
    assert {name: measures[f"data/samples/{name}"] for name in names} == {name: rows[name] for name in names}
    assert {name: measures[f"data/tokens/{name}"] for name in names} == {name: tokens[name] for name in names}
    assert measures["data/target/replay"] == pytest.approx(0.2) and measures["data/target/math"] == pytest.approx(0.24)
    assert [measures[f"data/{key}/idle"] for key in ("samples", "tokens", "share", "target", "epoch")] == [0] * 5


def test_losses_per_task_and_a_summary_without_the_batch_fetched_past_the_end(tmp_path, tokenizer, caplog):
    data = module(tmp_path, tokenizer)
    metrics = data.data_metrics
    iterator = CycleIterator(data.train_dataloader())  # watched by the metrics
    sums, tokens = Counter(), Counter()
    for step in range(3):
        batch = next(iterator)
        targets = (batch["labels"][:, 1:] != -100).sum(1)
        losses = torch.arange(1.0, 1.0 + len(targets)) * (step + 1)
        metrics.add_row_losses(losses, targets)  # what the bridge hands over after each training loss
        names, tasks = data.train_progress.last_rows
        for row, task in enumerate(tasks):
            sums[names[task]] += losses[row].item()
            tokens[names[task]] += targets[row].item()
    values = metrics.values(lambda tensor: tensor)
    for name in WEIGHTS:
        assert values[f"data/loss/{name}"] == pytest.approx(sums[name] / tokens[name]), name
    assert values["data/samples/math"] + values["data/samples/chat"] == 6
    next(iterator)  # fetched, not trained (LitGPT's loop breaks at the epoch limit)
    with caplog.at_level(logging.INFO, logger="sharded_mix"):
        metrics.log_summary(None)
    (summary,) = [record.getMessage() for record in caplog.records if "DATA SUMMARY" in record.getMessage()]
    rows, target_tokens = trained(data, range(6))
    assert "===== DATA SUMMARY: 6 samples over all ranks, SFT mixture =====" in summary
    for name in WEIGHTS:
        assert f"\n{name:<14} {rows[name]:>14,} {target_tokens[name]:>18,} {rows[name] / 6:>8.4f}" in summary


def test_a_loader_started_at_a_sample_counts_the_samples_before_it(tmp_path, tokenizer):
    data = module(tmp_path, tokenizer)
    loader = data.train_dataloader(start=5)  # its first pass is the rest of epoch 0: samples 5 .. 10
    rows, tokens = rows_read(data, loader, 5)
    assert (rows, tokens) == trained(data, range(5, 15))
    measures = counts(data)
    assert {name: (measures[f"data/samples/{name}"], measures[f"data/tokens/{name}"]) for name in WEIGHTS} == {
        name: (count, trained(data, range(15))[1][name]) for name, count in trained(data, range(15))[0].items()
    }
