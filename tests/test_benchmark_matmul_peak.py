"""benchmarks/matmul_peak.py: the FLOP count, the CPU flags it prints, and TF's product measured."""

import pytest


def test_gflops_counts_two_flops_per_multiply_add(benchmark_module):
    peak = benchmark_module("matmul_peak")
    # 1000^3 multiply-adds in 2 s: 1 GFLOP/s.
    assert peak.gflops(1000, 2.0) == pytest.approx(1.0)


def test_the_cpu_reader_lists_the_vector_flags_it_has_and_lacks(benchmark_module, tmp_path):
    interleaved = benchmark_module("interleaved")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\nflags\t\t: fpu avx512f fma sse avx2 avx512_bf16\n")
    info = interleaved.cpu_info(cpuinfo)
    assert info["model"] == "X"
    assert info["flags"] == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert "amx_tile" in info["absent"] and "avx2" not in info["absent"]
    assert interleaved.cpu_info(tmp_path / "missing")["flags"] == []


def test_measure_times_tfs_product(benchmark_module):
    # The suite's process has TF's threads set already: measure() leaves them alone.
    peak = benchmark_module("matmul_peak")
    results = peak.measure("tf", [64, 128], runs=2)
    assert set(results) == {64, 128}
    assert all(0 < median <= best for best, median in results.values())
    assert peak.lines({64: (12.34, 10.0)}) == [
        "64x64 float32 product: best 12 GFLOP/s, median 10 GFLOP/s"
    ]
