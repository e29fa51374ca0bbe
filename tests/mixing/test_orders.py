"""Lazy epoch orders (pure): permutations defined in O(chunks), one shuffle window materialised at a time."""

import tracemalloc

import numpy as np
import pytest

from sharded_mix.mixing.orders import (
    LEGACY_WINDOW,
    LegacyOrder,
    Ordering,
    SequentialOrder,
    SlicedOrder,
    WindowedOrder,
    chunk_block_starts,
    epoch_order,
)


def blocks_of(order, count: int) -> list[int]:
    return [order.block(position) for position in range(count)]


def chunk_of(chunk_blocks: list[int]) -> np.ndarray:
    """The chunk each block index belongs to."""
    return np.repeat(np.arange(len(chunk_blocks)), chunk_blocks)


LAYOUTS = {
    "odd sizes": [5, 3, 7, 1, 12, 2, 9],
    "one chunk": [37],
    "one block per chunk": [1] * 23,
    "empty chunks": [0, 4, 0, 0, 3, 6, 0],
}


@pytest.mark.parametrize("window", [1, 2, 3, 4, 100])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_block_once_per_epoch(layout, window):
    chunk_blocks = LAYOUTS[layout]
    for epoch in range(3):
        order = WindowedOrder(chunk_blocks, Ordering(5, window), "c1", epoch)
        assert sorted(blocks_of(order, sum(chunk_blocks))) == list(range(sum(chunk_blocks)))
        with pytest.raises(IndexError):
            order.block(sum(chunk_blocks))


@pytest.mark.parametrize("window", [1, 2, 3])
def test_a_window_holds_the_blocks_of_its_chunks_only(window):
    chunk_blocks = [6, 4, 7, 5, 8, 3, 6]
    order = WindowedOrder(chunk_blocks, Ordering(9, window), "m1", 0)
    chunks = chunk_of(chunk_blocks)[blocks_of(order, sum(chunk_blocks))]
    windows, at = [], 0
    for first in range(0, len(chunk_blocks), window):  # the chunk order, cut into windows
        members = order.chunks[first : first + window]
        size = int(np.sum(np.asarray(chunk_blocks)[members]))
        windows.append(set(chunks[at : at + size].tolist()))
        assert windows[-1] == set(members.tolist())
        at += size
    if window == 1:  # one chunk at a time: each chunk is read in one run
        assert (np.diff(chunks) != 0).sum() == len(chunk_blocks) - 1
    else:  # blocks of a window's chunks are interleaved, not read chunk after chunk
        assert (np.diff(chunks) != 0).sum() > len(chunk_blocks) - 1


def test_a_window_larger_than_the_shard_shuffles_all_of_it():
    chunk_blocks = [20, 20, 20]
    chunks = chunk_of(chunk_blocks)[blocks_of(WindowedOrder(chunk_blocks, Ordering(1, 8), "w1", 0), 60)]
    assert {int(c) for c in chunks[:15]} == {0, 1, 2}  # the first quarter already visits every chunk


def test_orders_depend_on_seed_shard_epoch_and_window_only():
    chunk_blocks = [50, 50, 30]
    base = blocks_of(WindowedOrder(chunk_blocks, Ordering(7, 2), "m1", 3), 130)
    assert base == blocks_of(WindowedOrder(chunk_blocks, Ordering(7, 2), "m1", 3), 130)
    for other in (
        WindowedOrder(chunk_blocks, Ordering(8, 2), "m1", 3),
        WindowedOrder(chunk_blocks, Ordering(7, 2), "m2", 3),
        WindowedOrder(chunk_blocks, Ordering(7, 2), "m1", 4),
        WindowedOrder(chunk_blocks, Ordering(7, 1), "m1", 3),
    ):
        assert blocks_of(other, 130) != base


def test_any_position_is_looked_up_without_walking_the_ones_before():
    chunk_blocks = [13, 9, 17, 11, 4, 15]
    sequential = blocks_of(WindowedOrder(chunk_blocks, Ordering(3, 2), "q1", 1), 69)
    jumping = WindowedOrder(chunk_blocks, Ordering(3, 2), "q1", 1)
    for position in np.random.default_rng(0).permutation(69).tolist() + [68, 0, 68]:
        assert jumping.block(position) == sequential[position]


def test_a_billion_block_epoch_holds_only_its_chunk_order_and_one_window():
    chunk_blocks = [100_000] * 10_000  # 10^9 blocks: a full order would be 8 GB
    tracemalloc.start()
    try:
        order = WindowedOrder(chunk_blocks, Ordering(42, 4), "main/1", 0)
        picked = [order.block(position) for position in (0, 1, 123_456_789, 999_999_999)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(set(picked)) == 4 and all(0 <= block < 10**9 for block in picked)
    assert peak < 16 * 2**20  # chunk order + one window of 400,000 blocks and its temporaries


def test_unshuffled_and_legacy_orders():
    assert blocks_of(epoch_order([3, 4], None, "c1", 5), 7) == list(range(7))
    assert isinstance(epoch_order([3, 4], None, "c1", 5), SequentialOrder)
    legacy = epoch_order([5, 3, 7], Ordering(1, LEGACY_WINDOW), "c1", 0)
    assert isinstance(legacy, LegacyOrder)
    # Exactly the order state versions 1 and 2 gave (sharded_mix before shuffle windows):
    assert blocks_of(legacy, 15) == [6, 7, 5, 0, 1, 4, 3, 2, 10, 12, 8, 9, 14, 11, 13]
    assert blocks_of(LegacyOrder([4, 4], 7, "main/1", 3), 8) == [2, 3, 0, 1, 5, 4, 7, 6]


def test_windows_list_their_chunks_in_reading_order():
    chunk_blocks = [5, 7, 3, 9, 4]
    order = WindowedOrder(chunk_blocks, Ordering(7, 2), "m1", 1)
    starts = chunk_block_starts(chunk_blocks)
    read = []  # chunks in the order the epoch first touches them, window by window
    for window in range(len(order.window_ends)):
        positions = range(order.window_start(window), order.window_ends[window])
        assert {order.window_of(position) for position in positions} == {window}
        touched = {int(np.searchsorted(starts, order.block(position), side="right") - 1) for position in positions}
        assert touched == set(order.chunks_from(window, 2))
        read += order.chunks_from(window, 2)
    assert read == order.chunks_from(0, 99) and sorted(read) == list(range(5))


def test_position_of_inverts_every_order():
    rng = np.random.default_rng(0)
    for trial in range(20):
        chunks = rng.integers(1, 40, size=int(rng.integers(1, 30))).tolist()
        total = sum(chunks)
        window = int(rng.integers(1, 5))
        bounds = [0, *sorted(int(bound) for bound in rng.integers(0, total + 1, size=2)), total]
        for order in (
            WindowedOrder(chunks, Ordering(trial, window), "x", trial),
            LegacyOrder(chunks, trial, "x", 1),
            SequentialOrder(),
            SlicedOrder(chunks, Ordering(trial, window), "x", trial, bounds),  # three node slices, some maybe empty
        ):
            assert [order.block(order.position_of(block)) for block in range(total)] == list(range(total))
        lo, hi = sorted(int(bound) for bound in rng.integers(0, total + 1, size=2))
        if hi > lo:  # a node's slice holds some blocks only
            piece = WindowedOrder(chunks, Ordering(trial, 2), "x", 0, lo, hi)
            held = {piece.block(position) for position in range(hi - lo)}
            for block in range(total):
                position = piece.position_of(block)
                assert (position is not None) == (block in held)
                assert position is None or piece.block(position) == block
