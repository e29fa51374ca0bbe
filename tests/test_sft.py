"""SFTMixture: the epoch layout (exact blend, repeats, orders), task files, templates, lengths and replay."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_source, write_token_shard

from sharded_mix import SFTMixture
from sharded_mix.data_config import parse_weights
from sharded_mix.mixing.sft_epochs import SFTEpochs, source_draws
from sharded_mix.sft import REPLAY_SOURCE
from sharded_mix.streaming.sft_files import apply_template, read_records


def test_every_prefix_of_an_epoch_follows_the_blend_within_one_sample():
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    epochs = SFTEpochs(weights, {"a": 7, "b": 50, "c": 3}, epoch_size=40, seed=1)
    taken = Counter()
    for n in range(1, 3 * 40 + 1):
        taken[epochs.example(n - 1)[0]] += 1
        for source, weight in weights.items():
            assert abs(taken[source] - weight * n) < 1, (n, source)
    assert epochs.per_epoch == {"a": 20, "b": 12, "c": 8}


def test_each_epoch_holds_the_same_examples_reshuffled_and_small_sources_repeat_evenly():
    epochs = SFTEpochs({"a": 0.5, "b": 0.5}, {"a": 7, "b": 100}, epoch_size=40, seed=3)
    by_epoch = [[epochs.example(epoch * 40 + k) for k in range(40)] for epoch in range(3)]
    assert Counter(by_epoch[0]) == Counter(by_epoch[1]) == Counter(by_epoch[2])
    assert by_epoch[0] != by_epoch[1]
    a_counts = Counter(index for source, index in by_epoch[0] if source == "a")
    assert sorted(a_counts) == list(range(7)) and set(a_counts.values()) == {2, 3}  # 20 = 2 passes + 6 distinct
    b_examples = [index for source, index in by_epoch[0] if source == "b"]
    assert len(b_examples) == len(set(b_examples)) == 20
    unshuffled = SFTEpochs({"a": 0.5, "b": 0.5}, {"a": 7, "b": 100}, epoch_size=40, seed=3, shuffle=False)
    assert [unshuffled.example(k) for k in range(40)] == [unshuffled.example(40 + k) for k in range(40)]


def test_a_sources_examples_depend_on_its_name_and_the_seed_not_on_the_other_sources():
    alone = SFTEpochs({"a": 1.0}, {"a": 30}, epoch_size=10, seed=5)
    mixed = SFTEpochs({"a": 0.5, "z": 0.5}, {"a": 30, "z": 4}, epoch_size=20, seed=5)
    assert list(alone.draws["a"]) == list(mixed.draws["a"]) == list(source_draws(30, 10, 5, "a"))
    assert list(source_draws(30, 10, 6, "a")) != list(alone.draws["a"])


def test_the_state_counts_each_sources_samples_and_refuses_bad_input():
    epochs = SFTEpochs({"a": 0.75, "b": 0.25}, {"a": 5, "b": 5}, epoch_size=8, seed=0)
    state = epochs.state(8 * 2 + 4)
    assert (state["epoch"], state["position"]) == (2, 4)
    assert state["sources"]["a"]["taken"] + state["sources"]["b"]["taken"] == 20
    assert state["sources"]["a"]["taken"] == 2 * 6 + sum(epochs.example(k)[0] == "a" for k in range(4))
    with pytest.raises(ValueError, match="epoch_size is 0"):
        SFTEpochs({"a": 1.0}, {"a": 5}, epoch_size=0, seed=0)
    with pytest.raises(ValueError, match="'b' has weight 0.5 but no examples"):
        SFTEpochs({"a": 0.5, "b": 0.5}, {"a": 5, "b": 0}, epoch_size=4, seed=0)


def test_task_files_json_jsonl_and_templates(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "i", "output": "o"}]))
    (tmp_path / "b.jsonl").write_text('{"question": "q1", "answer": "a1"}\n\n{"question": "q2", "answer": "a2"}\n')
    assert read_records(tmp_path / "a.json") == [{"instruction": "i", "output": "o"}]
    records = apply_template(
        read_records(tmp_path / "b.jsonl"), {"instruction": "Q: {question}", "output": "{answer}"}, "b"
    )
    assert [(r["instruction"], r["output"]) for r in records] == [("Q: q1", "a1"), ("Q: q2", "a2")]
    with pytest.raises(ValueError, match="record 0 has no text field 'instruction'.*give a template"):
        apply_template(read_records(tmp_path / "b.jsonl"), None, "b")
    with pytest.raises(ValueError, match="record 0 has no field 'support' that the template names"):
        apply_template(read_records(tmp_path / "b.jsonl"), {"instruction": "{support}", "output": "{answer}"}, "b")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_records(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="expected a .json or .jsonl file"):
        read_records(tmp_path / "a.txt")
    assert parse_weights("gsm8k:0.7, lima:0.3") == {"gsm8k": 0.7, "lima": 0.3}
    with pytest.raises(ValueError, match="'gsm8k' is not NAME:WEIGHT"):
        parse_weights("gsm8k")


def write_task(path: Path, count: int, tag: str, long_every: int = 0) -> Path:
    records = [
        {
            "instruction": f"{tag} question {i}" + (" pad" * 200 if long_every and i % long_every == 0 else ""),
            "output": f"answer {i}",
        }
        for i in range(count)
    ]
    path.write_text(json.dumps(records))
    return path


def make(tmp_path, tokenizer, batch_size=4, max_seq_length=128, **fields) -> SFTMixture:
    fields.setdefault(
        "train_data",
        {
            "math": str(write_task(tmp_path / "math.json", 10, "math")),
            "chat": str(write_task(tmp_path / "chat.json", 30, "chat")),
        },
    )
    fields.setdefault("val_data", str(write_task(tmp_path / "val.json", 5, "val")))
    data = SFTMixture(num_workers=0, **fields)
    data.connect(tokenizer, batch_size=batch_size, max_seq_length=max_seq_length)
    data.setup()
    return data


def test_the_default_epoch_is_every_example_once(tmp_path, tokenizer):
    data = make(tmp_path, tokenizer)
    loader = data.train_dataloader()
    assert len(data.train_dataset) == 40 and len(loader) == 10
    seen = [data.epochs.example(k) for k in range(40)]
    assert sorted(seen) == sorted([("chat", i) for i in range(30)] + [("math", i) for i in range(10)])
    batch = next(iter(loader))
    assert set(batch) == {"input_ids", "labels", "token_counts"} and batch["input_ids"].shape[0] == 4
    assert data.test_dataset.data[0]["instruction"] == "val question 0" and len(data.val_dataloader()) == 2


def test_weights_and_epoch_size_set_the_blend_and_iteration_continues_into_the_next_epoch(tmp_path, tokenizer):
    data = make(tmp_path, tokenizer, weights="math:0.5,chat:0.5", epoch_size=8, batch_size=2)
    assert data.epochs.per_epoch == {"chat": 4, "math": 4}
    loader = data.train_dataloader()
    first, second = [[row for b in loader for row in b["input_ids"].tolist()] for _ in range(2)]
    assert len(first) == len(second) == 8 and first != second  # epoch 2: same examples, new order
    unpadded = lambda rows: sorted(str(np.trim_zeros(row, "b")) for row in rows)  # noqa: E731
    assert unpadded(first) == unpadded(second)


def test_mask_prompt_labels_only_the_response(tmp_path, tokenizer):
    masked = make(tmp_path, tokenizer, mask_prompt=True).train_dataset[0]
    plain = make(tmp_path, tokenizer).train_dataset[0]
    assert torch.equal(plain["labels"], plain["input_ids"])
    assert (masked["labels"] == -100).sum() > 0 and torch.equal(masked["labels"][-3:], masked["input_ids"][-3:])


LIMIT = 150


def test_long_examples_are_cut_or_dropped(tmp_path, tokenizer):
    files = {"long": str(write_task(tmp_path / "long.json", 12, "long", long_every=3))}
    cut = make(tmp_path, tokenizer, train_data=files, max_seq_length=LIMIT)
    assert cut.tasks["long"].truncated == 4 and len(cut.train_dataset) == 12
    assert max(len(cut.train_dataset[k]["input_ids"]) for k in range(12)) == LIMIT
    dropped = make(tmp_path, tokenizer, train_data=files, max_seq_length=LIMIT, long_examples="drop")
    assert dropped.tasks["long"].dropped == 4 and len(dropped.train_dataset) == 8
    assert all(len(dropped.train_dataset[k]["input_ids"]) < LIMIT for k in range(8))


def test_replay_blocks_take_their_share_of_every_epoch(tmp_path, tokenizer):
    write_source(tmp_path / "pre", "1", 1, 2000)  # ids past the tokenizer's: unchecked here, see below
    fields = {"replay_data_path": str(tmp_path / "pre"), "replay_share": 0.2, "max_seq_length": 16}
    data = make(tmp_path, tokenizer, verify_chunks="off", **fields)
    assert len(data.train_dataset) == 50 and data.epochs.per_epoch[REPLAY_SOURCE] == 10
    replayed = [data.train_dataset[k] for k in range(50) if data.epochs.example(k)[0] == REPLAY_SOURCE]
    assert len(replayed) == 10 and all(
        len(item["input_ids"]) == 16 and torch.equal(item["input_ids"], item["labels"]) for item in replayed
    )
    assert all(int(item["input_ids"][0]) // 10**7 == 1 for item in replayed)
    assert len({tuple(item["input_ids"].tolist()) for item in replayed}) == 10
    checked = make(tmp_path, tokenizer, **fields)  # no manifest: ids must be below the tokenizer's 300
    with pytest.raises(ValueError, match=r"holds token id 10,000,000 at token 0, outside the run's vocabulary of 3"):
        [checked.train_dataset[k] for k in range(50)]


def test_replay_chunks_are_verified_before_they_are_read(tmp_path, tokenizer):
    from sharded_mix.cli import main

    ids = np.arange(2000, dtype=np.int32) % 250
    write_token_shard(tmp_path / "pre" / "1", [ids[i : i + 100] for i in range(0, 2000, 100)], chunk_bytes=1024)
    assert main(["hash", str(tmp_path / "pre"), "--no-progress"]) == 0
    fields = {"replay_data_path": str(tmp_path / "pre"), "replay_share": 0.2, "max_seq_length": 16}
    replay = [k for k in range(50) if make(tmp_path, tokenizer, **fields).epochs.example(k)[0] == REPLAY_SOURCE]
    assert all(make(tmp_path, tokenizer, **fields).train_dataset[k]["input_ids"].max() < 250 for k in replay)
    chunk = sorted((tmp_path / "pre" / "1").glob("chunk-*.bin"))[1]
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-8] + bytes(8))  # the last two tokens zeroed, size kept
    damaged = make(tmp_path, tokenizer, **fields)
    with pytest.raises(ValueError, match=rf"shard 'main/1' chunk {chunk.name} .* has xxh3_128 [0-9a-f]+, its"):
        [damaged.train_dataset[k] for k in range(50)]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"val_data": None}, "val_data is not set"),
        ({"weights": {"code": 1.0}}, "weights name 'code', which is not in train_data"),
        ({"replay_share": 0.1}, "replay_share is 0.1 but replay_data_path is not set"),
        ({"replay_share": 1.0, "replay_data_path": "x"}, r"replay_share is 1.0; use a share in \[0, 1\)"),
        ({"long_examples": "skip"}, "long_examples is 'skip'; use one of truncate, drop"),
        ({"prompt_style": "nope"}, "prompt_style 'nope' is not a LitGPT prompt style"),
        ({"epoch_size": 0}, "epoch_size is 0"),
    ],
)
def test_bad_fields_are_one_value_error_naming_them(tmp_path, fields, message):
    base = {"train_data": {"math": "m.json"}, "val_data": "v.json", **fields}
    with pytest.raises(ValueError, match=message):
        SFTMixture(**base)


def test_a_missing_task_file_names_it(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="task file .*nothere.json' does not exist"):
        make(tmp_path, tokenizer, train_data={"x": str(tmp_path / "nothere.json")})


def test_the_first_epochs_examples_bound_every_epochs_lengths(tmp_path, tokenizer):
    """finetune_full sizes the model on the first epoch's examples (get_longest_seq_length).

    Later epochs' examples never exceed it.
    """
    data = make(tmp_path, tokenizer, weights={"math": 0.9, "chat": 0.1}, epoch_size=12)
    first = max(len(data.train_dataset[k]["input_ids"]) for k in range(12))
    assert max(len(data.train_dataset[k]["input_ids"]) for k in range(12, 60)) <= first
    assert np.all(
        np.diff([data.epochs.state(12 * e)["sources"]["math"]["taken"] for e in range(4)])
        == data.epochs.per_epoch["math"]
    )
