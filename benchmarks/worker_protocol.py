"""The line protocol of ``benchmarks/interleaved.py``'s workers (standard library only: the
peer's worker runs in the peer's own venv).

The driver writes one JSON object per line to a worker's stdin, ``{"op": NAME}``; the worker
answers one JSON line on its stdout: ``{"op", "seconds", "rss_mb", "hwm_mb"}`` (the time of
that one call, measured in the worker around the call alone; its resident and peak resident
memory right after), ``{"op", "error"}`` if the call raised, and ``{"op": "quit"}`` before it
exits. Its first line, once the model is built, is ``{"ready": true, "pid", ...}``.

Anything a library prints to stdout goes to stderr instead (file descriptor 1 is pointed at
2 before the model is built), so the protocol's channel carries only the protocol.
"""

import json
import os
import resource
import sys
import time
import traceback


def claim_stdout():
    """A line-buffered file on the process's original stdout, for the protocol; fd 1 (and
    ``sys.stdout``) then write to stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def memory_mb():
    """``(rss_mb, hwm_mb)``: resident and peak resident memory of this process, from
    /proc/self/status (VmRSS, VmHWM); elsewhere the peak is getrusage's ru_maxrss."""
    values = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024  # kB
    except OSError:
        pass
    peak = values.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return values.get("VmRSS"), peak


def serve(channel, handlers, ready):
    """Answers requests from stdin until ``quit`` or end of input. ``handlers`` maps an op
    name to a function of no arguments returning the seconds it timed; ``ready`` (a dict) is
    sent first."""

    def send(message):
        channel.write(json.dumps(message) + "\n")

    rss, hwm = memory_mb()
    send({"ready": True, "pid": os.getpid(), "rss_mb": rss, "hwm_mb": hwm, **ready})
    for line in sys.stdin:
        if not line.strip():
            continue
        op = json.loads(line).get("op")
        if op == "quit":
            send({"op": "quit"})
            return
        handler = handlers.get(op)
        if handler is None:
            send({"op": op, "error": f"unknown op {op!r}; known: {sorted(handlers)}"})
            continue
        try:
            seconds = handler()
        except Exception:  # reported to the driver, which stops
            traceback.print_exc()
            send({"op": op, "error": traceback.format_exc(limit=3)})
            continue
        rss, hwm = memory_mb()
        send({"op": op, "seconds": seconds, "rss_mb": rss, "hwm_mb": hwm})


def timed(fn):
    """Seconds ``fn()`` took (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
