"""LitGPT's iter_num on a resume with another micro-batch size or rank count: carried over in this run's units."""

import pytest

from sharded_mix.mixing.iterations import LoopSizes, resumed_iterations

STEPS, GLOBAL, LENGTH = 8, 8, 64


def sizes(micro_batch_size, world_size=1):
    return LoopSizes(micro_batch_size, world_size, GLOBAL, LENGTH, STEPS * GLOBAL * LENGTH)


def checkpoint(samples_per_rank, batch_size, world_size=1):
    return {"train_dataloader": {"samples": samples_per_rank, "batch_size": batch_size, "world_size": world_size}}


def test_litgpts_own_arithmetic():
    loop = sizes(2)
    assert (loop.per_step, loop.max_iters) == (4, 32)
    assert loop.last_step(16, 4) == STEPS  # a consistent resume ends where max_tokens says
    assert loop.last_step(40, 4) == 4  # past max_iters: the loop ends at once


def test_micro_batch_2_to_1_halfway_would_run_25_percent_past_max_tokens():
    step4 = checkpoint(32, 2)  # step 4 of 8: 32 samples, 16 micro-batches of 2
    iter_num, warning = resumed_iterations(step4, {"iter_num": 16, "step_count": 4}, sizes(1), "out/step-00000004")
    assert iter_num == 32
    assert sizes(1).last_step(16, 4) == 10  # as saved: 2 steps (25 % of max_tokens) past step 8
    assert warning == (
        "out/step-00000004 was written with micro_batch_size 2 on 1 rank(s), this run has micro_batch_size 1 on 1 "
        "rank(s): LitGPT counts iter_num in micro-batches and restores it as saved (16), so it would end this run at "
        "step 10, not at step 8 where train.max_tokens ends it, with its LR schedule shifted. iter_num is set to 32 "
        "(the data position, 32 samples per rank, in micro-batches of 1): the run ends at step 8 and follows the LR "
        "schedule of these settings; nothing to do. To keep LitGPT's count as saved, resume with micro_batch_size 2 "
        "on 1 rank(s)."
    )


@pytest.mark.parametrize(
    ("saved", "iter_num", "loop", "expected"),
    [
        (checkpoint(32, 1), 32, sizes(2), 16),  # 1 -> 2: as saved the run would end at once, at step 4
        (checkpoint(16, 2, world_size=2), 8, sizes(2), 16),  # 2 ranks -> 1: the same samples, twice per rank
        (checkpoint(32, 2), 16, sizes(2, world_size=2), 8),  # 1 rank -> 2: half the samples per rank
    ],
)
def test_another_micro_batch_or_rank_count_is_carried_over(saved, iter_num, loop, expected):
    resumed, warning = resumed_iterations(saved, {"iter_num": iter_num, "step_count": 4}, loop, "ckpt")
    assert resumed == expected and warning.startswith("ckpt was written with")
    assert loop.last_step(resumed, 4) == STEPS


def test_nothing_changes_when_the_sizes_are_the_same_or_unknown():
    state = {"iter_num": 16, "step_count": 4}
    assert resumed_iterations(checkpoint(32, 2), state, sizes(2), "c") == (16, None)
    assert resumed_iterations({"train_dataloader": None}, state, sizes(1), "c") == (16, None)  # not ours
    assert resumed_iterations({"train_dataloader": {"samples": 32, "world_size": 1}}, state, sizes(1), "c") == (
        16,
        None,
    )


def test_a_count_that_cannot_be_carried_over_only_warns():
    resumed, warning = resumed_iterations(checkpoint(33, 1), {"iter_num": 33, "step_count": 4}, sizes(2), "c")
    assert resumed == 33
    assert "the 33 samples trained are no whole number of micro-batches here, so iter_num cannot be carried over" in (
        warning
    )
    assert warning.endswith("Resume with micro_batch_size 1 on 1 rank(s).")


def test_a_count_already_in_this_runs_units_is_kept_silently():
    """1 rank of micro-batches of 2 -> 2 ranks of 1: 16 iterations either way."""
    assert resumed_iterations(checkpoint(32, 2), {"iter_num": 16, "step_count": 4}, sizes(1, 2), "c") == (16, None)
