"""What a new user trips on first: blends that do not sum to 1, a mistyped data_path, the plan at the start of a
run, one DATA STOP line, validation shards read once, and LitGPT's hyperparameter dump (the init args only)."""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from conftest import BLOCK, take, write_source

from sharded_mix import ShardedMixedDataset
from sharded_mix.streaming import layout


@pytest.fixture
def base(tmp_path: Path) -> Path:
    for number, (name, tokens) in enumerate([("main/1", 2000), ("c1", 800), ("m1", 800)], start=1):
        write_source(tmp_path / "data", name, number, tokens, doc_tokens=BLOCK)
    return tmp_path / "data"


@contextmanager
def our_logs(caplog):
    logger = logging.getLogger("sharded_mix")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="sharded_mix"):
            yield
    finally:
        logger.removeHandler(caplog.handler)


def records(caplog, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def test_a_blend_that_does_not_sum_to_one_is_normalised_with_one_warning(base, caplog):
    with our_logs(caplog):
        data = ShardedMixedDataset(data_path=base, mix_weights_str="main:0.8,code:0.5", val_data_path=base / "c1")
    (warning,) = records(caplog, logging.WARNING)
    assert warning == (
        "mix_weights_str: the weights sum to 1.3, not 1; they are normalised. As given: main:0.8,code:0.5; as used: "
        "main:0.6154,code:0.3846. Write weights that sum to 1 to silence this (a typo such as 0.5 for 0.2 shows here)."
    )
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    data.setup()
    assert data.train_mixture.weights == pytest.approx({"main/1": 0.8 / 1.3, "c1": 0.5 / 1.3})


@pytest.mark.parametrize("blend", [{"mix_weights_str": "main:0.8,code:0.2"}, {"proportional_sampling": True}])
def test_blends_that_sum_to_one_or_are_proportional_say_nothing(base, caplog, blend):
    with our_logs(caplog):
        ShardedMixedDataset(data_path=base, val_data_path=base / "c1", **blend)
    assert records(caplog, logging.WARNING) == []


def test_each_stage_blend_off_one_gets_its_own_warning(base, caplog):
    stages = [{"name": "a", "start_step": 0}, {"name": "b", "start_step": 2, "mix_weights_str": "main:1,math:1"}]
    with our_logs(caplog):
        ShardedMixedDataset(data_path=base, mix_weights_str="main:0.8,code:0.2", stages=stages, global_batch_size=4)
    (warning,) = records(caplog, logging.WARNING)
    assert "the weights sum to 2, not 1" in warning and "as used: main:0.5,math:0.5" in warning


def test_a_mistyped_data_path_is_an_error_naming_data_path(base):
    data = ShardedMixedDataset(data_path=base.parent / "dta")
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    with pytest.raises(ValueError, match=rf"^data_path '{base.parent / 'dta'}' does not exist \(did you mean "):
        data.setup()


def test_the_hyperparameter_dump_holds_the_init_args_only(base):
    """LitGPT's ``capture_hparams`` stores ``asdict(data)`` and prints it: nothing of ours at run time."""
    data = ShardedMixedDataset(data_path=base, mix_weights_str="main:0.8,code:0.2", val_data_path=base / "c1")
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    data.setup()
    take(data.train_dataloader(), 1)
    dumped = asdict(data)
    assert list(dumped) == [field.name for field in fields(data)]
    assert all(field.init for field in fields(data))
    assert dumped["mix_weights_str"] == "main:0.8,code:0.2" and dumped["shard_types"] is None


def counted(monkeypatch, name: str) -> list:
    """The first argument of every call of ``layout.<name>`` (the call itself goes through)."""
    calls, real = [], getattr(layout, name)

    def spy(first, *args, **kwargs):
        calls.append(getattr(first, "path", first))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(layout, name, spy)
    return calls


def test_a_validation_shard_that_is_a_training_shard_is_discovered_and_checked_once(base, monkeypatch):
    discovered, checked = counted(monkeypatch, "discover_shards"), counted(monkeypatch, "chunk_file_problems")
    data = ShardedMixedDataset(data_path=base, mix_weights_str="main:0.8,code:0.2", val_data_path=base / "main" / "1")
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    data.setup()
    assert discovered == [str(base)]
    assert sorted(checked) == sorted(str(base / name) for name in ("main/1", "c1"))
    assert [shard.path for shard in data.val_mixture.sources] == [str(base / "main" / "1")]
    assert len(take(data.val_dataloader(), 2)) == 2


def test_a_validation_base_that_is_the_training_base_is_the_training_mixture(base, monkeypatch):
    discovered = []
    real_discover = layout.discover_shards
    monkeypatch.setattr(
        layout, "discover_shards", lambda base, *a, **k: discovered.append(base) or real_discover(base, *a, **k)
    )
    data = ShardedMixedDataset(data_path=base, mix_weights_str="main:0.8,code:0.2", val_data_path=base)
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    data.setup()
    assert discovered == [str(base)] and data.val_mixture is data.train_mixture


def test_a_validation_directory_outside_the_training_shards_is_still_discovered(base):
    write_source(base.parent / "val", "main/1", 9, 400, doc_tokens=BLOCK)
    data = ShardedMixedDataset(data_path=base, val_data_path=base.parent / "val" / "main" / "1")
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    data.setup()
    assert data.val_mixture.base == str(base.parent / "val" / "main" / "1")


class FakeFabric:
    """What ``get_dataloaders`` asks of Fabric."""

    def rank_zero_first(self):
        return nullcontext()


def connected_through_litgpt(data, out_dir: Path, resume, **train):
    """The data module connected as ``litgpt pretrain``'s ``main`` does: the bridge reads these locals."""
    from litgpt.args import TrainArgs
    from litgpt.pretrain import get_dataloaders

    train = TrainArgs(micro_batch_size=2, max_seq_length=BLOCK - 1, **train)
    fabric = FakeFabric()  # noqa: F841 (the bridge reads fabric, out_dir and resume from this frame)
    return get_dataloaders(fabric, data, None, train, BLOCK - 1)


def test_the_plan_at_the_start_of_a_run_spans_its_real_steps(base, tmp_path, caplog):
    data = ShardedMixedDataset(data_path=base, mix_weights_str="main:0.8,code:0.2", val_data_path=base / "c1")
    with our_logs(caplog):
        connected_through_litgpt(data, tmp_path / "out", False, global_batch_size=4, max_tokens=6 * 4 * (BLOCK - 1))
    plan = "\n".join(records(caplog, logging.INFO))
    assert "stage default: steps 0 -> 6, tokens 0 -> 360" in plan
    assert "set its end_step" not in plan


def test_the_plan_of_a_resumed_run_starts_at_the_resumed_step(base, tmp_path, caplog):
    checkpoint = tmp_path / "out" / "step-00000040" / "lit_model.pth"
    data = ShardedMixedDataset(
        data_path=base, mix_weights_str="main:0.8,code:0.2", val_data_path=base / "c1", stop_after_steps=3
    )
    with our_logs(caplog):
        connected_through_litgpt(data, tmp_path / "out", checkpoint, global_batch_size=4, max_tokens=100 * 4 * 15)
    plan = "\n".join(records(caplog, logging.INFO))
    assert "stage default: steps 40 -> 43, tokens 2,400 -> 2,580" in plan
    assert data.run_plan().resume_step == 40 and data.run_plan().stop_step() == 43


def test_a_run_reaching_its_stop_step_says_data_stop_once(base, caplog):
    data = ShardedMixedDataset(
        data_path=base,
        mix_weights_str="main:0.8,code:0.2",
        val_data_path=base / "c1",
        stop_at_step=2,
        global_batch_size=2,
    )
    data.connect(batch_size=2, max_seq_length=BLOCK - 1)
    data.setup()
    loader = data.train_dataloader()
    with our_logs(caplog):
        batches = list(iter(loader)) + list(iter(loader))  # LitGPT's CycleIterator asks again after the end
    assert len(batches) == 2
    stops = [line for line in records(caplog, logging.INFO) if line.startswith("DATA STOP")]
    assert stops == ["DATA STOP: stop_at_step 2 reached (4 samples per rank); the training stream ends here"]
