"""Crash-safety benchmark: the smoke training SIGKILLed N times (10 by default) at seeded
random points, resumed after each kill, against one uninterrupted run.

    python benchmarks/reliability_kill.py [--kills 10] [--seed 0] [--nondeterministic]

A kill point is (checkpointed steps over the schedule, delay): once ``state.json`` shows
that many steps done, wait the delay, then SIGKILL. Every checkpoint level gets one kill a
few steps after it (mid-step, mid-checkpoint, between stages); the remaining kills repeat
a level, which the resumed process has already reached when it starts, so they land in
its start-up (import, model build, tracing). Both runs set
``TF_DETERMINISTIC_OPS=1`` unless ``--nondeterministic`` (see
tests/reliability/fault_injection.py), and the summary says whether the final weights are
bit-identical and whether every step's loss matches.
"""

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_harness():
    spec = importlib.util.spec_from_file_location(
        "fault_injection", os.path.join(ROOT, "tests", "reliability", "fault_injection.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kill_points(count, seed, total_steps, every):
    """``count`` (level, delay) kill points: every checkpoint level once, with a short delay
    (0-30 ms, about one step of the smoke config, so the kill lands in the step or the
    checkpoint after that level), and the rest repeating a random level with a long delay
    (1-8 s after the resumed process starts: import, model build, tracing)."""
    rng = random.Random(seed)
    levels = list(range(0, total_steps, every))[:count]
    repeats = [rng.choice(levels) for _ in range(count - len(levels))]
    points = [(level, round(rng.uniform(0.0, 0.03), 3)) for level in levels]
    points += [(level, round(rng.uniform(1.0, 8.0), 2)) for level in repeats]
    return sorted(points, key=lambda point: (point[0], point[1] >= 1.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        help="leave TF_DETERMINISTIC_OPS unset in both runs",
    )
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    harness = load_harness()
    work = args.workdir or tempfile.mkdtemp(prefix="reliability-kill-")
    data_dir = os.path.join(work, "tfds")
    reference, killed = os.path.join(work, "reference"), os.path.join(work, "killed")
    deterministic = not args.nondeterministic

    from tf_frcnn import load_config

    config = load_config(harness.SMOKE)
    steps = harness.stage_steps()
    points = kill_points(args.kills, args.seed, sum(steps.values()), config.train.checkpoint_every)
    print(
        f"smoke config: stages {steps}, checkpoint every {config.train.checkpoint_every}; "
        f"work dir {work}"
    )
    harness.generate_data(data_dir)

    timing = {}

    def uninterrupted():
        start = time.monotonic()
        timing["code"] = harness.run_uninterrupted(
            reference, data_dir, timeout_s=1800, deterministic=deterministic
        )
        timing["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=uninterrupted)
    thread.start()
    start = time.monotonic()
    history = harness.run_with_kills(
        killed, data_dir, points, timeout_s=3000, deterministic=deterministic
    )
    killed_seconds = time.monotonic() - start
    thread.join()

    print("\n| # | kill point (steps, delay s) | started at | killed at | signal | process s |")
    print("|---|---|---|---|---|---|")
    for index, row in enumerate(history, 1):
        point = "-" if row["level"] is None else f"{row['level']}, {row['delay_s']}"
        outcome = "SIGKILL" if row["killed"] else f"exit {row['returncode']}"
        print(
            f"| {index} | {point} | {row['start']} | {row['at']} | {outcome} | "
            f"{row['seconds']:.1f} |"
        )

    state = harness.read_state(killed)
    finished = state["finished_stages"] if state else []
    identical, worst, count = harness.compare_weights(
        os.path.join(reference, "final.weights.h5"), os.path.join(killed, "final.weights.h5")
    )
    losses_equal = harness.loss_history(reference) == harness.loss_history(killed)
    kills = sum(row["killed"] for row in history)
    progressed = sum(row["killed"] and row["end"] > row["start"] for row in history)
    print(
        f"\nkills: {kills} of {len(points)} planned ({progressed} after some progress, "
        f"{kills - progressed} during start-up or before the next checkpoint)"
    )
    print(f"resumed run: exit {history[-1]['returncode']}, finished stages {finished}")
    print(
        f"final weights vs uninterrupted: {'bit-identical' if identical else 'DIFFERENT'} "
        f"over {count} tensors (max |diff| {worst:.3g}); every step's loss equal: "
        f"{losses_equal}"
    )
    print(
        f"wall: uninterrupted {timing.get('seconds', float('nan')):.0f} s, "
        f"killed+resumed {killed_seconds:.0f} s (the two ran side by side on the same CPUs)"
    )
    ok = (
        timing.get("code") == 0
        and history[-1]["returncode"] == 0
        and finished == list(harness.STAGES)
        and (identical or not deterministic)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
