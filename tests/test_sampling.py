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


def test_stateless_uniform_fills_zero_to_maxval_on_a_2_to_24_grid():
    # 20,000 draws: the documented range [0, maxval) is reached at both ends, the mean is
    # maxval / 2 (sd of the mean 0.29 maxval / sqrt(20,000) = 0.002 maxval), and every value
    # is maxval times a multiple of 2^-24 (the top 24 bits of the random word).
    for maxval in (1.0, 0.5):
        values = sampling.uniform([20000], tf.constant([3, 4]), maxval=maxval).numpy()
        assert values.dtype == np.float32
        assert values.min() >= 0.0 and values.max() < maxval
        assert values.min() < 0.001 * maxval and values.max() > 0.999 * maxval
        assert abs(values.mean() / maxval - 0.5) < 0.01
        steps = values.astype(np.float64) / maxval * 2.0**24
        np.testing.assert_array_equal(steps, np.round(steps))
        assert len(np.unique(values)) > 19900
    # The default maxval is 1.
    default = sampling.uniform([2000], tf.constant([3, 4])).numpy()
    assert default.max() < 1.0 and default.max() > 0.99
    # A function of the seed only: the same seed again, another seed differs.
    again = sampling.uniform([5], tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(again, sampling.uniform([5], tf.constant([3, 4])).numpy())
    assert not np.array_equal(again, sampling.uniform([5], tf.constant([3, 5])).numpy())
    # Without a seed: TF's stateful draw, in the same range.
    tf.random.set_seed(0)
    stateful = sampling.uniform([2000], maxval=0.5).numpy()
    tf.random.set_seed(None)
    assert stateful.min() >= 0.0 and stateful.max() < 0.5 and stateful.max() > 0.45


def test_derive_gives_distinct_non_negative_seeds_per_index():
    assert sampling.derive(None, 3) is None
    seeds = {}
    for base in (0, 7, -5, 2**31 - 1):
        for index in range(4):
            derived = sampling.derive(tf.constant([base, 1]), index)
            assert derived.dtype == tf.int32 and derived.shape == (2,)
            values = derived.numpy()
            assert np.all(values >= 0), (base, index, values)
            # Only the sign bit is cleared: the low 31 bits are fold_in's.
            folded = tf.random.experimental.stateless_fold_in(tf.constant([base, 1]), index)
            np.testing.assert_array_equal(values, folded.numpy() & 0x7FFFFFFF)
            seeds[(base, index)] = tuple(values)
    assert len(set(seeds.values())) == len(seeds)
    # Some fold_in results are negative here: the mask is what keeps them >= 0.
    assert any(
        np.any(tf.random.experimental.stateless_fold_in(tf.constant([b, 1]), i).numpy() < 0)
        for b, i in seeds
    )
    # An int seed means [seed, 0]; an int64 seed is cast.
    np.testing.assert_array_equal(
        sampling.derive(9, 2).numpy(), sampling.derive(tf.constant([9, 0]), 2).numpy()
    )
    np.testing.assert_array_equal(
        sampling.derive(tf.constant([9, 0], tf.int64), 2).numpy(),
        sampling.derive(tf.constant([9, 0]), 2).numpy(),
    )


def test_random_ranks_permute_the_candidates_first_then_the_rest():
    candidates = tf.constant([[True, False, True, True, False, True], [False] * 5 + [True]])
    for seed in range(20):
        ranks = sampling.random_ranks(candidates, tf.constant([seed, 1])).numpy()
        # Row 0: its 4 candidates take ranks 0..3 in some order, the 2 others 4 and 5.
        assert sorted(ranks[0, [0, 2, 3, 5]]) == [0, 1, 2, 3]
        assert sorted(ranks[0, [1, 4]]) == [4, 5]
        assert ranks[1, 5] == 0 and sorted(ranks[1, :5]) == [1, 2, 3, 4, 5]
    # The candidates' order moves with the seed.
    orders = {
        tuple(sampling.random_ranks(candidates, tf.constant([s, 1])).numpy()[0, [0, 2, 3, 5]])
        for s in range(20)
    }
    assert len(orders) > 5


def test_subsample_cap_per_row_and_count():
    candidates = tf.constant([[True] * 6, [True] * 6, [False] * 6])
    kept = sampling.subsample(candidates, tf.constant([0, 6, 3]), tf.constant([1, 1]))
    np.testing.assert_array_equal(sampling.count(kept).numpy(), [0, 6, 0])
    assert sampling.count(kept).dtype == tf.int32
    kept = sampling.subsample(candidates, 2, tf.constant([1, 1]))
    np.testing.assert_array_equal(sampling.count(kept).numpy(), [2, 2, 0])


def _both_ways(candidates, cap, seed, limit):
    full = sampling.subsample(candidates, cap, seed).numpy()
    fast = sampling.subsample(candidates, cap, seed, limit=limit).numpy()
    return full, fast


def test_a_limit_keeps_the_same_subset_as_the_full_sort():
    # 2 rows of 5,000 anchors, ~30% candidates; caps below and above the count per row.
    rng = np.random.default_rng(0)
    candidates = tf.constant(rng.random((2, 5000)) < 0.3)
    for seed in range(20):
        for cap in (tf.constant([128, 7]), tf.constant([256, 256]), 1):
            full, fast = _both_ways(candidates, cap, tf.constant([seed, 3]), limit=256)
            np.testing.assert_array_equal(full, fast)
    # Fewer candidates than the cap: all of them, and none of the others.
    few = tf.constant([[True, False] * 10 + [False] * 4980] * 2)
    full, fast = _both_ways(few, 256, tf.constant([0, 1]), limit=256)
    np.testing.assert_array_equal(fast, few.numpy())
    np.testing.assert_array_equal(full, fast)


def test_a_limit_breaks_ties_between_keys_as_the_stable_sort_does(monkeypatch):
    # Keys drawn from {0, 0.25, 0.5, 0.75}: most candidates tie; both ways keep the lowest
    # indices among the tied ones at the cut.
    coarse = sampling.uniform

    def tied(shape, seed=None, maxval=1.0):
        return tf.floor(coarse(shape, seed, maxval) * 4.0) / 4.0

    monkeypatch.setattr(sampling, "uniform", tied)
    rng = np.random.default_rng(1)
    candidates = tf.constant(rng.random((2, 3000)) < 0.5)
    for seed in range(5):
        full, fast = _both_ways(candidates, tf.constant([100, 31]), tf.constant([seed, 9]), 128)
        np.testing.assert_array_equal(full, fast)
        assert fast.sum(-1).tolist() == [100, 31]
