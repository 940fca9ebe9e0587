"""Ours against torchvision's Faster R-CNN (the paper's VGG16 model), interleaved round by
round in one run, with the ratio of medians and its bootstrap interval.

    PYTHONPATH=. .venv/bin/python benchmarks/interleaved.py --size 300 500 --rounds 5

(``bash benchmarks/compare_torchvision.sh 300 500 5 2`` runs it so.)

Two long-lived workers are started, ours (``benchmarks/ours_worker.py``: the config's model as
``benchmarks/bench_inference.py`` builds and times it) and the peer's
(``benchmarks/peer_worker.py``: ``build`` of ../shared/bench/torchvision_vgg16_frcnn.py, timed
as that script times it), each with ``--threads`` threads, and asked over stdin/stdout
(``benchmarks/worker_protocol.py``) for one inference, then one training step, at a time. Each
round times an inference of each side, then a training step of each side; which side goes
first alternates from round to round, and only one worker runs at any time (the other waits
on its stdin). Drift of a shared machine therefore hits both sides alike, round by round.
The first ``--warmup`` rounds (tracing, oneDNN's first calls, allocator growth) are dropped.

Prints each round (stderr), then per side and kind the min / median / max and spread of the
timed rounds, the ratio of medians ours / peer with its percentile bootstrap interval (each
side's samples resampled independently: ``benchmarks/stats.py``), the ratio of each round
(the two sides back to back) with their median and its interval, the CPU model and flags, the
load average (start, end and at each round: it counts the worker running, about --threads),
and each worker's peak resident memory (VmHWM of /proc/PID/status, reported by the worker
after each call and at each step of its set-up, and getrusage's ru_maxrss of the process once
it has exited). The last line is one JSON object with all of it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import stats

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIDES = ("ours", "peer")
# Instruction sets that decide which kernels oneDNN (TF and torch) can use.
FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/voc07_vgg16.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[600, 1000], metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds timed and dropped")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds between two calls (a worker's idle threads stop spinning)",
    )
    parser.add_argument(
        "--ours-inference",
        choices=("frozen", "variables"),
        default="frozen",
        help="our inference as frozen (default) or reading variables (see ours_worker.py)",
    )
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument(
        "--peer-python", default=os.environ.get("PEER_PYTHON", "/tmp/peer-venv/bin/python")
    )
    parser.add_argument(
        "--peer-script",
        default=os.environ.get(
            "PEER_SCRIPT", os.path.join(ROOT, "..", "shared", "bench", "torchvision_vgg16_frcnn.py")
        ),
    )
    parser.add_argument("--level", type=float, default=0.95, help="the interval's level")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument("--log-dir", help="the workers' stderr (default: a new temporary dir)")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be positive and --warmup not negative")
    return args


class Worker:
    """One side's worker process; ``call(op)`` returns its answer (a dict)."""

    def __init__(self, side, command, log_path):
        self.side, self.log_path = side, log_path
        self.log = open(log_path, "w", encoding="utf-8")  # closed in close()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
            cwd=ROOT,
            env=env,
        )
        self.ready = None
        self.last = {}
        self.ru_maxrss_mb = None

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(
                f"{self.side} worker exited ({self.process.returncode}); its log, "
                f"{self.log_path}, ends:\n{self._log_tail()}"
            )
        return json.loads(line)

    def _log_tail(self, lines=15):
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return "".join(log.readlines()[-lines:])

    def wait_ready(self):
        self.ready = self._read()
        return self.ready

    def call(self, op):
        self.process.stdin.write(json.dumps({"op": op}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"{self.side} worker, {op}: {answer['error']}")
        self.last = answer
        return answer

    def close(self):
        """Asks the worker to quit, reaps it and keeps its ru_maxrss (kill if it hangs)."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self._read()
            except (OSError, RuntimeError, ValueError):
                self.process.kill()
            # wait4 gives this child's own resource usage (getrusage's RUSAGE_CHILDREN
            # would be the larger of the two workers).
            _, status, usage = os.wait4(self.process.pid, 0)
            self.process.returncode = os.waitstatus_to_exitcode(status)
            self.ru_maxrss_mb = usage.ru_maxrss / 1024  # kB on Linux
        self.log.close()


def cpu_info(path="/proc/cpuinfo"):
    """The CPU's model, its logical and usable CPUs, and which of ``FLAGS`` it has and lacks
    (plain Python: ``matmul_peak.py`` calls it from either framework's venv)."""
    info = {"model": None, "logical_cpus": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    flags = set()
    try:
        with open(path, encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and info["model"] is None:
                    info["model"] = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    info["flags"] = [flag for flag in FLAGS if flag in flags]
    info["absent"] = [flag for flag in FLAGS if flag not in flags]
    return info


def _memory_gb():
    """MemTotal and MemAvailable of /proc/meminfo, in GB (the workers need room: ours peaked
    at 13 GB at its first frozen inference in #26's runs)."""
    values = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = round(int(rest.split()[0]) / 1024**2, 1)  # kB
    except OSError:
        pass
    return {"total": values.get("MemTotal"), "available": values.get("MemAvailable")}


def _load():
    return [round(value, 2) for value in os.getloadavg()]


def _commands(args):
    size = [str(args.size[0]), str(args.size[1])]
    threads = ["--threads", str(args.threads)]
    ours = [args.ours_python, os.path.join(HERE, "ours_worker.py"), "--config", args.config]
    ours += ["--inference", args.ours_inference]
    peer = [args.peer_python, os.path.join(HERE, "peer_worker.py")]
    peer += ["--peer-script", os.path.abspath(args.peer_script)]
    return {"ours": ours + ["--size", *size, *threads], "peer": peer + ["--size", *size, *threads]}


def _rounds(workers, args, kinds):
    """Runs the rounds; returns ({side: {kind: [seconds of the timed rounds]}}, the load
    average at each round, each side's peak RSS (MB) once the warm-up rounds are done)."""
    samples = {side: {kind: [] for kind in kinds} for side in SIDES}
    loads, after_warmup = [], {}
    total = args.warmup + args.rounds
    for index in range(total):
        order = SIDES if index % 2 == 0 else SIDES[::-1]
        warm = index < args.warmup
        parts = []
        for kind in kinds:
            for side in order:
                time.sleep(args.pause)
                seconds = workers[side].call(kind)["seconds"]
                if not warm:
                    samples[side][kind].append(seconds)
                parts.append(f"{kind} {side} {seconds:.3f}s")
        load = _load()
        loads.append(load[0])
        label = "warm-up" if warm else "timed"
        print(
            f"round {index + 1}/{total} ({label}, {order[0]} first): {', '.join(parts)}; "
            f"load {load[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
        if index + 1 == args.warmup:
            after_warmup = {side: workers[side].last.get("hwm_mb") for side in SIDES}
    return samples, loads[args.warmup :], after_warmup


def _gb(mb):
    return f"{mb / 1024:.2f} GB" if mb is not None else "?"


def _print_summary(result):
    cpu, load = result["cpu"], result["load"]
    height, width = result["size"]
    print(
        f"interleaved: ours ({result['config']}) vs peer (torchvision VGG16 Faster R-CNN), "
        f"{height}x{width}, {result['threads']} threads, {result['rounds']} timed rounds after "
        f"{result['warmup']} warm-up; our inference {result['ours_inference']}"
    )
    print(
        f"cpu: {cpu['model']} ({cpu['logical_cpus']} logical CPUs, "
        f"{cpu.get('usable_cpus', '?')} usable); flags: {' '.join(cpu['flags']) or '-'}; "
        f"absent: {' '.join(cpu['absent']) or '-'}"
    )
    print(
        f"load average 1/5/15 min: start {load['start']}, end {load['end']}; 1 min at the "
        f"timed rounds {load['rounds']}"
    )
    memory = result["memory_gb_at_start"]
    print(f"memory at start: {memory['available']} GB available of {memory['total']} GB")
    for side in SIDES:
        print(f"{side}: {result['frameworks'][side]}")
    print(f"{'':18s} {'min':>8s} {'median':>8s} {'max':>8s} {'spread':>7s} {'MAD':>6s}")
    for kind in result["kinds"]:
        comparison = result[kind]
        for side in SIDES:
            s = comparison[side]
            print(
                f"{kind + ' ' + side:18s} {s['min']:8.3f} {s['median']:8.3f} {s['max']:8.3f} "
                f"{s['spread_pct']:6.1f}% {s['mad_pct']:5.1f}%"
            )
        low, high = comparison["interval"]
        level = f"{100 * comparison['level']:.0f}%"
        print(
            f"{kind} ratio ours/peer (medians): {comparison['ratio']:.3f}, "
            f"{level} bootstrap interval [{low:.3f}, {high:.3f}]"
        )
        paired = comparison["paired"]
        rounds = " ".join(f"{r:.3f}" for r in paired["ratios"])
        print(
            f"{kind} ratio of each round: {rounds}; median {paired['median']:.3f}, {level} "
            f"interval [{paired['interval'][0]:.3f}, {paired['interval'][1]:.3f}]"
        )
    for side in SIDES:
        memory = result["memory"][side]
        stages = ", ".join(f"{k} {_gb(v)}" for k, v in memory["hwm_mb_after_setup"].items())
        print(
            f"peak RSS {side}: {_gb(memory['peak_rss_mb'])} (wait4 ru_maxrss "
            f"{_gb(memory['ru_maxrss_mb'])}); after set-up steps: {stages}; after warm-up "
            f"{_gb(memory['hwm_mb_after_warmup'])}; RSS at the end {_gb(memory['final_rss_mb'])}"
        )


def main():
    args = _args()
    kinds = ("infer",) if args.no_train else ("infer", "train")
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="interleaved_")
    os.makedirs(log_dir, exist_ok=True)
    start_load, start_memory = _load(), _memory_gb()
    commands = _commands(args)
    workers = {}
    try:
        # Built at the same time (untimed); the rounds start once both are ready.
        for side in SIDES:
            workers[side] = Worker(side, commands[side], os.path.join(log_dir, f"{side}.log"))
        for side in SIDES:
            ready = workers[side].wait_ready()
            print(f"{side} worker ready (pid {ready['pid']})", file=sys.stderr, flush=True)
        samples, round_loads, after_warmup = _rounds(workers, args, kinds)
    finally:
        for worker in workers.values():
            worker.close()
    result = {
        "config": args.config,
        "size": list(args.size),
        "threads": args.threads,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "kinds": list(kinds),
        "ours_inference": args.ours_inference,
        "cpu": cpu_info(),
        "load": {"start": start_load, "end": _load(), "rounds": round_loads},
        "memory_gb_at_start": start_memory,
        "frameworks": {side: workers[side].ready["framework"] for side in SIDES},
        "samples": samples,
        "log_dir": log_dir,
    }
    for kind in kinds:
        result[kind] = stats.compare(
            samples["ours"][kind], samples["peer"][kind], args.level, args.resamples, args.seed
        )
    result["memory"] = {
        side: {
            "pid": workers[side].ready["pid"],
            "hwm_mb_after_setup": workers[side].ready.get("hwm_mb_after", {}),
            "hwm_mb_after_warmup": after_warmup.get(side),
            "peak_rss_mb": workers[side].last.get("hwm_mb"),
            "final_rss_mb": workers[side].last.get("rss_mb"),
            "ru_maxrss_mb": workers[side].ru_maxrss_mb,
        }
        for side in SIDES
    }
    # The keys compare_torchvision.sh printed before the interleaving (#26).
    result["infer_ratio_ours_over_peer"] = result["infer"]["ratio"]
    if "train" in result:
        result["train_ratio_ours_over_peer"] = result["train"]["ratio"]
    _print_summary(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
