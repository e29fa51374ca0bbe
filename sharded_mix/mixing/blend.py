"""The exact blend: which source gives the k-th sample (pure, no I/O).

Megatron's ``build_blending_indices`` (greedy largest deficit) drifts up to ~1.25 samples from
``w_i · n`` with many sources. We use Tijdeman's chairman-assignment rule instead: a source may
take the next sample only if that keeps its count at most ``w_i · n + μ``, and among those the
one whose count would first fall below ``w_i · n − μ`` (earliest deadline) goes first, with
``μ = 1 − 1/(2S − 2)`` for S sources (ties: the smallest shard id). Tijdeman proved this keeps
``|taken_i − w_i · n| ≤ μ < 1`` after every prefix of n samples.

The state is ``(position, taken per source)``: saving and restoring it is O(sources),
independent of how many samples were drawn.
"""

from __future__ import annotations

from collections.abc import Mapping


class Blender:
    """A deterministic stream of source ids following ``weights`` exactly."""

    def __init__(self, weights: Mapping[str, float], position: int = 0, taken: Mapping[str, int] | None = None) -> None:
        if not weights:
            raise ValueError("a blend needs at least one source with a positive weight.")
        self.ids = sorted(weights)  # independent of config order
        total = sum(weights.values())
        self.weights = [weights[source] / total for source in self.ids]
        taken = taken or {}
        self.taken = [int(taken.get(source, 0)) for source in self.ids]
        self.position = int(position)
        if sum(self.taken) != self.position:
            raise ValueError(
                f"blend state is inconsistent: position {self.position} but {sum(self.taken)} samples taken."
            )
        self._slack = 1.0 - 1.0 / (2 * len(self.weights) - 2) if len(self.weights) > 1 else 0.0
        self._inverse = [1.0 / weight for weight in self.weights]

    def next_index(self) -> int:
        """Advance one sample; the index (into ``ids``) of its source."""
        horizon = self.position + 1
        slack, taken, inverse = self._slack, self.taken, self._inverse
        ceiling = slack + 1e-9 - 1
        best, best_deadline = 0, float("inf")
        for index, weight in enumerate(self.weights):
            count = taken[index]
            if count - weight * horizon <= ceiling:  # else it would run ahead of its share
                deadline = (count + slack) * inverse[index]
                if deadline < best_deadline:
                    best, best_deadline = index, deadline
        taken[best] += 1
        self.position = horizon
        return best

    def next(self) -> str:
        return self.ids[self.next_index()]

    def state_dict(self) -> dict:
        return {"position": self.position, "taken": dict(zip(self.ids, self.taken))}
