"""benchmarks/bench_inference.py's memory report when phases run in child processes: the
process's peak is the largest of its own and its children's (no model, no TF)."""

import pytest


@pytest.fixture
def bench(benchmark_module):
    return benchmark_module("bench_inference")


def _child(part, peaks, start, timeline=()):
    return {
        "part": part,
        "peaks": peaks,
        "peak": max(peaks.values()),
        "start": start,
        "timeline": list(timeline),
    }


def test_the_peak_is_the_largest_of_the_parent_and_its_children(bench):
    children = [
        _child("split", {"build_split": 1977.2, "warm_up_split": 5179.4}, 0.0),
        _child("whole", {"build_whole": 1980.0, "warm_up": 5290.6, "flops": 4000.0}, 0.0),
    ]
    own = {"start": 300.0, "build": 1977.0, "train_step": 2744.4}
    peak, by_phase, by_process = bench._combined_memory(own, 2744.4, children)
    assert peak == 5290.6
    assert by_phase == {
        "start": 300,
        "build": 1977,
        "train_step": 2744,
        "build_split": 1977,
        "warm_up_split": 5179,
        "build_whole": 1980,
        "warm_up": 5291,
        "flops": 4000,
    }
    assert by_process == {"parent": 2744, "split": 5179, "whole": 5291}


def test_the_parent_alone_when_no_child_ran(bench):
    assert bench._combined_memory({"build": 10.0}, 12.0, []) == (
        12.0,
        {"build": 10},
        {"parent": 12},
    )


def test_the_timeline_puts_the_children_on_the_parents_clock(bench):
    class Memory:
        start = 100.0
        timeline = [(0.5, "start", 1.0), (30.0, "build", 2.0)]

    children = [_child("split", {"build_split": 3.0}, 110.0, [(0.0, "build_split", 3.0)])]
    assert bench._timeline(Memory, children) == [
        (0.5, "start", 1.0),
        (10.0, "build_split", 3.0),
        (30.0, "build", 2.0),
    ]
