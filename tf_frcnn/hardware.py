"""What the CPU offers for reduced precision: AMX tiles, AVX-512 bfloat16 and VNNI.

Read from the kernel's flags (``/proc/cpuinfo``, Linux); elsewhere every feature reads as
unknown. Nothing here changes a setting: bfloat16 is only ever on when a config asks for it
(on AVX2-only CPUs a bfloat16 convolution runs slower than float32; with AVX512_BF16 or AMX
it can run faster, see "Precision and compilation" in docs/benchmarks.md).
"""

import platform

# Feature -> the /proc/cpuinfo flags that show it (any of them).
FEATURES = {
    "AMX": ("amx_bf16", "amx_tile", "amx_int8"),
    "AVX512_BF16": ("avx512_bf16",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "AVX512F": ("avx512f",),
}


def _cpuinfo(path="/proc/cpuinfo"):
    """(model name, set of flags) of the first CPU in ``path``; (None, None) without it."""
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
            flags = set(value.split())
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
