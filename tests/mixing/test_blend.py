"""The exact blend: a pure function, no shards."""

import numpy as np
import pytest

from sharded_mix.mixing.blend import Blender

WEIGHT_VECTORS = [
    {"a": 0.5, "b": 0.5},
    {"main/1": 0.6, "m1": 0.4},
    {"main/1": 0.88, "m1": 0.12},
    {"main/1": 0.4, "main/2": 0.4, "c1": 0.15, "m1": 0.05},
    {"x": 0.999, "y": 0.001},
]


def random_weights(seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 24))
    values = rng.dirichlet(np.full(size, rng.choice([0.1, 1.0, 10.0])))
    return {f"s{i}": float(v) for i, v in enumerate(values) if v > 0}


@pytest.mark.parametrize("weights", WEIGHT_VECTORS + [random_weights(seed) for seed in range(12)])
def test_every_prefix_is_within_one_sample_of_the_weights(weights):
    blender = Blender(weights)
    shares = np.array(blender.weights)
    counts = np.zeros(len(shares))
    for n in range(1, 4001):
        counts[blender.next_index()] += 1
        assert np.abs(counts - shares * n).max() < 1.0, (n, counts, shares * n)


def test_the_sequence_depends_on_weights_not_on_their_order():
    weights = WEIGHT_VECTORS[3]
    a, b = Blender(weights), Blender(dict(reversed(list(weights.items()))))
    assert [a.next() for _ in range(500)] == [b.next() for _ in range(500)]


def test_restoring_the_state_continues_the_same_sequence():
    weights = WEIGHT_VECTORS[3]
    full = Blender(weights)
    expected = [full.next() for _ in range(700)]
    head = Blender(weights)
    prefix = [head.next() for _ in range(333)]
    state = head.state_dict()
    resumed = Blender(weights, state["position"], state["taken"])
    assert prefix + [resumed.next() for _ in range(367)] == expected


def test_inconsistent_state_is_rejected():
    with pytest.raises(ValueError, match="position 5 but 4 samples taken"):
        Blender({"a": 1.0}, 5, {"a": 4})
