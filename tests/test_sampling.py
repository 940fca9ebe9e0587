"""sampling.subsample: a uniformly random subset of the candidates, not a fixed one."""

import numpy as np
import tensorflow as tf

from tf_frcnn import sampling


def test_subsample_is_a_uniform_random_subset_that_moves_with_the_seed():
    # Row 0: candidates 0..7 of 10, keep 3; row 1: candidates 2..9, keep 5.
    candidates = tf.constant([[True] * 8 + [False] * 2, [False] * 2 + [True] * 8])
    cap = tf.constant([3, 5])
    picks = np.stack(
        [sampling.subsample(candidates, cap, tf.constant([7, seed])).numpy() for seed in range(400)]
    )
    # Always a subset of the candidates with exactly min(count, cap) True per row.
    assert not np.any(picks & ~candidates.numpy())
    np.testing.assert_array_equal(picks.sum(-1), np.tile([3, 5], (400, 1)))
    # Not constant: many different subsets, and each candidate is kept about cap / 8 of the
    # time (binomial(400, 3/8): sd 9.7; (5/8): sd 9.7; bounds at 5 sd).
    assert len({p.tobytes() for p in picks}) > 100
    frequency = picks.sum(0)
    assert np.all(np.abs(frequency[0, :8] - 400 * 3 / 8) < 50), frequency[0]
    assert np.all(np.abs(frequency[1, 2:] - 400 * 5 / 8) < 50), frequency[1]
    # The same seed gives the same subset (a resumed run samples what an uninterrupted one did).
    again = sampling.subsample(candidates, cap, tf.constant([7, 0])).numpy()
    np.testing.assert_array_equal(again, picks[0])


def test_subsample_keeps_all_when_the_cap_exceeds_the_count():
    candidates = tf.constant([[True, False, True, False]])
    kept = sampling.subsample(candidates, 5, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(kept, candidates.numpy())
