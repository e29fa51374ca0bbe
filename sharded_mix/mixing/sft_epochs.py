"""The epochs of an SFT mixture: which example of which source the k-th sample is (pure, no I/O).

An epoch is a fixed number of samples, ``epoch_size``. Its sequence of sources is the exact blend
(``blend.Blender``): after every prefix of n samples each source has given within one sample of
``weight · n``, so source i gives ``n_i`` samples per epoch, within one of ``weight_i · epoch_size``.
Those ``n_i`` samples are the same examples every epoch (``source_draws``: whole passes over the
source, each a permutation, then distinct examples for the rest), visited in an order reshuffled
each epoch. So every epoch holds the same multiset of examples (LitGPT's ``finetune_full`` measures
the longest example once, on the first epoch), a small source is repeated rather than run dry, and
a source's examples depend only on (seed, its name, pass or epoch), never on the other sources.

Sample ``s`` is position ``s % epoch_size`` of epoch ``s // epoch_size``: any sample is found
without walking the ones before it, so the order is a pure function of (seed, sample).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sharded_mix.mixing.blend import Blender
from sharded_mix.mixing.orders import SEED_LIMIT, stable_id

DRAWS, EPOCH_ORDER = 0, 1
"""Seed tags: a source's draws (per pass) and its order within an epoch (per epoch)."""


def source_draws(pool: int, count: int, seed: int, source: str) -> np.ndarray:
    """The ``count`` examples (indices into a pool of ``pool``) a source gives per epoch: ``count // pool``
    passes, each a permutation of the pool, then ``count % pool`` distinct examples; seeded by (seed, source, pass)."""
    if count and pool < 1:
        raise ValueError(f"source {source!r} has no examples but is asked for {count}.")
    passes, rest = divmod(count, pool) if pool else (0, 0)
    key = [int(seed), stable_id(source), DRAWS]
    parts = [np.random.default_rng([*key, number]).permutation(pool) for number in range(passes)]
    if rest:
        parts.append(np.random.default_rng([*key, passes]).choice(pool, rest, replace=False))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


class SFTEpochs:
    """The sample → (source, example) map of an SFT mixture; ``pools``: examples per source."""

    def __init__(
        self, weights: Mapping[str, float], pools: Mapping[str, int], epoch_size: int, seed: int, shuffle: bool = True
    ) -> None:
        if isinstance(epoch_size, bool) or not isinstance(epoch_size, int) or epoch_size < 1:
            raise ValueError(f"epoch_size is {epoch_size!r}; use a whole number of samples, 1 or more.")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"seed is {seed!r}; use a whole number in [0, 2**64).")
        for source, weight in weights.items():
            if not weight >= 0:
                raise ValueError(f"weight of {source!r} is {weight!r}; use a number >= 0.")
            if weight > 0 and pools.get(source, 0) < 1:
                raise ValueError(
                    f"source {source!r} has weight {weight:g} but no examples; give it examples or weight 0."
                )
        blender = Blender({source: weight for source, weight in weights.items() if weight > 0})
        self.sources = list(blender.ids)
        self.epoch_size, self.seed, self.shuffle = epoch_size, int(seed), shuffle
        self.source_index = np.fromiter(
            (blender.next_index() for _ in range(epoch_size)), dtype=np.int32, count=epoch_size
        )
        self.slot = np.zeros(epoch_size, dtype=np.int64)  # rank of each position among its source's positions
        self.per_epoch: dict[str, int] = {}
        self.draws: dict[str, np.ndarray] = {}
        self.positions: dict[str, np.ndarray] = {}
        """Per source, its positions in every epoch (in order: its slots)."""
        for index, source in enumerate(self.sources):
            positions = self.positions[source] = np.flatnonzero(self.source_index == index)
            self.slot[positions] = np.arange(len(positions))
            self.per_epoch[source] = len(positions)
            self.draws[source] = source_draws(pools[source], len(positions), seed, source)
        self.pools = {source: int(pools[source]) for source in self.sources}
        total = sum(weights[source] for source in self.sources)
        self.weights = {source: weights[source] / total for source in self.sources}
        """The blend, normalised: each source's target share of the samples."""
        self._orders: dict[str, tuple[int, np.ndarray]] = {}

    def example(self, sample: int) -> tuple[str, int]:
        """The source of sample ``sample`` (counted from the start of training) and the index of its example."""
        if sample < 0:
            raise IndexError(f"sample {sample} is negative")
        epoch, position = divmod(int(sample), self.epoch_size)
        source = self.sources[self.source_index[position]]
        slot = int(self.slot[position])
        if self.shuffle:
            slot = int(self._epoch_order(source, epoch)[slot])
        return source, int(self.draws[source][slot])

    def epoch_examples(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Every position of epoch ``epoch``: its source (index into ``sources``; the array is shared, do not change
        it) and its example, as ``example`` gives them, one array operation per source."""
        if epoch < 0:
            raise IndexError(f"epoch {epoch} is negative")
        examples = np.empty(self.epoch_size, dtype=np.int64)
        for source in self.sources:
            slots = self._epoch_order(source, int(epoch)) if self.shuffle else slice(None)
            examples[self.positions[source]] = self.draws[source][slots]
        return self.source_index, examples

    def _epoch_order(self, source: str, epoch: int) -> np.ndarray:
        cached = self._orders.get(source)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, stable_id(source), EPOCH_ORDER, epoch])
            cached = (epoch, rng.permutation(self.per_epoch[source]))
            self._orders[source] = cached
        return cached[1]

    def counts(
        self, epoch: int, begin: int, end: int, targets: Mapping[str, np.ndarray | int]
    ) -> dict[str, tuple[int, int]]:
        """Per source, its samples among positions ``begin`` .. ``end - 1`` of epoch ``epoch``, and the sum of their
        examples' ``targets`` (per source: a number per example, indexed by example, or one number for all)."""
        lower = np.bincount(self.source_index[:begin], minlength=len(self.sources))
        upper = np.bincount(self.source_index[:end], minlength=len(self.sources))
        counted = {}
        for index, source in enumerate(self.sources):
            first, last = int(lower[index]), int(upper[index])
            if first == 0 and last == self.per_epoch[source]:
                examples = self.draws[source]  # the whole epoch: the same examples in any order
            elif self.shuffle:
                examples = self.draws[source][self._epoch_order(source, epoch)[first:last]]
            else:
                examples = self.draws[source][first:last]
            per_example = targets[source]
            if isinstance(per_example, (int, np.integer)):
                tokens = int(per_example) * len(examples)
            else:
                tokens = int(np.asarray(per_example, dtype=np.int64)[examples].sum())
            counted[source] = (last - first, tokens)
        return counted

    def state(self, samples: int) -> dict:
        """Where the stream stands after ``samples`` samples, keyed by source: each source's samples so far."""
        epoch, position = divmod(int(samples), self.epoch_size)
        taken = np.bincount(self.source_index[:position], minlength=len(self.sources))
        return {
            "samples": int(samples),
            "epoch": epoch,
            "position": position,
            "epoch_size": self.epoch_size,
            "seed": self.seed,
            "sources": {
                source: {
                    "pool": self.pools[source],
                    "per_epoch": self.per_epoch[source],
                    "taken": epoch * self.per_epoch[source] + int(taken[index]),
                }
                for index, source in enumerate(self.sources)
            },
        }
