"""Each node's share of a source's epoch (pure, no I/O).

Draw ``g`` of a source, counted over all ranks, is taken by rank ``g mod world_size``, and ranks are
numbered node by node (node ``n`` holds ranks ``n·R … n·R + R - 1``). In each epoch the positions of the
epoch's chunk order (``orders.py``, before a shuffle window mixes blocks) are cut into one contiguous
slice per node, as long as the number of draws that node's ranks take in the epoch. A node reads only its
slice, in windows of its own, so it touches about 1/nodes of the chunks, plus the chunks its slice shares
with its neighbours at its two ends. With one node the slice is the whole epoch, read in the order
``orders.py`` defines: the stream does not change.

A run that resumes on another topology (nodes, or ranks per node) in the middle of an epoch re-slices the
rest of it: the unread part of each old slice, in node order, is cut anew among the new nodes (a
``Split``). Nothing is read twice or skipped, and the epoch keeps the slices it started with, so the rest
is still read in contiguous runs of its chunk order. Every lookup is arithmetic over nodes and intervals,
never over the draws before it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True)
class Topology:
    """How the training processes are laid out: ``world_size`` ranks on ``nodes`` nodes, node by node."""

    world_size: int
    nodes: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or self.nodes < 1 or self.world_size % self.nodes:
            raise ValueError(
                f"nodes is {self.nodes} for a world of {self.world_size} rank(s); the ranks must split evenly over the "
                "nodes (the same number of processes on every node)."
            )

    @property
    def ranks_per_node(self) -> int:
        return self.world_size // self.nodes

    def node_of(self, rank: int) -> int:
        return rank // self.ranks_per_node

    def taken_by(self, node: int, draws: int) -> int:
        """How many of a source's first ``draws`` draws (over all ranks) the ranks of ``node`` take."""
        per_node = self.ranks_per_node
        rounds, rest = divmod(draws, self.world_size)
        return rounds * per_node + min(max(rest - node * per_node, 0), per_node)

    def shares(self, start: int, end: int) -> list[int]:
        """Draws ``start … end - 1`` of a source: how many each node takes."""
        return [self.taken_by(node, end) - self.taken_by(node, start) for node in range(self.nodes)]

    def describe(self) -> str:
        return f"{self.world_size} rank(s) on {self.nodes} node(s)"


def slice_bounds(topology: Topology, epoch: int, blocks: int) -> list[int]:
    """Where each node's slice of epoch ``epoch`` starts along its chunk order (``nodes + 1`` entries; the last is
    ``blocks``), for a source whose epochs hold ``blocks`` blocks and were sliced for ``topology``."""
    return [0, *accumulate(topology.shares(epoch * blocks, (epoch + 1) * blocks))]


@dataclass(frozen=True)
class Split:
    """The rest of epoch ``epoch``, from draw ``start`` on, after a change of topology: ``intervals`` are the unread
    positions of the slices cut for ``base`` (half-open, in reading order); the nodes of the run share them out in
    node order, each as many as its ranks draw."""

    epoch: int
    base: Topology
    start: int
    intervals: tuple[tuple[int, int], ...]

    @classmethod
    def whole(cls, topology: Topology, epoch: int, blocks: int) -> Split:
        """A fresh epoch: every slice of ``topology`` unread."""
        return cls(epoch, topology, epoch * blocks, ((0, blocks),))

    def unread(self) -> int:
        return sum(hi - lo for lo, hi in self.intervals)

    def describe(self) -> str:
        return (
            f"epoch {self.epoch} keeps the node slices of {self.base.describe()}; its {self.unread():,} blocks "
            f"unread at draw {self.start:,} are shared out anew"
        )


def reslice(split: Split, old: Topology, draws: int, new: Topology, blocks: int) -> Split:
    """The rest of ``split``'s epoch after ``draws`` draws of it were taken on ``old``, shared out on ``new``."""
    end = (split.epoch + 1) * blocks
    if not split.start <= draws <= end:
        raise ValueError(
            f"draw {draws} is outside epoch {split.epoch} from draw {split.start} (epochs of {blocks} blocks)"
        )
    reading = NodeShares(split, old, blocks)
    unread: list[tuple[int, int]] = []
    for node in range(old.nodes):
        first = reading.first[node] + old.taken_by(node, draws) - old.taken_by(node, split.start)
        for lo, hi in reading.positions(first, reading.first[node + 1]):
            if unread and unread[-1][1] == lo:
                unread[-1] = (unread[-1][0], hi)
            else:
                unread.append((lo, hi))
    return Split(split.epoch, split.base, draws, tuple(unread))


class NodeShares:
    """Which positions of an epoch's sliced order each node of ``topology`` reads, under ``split``."""

    def __init__(self, split: Split, topology: Topology, blocks: int) -> None:
        self.split = split
        self.topology = topology
        self.first = [0, *accumulate(topology.shares(split.start, (split.epoch + 1) * blocks))]
        """Node n reads entries ``first[n] … first[n + 1] - 1`` of the unread sequence."""
        self._starts = [0, *accumulate(hi - lo for lo, hi in split.intervals)]
        self._skipped = [topology.taken_by(node, split.start) for node in range(topology.nodes)]

    def position(self, node: int, draws: int) -> int:
        """The position of the epoch's sliced order that ``node`` reads at global draw ``draws``."""
        return self.at(self.first[node] + self.topology.taken_by(node, draws) - self._skipped[node])

    def draw_of(self, position: int) -> int | None:
        """The global draw at which a node reads ``position`` of the epoch's sliced order (the inverse of
        `position`); None for a position read before the split."""
        interval = next((i for i, (lo, hi) in enumerate(self.split.intervals) if lo <= position < hi), None)
        if interval is None:
            return None
        index = self._starts[interval] + position - self.split.intervals[interval][0]
        node = bisect.bisect_right(self.first, index) - 1
        rounds, rest = divmod(index - self.first[node] + self._skipped[node], self.topology.ranks_per_node)
        return rounds * self.topology.world_size + node * self.topology.ranks_per_node + rest

    def at(self, index: int) -> int:
        """Entry ``index`` of the unread sequence."""
        interval = bisect.bisect_right(self._starts, index) - 1
        return self.split.intervals[interval][0] + index - self._starts[interval]

    def positions(self, first: int, end: int) -> list[tuple[int, int]]:
        """Entries ``first … end - 1`` of the unread sequence as intervals of positions, in reading order."""
        runs = []
        while first < end:
            interval = bisect.bisect_right(self._starts, first) - 1
            lo, hi = self.split.intervals[interval]
            start = lo + first - self._starts[interval]
            stop = min(hi, start + end - first)
            runs.append((start, stop))
            first += stop - start
        return runs
