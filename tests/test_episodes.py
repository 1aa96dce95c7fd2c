"""Episodes are a pure function of (seed, episode id), with labels remapped to 0..N-1."""

import numpy as np
import pytest

from fewray.data.episodes import EpisodicSampler, label_wrapper
from fewray.platform.errors import DataError

LABELS = np.repeat(np.arange(30), 20)[np.random.default_rng(0).permutation(600)]


def test_episode_is_deterministic_and_well_formed():
    a = EpisodicSampler(LABELS, ways=5, shots=2, queries=3, seed=7)
    b = EpisodicSampler(LABELS.copy(), ways=5, shots=2, queries=3, seed=7)
    ep, ep2 = a.episode(1234), b.episode(1234)
    np.testing.assert_array_equal(ep.support_idx, ep2.support_idx)
    np.testing.assert_array_equal(ep.query_idx, ep2.query_idx)
    assert ep.support_idx.shape == (10,) and ep.query_idx.shape == (15,)
    assert len(set(ep.support_idx) | set(ep.query_idx)) == 25  # support and query are disjoint
    # episode labels are 0..N-1 and agree with the dataset classes (label_wrapper)
    np.testing.assert_array_equal(ep.support_label, label_wrapper(LABELS[ep.support_idx], ep.classes))
    np.testing.assert_array_equal(ep.query_label, label_wrapper(LABELS[ep.query_idx], ep.classes))
    assert set(ep.query_label) == set(range(5))


def test_episodes_differ_by_id_and_seed():
    s = EpisodicSampler(LABELS, ways=5, shots=1, queries=1, seed=0)
    assert not np.array_equal(s.episode(0).support_idx, s.episode(1).support_idx)
    t = EpisodicSampler(LABELS, ways=5, shots=1, queries=1, seed=1)
    assert not np.array_equal(s.episode(0).support_idx, t.episode(0).support_idx)


def test_impossible_episodes_are_refused():
    with pytest.raises(DataError, match="ways=31 is greater than the 30 classes"):
        EpisodicSampler(LABELS, ways=31, shots=1, queries=1)
    with pytest.raises(DataError, match="greater than the 20 images of class"):
        EpisodicSampler(LABELS, ways=5, shots=5, queries=16)
