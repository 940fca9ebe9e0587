"""Numeric precision of the network: Keras' mixed dtype policies.

``precision`` (config keys ``train.mixed_precision``, ``detection.mixed_precision``): False
(float32), "float16" or "bfloat16". Under a half type the backbone and heads compute in it
with float32 variables and cast their outputs back; anchors, boxes, proposals, ROI pooling,
sampling, NMS and the losses stay float32, so only the convolutions and fc layers run in half.
"""

import contextlib

import keras

POLICIES = {False: "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def policy_scope(precision):
    """Layers created inside take ``precision``'s policy (Keras reads the global policy when a
    layer is constructed; Keras Applications take no dtype argument, so the backbone can only
    be given one this way). The previous global policy is restored on exit."""
    if precision not in POLICIES:
        raise ValueError(f"precision {precision!r}: expected False, 'float16' or 'bfloat16'")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compute_dtype(model):
    """The dtype a ``FasterRCNN``'s network computes in: "float32", "float16" or "bfloat16"."""
    return model.rpn_head.compute_dtype
