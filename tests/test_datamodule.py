"""ShardedMixedDataset on tiny shards: setup, loaders, batches, layouts and errors."""

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import SOURCE_STRIDE, source_of, write_source, write_token_shard

from sharded_mix import ShardedMixedDataset


def make(data_path, max_seq_length=15, batch_size=4, **fields):
    fields.setdefault("num_workers", 0)
    data = ShardedMixedDataset(data_path=data_path, **fields)
    data.connect(batch_size=batch_size, max_seq_length=max_seq_length)
    data.setup()
    return data


def sources_in(loader, batches):
    counts = Counter()
    for index, batch in enumerate(loader):
        if index == batches:
            break
        counts.update(source_of(block) for block in batch)
    return counts


@pytest.fixture
def typed_base(reference_layout):
    """Reference layout for training, plus a typed validation base beside it."""
    val = reference_layout.parent / "val"
    for number, shard_dir in enumerate(["1", "2", "c1", "m1", "q1", "q2"], start=1):
        write_source(val, shard_dir, 100 + number, 400)
    return reference_layout, val


def test_batch_shape_dtype_and_contiguous_blocks(typed_base):
    train, val = typed_base
    data = make(train, val_data_path=val, mix_weights_str="main:0.8,code:0.15,math:0.05")
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (4, 16)
    assert batch.dtype == torch.int32
    for block in batch:
        offsets = block.numpy() % SOURCE_STRIDE
        assert (np.diff(offsets) == 1).all()  # one contiguous run of one source


def test_train_stream_follows_the_blend(typed_base):
    train, val = typed_base
    data = make(train, val_data_path=val, literal_weights_str="main/1:0.5,c1:0.5")
    counts = sources_in(data.train_dataloader(), batches=20)
    assert set(counts) == {1, 3}  # main/1 is source 1, c1 is source 3; nothing else is read
    assert 25 <= counts[1] <= 55


def test_zero_weight_source_is_never_read(typed_base):
    train, val = typed_base
    data = make(train, val_data_path=val, mix_weights_str="main:0.5,math:0.5,code:0")
    assert set(sources_in(data.train_dataloader(), batches=30)) <= {1, 2, 4}
    assert [row.id for row in data.plan_rows() if row.weight == 0] == ["c1", "q1", "q2"]


def test_validation_is_a_deterministic_typed_mix(typed_base):
    train, val = typed_base
    data = make(train, val_data_path=val, mix_weights_str="main:0.5,qa:0.5")
    first = torch.cat(list(data.val_dataloader()))
    second = torch.cat(list(data.val_dataloader()))
    assert torch.equal(first, second)
    assert {source_of(block) for block in first} <= {101, 102, 105, 106}
    offsets = [int(block[0]) % SOURCE_STRIDE for block in first if source_of(block) == 101]
    assert offsets == sorted(offsets)  # not shuffled


def test_single_directory_validation(typed_base, tmp_path):
    train, _ = typed_base
    val_dir = write_source(tmp_path, "heldout", 9, 320)
    data = make(train, val_data_path=val_dir, mix_weights_str="main:1")
    blocks = torch.cat(list(data.val_dataloader()))
    assert len(blocks) == 20 - 20 % 4 and {source_of(b) for b in blocks} == {9}


def test_reference_train_val_layout(tmp_path):
    write_source(tmp_path / "train", "1", 1, 600)
    write_source(tmp_path / "train", "m1", 2, 600)
    write_source(tmp_path / "val", "1", 3, 200)
    write_source(tmp_path / "val", "m1", 4, 200)
    data = make(tmp_path, mix_weights_str="main:0.5,math:0.5")
    assert data.data_dirs() == (str(tmp_path / "train"), str(tmp_path / "val"))
    assert set(sources_in(data.train_dataloader(), 10)) == {1, 2}
    assert {source_of(b) for b in torch.cat(list(data.val_dataloader()))} == {3, 4}


def test_no_validation_data_is_a_clear_error(reference_layout):
    with pytest.raises(ValueError, match="val_data_path is not set and .*/val' does not exist"):
        make(reference_layout)


def test_mixed_dtypes_are_rejected(tmp_path):
    write_token_shard(tmp_path / "1", np.arange(500), dtype=torch.int32)
    write_token_shard(tmp_path / "c1", np.arange(500), dtype=torch.uint16)
    with pytest.raises(ValueError, match=r"different token dtypes \(c1=uint16, main/1=int32, val:main=int32\)"):
        make(tmp_path, val_data_path=tmp_path / "1", mix_weights_str="main:0.5,code:0.5")


def test_shard_too_small_for_one_block(tmp_path):
    write_source(tmp_path, "1", 1, 5000)
    write_source(tmp_path, "q1", 2, 40, doc_tokens=40)
    with pytest.raises(ValueError, match=r"shard 'q1' .* 40 tokens .* max_seq_length \+ 1 = 65"):
        make(tmp_path, max_seq_length=64, val_data_path=tmp_path / "1", mix_weights_str="main:0.9,qa:0.1")
    # excluded by weight 0, the small shard is fine
    make(tmp_path, max_seq_length=64, val_data_path=tmp_path / "1", mix_weights_str="main:1,qa:0")


def test_errors_come_before_any_loader(reference_layout):
    with pytest.raises(ValueError, match="data_path is empty"):
        ShardedMixedDataset(data_path="")
    with pytest.raises(ValueError, match="mix_weights_str"):
        ShardedMixedDataset(data_path=reference_layout, mix_weights_str="main=1")
    data = ShardedMixedDataset(
        data_path=reference_layout, val_data_path=reference_layout, mix_weights_str="main:1,web:1"
    )
    data.connect(batch_size=2, max_seq_length=15)
    with pytest.raises(
        ValueError, match=r"data_path .*: mix_weights_str: type\(s\) \['web'\] have a weight but no shards"
    ):
        data.setup()


def test_plan_is_logged_with_one_row_per_source(typed_base, caplog):
    train, val = typed_base
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        make(train, val_data_path=val, mix_weights_str="main:0.8,code:0.15,math:0.05")
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    text = caplog.text
    assert "DATA MIXTURE PLAN" in text
    assert "mode=weighted from mix_weights_str" in text
    for line in ("main/1         main                3,000", "c1             code                1,500"):
        assert line in text
    assert "0.1500" in text and "0.4000" in text


@pytest.mark.parametrize("num_workers", [1, 2])
def test_workers_give_valid_batches(typed_base, num_workers):
    train, val = typed_base
    data = make(train, val_data_path=val, literal_weights_str="main/1:1,m1:1", num_workers=num_workers)
    counts = sources_in(data.train_dataloader(), batches=8)
    assert set(counts) == {1, 4} and sum(counts.values()) == 32


def test_data_paths_expand_environment_variables(reference_layout, monkeypatch):
    monkeypatch.setenv("SHARDED_MIX_TEST_ROOT", str(reference_layout.parent))
    data = make(
        "$SHARDED_MIX_TEST_ROOT/data", val_data_path="${SHARDED_MIX_TEST_ROOT}/data/1", mix_weights_str="main:1"
    )
    assert data.train_mixture.base == str(reference_layout)
    assert data.val_mixture.base == str(reference_layout / "1")
    monkeypatch.delenv("SHARDED_MIX_TEST_ROOT")
    with pytest.raises(
        ValueError,
        match="data_path '\\$SHARDED_MIX_TEST_ROOT/data': environment variable SHARDED_MIX_TEST_ROOT is not set",
    ):
        make("$SHARDED_MIX_TEST_ROOT/data", mix_weights_str="main:1")


def test_an_unknown_type_in_the_blend_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['maths'\]"):
        ShardedMixedDataset(data_path=tmp_path, mix_weights_str="main:0.8,maths:0.2")


def test_reference_only_init_args_are_accepted_with_one_warning(tmp_path, caplog):
    reference_args = {
        "val_split_fraction": 0.05,
        "fast_dev_run": False,
        "data_split": "train",
        "dataset_name": "dclm",
        "num_samples": 1000,
        "num_val_samples": 100,
    }
    with caplog.at_level("WARNING", logger="sharded_mix"):
        data = ShardedMixedDataset(data_path=tmp_path, mix_weights_str="main:1", **reference_args)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert all(name in warnings[0] for name in reference_args) and "no effect" in warnings[0]
    assert data.mix_spec == ShardedMixedDataset(data_path=tmp_path, mix_weights_str="main:1").mix_spec
