"""What the CPU offers for reduced precision (AMX tiles, AVX-512 bfloat16 and VNNI), and
whether TF runs its oneDNN kernels on it.

Read from the kernel's flags (``/proc/cpuinfo``, Linux); elsewhere every feature reads as
unknown. Nothing here changes a setting: bfloat16 is only ever on when a config asks for it
(on AVX2-only CPUs a bfloat16 convolution runs slower than float32; with AVX512_BF16 or AMX
it can run faster, see "Precision and compilation" in docs/benchmarks.md).
"""

import functools
import os
import platform
import sys

try:
    # TF's own answer (util/port.cc, IsMklEnabled). TF has no public API for it; where this
    # private module is missing, onednn_enabled() applies TF's documented rule itself.
    from tensorflow.python.util._pywrap_util_port import IsMklEnabled as _tf_onednn_enabled
except ImportError:  # pragma: no cover - depends on the TF build
    _tf_onednn_enabled = None

# Feature -> the /proc/cpuinfo flags that show it (any of them).
FEATURES = {
    "AMX": ("amx_bf16", "amx_tile", "amx_int8"),
    "AVX512_BF16": ("avx512_bf16",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "AVX512F": ("avx512f",),
}

# The flags for which TF 2.9+ turns its oneDNN CPU kernels on by default on Linux x86: exactly
# the reduced-precision features above (AVX512_VNNI, AVX_VNNI, AVX512_BF16, AMX).
ONEDNN_DEFAULT_FLAGS = FEATURES["VNNI"] + FEATURES["AVX512_BF16"] + FEATURES["AMX"]


@functools.cache
def _cpuinfo(path="/proc/cpuinfo"):
    """(model name, frozenset of flags) of the first CPU in ``path``; (None, None) without it. Read
    once per path: the training layers ask on every call they trace."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None, None
    name, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return name, flags


def cpu_features(path="/proc/cpuinfo"):
    """{feature: True | False | None (unknown)} for each of ``FEATURES``, and the flags that
    matched under "flags": e.g. {"AMX": False, "AVX512_BF16": True, "VNNI": True,
    "AVX512F": True, "flags": ["avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni"]}."""
    _, flags = _cpuinfo(path)
    if flags is None:
        return {**{feature: None for feature in FEATURES}, "flags": []}
    found = {feature: any(flag in flags for flag in names) for feature, names in FEATURES.items()}
    matched = sorted(flag for names in FEATURES.values() for flag in names if flag in flags)
    return {**found, "flags": matched}


def cpu_summary(path="/proc/cpuinfo"):
    """One line: the CPU's name and its AMX / AVX512_BF16 / VNNI / AVX512F support, e.g.
    "AMD EPYC: AMX no, AVX512_BF16 yes, VNNI yes, AVX512F yes"."""
    name, _ = _cpuinfo(path)
    features = cpu_features(path)
    words = {True: "yes", False: "no", None: "unknown"}
    listed = ", ".join(f"{feature} {words[features[feature]]}" for feature in FEATURES)
    return f"{name or platform.processor() or platform.machine()}: {listed}"


def onednn_default(path="/proc/cpuinfo", environ=None, system=None):
    """TF's rule for its oneDNN CPU kernels, for when TF cannot be asked: on (Linux only) for
    CPUs with any of ``ONEDNN_DEFAULT_FLAGS``; ``TF_ENABLE_ONEDNN_OPTS`` set to 0/1 (or
    false/true) overrides it either way."""
    environ = os.environ if environ is None else environ
    value = environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    if (system or sys.platform) != "linux":
        return False
    _, flags = _cpuinfo(path)
    return bool(flags) and any(flag in flags for flag in ONEDNN_DEFAULT_FLAGS)


# oneDNN's own names for the ISAs ONEDNN_MAX_CPU_ISA may cap it at that include AVX-512.
_AVX512_ISAS = ("AVX512", "AVX10", "AMX", "ALL")
# What oneDNN's avx512_core kernels need.
_AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


def onednn_avx512(path="/proc/cpuinfo", environ=None):
    """Whether oneDNN may run AVX-512 kernels here: the CPU has AVX-512 (F, BW, VL, DQ) and
    ``ONEDNN_MAX_CPU_ISA`` (or its old name ``DNNL_MAX_CPU_ISA``), if set, does not cap
    oneDNN below it (e.g. ``AVX2``)."""
    environ = os.environ if environ is None else environ
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or ""
    if cap.strip() and not cap.strip().upper().startswith(_AVX512_ISAS):
        return False
    _, flags = _cpuinfo(path)
    return bool(flags) and all(flag in flags for flag in _AVX512_CORE_FLAGS)


def onednn_enabled():
    """Whether TF runs its oneDNN kernels (convs, matmuls) in this process: TF's own answer,
    else ``onednn_default()``. Without them TF's CPU convs and their gradients are Eigen's."""
    if _tf_onednn_enabled is not None:
        return bool(_tf_onednn_enabled())
    return onednn_default()  # pragma: no cover - depends on the TF build
