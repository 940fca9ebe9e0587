"""Random subsets with a cap, batched and with static shapes: the shared core of
the RPN's anchor sampler and the detector's ROI sampler."""

import tensorflow as tf


def random_ranks(candidates, seed=None):
    """Random order of the candidates of every row.

    Args:
      candidates: bool [batch, n].
      seed: optional int for ``tf.random.uniform``.

    Returns:
      int32 [batch, n]: each candidate's 0-based rank in a random permutation of
      its row's candidates; non-candidates rank after all candidates.
    """
    noise = tf.random.uniform(tf.shape(candidates), seed=seed)
    keys = tf.where(candidates, noise, -1.0)
    order = tf.argsort(keys, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def subsample(candidates, max_count, seed=None):
    """Keep at most ``max_count`` candidates per row, chosen uniformly at random.

    Args:
      candidates: bool [batch, n].
      max_count: int scalar or int32 [batch] cap per row.

    Returns:
      bool [batch, n], a subset of ``candidates`` with
      ``min(count, max_count)`` True per row.
    """
    ranks = random_ranks(candidates, seed)
    cap = tf.cast(max_count, tf.int32)
    if cap.shape.rank == 1:
        cap = cap[:, tf.newaxis]
    return tf.logical_and(candidates, ranks < cap)


def count(mask):
    """int32 [batch]: True entries per row of a bool [batch, n] mask."""
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1)
