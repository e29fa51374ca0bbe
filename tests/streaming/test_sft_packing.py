"""Packed SFT through SFTMixture: every sample of an epoch in exactly one packed row with its own tokens and labels
(first label masked), each pass serving its epoch's rows on one rank and split over ranks, the data/ counts equal to
the samples served, a deterministic fast-forwarded resume, the setup errors, and per-example losses equal to the
unpacked ones under document attention."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import write_source
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import CycleIterator

from sharded_mix import SFTMixture
from sharded_mix.streaming.sft_packing import PackedSampler
from sharded_mix.training.data_metrics import DataMetrics, PlanCounts

IGNORE = -100
LIMIT = 512
TASKS = {"math": 9, "chat": 30, "code": 14}


def write_task(path: Path, count: int, tag: str, extra: str = "", long_every: int = 0) -> str:
    """Examples of 100 .. 180 tokens; with ``long_every``, every so many a response past ``LIMIT`` (cut to it)."""
    records = []
    for i in range(count):
        long = " long" * 300 if long_every and i % long_every == long_every - 1 else ""
        instruction = f"{tag} question {i}" + " more words" * (i % 7) + extra
        records.append({"instruction": instruction, "output": f"answer {i}" + " x" * (i % 5) + long})
    path.write_text(json.dumps(records))
    return str(path)


def make(tmp_path, tokenizer, batch_size=3, max_seq_length=LIMIT, **fields) -> SFTMixture:
    if "train_data" not in fields:
        fields["train_data"] = {name: write_task(tmp_path / f"{name}.json", n, name) for name, n in TASKS.items()}
        fields["train_data"]["code"] = write_task(tmp_path / "code.json", TASKS["code"], "code", long_every=7)
    fields.setdefault("val_data", write_task(tmp_path / "val.json", 4, "val"))
    fields.setdefault("mask_prompt", True)
    fields.setdefault("packing_window", 16)
    data = SFTMixture(packing=True, num_workers=fields.pop("num_workers", 0), **fields)
    data.connect(tokenizer, batch_size=batch_size, max_seq_length=max_seq_length)
    data.setup()
    data.data_metrics = DataMetrics()  # what connect keeps under LitGPT
    return data


def unpacked(data: SFTMixture, source: str, example: int) -> dict:
    return data.train_dataset.examples.pools[source][example]


def segments(ids: torch.Tensor, labels: torch.Tensor, eos_id: int) -> list[tuple[tuple, tuple]]:
    """A (padded) row cut after every EOS, as document attention cuts it; trailing padding (labels ignored) left
    out."""
    keep = int(torch.nonzero(labels != IGNORE).max()) + 1
    ids, labels = ids[:keep].tolist(), labels[:keep].tolist()
    cuts = [0, *[at + 1 for at, token in enumerate(ids) if token == eos_id]]
    if cuts[-1] != len(ids):
        cuts.append(len(ids))
    return [(tuple(ids[a:b]), tuple(labels[a:b])) for a, b in zip(cuts, cuts[1:])]


def expected_segment(data: SFTMixture, source: str, example: int) -> tuple[tuple, tuple]:
    alone = unpacked(data, source, example)
    labels = alone["labels"].clone()
    labels[0] = IGNORE
    return tuple(alone["input_ids"].tolist()), tuple(labels.tolist())


def epoch_samples(data: SFTMixture, epoch: int) -> Counter:
    size = data.epochs.epoch_size
    return Counter(expected_segment(data, *data.epochs.example(epoch * size + k)) for k in range(size))


def test_every_sample_of_an_epoch_is_in_one_row_with_its_own_tokens_and_labels(tmp_path, tokenizer):
    data = make(tmp_path, tokenizer)
    rows, eos = data.train_dataset, tokenizer.eos_id
    assert len(rows) == rows.packing.rows(0) < data.epochs.epoch_size
    size = data.epochs.epoch_size
    for epoch in range(3):
        served = Counter()
        for number in range(rows.packing.rows(epoch)):
            row = rows[epoch * size + number]
            assert len(row["input_ids"]) == len(row["labels"]) == len(row["task"]) == LIMIT  # padded to the row
            pairs = rows.packing.row(epoch, number)
            owners = [
                rows.examples.task[source]
                for source, example in pairs
                for _ in unpacked(data, source, example)["input_ids"]
            ]
            assert row["task"].tolist() == owners + [-1] * (LIMIT - len(owners))  # each token's task
            parts = segments(row["input_ids"], row["labels"], eos)
            assert parts == [expected_segment(data, *pair) for pair in pairs]  # EOS cuts the row into its examples
            assert row["token_counts"]["raw"] == sum(unpacked(data, *p)["token_counts"]["raw"] for p in pairs)
            served.update(parts)
        assert served == epoch_samples(data, epoch)
    assert data.tasks["code"].truncated == 2  # cut to LIMIT, not ended by EOS: a row each
    assert max(len(rows.packing.row(0, number)) for number in range(len(rows))) >= 3
    packed_targets = sum(int((rows[number]["labels"][1:] != IGNORE).sum()) for number in range(len(rows)))
    alone = [unpacked(data, *data.epochs.example(k)) for k in range(size)]
    assert packed_targets == sum(int((example["labels"][1:] != IGNORE).sum()) for example in alone)


def served_by(data: SFTMixture, loader, batches: int) -> tuple[list[Counter], Counter, Counter]:
    """The samples (as segments) each pass of ``loader`` served in ``batches`` micro-batches, and per task the
    samples and target tokens."""
    by_task = {}
    for source in data.epochs.sources:
        for index in range(len(data.train_dataset.examples.pools[source])):
            by_task[expected_segment(data, source, index)] = source
    passes, samples, tokens, iterator = [], Counter(), Counter(), CycleIterator(loader)
    for _ in range(batches):
        batch = next(iterator)
        if len(passes) <= iterator.epoch:
            passes.append(Counter())
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            for part in segments(ids, labels, data.tokenizer.eos_id):
                passes[-1][part] += 1
                samples[by_task[part]] += 1
                tokens[by_task[part]] += sum(label != IGNORE for label in part[1][1:])
    return passes, samples, tokens


def measured(data: SFTMixture, leave_out_last: bool = False) -> tuple[Counter, Counter]:
    measures = PlanCounts(data.train_progress, data.train_files).measures(leave_out_last)
    return (
        Counter({name: measures[f"data/samples/{name}"] for name in TASKS if measures[f"data/samples/{name}"]}),
        Counter({name: measures[f"data/tokens/{name}"] for name in TASKS if measures[f"data/tokens/{name}"]}),
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_pass_serves_its_epochs_rows_and_the_counts_are_the_samples_served(tmp_path, tokenizer, num_workers):
    data = make(tmp_path, tokenizer, num_workers=num_workers)
    loader = data.train_dataloader()
    per_pass = [-(-data.train_dataset.packing.rows(epoch) // 3) for epoch in range(3)]
    assert len(loader) == per_pass[0]
    passes, samples, tokens = served_by(data, loader, per_pass[0] + per_pass[1] + 2)
    assert passes[0] == epoch_samples(data, 0) and passes[1] == epoch_samples(data, 1)
    assert measured(data) == (samples, tokens)
    measures = PlanCounts(data.train_progress, data.train_files).measures()
    total = sum(samples.values())
    assert measures["data/share/chat"] == samples["chat"] / total
    assert measures["data/epoch/math"] == samples["math"] / TASKS["math"]
    assert data.train_progress.last_token_sources.shape == (3, LIMIT)  # each token's task: data/loss per token


def test_the_loss_of_a_packed_batch_is_attributed_to_tasks_token_by_token(tmp_path, tokenizer):
    data = make(tmp_path, tokenizer)
    data.data_metrics.watch(data.train_progress, data.train_files)  # as train_dataloader does under LitGPT
    loader = data.train_dataloader()
    data.data_metrics.watch(data.train_progress, data.train_files, PlanCounts(data.train_progress, data.train_files))
    batch = next(iter(loader))
    by_task = {}
    for source in data.epochs.sources:
        for index in range(len(data.train_dataset.examples.pools[source])):
            by_task[expected_segment(data, source, index)] = source
    targets = batch["labels"][:, 1:] != IGNORE  # what LitGPT's finetune loss is over
    losses = torch.rand(targets.shape) * targets  # a made-up loss per target token
    expected_sum, expected_tokens = Counter(), Counter()
    for row, (ids, labels) in enumerate(zip(batch["input_ids"], batch["labels"])):
        start = 0
        for part in segments(ids, labels, data.tokenizer.eos_id):
            task = by_task[part]
            span = slice(max(start - 1, 0), start + len(part[0]) - 1)  # position t predicts label t + 1
            expected_sum[task] += float(losses[row, span].sum())
            expected_tokens[task] += int(targets[row, span].sum())
            start += len(part[0])
    data.data_metrics.add_token_losses(losses, targets)
    values = data.data_metrics.values(lambda tensor: tensor)
    for task in expected_tokens:
        assert values[f"data/loss/{task}"] == pytest.approx(expected_sum[task] / expected_tokens[task], rel=1e-5)


def row_segments(data: SFTMixture, epoch: int, rows: range) -> Counter:
    return Counter(expected_segment(data, *pair) for row in rows for pair in data.train_dataset.packing.row(epoch, row))


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_split_each_epochs_rows_and_count_the_rows_of_all_ranks(tmp_path, tokenizer, monkeypatch, world_size):
    served, samples, tokens, counted, lengths = Counter(), Counter(), Counter(), [], set()
    for rank in range(world_size):  # distributed_rank_world reads these where torch.distributed is not initialised
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        data = make(tmp_path, tokenizer, batch_size=2)
        loader = data.train_dataloader()
        assert isinstance(loader.sampler, PackedSampler) and loader.sampler.num_replicas == world_size
        lengths.add(len(loader))
        passes, rank_samples, rank_tokens = served_by(data, loader, len(loader) + 1)  # into the second pass
        served += passes[0]
        samples, tokens = samples + rank_samples, tokens + rank_tokens
        counted.append(measured(data))
    assert len(lengths) == 1  # every rank as many batches
    rows = data.train_dataset.packing.rows(0)
    wrapped = -(-rows // world_size) * world_size - rows  # the first rows, served again to even out the ranks
    assert served == epoch_samples(data, 0) + row_segments(data, 0, range(wrapped))
    assert all(other == (samples, tokens) for other in counted)  # every rank counts the rows of all ranks


def test_a_fast_forwarded_resume_serves_and_counts_as_the_straight_run(tmp_path, tokenizer):
    straight = make(tmp_path, tokenizer)
    iterator = CycleIterator(straight.train_dataloader())
    batches = [next(iterator) for _ in range(12)]
    resumed = make(tmp_path, tokenizer)
    iterator = CycleIterator(resumed.train_dataloader())
    for _ in range(5):  # LitGPT's finetune_full replays the batches a resumed run trained
        next(iterator)
    for batch in batches[5:]:
        again = next(iterator)
        assert torch.equal(again["input_ids"], batch["input_ids"]) and torch.equal(again["labels"], batch["labels"])
    assert measured(resumed) == measured(straight) and measured(straight)[0]["chat"] > 0
    assert measured(straight, leave_out_last=True) != measured(straight)


def test_a_loader_starts_at_an_epoch_and_replay_blocks_take_a_row_each(tmp_path, tokenizer):
    data = make(tmp_path, tokenizer)
    loader = data.train_dataloader(start=2 * data.epochs.epoch_size)
    passes, samples, _ = served_by(data, loader, len(loader))
    assert passes[0] == epoch_samples(data, 2)
    assert measured(data)[0] == samples + Counter({name: 2 * data.epochs.per_epoch[name] for name in TASKS})
    with pytest.raises(ValueError, match="start is sample 5; with packing a loader starts at an epoch's first"):
        data.train_dataloader(start=5)
    write_source(tmp_path / "pre", "1", 1, 2000)
    fields = {"replay_data_path": str(tmp_path / "pre"), "replay_share": 0.2, "replay_block_size": 32}
    replay = make(tmp_path, tokenizer, verify_chunks="off", **fields)
    rows = replay.train_dataset
    with_blocks = [rows.packing.row(0, number) for number in range(len(rows))]
    with_blocks = [row for row in with_blocks if any(source == "replay" for source, _ in row)]
    assert len(with_blocks) == replay.epochs.per_epoch["replay"] and all(len(row) == 1 for row in with_blocks)
    assert len(rows) < replay.epochs.epoch_size


def test_packing_refuses_what_it_cannot_pack(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="packing is 'yes'; use true or false"):
        SFTMixture(train_data="t.json", val_data="v.json", packing="yes")
    with pytest.raises(ValueError, match="packing_window is 0; give a number of consecutive samples"):
        SFTMixture(train_data="t.json", val_data="v.json", packing=True, packing_window=0)
    with pytest.raises(ValueError, match="packing: true needs train.max_seq_length .* which is -1"):
        make(tmp_path, tokenizer, max_seq_length=None)
    math = write_task(tmp_path / "math.json", 5, "math")
    dirty = write_task(tmp_path / "dirty.json", 6, "dirty", extra=" <|endoftext|> more")
    with pytest.raises(ValueError, match=r"task 'dirty' \(.*dirty.json\) has 6 example\(s\) holding the EOS token"):
        make(tmp_path, tokenizer, train_data={"math": math, "dirty": dirty})
    dirty_val = write_task(tmp_path / "dirty_val.json", 2, "val", extra="<|endoftext|>")
    with pytest.raises(ValueError, match=r"val task 'dirty_val' .* has 2 example\(s\) holding the EOS token"):
        make(tmp_path, tokenizer, train_data={"math": math}, val_data=dirty_val)
    long = {"math": math, "long": write_task(tmp_path / "long.json", 4, "long", extra=" very long prompt" * 80)}
    message = r"task 'long' .* has 4 example\(s\) whose prompt fills the whole row of train.max_seq_length 512"
    with pytest.raises(ValueError, match=message):
        make(tmp_path, tokenizer, train_data=long)
    assert "long" in make(tmp_path, tokenizer, train_data=long, max_seq_length=2048).tasks


def tiny_model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    config = Config.from_name(
        "pythia-14m", n_layer=2, n_embd=32, n_head=4, block_size=LIMIT, vocab_size=vocab_size, padded_vocab_size=320
    )
    return GPT(config).eval().float()


def example_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Mean loss and target tokens of one example, shifted as LitGPT's finetune loop shifts them."""
    targets = labels[1:]
    loss = torch.nn.functional.cross_entropy(logits[:-1], targets, ignore_index=IGNORE)
    return loss.item(), int((targets != IGNORE).sum())


def test_each_examples_loss_in_a_packed_batch_under_document_attention_is_its_unpacked_loss(tmp_path, tokenizer):
    """Needs ``sharded_mix.training.document_attention`` (the model side of packing)."""
    from litgpt.data import get_sft_collate_fn
    from litgpt.utils import chunked_cross_entropy

    from sharded_mix.training import document_attention

    data = make(tmp_path, tokenizer)
    rows, model = data.train_dataset, tiny_model(tokenizer.vocab_size)
    numbers = sorted(range(len(rows)), key=lambda number: -len(rows.packing.row(0, number)))[:3]
    batch = get_sft_collate_fn(LIMIT, 0, IGNORE)([rows[number] for number in numbers])  # as the loader collates
    assert batch["input_ids"].shape == (3, LIMIT) and (batch["labels"][:, -1] == IGNORE).all()  # padded rows
    with torch.no_grad():
        with document_attention(model, tokenizer.eos_id):
            packed = model(batch["input_ids"])
        plain = model(batch["input_ids"])
        sums, counts, differs = 0.0, 0, 0
        for at, number in enumerate(numbers):
            offset = 0
            for source, example in rows.packing.row(0, number):
                alone = unpacked(data, source, example)
                length = len(alone["input_ids"])
                expected, targets = example_loss(model(alone["input_ids"][None])[0], alone["labels"])
                labels = batch["labels"][at, offset : offset + length]
                got, packed_targets = example_loss(packed[at, offset : offset + length], labels)
                assert packed_targets == targets > 0 and abs(got - expected) <= 1e-5, (number, source, example)
                causal, _ = example_loss(plain[at, offset : offset + length], labels)
                differs += offset > 0 and abs(causal - got) > 1e-3
                sums, counts, offset = sums + expected * targets, counts + targets, offset + length
        loss = chunked_cross_entropy(packed[..., :-1, :], batch["labels"][..., 1:])  # finetune_full's training loss
    assert loss.item() == pytest.approx(sums / counts, abs=1e-5)  # the token mean of the unpacked losses
    assert differs  # without document attention the later examples of a row see the earlier ones
