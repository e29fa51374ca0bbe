"""LR schedules (pure) and ScheduledAdamW: the LR each step applies, across a save and a resume."""

import logging
import math

import pytest
import torch

from sharded_mix.litgpt_bridge import publish_stage_steps
from sharded_mix.training import ScheduledAdamW
from sharded_mix.training.schedules import lr_schedule


def test_cosine_warms_up_then_reaches_min_lr_at_its_horizon():
    schedule = lr_schedule(3e-4, "cosine", total_steps=61035, warmup_fraction=0.1, min_lr=1e-6)
    assert schedule.warmup_steps == 6103
    assert schedule.lr_at(0) == pytest.approx(3e-4 / 6103)
    assert schedule.lr_at(6102) == schedule.lr_at(6103) == pytest.approx(3e-4)
    middle = 6103 + (61035 - 6103) // 2
    assert schedule.lr_at(middle) == pytest.approx((3e-4 + 1e-6) / 2, rel=1e-4)
    assert schedule.lr_at(61035) == schedule.lr_at(70000) == 1e-6


@pytest.mark.parametrize(
    "shape, halfway",
    [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5)), ("exponential", None)],
)
def test_wsd_holds_the_peak_then_decays_with_its_shape(shape, halfway):
    schedule = lr_schedule(
        1.0,
        "wsd",
        total_steps=100,
        decay_steps=20,
        warmup_steps=10,
        decay_shape=shape,
        final_lr_ratio=0.1 if shape == "exponential" else None,
    )
    assert [schedule.lr_at(step) for step in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert schedule.lr_at(10) == schedule.lr_at(79) == 1.0
    assert schedule.lr_at(80) == 1.0
    expected = math.sqrt(0.1) if shape == "exponential" else halfway
    assert schedule.lr_at(90) == pytest.approx(expected)
    assert schedule.lr_at(100) == schedule.lr_at(150) == pytest.approx(0.1 if shape == "exponential" else 0.0)


def test_decay_starts_from_the_given_step_and_lr():
    schedule = lr_schedule(3e-4, "decay", decay_steps=200, decay_shape="exponential", final_lr_ratio=0.1)
    start = (40000, 2e-4)
    assert schedule.lr_at(40000, decay_from=start) == pytest.approx(2e-4)
    assert schedule.lr_at(40100, decay_from=start) == pytest.approx(2e-4 * math.sqrt(0.1))
    assert schedule.lr_at(40200, decay_from=start) == schedule.lr_at(50000, decay_from=start) == pytest.approx(2e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"schedule": "step"}, "schedule is 'step'"),
        ({"schedule": "cosine"}, "needs total_steps"),
        ({"schedule": "wsd", "total_steps": 100}, "two of total_steps, decay_steps and decay_start_step"),
        ({"schedule": "wsd", "total_steps": 100, "decay_steps": 20, "decay_start_step": 50}, "is not total_steps"),
        ({"schedule": "decay"}, "needs decay_steps"),
        ({"schedule": "constant", "decay_steps": 5}, "does not use decay_steps"),
        ({"schedule": "cosine", "total_steps": 10, "warmup_steps": 1, "warmup_fraction": 0.1}, "give one"),
        ({"schedule": "cosine", "total_steps": 10, "warmup_steps": 10}, "not shorter than total_steps"),
        ({"schedule": "decay", "decay_steps": 5, "decay_shape": "exponential"}, "cannot reach 0"),
        ({"schedule": "decay", "decay_steps": 5, "decay_shape": "step"}, "decay_shape is 'step'"),
        ({"schedule": "cosine", "total_steps": 10, "min_lr": 1.0}, "min_lr is 1.0"),
    ],
)
def test_bad_schedule_args_name_the_arg(args, message):
    with pytest.raises(ValueError, match=message):
        lr_schedule(1e-3, **args)


def model_and_optimizer(**schedule):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return model, ScheduledAdamW(model.parameters(), lr=1.0, **schedule)


def train(model, optimizer, steps: int) -> list[float]:
    applied = []
    for _ in range(steps):
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        applied.append(optimizer.param_groups[0]["lr"])
    return applied


def test_the_optimizer_applies_its_schedule_and_resumes_it_exactly():
    args = {"schedule": "wsd", "total_steps": 12, "decay_steps": 4, "warmup_steps": 2}
    model, optimizer = model_and_optimizer(**args)
    never_stopped = train(model, optimizer, 12)
    assert never_stopped == [lr_schedule(1.0, **args).lr_at(step) for step in range(12)]
    model, optimizer = model_and_optimizer(**args)
    head = train(model, optimizer, 5)
    saved = optimizer.state_dict()
    model, resumed = model_and_optimizer(**args)
    resumed.load_state_dict(saved)
    assert head + train(model, resumed, 7) == never_stopped


def test_a_decay_starts_from_the_lr_and_step_of_a_checkpoint_of_plain_adamw():
    model = torch.nn.Linear(4, 1)
    plain = torch.optim.AdamW(model.parameters(), lr=0.5)
    for _ in range(3):
        model(torch.ones(2, 4)).sum().backward()
        plain.step()
    _, decay = model_and_optimizer(schedule="decay", decay_steps=4, decay_shape="linear", final_lr_ratio=0.1)
    decay.param_groups[0]["params"] = list(model.parameters())
    decay.load_state_dict(plain.state_dict())
    assert decay.steps_taken == 3
    applied = train(model, decay, 6)
    assert applied == pytest.approx([0.5, 0.3875, 0.275, 0.1625, 0.05, 0.05])
    relaunched = ScheduledAdamW(
        model.parameters(), lr=1.0, schedule="decay", decay_steps=4, decay_shape="linear", final_lr_ratio=0.1
    )
    relaunched.load_state_dict(decay.state_dict())  # its own checkpoint: the decay keeps its start
    assert relaunched.next_lr() == pytest.approx(0.05)


def test_a_wsd_decay_can_start_where_a_data_stage_starts():
    publish_stage_steps({"default": 0, "anneal": 6})
    model, optimizer = model_and_optimizer(schedule="wsd", decay_start_stage="anneal", decay_steps=2)
    assert train(model, optimizer, 9)[5:] == [1.0, 1.0, 0.5, 0.0]
    publish_stage_steps({"default": 0})
    _, orphan = model_and_optimizer(schedule="wsd", decay_start_stage="anneal", decay_steps=2)
    with pytest.raises(ValueError, match="decay_start_stage is 'anneal', but the data stages are default"):
        orphan.next_lr()


@pytest.mark.parametrize("resumed, origin", [(False, "configured LR 1"), (True, "resumed LR 1")])
def test_a_decay_says_whether_it_starts_from_the_configured_or_the_resumed_lr(caplog, resumed, origin):
    model, optimizer = model_and_optimizer(schedule="decay", decay_steps=4, decay_shape="linear", final_lr_ratio=0.1)
    if resumed:
        for group in optimizer.param_groups:
            group["scheduled_step"] = 40
    logger = logging.getLogger("sharded_mix")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="sharded_mix"):
            train(model, optimizer, 1)
    finally:
        logger.removeHandler(caplog.handler)
    step = 40 if resumed else 0
    assert f"LR decay starts at step {step} from the {origin}, to 0.1 over 4 steps (linear)" in caplog.text
