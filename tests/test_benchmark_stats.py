"""benchmarks/stats.py, the statistics of benchmarks/interleaved.py: summaries and the
bootstrap interval of a ratio of medians, on synthetic samples (numpy only, well under a
second)."""

import numpy as np
import pytest


@pytest.fixture
def stats(benchmark_module):
    return benchmark_module("stats")


def _lognormal(median, sigma, n, seed):
    return median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


def test_summary_of_known_samples(stats):
    summary = stats.summarize([3.0, 1.0, 2.0, 10.0, 2.5])
    assert summary["n"] == 5
    assert (summary["min"], summary["median"], summary["max"]) == (1.0, 2.5, 10.0)
    assert summary["spread_pct"] == pytest.approx(100 * 9.0 / 2.5)
    # |x - 2.5| = 0.5, 1.5, 0.5, 7.5, 0: median 0.5.
    assert summary["mad_pct"] == pytest.approx(100 * 0.5 / 2.5)


def test_ratio_of_medians(stats):
    assert stats.ratio_of_medians([1.0, 2.0, 9.0], [4.0, 4.0, 100.0]) == pytest.approx(0.5)


def test_interval_holds_the_true_ratio_of_well_separated_samples(stats):
    ours, peer = _lognormal(1.0, 0.05, 20, 1), _lognormal(2.0, 0.05, 20, 2)
    low, high = stats.bootstrap_ratio_interval(ours, peer)
    assert low <= 0.5 <= high
    assert 0.45 < low and high < 0.55
    assert low <= stats.ratio_of_medians(ours, peer) <= high


def test_interval_covers_the_true_ratio_about_as_often_as_its_level(stats):
    trials, hits = 100, 0
    for trial in range(trials):
        ours = _lognormal(1.0, 0.1, 10, 2 * trial)
        peer = _lognormal(2.0, 0.1, 10, 2 * trial + 1)
        low, high = stats.bootstrap_ratio_interval(ours, peer, resamples=1000, seed=trial)
        hits += low <= 0.5 <= high
    assert hits >= 88


def test_interval_narrows_with_more_samples(stats):
    def width(n):
        low, high = stats.bootstrap_ratio_interval(
            _lognormal(1.0, 0.1, n, 3), _lognormal(2.0, 0.1, n, 4)
        )
        return high - low

    assert width(200) < width(50) < width(10)


def test_interval_widens_with_the_spread_of_either_side(stats):
    def width(sigma_ours, sigma_peer):
        low, high = stats.bootstrap_ratio_interval(
            _lognormal(1.0, sigma_ours, 15, 5), _lognormal(2.0, sigma_peer, 15, 6)
        )
        return high - low

    assert width(0.02, 0.02) < width(0.2, 0.02)
    assert width(0.02, 0.02) < width(0.02, 0.2)


def test_interval_is_deterministic_for_a_seed(stats):
    ours, peer = _lognormal(1.0, 0.2, 30, 7), _lognormal(1.5, 0.2, 30, 8)
    first = stats.bootstrap_ratio_interval(ours, peer, seed=11)
    assert stats.bootstrap_ratio_interval(ours, peer, seed=11) == first
    assert stats.bootstrap_ratio_interval(ours, peer, seed=12) != first


def test_identical_samples_give_a_point_interval_at_one(stats):
    assert stats.bootstrap_ratio_interval([2.0] * 5, [2.0] * 5) == (1.0, 1.0)


def test_compare_reports_both_sides_and_the_ratio(stats):
    result = stats.compare([1.0, 1.1, 0.9], [2.0, 2.2, 1.8], seed=0)
    assert result["ours"]["median"] == 1.0 and result["peer"]["median"] == 2.0
    assert result["ratio"] == pytest.approx(0.5)
    assert result["interval"][0] <= 0.5 <= result["interval"][1]
    assert result["level"] == 0.95


def test_paired_interval_cancels_drift_shared_by_a_round(stats):
    # Each round's load slows both sides by the same factor (0.5x to 2x): the ratio of medians
    # sees the drift as spread, the rounds' ratios do not.
    rng = np.random.default_rng(9)
    drift = np.exp(rng.uniform(np.log(0.5), np.log(2.0), 12))
    ours = drift * _lognormal(1.0, 0.02, 12, 10)
    peer = drift * _lognormal(2.0, 0.02, 12, 11)
    result = stats.compare(ours, peer)
    unpaired, paired = result["interval"], result["paired"]["interval"]
    assert paired[0] <= 0.5 <= paired[1] and unpaired[0] <= 0.5 <= unpaired[1]
    assert paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 5
    assert result["paired"]["ratios"] == pytest.approx(list(ours / peer))


def test_bootstrap_median_interval(stats):
    values = _lognormal(3.0, 0.05, 40, 12)
    low, high = stats.bootstrap_median_interval(values, seed=1)
    assert low <= np.median(values) <= high and low < 3.0 < high
    assert stats.bootstrap_median_interval(values, seed=1) == (low, high)


def test_unequal_lengths_have_no_paired_figure(stats):
    assert "paired" not in stats.compare([1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.summarize([]),
        lambda s: s.summarize([1.0, float("nan")]),
        lambda s: s.bootstrap_ratio_interval([1.0], [1.0], level=1.0),
        lambda s: s.bootstrap_ratio_interval([1.0], [1.0], resamples=0),
        lambda s: s.bootstrap_median_interval([1.0], level=0.0),
        lambda s: s.paired_ratios([1.0, 2.0], [1.0]),
    ],
)
def test_bad_input_is_refused(stats, call):
    with pytest.raises(ValueError):
        call(stats)
