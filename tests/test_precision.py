"""The precision keys, the policies build_model gives the parts, and CPU feature detection."""

import pytest

from tf_frcnn.config import ConfigError, config_from_dict
from tf_frcnn.hardware import (
    cpu_features,
    cpu_summary,
    onednn_avx512,
    onednn_default,
    onednn_enabled,
)
from tf_frcnn.model import build_model
from tf_frcnn_cli import main

SMOKE = {"model": {"backbone": "tiny", "num_classes": 2, "rpn_channels": 16, "fc_units": [16, 16]}}


@pytest.mark.parametrize(
    "value, meant",
    [
        (False, False),
        ("float32", False),
        (True, "float16"),
        ("float16", "float16"),
        ("bfloat16", "bfloat16"),
    ],
)
def test_precision_keys_accept_false_float16_bfloat16(value, meant):
    config = config_from_dict(
        {"train": {"mixed_precision": value}, "detection": {"mixed_precision": value}}
    )
    assert config.train.mixed_precision == meant
    assert config.detection.mixed_precision == meant


@pytest.mark.parametrize("key", ["train", "detection"])
@pytest.mark.parametrize("value", ["half", "fp16", 16, None])
def test_unknown_precision_is_a_one_line_error_naming_the_key(key, value):
    with pytest.raises(
        ConfigError,
        match=rf"'{key}\.mixed_precision' = .* must be false, "
        "float16 or bfloat16",
    ):
        config_from_dict({key: {"mixed_precision": value}})


def test_jit_compile_needs_the_default_strategy():
    with pytest.raises(ConfigError, match="'train.jit_compile'.*default"):
        config_from_dict({"train": {"jit_compile": True, "strategy": "mirrored"}})


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_policy_reaches_backbone_and_heads_only(precision):
    config = config_from_dict(SMOKE)
    model = build_model(config, precision=precision)
    for part in (
        model.features,
        model.rpn_head,
        model.detector_head,
        model.detector_head.cls_score,
    ):
        assert part.compute_dtype == precision and part.variable_dtype == "float32", part.name
    for part in (model.anchor_generator, model.proposal_layer, model.roi_pooling, model):
        assert part.compute_dtype == "float32", part.name
    assert type(model.roi_pooling).__name__ == "ROIPooling"
    import keras

    assert keras.config.dtype_policy().name == "float32"  # the scope was left
    config.train.jit_compile = True
    assert type(build_model(config).roi_pooling).__name__ == "ROIPoolingBuiltin"


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t: avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t: avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""


def test_cpu_features_from_cpuinfo(tmp_path):
    sapphire = tmp_path / "sapphire"
    sapphire.write_text(CPUINFO)
    features = cpu_features(sapphire)
    assert features["AMX"] and features["AVX512_BF16"] and features["VNNI"]
    assert cpu_summary(sapphire) == (
        "Intel(R) Xeon(R) Platinum 8480+: AMX yes, AVX512_BF16 yes, VNNI yes, AVX512F yes"
    )
    avx2 = tmp_path / "avx2"
    avx2.write_text("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n")
    assert cpu_features(avx2) == {
        "AMX": False,
        "AVX512_BF16": False,
        "VNNI": False,
        "AVX512F": False,
        "flags": [],
    }
    unknown = cpu_features(tmp_path / "missing")
    assert unknown["AMX"] is None and "unknown" in cpu_summary(tmp_path / "missing")


def test_onednn_default_is_tfs_rule(tmp_path):
    sapphire, avx512, avx2 = tmp_path / "sapphire", tmp_path / "avx512", tmp_path / "avx2"
    sapphire.write_text(CPUINFO)
    # AVX-512 without VNNI, BF16 or AMX (Skylake-SP): TF leaves oneDNN off.
    avx512.write_text("model name\t: Xeon\nflags\t\t: fpu avx2 avx512f avx512bw avx512vl\n")
    avx2.write_text("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n")
    assert onednn_default(sapphire, environ={}, system="linux")
    assert not onednn_default(avx512, environ={}, system="linux")
    assert not onednn_default(avx2, environ={}, system="linux")
    assert not onednn_default(tmp_path / "missing", environ={}, system="linux")
    assert not onednn_default(sapphire, environ={}, system="win32")
    # TF_ENABLE_ONEDNN_OPTS overrides the CPU either way.
    assert onednn_default(avx2, environ={"TF_ENABLE_ONEDNN_OPTS": "1"}, system="linux")
    assert not onednn_default(sapphire, environ={"TF_ENABLE_ONEDNN_OPTS": "0"}, system="linux")
    assert onednn_default(avx2, environ={"TF_ENABLE_ONEDNN_OPTS": "true"}, system="linux")


def test_onednn_avx512_reads_the_cpu_and_onednns_isa_cap(tmp_path):
    sapphire, avx2 = tmp_path / "sapphire", tmp_path / "avx2"
    sapphire.write_text(CPUINFO)
    avx2.write_text("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n")
    assert onednn_avx512(sapphire, environ={})
    assert not onednn_avx512(avx2, environ={})
    assert not onednn_avx512(tmp_path / "missing", environ={})
    assert not onednn_avx512(sapphire, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not onednn_avx512(sapphire, environ={"DNNL_MAX_CPU_ISA": "avx2_vnni"})
    assert onednn_avx512(sapphire, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})
    assert onednn_avx512(sapphire, environ={"ONEDNN_MAX_CPU_ISA": "ALL"})
    # A cap cannot add what the CPU lacks.
    assert not onednn_avx512(avx2, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})


def test_onednn_enabled_agrees_with_tf_on_this_machine():
    # TF's own answer and our reading of its rule must agree here, whatever the CPU.
    assert onednn_enabled() == onednn_default()


def test_version_prints_versions_and_cpu_flags(capsys):
    import keras
    import tensorflow as tf

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("tf-frcnn ")
    assert f"TensorFlow {tf.__version__}, Keras {keras.__version__}" in out
    assert "AMX" in out and "AVX512_BF16" in out and "VNNI" in out
