"""benchmarks/interleaved.py's rounds and its workers' line protocol, with fake workers
(no model, no torch: well under a second)."""

import argparse
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def interleaved(benchmark_module):
    return benchmark_module("interleaved")


class FakeWorker:
    def __init__(self, side, calls):
        self.side, self.calls, self.last, self.count = side, calls, {}, 0

    def call(self, op):
        self.count += 1
        self.calls.append((self.side, op))
        # Distinct times: the side, the op and the call's number are readable from them.
        seconds = (1.0 if self.side == "ours" else 2.0) * (10 if op == "train" else 1)
        self.last = {"op": op, "seconds": seconds + self.count / 1000, "hwm_mb": 100.0 * self.count}
        return self.last


def test_rounds_alternate_the_first_side_and_drop_the_warm_up(interleaved):
    calls = []
    workers = {side: FakeWorker(side, calls) for side in ("ours", "peer")}
    args = argparse.Namespace(warmup=1, rounds=3, pause=0.0)
    samples, loads, after_warmup = interleaved._rounds(workers, args, ("infer", "train"))
    assert calls[:4] == [("ours", "infer"), ("peer", "infer"), ("ours", "train"), ("peer", "train")]
    assert calls[4:8] == [
        ("peer", "infer"),
        ("ours", "infer"),
        ("peer", "train"),
        ("ours", "train"),
    ]
    assert calls[8:12] == calls[:4] and calls[12:] == calls[4:8]
    # Calls 1-2 of each worker were the warm-up round; rounds 2-4 are calls 3-8.
    assert samples["ours"]["infer"] == pytest.approx([1.003, 1.005, 1.007])
    assert samples["peer"]["train"] == pytest.approx([20.004, 20.006, 20.008])
    assert len(loads) == 3
    assert after_warmup == {"ours": 200.0, "peer": 200.0}


def test_worker_protocol_keeps_stdout_for_its_answers(tmp_path):
    # A worker whose "work" prints to stdout: the print goes to stderr, the answers stay JSON.
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(BENCHMARKS)!r})
            import worker_protocol

            channel = worker_protocol.claim_stdout()

            def noisy():
                print("library chatter")
                return 0.25

            def broken():
                raise ValueError("no such thing")

            worker_protocol.serve(channel, {{"noisy": noisy, "broken": broken}}, {{"side": "x"}})
            """
        )
    )
    requests = "".join(json.dumps({"op": op}) + "\n" for op in ("noisy", "broken", "what", "quit"))
    done = subprocess.run(
        [sys.executable, str(script)], input=requests, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ready, noisy, broken, unknown, quit_ = (json.loads(line) for line in done.stdout.splitlines())
    assert ready["ready"] and ready["side"] == "x" and ready["hwm_mb"] > 0
    assert noisy["seconds"] == 0.25 and noisy["hwm_mb"] >= noisy["rss_mb"] > 0
    assert "no such thing" in broken["error"] and "unknown op" in unknown["error"]
    assert quit_ == {"op": "quit"}
    assert "library chatter" in done.stderr
