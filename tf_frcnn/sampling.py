"""Random subsets with a cap, batched and with static shapes: the shared core of
the RPN's anchor sampler and the detector's ROI sampler.

``seed`` arguments are either None (TF's stateful random ops) or an int32 [2]
tensor for stateless ops, so that a training step's sampling depends only on
(seed, step) and a resumed run samples what an uninterrupted one would.
"""

import tensorflow as tf


def uniform(shape, seed=None, maxval=1.0):
    """float32 uniform noise in [0, maxval), stateless when ``seed`` is given.

    Stateless draws are the top 24 of 32 random bits times 2^-24: XLA and TF's CPU kernels
    make the same bits from a seed but turn them into floats differently, so this keeps an
    XLA-compiled step sampling what the plain one samples."""
    if seed is None:
        return tf.random.uniform(shape, maxval=maxval)
    bits = tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None, dtype=tf.uint32)
    top = tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32))
    return tf.cast(top, tf.float32) * (maxval * 2.0**-24)


def derive(seed, index):
    """A distinct int32 [2] seed for the ``index``-th random draw of one step;
    ``seed`` is None (stays None), an int, or an int [2] tensor."""
    if seed is None:
        return None
    seed = tf.cast(seed, tf.int32)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, 0])
    derived = tf.random.experimental.stateless_fold_in(seed, index)
    # XLA and TF's CPU kernels make different keys of a negative seed: keep it >= 0.
    return tf.bitwise.bitwise_and(derived, 0x7FFFFFFF)


def _keys(candidates, seed):
    """float32 [batch, n]: a uniform key per candidate, -1 for the others."""
    return tf.where(candidates, uniform(tf.shape(candidates), seed), -1.0)


def random_ranks(candidates, seed=None):
    """Random order of the candidates of every row.

    Args:
      candidates: bool [batch, n].
      seed: None or int32 [2] stateless seed.

    Returns:
      int32 [batch, n]: each candidate's 0-based rank in a random permutation of
      its row's candidates; non-candidates rank after all candidates.
    """
    order = tf.argsort(_keys(candidates, seed), axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def subsample(candidates, max_count, seed=None, limit=None):
    """Keep at most ``max_count`` candidates per row, chosen uniformly at random.

    Args:
      candidates: bool [batch, n].
      max_count: int scalar or int32 [batch] cap per row.
      limit: None, or a static int that ``max_count`` never exceeds. Then one top-k of
        ``limit`` keys replaces the two sorts of the whole row (a pyramid's RPN has 10^4 to
        10^5 anchors per row: 0.2 s of a 0.7 s CPU step at 800x800); the subset is the same.

    Returns:
      bool [batch, n], a subset of ``candidates`` with
      ``min(count, max_count)`` True per row.
    """
    cap = tf.cast(max_count, tf.int32)
    if cap.shape.rank == 1:
        cap = cap[:, tf.newaxis]
    n = candidates.shape[-1]
    if limit is None or n is None or limit >= n:
        return tf.logical_and(candidates, random_ranks(candidates, seed) < cap)
    # The keys random_ranks sorts; top_k orders ties by index as its stable sort does.
    keys = _keys(candidates, seed)
    values, index = tf.math.top_k(keys, k=limit)
    keep = (values >= 0.0) & (tf.range(limit)[tf.newaxis] < cap)
    rows = tf.broadcast_to(tf.range(tf.shape(index)[0])[:, tf.newaxis], tf.shape(index))
    kept = tf.scatter_nd(tf.stack([rows, index], -1), tf.cast(keep, tf.int32), tf.shape(keys))
    return kept > 0


def count(mask):
    """int32 [batch]: True entries per row of a bool [batch, n] mask."""
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1)
