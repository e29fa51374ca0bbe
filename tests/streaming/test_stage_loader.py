"""Data stages through the loader, on shards whose tokens encode (source, position)."""

import logging
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import block_ids, make, take

MAIN, MATH = 1, 2
THREE_STAGES = [
    {"name": "warmup", "start_step": 0, "literal_weights_str": "main/1:1"},
    {"name": "mix", "start_step": 2, "literal_weights_str": "main/1:0.5,m1:0.5"},
    {"name": "math", "start_step": 4, "literal_weights_str": "m1:1", "seed": 7},
]


def staged(scenario, stages=THREE_STAGES, num_workers=0, **fields):
    return make(scenario, batch_size=4, num_workers=num_workers, stages=stages, global_batch_size=4, **fields)


def per_batch_sources(ids, batch_size=4):
    return [[source for source, _ in ids[i : i + batch_size]] for i in range(0, len(ids), batch_size)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_stage_first_step_follows_its_blend(scenario, num_workers, caplog):
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        ids = block_ids(take(staged(scenario, num_workers=num_workers).train_dataloader(), 6))
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    batches = per_batch_sources(ids)
    assert batches[0] == batches[1] == [MAIN] * 4  # warmup: steps 0-1
    assert sorted(batches[2]) == sorted(batches[3]) == [MAIN, MAIN, MATH, MATH]  # mix: exact halves from its first step
    assert batches[4] == batches[5] == [MATH] * 4  # math from step 4
    main = [offset for source, offset in ids if source == MAIN]
    assert len(main) == len(set(main)) == 12  # main/1 continues across stages, nothing re-read
    assert "===== DATA STAGE TRANSITION: step 2 (8 samples per rank): warmup -> mix =====" in caplog.text
    assert "===== DATA STAGE TRANSITION: step 4 (16 samples per rank): mix -> math =====" in caplog.text
    assert "changed: weights, seed 42 -> 7" in caplog.text


def test_the_plan_is_logged_at_setup(scenario, caplog):
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        data = staged(scenario)
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    assert "===== DATA STAGE TRAINING PLAN: 3 stage(s)" in caplog.text
    assert (
        "stage mix: steps 2 -> 4, tokens 120 -> 240, seq_len 15, seed 42; "
        "inherited from the top level: mix_temperature, seed, seq_len" in caplog.text
    )
    rows = data.plan(max_tokens=15 * 4 * 10)  # 10 steps
    assert [(row.stage, row.source, row.tokens) for row in rows] == [
        ("warmup", "main/1", 120),
        ("mix", "m1", 60),
        ("mix", "main/1", 60),
        ("math", "m1", 360),
    ]
    assert rows[-1].epochs == pytest.approx(24 / 181)


@pytest.mark.parametrize("stop", [3, 4, 5], ids=["mid-stage", "at-a-boundary", "after-a-boundary"])
@pytest.mark.parametrize("workers_after", [0, 2])
def test_resume_across_stages_equals_never_stopping(scenario, stop, workers_after):
    reference = block_ids(take(staged(scenario).train_dataloader(), 8))
    first = staged(scenario).train_dataloader()
    head = block_ids(take(first, stop))
    second = staged(scenario, num_workers=workers_after).train_dataloader()
    second.load_state_dict(first.state_dict())
    assert head + block_ids(take(second, 8 - stop)) == reference


def test_editing_a_stage_that_has_not_started_is_picked_up_on_resume(scenario):
    edited = [*THREE_STAGES[:2], {"name": "math", "start_step": 4, "literal_weights_str": "main/1:0.25,m1:0.75"}]
    reference = block_ids(take(staged(scenario, stages=edited).train_dataloader(), 8))
    first = staged(scenario).train_dataloader()
    head = block_ids(take(first, 3))
    second = staged(scenario, stages=edited).train_dataloader()
    second.load_state_dict(first.state_dict())
    assert head + block_ids(take(second, 5)) == reference
    assert sorted(per_batch_sources(reference)[4]) == [MAIN, MATH, MATH, MATH]


def test_stage_seq_len_gives_blocks_of_that_length(scenario):
    stages = [{"name": "short", "start_step": 0, "seq_len": 7}, {"name": "full", "start_step": 2}]
    batches = take(staged(scenario, stages=stages, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader(), 4)
    assert [tuple(batch.shape) for batch in batches] == [(4, 8), (4, 8), (4, 16), (4, 16)]


def test_stage_errors_before_training(scenario):
    with pytest.raises(
        ValueError, match="seq_len 64 is larger than the model's max_seq_length 15; raise train.max_seq_length"
    ):
        staged(scenario, stages=[{"name": "long", "start_step": 0, "seq_len": 64}])
    with pytest.raises(ValueError, match="no global_batch_size"):
        make(scenario, stages=THREE_STAGES)
    with pytest.raises(ValueError, match=r"stage 'mix', data_path .*shard id\(s\) \['m9'\] not found"):
        staged(
            scenario,
            stages=[{"name": "a", "start_step": 0}, {"name": "mix", "start_step": 2, "literal_weights_str": "m9:1"}],
        )


def _staged_rank_worker(rank: int, world: int, base: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_MASTER_PORT"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    stages = [
        {"name": "main", "start_step": 0, "literal_weights_str": "main/1:1"},
        {"name": "math", "start_step": 2, "literal_weights_str": "m1:1"},
    ]
    data = make(Path(base), batch_size=5, num_workers=1, stages=stages, global_batch_size=10)
    torch.save(take(data.train_dataloader(), 4), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_switch_stage_at_the_same_step(scenario, tmp_path):
    os.environ["TEST_MASTER_PORT"] = str(30500 + os.getpid() % 1000)
    mp.start_processes(_staged_rank_worker, args=(2, str(scenario), str(tmp_path)), nprocs=2, start_method="spawn")
    per_rank = [per_batch_sources(block_ids(torch.load(tmp_path / f"rank{rank}.pt")), 5) for rank in range(2)]
    for batches in per_rank:  # global batch 10 = 5 per rank: step s is batch s on each rank
        assert batches == [[MAIN] * 5, [MAIN] * 5, [MATH] * 5, [MATH] * 5]
    offsets = [set(block_ids(torch.load(tmp_path / f"rank{rank}.pt"))) for rank in range(2)]
    assert offsets[0].isdisjoint(offsets[1])
