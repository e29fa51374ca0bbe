"""Exact stop steps: the stream ends after the stop step's last micro-batch, counted as the rule says."""

import pytest
from conftest import block_ids, make, take
from litgpt.args import TrainArgs

from sharded_mix.mixing.stop import StopRule, finished_at

FIELDS = {"literal_weights_str": "main/1:0.6,m1:0.4", "global_batch_size": 8}


def test_stop_at_step_ends_the_stream_after_that_step(scenario):
    loader = make(scenario, batch_size=4, stop_at_step=5, **FIELDS).train_dataloader()
    batches = list(loader)
    assert len(batches) == 10  # 5 steps × 8 samples / 4 per micro-batch
    reference = make(scenario, batch_size=4, **FIELDS).train_dataloader()
    assert block_ids(batches) == block_ids(take(reference, 10))
    assert list(loader) == []  # LitGPT's CycleIterator asks again: nothing more, so its loop ends


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_before_the_stop_gives_exactly_the_rest(scenario, num_workers):
    never_stopped = block_ids(list(make(scenario, batch_size=4, stop_at_step=6, **FIELDS).train_dataloader()))
    first = make(scenario, batch_size=4, stop_at_step=6, **FIELDS).train_dataloader()
    head = block_ids(take(first, 4))  # step 2
    resumed = make(scenario, batch_size=4, num_workers=num_workers, stop_at_step=6, **FIELDS).train_dataloader()
    resumed.load_state_dict(first.state_dict())
    assert head + block_ids(list(resumed)) == never_stopped


def test_stop_after_steps_counts_from_the_step_resumed(scenario):
    parent = make(scenario, batch_size=4, **FIELDS).train_dataloader()
    take(parent, 6)  # step 3
    branch = make(scenario, batch_size=4, stop_after_steps=2, **FIELDS).train_dataloader()
    branch.load_state_dict(parent.state_dict())
    assert branch.stop_step() == 5
    assert len(list(branch)) == 4
    assert branch.state_dict()["stop"] == {"at_step": None, "after_steps": 2, "from_step": 3, "run": None}


def test_a_relaunch_from_the_runs_own_checkpoint_keeps_its_anchor(scenario):
    parent = make(scenario, batch_size=4, **FIELDS).train_dataloader()
    take(parent, 6)  # step 3
    branch = make(scenario, batch_size=4, stop_after_steps=4, **FIELDS).train_dataloader()
    branch.load_state_dict(parent.state_dict())
    take(branch, 2)  # step 4: a checkpoint, then the job is preempted
    relaunch = make(scenario, batch_size=4, stop_after_steps=4, **FIELDS).train_dataloader()
    relaunch.load_state_dict(branch.state_dict())
    assert relaunch.stop_step() == 7  # 3 + 4, not 4 + 4
    assert len(list(relaunch)) == 6


def test_a_run_branching_from_another_runs_checkpoint_anchors_anew():
    rule = StopRule(after_steps=200)
    saved = StopRule(after_steps=200).record(0, "/out/pretrain")
    assert rule.anchor(saved, "/out/decay", 40000) == 40000
    assert rule.anchor(saved, "/out/pretrain", 40000) == 0
    assert rule.anchor(StopRule(after_steps=100).record(0, "/out/decay"), "/out/decay", 40000) == 40000


def test_final_checkpoint_tells_a_finished_run():
    rule = StopRule(at_step=12)
    final = {"step_count": 12, "train_dataloader": {"stop": rule.record(0, "/out/run")}}
    assert finished_at(rule, final, "/out/run") == 12
    assert finished_at(StopRule(at_step=14), final, "/out/run") is None
    assert finished_at(rule, dict(final, step_count=9), "/out/run") is None
    assert finished_at(rule, final, "/out/other") is None
    after = StopRule(after_steps=5)
    assert finished_at(after, {"step_count": 45, "train_dataloader": {"stop": after.record(40, None)}}, None) == 45


def test_restart_data_on_resume_starts_every_source_over_at_the_same_step(scenario):
    fields = dict(FIELDS, stop_at_step=6)
    first = make(scenario, batch_size=4, **fields).train_dataloader()
    take(first, 6)
    restarted = make(scenario, batch_size=4, restart_data_on_resume=True, **fields).train_dataloader()
    restarted.load_state_dict(first.state_dict())
    rest = block_ids(list(restarted))
    assert len(rest) == 24  # still stops at step 6
    fresh = block_ids(list(make(scenario, batch_size=4, **fields).train_dataloader()))
    for source in (1, 2):  # each source gives its blocks from its first one again, in the same order
        again = [block for block in rest if block[0] == source]
        assert again and again == [block for block in fresh if block[0] == source][: len(again)]


@pytest.mark.parametrize(
    "fields, train, message",
    [
        ({"stop_at_step": 0}, None, "stop_at_step is 0; use a whole number"),
        ({"stop_at_step": 5, "stop_after_steps": 2}, None, "give one"),
        ({"stop_at_step": 5, "global_batch_size": None}, None, "global batch size is unknown"),
        (
            {"stop_at_step": 5},
            TrainArgs(global_batch_size=8, micro_batch_size=4, max_tokens=4 * 8 * 15),
            "ends the run at step 4",
        ),
    ],
)
def test_bad_stops_are_refused_before_any_step(scenario, fields, train, message):
    with pytest.raises(ValueError, match=message):
        make(scenario, batch_size=4, **{**FIELDS, **fields})


def test_stop_after_steps_past_max_tokens_is_refused_at_the_resume(scenario):
    train = TrainArgs(
        global_batch_size=8, micro_batch_size=4, max_tokens=6 * 8 * 15
    )  # connect reads it, as under litgpt
    assert train.max_tokens // (8 * 15) == 6  # litgpt ends the run at step 6
    parent = make(scenario, batch_size=4, **FIELDS).train_dataloader()
    take(parent, 6)  # step 3
    fits = make(scenario, batch_size=4, stop_after_steps=3, **FIELDS).train_dataloader()
    fits.load_state_dict(parent.state_dict())
    assert fits.stop_step() == 6
    branch = make(
        scenario, batch_size=4, stop_after_steps=4, **FIELDS
    ).train_dataloader()  # a fresh run would end at 4: fine
    with pytest.raises(
        ValueError, match="stop_after_steps 4 from step 3: step 7, but train.max_tokens ends the run at step 6"
    ):
        branch.load_state_dict(parent.state_dict())
    with pytest.raises(ValueError, match="ends the run at step 6"):
        make(scenario, batch_size=4, stop_after_steps=7, **FIELDS).train_dataloader()
