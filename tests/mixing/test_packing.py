"""Packed SFT rows: best fit within windows (every sample once, no row over capacity, deterministic, little
padding), and the epochs' vectorised sample → example map they are built on."""

from collections import Counter

import numpy as np
import pytest

from sharded_mix.mixing.packing import PackedEpochs, best_fit, pack, padding_share
from sharded_mix.mixing.sft_epochs import SFTEpochs


def alpaca_like(count: int, seed: int = 0) -> np.ndarray:
    """Instruction-tuning lengths: 40 .. 600 tokens, uniform."""
    return np.random.default_rng(seed).integers(40, 601, count)


def check_rows(lengths: np.ndarray, rows, capacity: int, window: int) -> None:
    assert sorted(rows.order.tolist()) == list(range(len(lengths)))  # every sample exactly once
    assert rows.bounds[0] == 0 and rows.bounds[-1] == len(lengths) and (np.diff(rows.bounds) >= 1).all()
    assert rows.tokens(lengths).max() <= capacity
    for number in range(len(rows)):
        items = rows.row(number)
        assert len({int(item) // window for item in items}) == 1, number  # one window's samples
        assert list(items) == sorted(items)  # in sample order within the row
    firsts = [int(rows.row(number)[0]) for number in range(len(rows))]
    assert firsts == sorted(firsts)  # rows follow their first sample, so windows follow one another


@pytest.mark.parametrize("capacity, window", [(2048, 1024), (700, 64), (600, 7), (1000, 1)])
def test_rows_hold_every_sample_once_within_its_window_and_the_capacity(capacity, window):
    lengths = alpaca_like(3000, seed=capacity)
    lengths = np.minimum(lengths, capacity)
    rows = pack(lengths, capacity, window)
    check_rows(lengths, rows, capacity, window)
    if window == 1:
        assert len(rows) == len(lengths)  # one sample a window: one row each


def test_best_fit_puts_each_item_where_it_leaves_the_least_room():
    #           0   1   2   3   4   5
    lengths = [60, 50, 40, 30, 20, 10]
    rows = best_fit(np.array(lengths), 100)  # 60 → A, 50 → B, 40 → A (full), 30 → B, 20 → B (full), 10 → C
    assert rows.tolist() == [0, 1, 0, 1, 1, 2]
    assert best_fit(np.array([5, 5, 5]), 5).tolist() == [0, 1, 2]


def test_packing_is_deterministic_and_depends_on_the_lengths_only():
    lengths = alpaca_like(5000, seed=3)
    first, again = pack(lengths, 2048, 512), pack(lengths.copy(), 2048, 512)
    assert np.array_equal(first.order, again.order) and np.array_equal(first.bounds, again.bounds)
    assert not np.array_equal(pack(alpaca_like(5000, seed=4), 2048, 512).bounds, first.bounds)


def test_padding_is_small_on_an_alpaca_like_mix():
    lengths = alpaca_like(52_000)  # alpaca's size
    rows = pack(lengths, 2048, 1024)
    padding = padding_share(lengths, rows, 2048)
    assert padding <= 0.05, padding  # measured: 0.43%
    assert padding < 0.01
    assert padding_share(lengths, pack(lengths, 2048, 64), 2048) > padding  # smaller windows pad more
    unpacked = 1 - lengths.sum() / (len(lengths) * 2048)
    assert unpacked > 0.8  # one example a row of 2048


def test_bad_lengths_capacity_and_window_are_refused():
    with pytest.raises(ValueError, match="item 1 is 30 tokens, outside 1 .. 20; cut examples"):
        pack(np.array([5, 30]), 20, 4)
    with pytest.raises(ValueError, match="item 0 is 0 tokens"):
        pack(np.array([0]), 20, 4)
    with pytest.raises(ValueError, match="window is 0"):
        pack(np.array([5]), 20, 0)
    with pytest.raises(ValueError, match="capacity is -1"):
        pack(np.array([5]), -1, 4)
    assert len(pack(np.zeros(0, dtype=np.int64), 20, 4)) == 0


@pytest.mark.parametrize("shuffle", [True, False])
def test_epoch_examples_is_the_sample_map_of_a_whole_epoch(shuffle):
    epochs = SFTEpochs({"a": 0.3, "b": 0.5, "c": 0.2}, {"a": 7, "b": 400, "c": 40}, 300, seed=9, shuffle=shuffle)
    for epoch in (0, 1, 4):
        sources, examples = epochs.epoch_examples(epoch)
        expected = [epochs.example(epoch * 300 + position) for position in range(300)]
        assert [(epochs.sources[s], int(e)) for s, e in zip(sources, examples)] == expected


def packed_epochs(window: int = 64) -> tuple[SFTEpochs, PackedEpochs, dict]:
    epochs = SFTEpochs({"a": 0.4, "b": 0.6}, {"a": 50, "b": 200}, 250, seed=1)
    rng = np.random.default_rng(2)
    lengths = {"a": rng.integers(10, 300, 50), "b": rng.integers(10, 300, 200)}
    return epochs, PackedEpochs(epochs, lengths, 512, window), lengths


def test_each_epochs_rows_hold_its_samples_and_a_window_keeps_its_blend():
    epochs, packing, lengths = packed_epochs()
    for epoch in range(3):
        rows = [packing.row(epoch, number) for number in range(packing.rows(epoch))]
        served = Counter(pair for row in rows for pair in row)
        assert served == Counter(epochs.example(epoch * 250 + k) for k in range(250))
        assert all(sum(int(lengths[s][e]) for s, e in row) <= 512 for row in rows)
        sources, _, _, packed = packing.epoch(epoch)
        for number in range(len(packed)):  # a row's samples come from one window
            assert len({int(position) // 64 for position in packed.row(number)}) == 1
    assert len({packing.rows(epoch) for epoch in range(6)}) > 1  # same examples, other orders: other row counts
    with pytest.raises(IndexError, match="epoch 0 has .* packed rows; there is no row 999"):
        packing.row(0, 999)


def test_counts_of_a_prefix_of_rows_are_its_samples():
    epochs, packing, lengths = packed_epochs()
    targets = {"a": lengths["a"] - 3, "b": 7}
    for epoch in (0, 2):
        rows = packing.rows(epoch)
        for prefix in (0, 1, rows // 2, rows - 1, rows, rows + 5):
            pairs = [pair for number in range(min(prefix, rows)) for pair in packing.row(epoch, number)]
            expected = {source: (0, 0) for source in epochs.sources}
            for source, example in pairs:
                tokens = int(targets[source][example]) if source == "a" else 7
                expected[source] = (expected[source][0] + 1, expected[source][1] + tokens)
            assert packing.counts(epoch, prefix, targets) == expected, (epoch, prefix)
