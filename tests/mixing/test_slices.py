"""Node slices of an epoch (``mixing/slices.py``): each node reads a contiguous slice, every block once, also
when the run moves to another topology in the middle of an epoch."""

import random

import numpy as np
import pytest

from sharded_mix.mixing.orders import Ordering, SlicedOrder, WindowedOrder, epoch_order
from sharded_mix.mixing.slices import NodeShares, Split, Topology, reslice, slice_bounds


def who_reads(draw: int, topology: Topology) -> int:
    """The node whose rank takes global draw ``draw`` (rank = draw mod world size, ranks numbered node by node)."""
    return topology.node_of(draw % topology.world_size)


@pytest.mark.parametrize("world, nodes", [(1, 1), (4, 1), (2, 2), (8, 2), (6, 3), (16, 4)])
def test_taken_by_counts_the_draws_of_each_node(world, nodes):
    topology = Topology(world, nodes)
    for draws in range(0, 3 * world + 5):
        counted = [sum(1 for g in range(draws) if who_reads(g, topology) == node) for node in range(nodes)]
        assert [topology.taken_by(node, draws) for node in range(nodes)] == counted
    assert sum(topology.shares(37, 1000)) == 963


def test_a_topology_whose_ranks_do_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="nodes is 3 for a world of 8 rank"):
        Topology(8, 3)


def read_epoch(blocks: int, epoch: int, plan: list[tuple[int, Topology]]) -> list[tuple[int, int]]:
    """Positions of epoch ``epoch`` read draw by draw, as (node, position); ``plan`` switches topology at those
    draws (offsets into the epoch), re-slicing the rest as a resume would."""
    start = epoch * blocks
    topology = plan[0][1]
    split = Split.whole(topology, epoch, blocks)
    shares = NodeShares(split, topology, blocks)
    switches = dict(plan[1:])
    read = []
    for draw in range(start, start + blocks):
        if draw - start in switches:
            new = switches[draw - start]
            split = reslice(split, topology, draw, new, blocks)
            topology, shares = new, NodeShares(split, new, blocks)
        node = who_reads(draw, topology)
        read.append((node, shares.position(node, draw)))
    return read


@pytest.mark.parametrize("world, nodes", [(2, 2), (8, 2), (6, 3), (16, 4), (4, 4)])
def test_each_node_reads_one_contiguous_slice_and_the_slices_cover_the_epoch(world, nodes):
    topology, blocks = Topology(world, nodes), 1_001
    for epoch in range(3):
        read = read_epoch(blocks, epoch, [(0, topology)])
        assert sorted(position for _, position in read) == list(range(blocks))
        bounds = slice_bounds(topology, epoch, blocks)
        for node in range(nodes):
            mine = [position for who, position in read if who == node]
            assert mine == list(range(bounds[node], bounds[node + 1]))  # in order, contiguous


def test_one_node_reads_the_epoch_in_order():
    assert [position for _, position in read_epoch(97, 2, [(0, Topology(8, 1))])] == list(range(97))


def test_moving_to_another_topology_mid_epoch_reads_the_rest_exactly_once():
    rng = random.Random(5)
    layouts = [Topology(w, n) for w, n in [(1, 1), (2, 1), (2, 2), (4, 2), (8, 2), (6, 3), (8, 4), (16, 4), (4, 4)]]
    for _ in range(60):
        blocks = rng.randrange(20, 400)
        cuts = sorted(rng.sample(range(1, blocks), rng.randrange(1, 4)))
        plan = [(0, rng.choice(layouts))] + [(cut, rng.choice(layouts)) for cut in cuts]
        read = read_epoch(blocks, rng.randrange(3), plan)
        assert sorted(position for _, position in read) == list(range(blocks)), plan


@pytest.mark.parametrize("world, nodes", [(2, 2), (4, 2), (6, 3), (16, 4)])
def test_draw_of_inverts_what_each_node_reads(world, nodes):
    topology, blocks = Topology(world, nodes), 301
    for epoch in range(2):
        shares = NodeShares(Split.whole(topology, epoch, blocks), topology, blocks)
        for draw in range(epoch * blocks, (epoch + 1) * blocks):
            assert shares.draw_of(shares.position(who_reads(draw, topology), draw)) == draw
    old = Topology(8, 4)  # resumed mid-epoch on another topology: positions read before are None
    split = reslice(Split.whole(old, 0, blocks), old, 120, topology, blocks)
    shares = NodeShares(split, topology, blocks)
    later = {shares.position(who_reads(draw, topology), draw): draw for draw in range(120, blocks)}
    assert all(shares.draw_of(position) == later.get(position) for position in range(blocks))


def test_a_reslice_keeps_each_new_node_in_a_few_runs_of_the_old_slices():
    blocks, old, new = 1_000, Topology(8, 4), Topology(4, 2)
    split = reslice(Split.whole(old, 0, blocks), old, 400, new, blocks)
    assert split.unread() == 600 and len(split.intervals) == 4  # the unread tail of each old slice
    shares = NodeShares(split, new, blocks)
    for node in range(2):
        runs = shares.positions(shares.first[node], shares.first[node + 1])
        assert len(runs) <= 3 and sum(hi - lo for lo, hi in runs) == 300


def test_the_same_topology_needs_no_reslice():
    blocks, topology = 500, Topology(4, 2)
    split = Split.whole(topology, 1, blocks)
    again = reslice(split, topology, blocks + 120, topology, blocks)
    before, after = NodeShares(split, topology, blocks), NodeShares(again, topology, blocks)
    assert all(
        before.position(who_reads(g, topology), g) == after.position(who_reads(g, topology), g)
        for g in range(620, 1000)
    )


@pytest.mark.parametrize("window", [1, 3])
def test_slices_of_the_sliced_order_hold_the_blocks_of_their_chunk_runs(window):
    rng = np.random.default_rng(1)
    chunk_blocks = rng.integers(1, 30, size=40).tolist()
    blocks, ordering = sum(chunk_blocks), Ordering(9, window)
    whole = WindowedOrder(chunk_blocks, ordering, "c1", 0)
    along = np.concatenate([np.arange(whole.chunk_starts[c], whole.chunk_starts[c + 1]) for c in whole.chunks])
    bounds = slice_bounds(Topology(8, 4), 0, blocks)
    sliced = epoch_order(chunk_blocks, ordering, "c1", 0, bounds)
    assert isinstance(sliced, SlicedOrder)
    for node in range(4):
        got = [sliced.block(position) for position in range(bounds[node], bounds[node + 1])]
        assert sorted(got) == sorted(along[bounds[node] : bounds[node + 1]].tolist())
        assert got != sorted(got)  # shuffled within the slice
    assert (
        epoch_order(chunk_blocks, ordering, "c1", 0, slice_bounds(Topology(8, 1), 0, blocks)).__class__ is WindowedOrder
    )
