"""The joint feature map of several SAEs (saelab.compare.joint_map): layout, subsets and the mixing score."""

from __future__ import annotations

import numpy as np
import pytest

from saelab.compare.joint_map import JointMap, joint_map, neighbour_mixing
from saelab.errors import BadInputError


def _dirs(n: int, d: int, dims: slice, seed: int) -> np.ndarray:
    W = np.zeros((n, d), np.float32)
    W[:, dims] = np.random.default_rng(seed).normal(size=(n, dims.stop - dims.start))
    return W


def test_neighbour_mixing__separate_subspaces_near_zero_shared_near_one():
    a, b = _dirs(120, 16, slice(0, 8), 0), _dirs(120, 16, slice(8, 16), 1)
    apart = joint_map([a, b], ["a", "b"])
    assert apart.mixing < 0.1
    c = _dirs(120, 16, slice(0, 8), 2)  # same subspace as a, other random directions
    shared = joint_map([a, c], ["a", "c"])
    assert shared.mixing > 0.6
    rng = np.random.default_rng(0)
    xy, group = rng.normal(size=(400, 2)), rng.integers(0, 2, 400)
    assert neighbour_mixing(xy, group) == pytest.approx(1.0, abs=0.1)


def test_joint_map__subsets_are_seeded_and_round_trip():
    a, b = _dirs(50, 8, slice(0, 8), 0), _dirs(30, 8, slice(0, 8), 1)
    jm = joint_map([a, b], ["a", "b"], per_sae=20, seed=3)
    assert jm.shown(0) == 20 and jm.shown(1) == 20 and len(jm.notes) == 2
    assert jm.latent[jm.sae == 0].max() < 50 and len(set(jm.latent[jm.sae == 1])) == 20
    again = joint_map([a, b], ["a", "b"], per_sae=20, seed=3)
    assert np.array_equal(jm.latent, again.latent) and np.allclose(jm.xy, again.xy)
    back = JointMap.from_dict(jm.to_dict())
    assert back.names == jm.names and np.allclose(back.xy, jm.xy) and back.mixing == jm.mixing


def test_joint_map__refuses_one_sae_or_different_widths():
    with pytest.raises(BadInputError, match="two or more"):
        joint_map([np.ones((5, 4))], ["a"])
    with pytest.raises(BadInputError, match="different widths"):
        joint_map([np.ones((5, 4)), np.ones((5, 3))], ["a", "b"])
