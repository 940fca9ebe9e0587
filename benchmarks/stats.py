"""Summary statistics of benchmark timings and the bootstrap interval of a ratio of medians.

Used by ``benchmarks/interleaved.py``; pure numpy, tested in ``tests/test_benchmark_stats.py``.

The ratio compared is median(ours) / median(peer). Its interval is a percentile bootstrap:
each side's samples are resampled with replacement, independently (the two sides are timed
in different processes; pairing them by round would assume a round's drift hits both alike,
which interleaving makes likely but does not guarantee), the ratio of the resampled medians is
taken ``resamples`` times, and the interval is the central ``level`` of those ratios. With few
samples per side (5 or so) the interval can only take values formed from the samples
themselves, so it is coarse; it still widens honestly with the spread of either side.

A second figure uses the pairing that interleaving gives: the ratio ours / peer of each round
(the two sides timed back to back), its median over the rounds and that median's bootstrap
interval (rounds resampled). Drift that slows a whole round cancels in the round's ratio, so
this interval is narrower when the machine's load changes from round to round; it assumes
what the unpaired one does not, that both calls of a round saw the same load.
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


def _check(level, resamples):
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")


def ratio_of_medians(numerator, denominator):
    """median(numerator) / median(denominator)."""
    return float(np.median(_samples(numerator)) / np.median(_samples(denominator)))


def bootstrap_ratio_interval(numerator, denominator, level=0.95, resamples=10_000, seed=0):
    """The percentile bootstrap interval ``(low, high)`` at ``level`` of
    median(numerator) / median(denominator), resampling each side's samples with replacement,
    independently; deterministic for a given ``seed``."""
    _check(level, resamples)
    top, bottom = _samples(numerator), _samples(denominator)
    rng = np.random.default_rng(seed)
    top_medians = np.median(rng.choice(top, size=(resamples, top.size)), axis=1)
    bottom_medians = np.median(rng.choice(bottom, size=(resamples, bottom.size)), axis=1)
    return _percentile_interval(top_medians / bottom_medians, level)


def _percentile_interval(values, level):
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_ratios(numerator, denominator):
    """numerator[i] / denominator[i]: the ratio of each round."""
    top, bottom = _samples(numerator), _samples(denominator)
    if top.size != bottom.size:
        raise ValueError(f"paired samples of different lengths: {top.size}, {bottom.size}")
    return top / bottom


def bootstrap_median_interval(values, level=0.95, resamples=10_000, seed=0):
    """The percentile bootstrap interval ``(low, high)`` at ``level`` of median(values)."""
    _check(level, resamples)
    array = _samples(values)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(array, size=(resamples, array.size)), axis=1)
    return _percentile_interval(medians, level)


def compare(ours, peer, level=0.95, resamples=10_000, seed=0):
    """Both sides summarised, the ratio of medians ours / peer and its bootstrap interval and,
    when the samples pair up by round, the median of the rounds' ratios and its interval."""
    low, high = bootstrap_ratio_interval(ours, peer, level, resamples, seed)
    result = {
        "ours": summarize(ours),
        "peer": summarize(peer),
        "ratio": ratio_of_medians(ours, peer),
        "interval": [low, high],
        "level": level,
    }
    if len(ours) == len(peer):
        ratios = paired_ratios(ours, peer)
        result["paired"] = {
            "ratios": [float(r) for r in ratios],
            "median": float(np.median(ratios)),
            "interval": list(bootstrap_median_interval(ratios, level, resamples, seed)),
        }
    return result
