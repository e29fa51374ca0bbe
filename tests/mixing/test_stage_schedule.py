"""The stage schedule: resolution, inheritance, validation and boundaries (pure, no shards)."""

import pytest

from sharded_mix.mixing.plan import format_stage_plan
from sharded_mix.mixing.stages import DataStage, TopLevel, boundary_samples, build_stages, stage_plan_rows, stage_starts

TOP = TopLevel(mix_weights_str="main:0.9,math:0.1", seed=42)


def test_no_stages_is_one_default_stage_from_the_top_level():
    (stage,) = build_stages(TOP)
    assert (stage.name, stage.start.value, stage.seed, stage.seq_len, stage.automatic) == (
        "default",
        0,
        42,
        None,
        False,
    )
    assert stage.spec.weights == {"main": 0.9, "math": 0.1}
    assert stage.inherited == ("blend", "mix_temperature", "seed", "seq_len")


def test_stages_inherit_what_they_omit():
    stages = build_stages(
        TOP,
        [
            {"name": "warmup", "start_step": 0},
            {"name": "anneal", "start_step": 10, "mix_weights_str": "main:0.5,math:0.5", "seed": 7, "seq_len": 512},
        ],
    )
    warmup, anneal = stages
    assert warmup.spec.weights == {"main": 0.9, "math": 0.1} and warmup.inherited == (
        "blend",
        "mix_temperature",
        "seed",
        "seq_len",
    )
    assert anneal.spec.weights == {"main": 0.5, "math": 0.5} and anneal.inherited == ("mix_temperature",)
    assert (anneal.seed, anneal.seq_len, anneal.block_size(2048)) == (7, 512, 513)


def test_a_first_stage_after_zero_gets_an_automatic_default_stage():
    stages = build_stages(TOP, [DataStage(name="math", start_step=5, mix_weights_str="math:1")])
    assert [(s.name, s.start.value, s.automatic) for s in stages] == [("default", 0, True), ("math", 5, False)]
    assert stages[0].spec.weights == {"main": 0.9, "math": 0.1}
    with pytest.raises(
        ValueError, match="automatic 'default' stage, but a stage is already called 'default'; rename it"
    ):
        build_stages(TOP, [{"name": "default", "start_step": 5}])


def test_anneal_shortcut_is_two_stages():
    stages = build_stages(TOP, anneal_start_step=900, anneal_weights="main:0.5,math:0.5")
    assert [(s.name, s.start.value, s.spec.weights) for s in stages] == [
        ("default", 0, {"main": 0.9, "math": 0.1}),
        ("anneal", 900, {"main": 0.5, "math": 0.5}),
    ]
    literal = build_stages(
        TopLevel(literal_weights_str="main/1:1"), anneal_start_tokens=10_000, anneal_weights="main/1:0.5,m1:0.5"
    )
    assert literal[1].spec.mode == "literal" and literal[1].start.unit == "tokens"


@pytest.mark.parametrize(
    "stages, kwargs, message",
    [
        ([{"name": " ", "start_step": 0}], {}, r"stages\[0\]: name is ' '; give every stage a non-blank name"),
        (
            [{"name": "a", "start_step": 0}, {"name": "a", "start_step": 5}],
            {},
            r"name\(s\) \['a'\] used more than once",
        ),
        ([{"name": "a"}], {}, r"stages\[0\] 'a': no start; give start_step or start_tokens"),
        ([{"name": "a", "start_step": 0, "start_tokens": 0}], {}, "give start_step or start_tokens, not both"),
        ([{"name": "a", "start_step": -3}], {}, r"start_step is -3; use a whole number >= 0"),
        (
            [{"name": "a", "start_step": 0, "mix_weights_str": "main:x"}],
            {},
            r"stages\[0\] 'a': mix_weights_str 'main:x': weight 'x' of 'main' is not a number",
        ),
        (
            [{"name": "a", "start_step": 0, "mix_weights_str": "main:1", "literal_weights_str": "main/1:1"}],
            {},
            r"stages\[0\] 'a': literal_weights_str and mix_weights_str are both set",
        ),
        ([{"name": "a", "start_step": 0, "seq_len": 0}], {}, r"seq_len is 0; use a whole number >= 1"),
        ([{"name": "a", "start_step": 0, "weights": "main:1"}], {}, r"stages\[0\]: unknown field\(s\) \['weights'\]"),
        (
            [{"name": "a", "start_step": 0}],
            {"anneal_start_step": 5, "anneal_weights": "main:1"},
            "stages and anneal_\\* are both set",
        ),
        (None, {"anneal_start_step": 5}, "the anneal shortcut needs anneal_weights and exactly one of"),
    ],
)
def test_invalid_schedules_are_refused(stages, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_stages(TOP, stages, **kwargs)


@pytest.mark.parametrize(
    "stages, message",
    [
        (
            [{"name": "a", "start_step": 0}, {"name": "b", "start_step": 10}, {"name": "c", "start_step": 5}],
            "stages are not in order: 'c' starts at step 5, not after 'b' \\(step 10\\)",
        ),
        (
            [{"name": "a", "start_step": 0, "end_step": 4}, {"name": "b", "start_step": 5}],
            "ends at step 4 but 'b' starts at step 5: a gap",
        ),
        (
            [{"name": "a", "start_step": 0, "end_step": 6}, {"name": "b", "start_step": 5}],
            "ends at step 6 but 'b' starts at step 5: an overlap",
        ),
        ([{"name": "a", "start_step": 0}, {"name": "b", "start_step": 5}], None),
    ],
)
def test_order_gaps_and_overlaps(stages, message):
    schedule = build_stages(TOP, stages)
    if message is None:
        assert stage_starts(schedule, 8, 64) == [0, 40]
        with pytest.raises(ValueError, match="'b' start is at step 5, but the data args have no global_batch_size"):
            stage_starts(schedule, None, 64)
    else:
        with pytest.raises(ValueError, match=message):
            stage_starts(schedule, 8, 64)


def test_boundaries_in_samples_per_rank():
    # step 5 of a global batch of 16 on 2 ranks = sample 40 of each rank
    schedule = build_stages(TOP, [{"name": "a", "start_step": 0}, {"name": "b", "start_step": 5}])
    assert stage_starts(schedule, global_batch_size=16, max_seq_length=64, micro_batch_size=4, world_size=2) == [0, 40]
    # 1,000 tokens / 64 = 15.6 -> 16 samples over all ranks,
    # rounded up to a micro-batch of 4 on each of 2 ranks: 8 per rank
    tokens = build_stages(TOP, [{"name": "a", "start_tokens": 0}, {"name": "b", "start_tokens": 1000}])
    assert stage_starts(tokens, None, 64, micro_batch_size=4, world_size=2) == [0, 8]
    with pytest.raises(ValueError, match="global_batch_size 10 is not a multiple of micro_batch_size 4"):
        stage_starts(schedule, 10, 64, 4, 1)
    assert boundary_samples(schedule[1].start, "b", 16, 64) == 80


def test_plan_rows_and_text():
    schedule = build_stages(
        TOP,
        [
            {"name": "main", "start_step": 0, "literal_weights_str": "main/1:1"},
            {"name": "mix", "start_step": 5, "literal_weights_str": "main/1:0.5,m1:0.5", "seq_len": 31},
            {"name": "math", "start_step": 10, "end_step": 20, "literal_weights_str": "m1:1"},
        ],
    )
    weights = [{"main/1": 1.0}, {"main/1": 0.5, "m1": 0.5}, {"m1": 1.0}]
    blocks = {"main/1": {64: 1000, 32: 2000}, "m1": {64: 50, 32: 100}}
    rows = stage_plan_rows(schedule, weights, blocks, global_batch_size=4, max_seq_length=63)
    by_key = {(row.stage, row.source): row for row in rows}
    assert (
        by_key["main", "main/1"].start_step,
        by_key["main", "main/1"].end_step,
        by_key["main", "main/1"].tokens,
    ) == (0, 5, 20 * 63)
    assert by_key["mix", "m1"].seq_len == 31 and by_key["mix", "m1"].epochs == pytest.approx(10 / 100)
    assert by_key["math", "m1"].epochs == pytest.approx(40 / 50)
    text = format_stage_plan(rows, "3 stage(s)")
    assert text.startswith("===== DATA STAGE TRAINING PLAN: 3 stage(s) =====")
    assert (
        "stage mix: steps 5 -> 10, tokens 1,260 -> 2,520, seq_len 31, seed 42; "
        "inherited from the top level: mix_temperature, seed" in text
    )
    assert "expected epochs per source over the run: m1 0.900, main/1 0.025" in text
    open_rows = stage_plan_rows(schedule[:2], weights[:2], blocks, 4, 63)
    assert "the last stage has no end" in format_stage_plan(open_rows, "open")
    assert stage_plan_rows(schedule[:2], weights[:2], blocks, 4, 63, run_end_tokens=63 * 60)[-1].end_step == 15
