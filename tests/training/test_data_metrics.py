"""The ``data/`` metrics against the rows the loader hands out: counts, shares, epochs, stages, resumes, losses."""

import itertools
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import BLOCK, make, source_of

from sharded_mix.training.data_metrics import DataMetrics, stream_measures, summary_text

IDS = {1: "main/1", 2: "m1"}
STAGES = [
    {"name": "warmup", "start_step": 0, "literal_weights_str": "main/1:1"},
    {"name": "mix", "start_step": 2, "literal_weights_str": "main/1:0.5,m1:0.5"},
    {"name": "math", "start_step": 4, "literal_weights_str": "m1:1", "seed": 7},
]


def loader(scenario, **fields):
    fields.setdefault("global_batch_size", 4)
    return make(scenario, batch_size=4, **fields).train_dataloader()


def rows_by_source(batches) -> Counter:
    return Counter(IDS[source_of(row)] for batch in batches for row in batch)


def test_counts_are_the_rows_handed_out(scenario):
    stream = loader(scenario, literal_weights_str="main/1:0.6,m1:0.4")
    batches = list(itertools.islice(iter(stream), 25))
    measures = stream_measures(stream.cursor)
    rows = rows_by_source(batches)
    assert {source: measures[f"data/samples/{source}"] for source in rows} == dict(rows)
    assert {source: measures[f"data/tokens/{source}"] for source in rows} == {
        s: n * (BLOCK - 1) for s, n in rows.items()
    }
    assert measures["data/share/main/1"] == rows["main/1"] / 100 and measures["data/target/main/1"] == 0.6
    assert measures["data/epoch/m1"] == pytest.approx(rows["m1"] / 181)  # the scenario's m1 has 181 blocks
    assert "data/stage" not in measures


def test_counts_carry_across_stages_and_a_resume(scenario):
    straight = loader(scenario, stages=STAGES)
    batches = list(itertools.islice(iter(straight), 7))
    expected = stream_measures(straight.cursor)
    rows = rows_by_source(batches)
    assert expected["data/samples/main/1"] == rows["main/1"] == 8 + 4 and expected["data/samples/m1"] == rows["m1"]
    assert expected["data/stage"] == 2 and expected["data/share/m1"] == 1.0 and "data/share/main/1" not in expected
    for cut in (1, 3, 5):  # inside warmup, inside mix, inside math
        first = loader(scenario, stages=STAGES)
        list(itertools.islice(iter(first), cut))
        second = loader(scenario, stages=STAGES)
        second.load_state_dict(first.state_dict())
        list(itertools.islice(iter(second), 7 - cut))
        assert stream_measures(second.cursor) == expected, cut


def test_a_midtrain_with_a_new_blend_continues_the_counts(scenario):
    first = loader(scenario, literal_weights_str="main/1:1")
    list(itertools.islice(iter(first), 3))
    midtrain = loader(scenario, literal_weights_str="main/1:0.5,m1:0.5")
    midtrain.load_state_dict(first.state_dict())
    batches = list(itertools.islice(iter(midtrain), 2))
    measures = stream_measures(midtrain.cursor)
    rows = rows_by_source(batches)
    assert measures["data/samples/main/1"] == 12 + rows["main/1"] and measures["data/samples/m1"] == rows["m1"]
    assert measures["data/share/m1"] == rows["m1"] / 8  # the share of the new blend's own rows


def test_losses_are_averaged_per_source_over_the_window(monkeypatch):
    monkeypatch.setattr("sharded_mix.training.data_metrics.stream_measures", lambda cursor: {})  # losses only
    stream = SimpleNamespace(cursor=None, last_rows=None)
    metrics = DataMetrics()
    metrics.watch(stream, ["a", "b", "c"])
    stream.last_rows = (["a", "b"], (0, 1, 1))
    metrics.add_row_losses(torch.tensor([6.0, 3.0, 9.0]), torch.tensor([3, 3, 3]))
    stream.last_rows = (["b", "c"], (0,))
    metrics.add_row_losses(torch.tensor([12.0]), torch.tensor([2]))
    reduced = []
    two_ranks = lambda tensor: reduced.append(tensor) or tensor * 2  # noqa: E731  (both ranks saw the same)
    assert metrics.values(two_ranks) == {"data/loss/a": 2.0, "data/loss/b": 3.0}  # b: (3 + 9 + 12) / 8; c unread
    assert len(reduced) == 1  # one all-reduce a log
    assert metrics.values(two_ranks) == {}  # the window starts over after each log


def test_every_rank_counts_the_rows_of_all_ranks(scenario, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    all_rows, measures = Counter(), []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        stream = loader(scenario, literal_weights_str="main/1:0.7,m1:0.3", global_batch_size=12)
        all_rows += rows_by_source(itertools.islice(iter(stream), 9))
        measures.append(stream_measures(stream.cursor))
    assert measures[0] == measures[1] == measures[2]
    assert {source: measures[0][f"data/samples/{source}"] for source in all_rows} == dict(all_rows)


def test_the_summary_leaves_out_rows_handed_out_but_not_trained(scenario):
    stream = loader(scenario, literal_weights_str="main/1:0.5,m1:0.5")
    batches = list(itertools.islice(iter(stream), 3))
    trained = rows_by_source(batches[:2])
    ids, sources = stream.last_rows
    text = summary_text(stream.cursor, [ids[index] for index in sources])
    assert "===== DATA SUMMARY: 8 samples over all ranks, stage default =====" in text
    for source, count in trained.items():
        blocks = 1206 if source == "main/1" else 181
        row = f"{source:<14} {count:>14,} {count * (BLOCK - 1):>18,} {count / 8:>8.4f} {count / blocks:>8.3f}"
        assert f"\n{row}" in text
