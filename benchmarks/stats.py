"""Summary statistics of benchmark timings and the bootstrap interval of a ratio of medians.

Used by ``benchmarks/interleaved.py``; pure numpy, tested in ``tests/test_benchmark_stats.py``.

The ratio compared is median(ours) / median(peer). Its interval is a percentile bootstrap:
each side's samples are resampled with replacement, independently (the two sides are timed
in different processes; pairing them by round would assume a round's drift hits both alike,
which interleaving makes likely but does not guarantee), the ratio of the resampled medians is
taken ``resamples`` times, and the interval is the central ``level`` of those ratios. With few
samples per side (5 or so) the interval can only take values formed from the samples
themselves, so it is coarse; it still widens honestly with the spread of either side.
"""

import numpy as np


def _samples(values):
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("no samples")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"non-finite sample in {values!r}")
    return array


def summarize(values):
    """``{n, min, median, max, spread_pct, mad_pct}`` of timing samples: the spread is
    (max - min) / median and the MAD the median absolute deviation over the median, both in
    percent of the median."""
    array = _samples(values)
    median = float(np.median(array))
    scale = 100.0 / median if median else float("nan")
    return {
        "n": int(array.size),
        "min": float(array.min()),
        "median": median,
        "max": float(array.max()),
        "spread_pct": float(array.max() - array.min()) * scale,
        "mad_pct": float(np.median(np.abs(array - median))) * scale,
    }


def ratio_of_medians(numerator, denominator):
    """median(numerator) / median(denominator)."""
    return float(np.median(_samples(numerator)) / np.median(_samples(denominator)))


def bootstrap_ratio_interval(numerator, denominator, level=0.95, resamples=10_000, seed=0):
    """The percentile bootstrap interval ``(low, high)`` at ``level`` of
    median(numerator) / median(denominator), resampling each side's samples with replacement,
    independently; deterministic for a given ``seed``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    top, bottom = _samples(numerator), _samples(denominator)
    rng = np.random.default_rng(seed)
    top_medians = np.median(rng.choice(top, size=(resamples, top.size)), axis=1)
    bottom_medians = np.median(rng.choice(bottom, size=(resamples, bottom.size)), axis=1)
    ratios = top_medians / bottom_medians
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def compare(ours, peer, level=0.95, resamples=10_000, seed=0):
    """Both sides summarised, the ratio of medians ours / peer and its bootstrap interval."""
    low, high = bootstrap_ratio_interval(ours, peer, level, resamples, seed)
    return {
        "ours": summarize(ours),
        "peer": summarize(peer),
        "ratio": ratio_of_medians(ours, peer),
        "interval": [low, high],
        "level": level,
    }
