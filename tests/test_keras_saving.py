"""The Keras way of saving: ``model.save("x.keras")`` and ``keras.models.load_model`` in a
fresh process that imported nothing but ``tf_frcnn``, for every backbone."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.config import config_from_dict
from tf_frcnn.model import build_model
from tf_frcnn.rundir import KERAS_MODEL, load_trained_model, write_config

BACKBONES = ("tiny", "mobilenet", "resnet50", "vgg16")
LOAD = """
import sys
import numpy as np
import tf_frcnn
import keras
for path in sys.argv[1:]:
    expected = np.load(path + ".npz")
    model = keras.models.load_model(path)
    assert type(model).__name__ == "FasterRCNN", type(model)
    out = model({"images": expected["images"]})
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
                "proposals"):
        np.testing.assert_allclose(np.asarray(out[key]), expected[key], rtol=1e-4, atol=1e-3,
                                   err_msg=f"{path}: {key}")
    print("loaded", path)
"""


def small_config(backbone):
    return config_from_dict(
        {
            "model": {
                "backbone": backbone,
                "num_classes": 3,
                "rpn_channels": 32,
                "fc_units": [32, 32],
                "anchor_scales": [2, 4, 8],
            },
            "rpn": {"test_pre_nms": 300, "test_post_nms": 24},
            "detection": {"score_threshold": 0.0},
        }
    )


def test_every_backbone_round_trips_through_a_keras_file(tmp_path):
    images = tf.random.uniform([1, 96, 128, 3], maxval=255.0, seed=3).numpy()
    paths = []
    for backbone in BACKBONES:
        keras.utils.set_random_seed(0)
        model = build_model(small_config(backbone))
        out = model({"images": images})
        assert int(out["num_detections"][0]) > 0, backbone
        path = str(tmp_path / f"{backbone}.keras")
        model.save(path)
        np.savez(
            path + ".npz", images=images, **{key: np.asarray(value) for key, value in out.items()}
        )
        paths.append(path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", LOAD, *paths], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("loaded") == len(BACKBONES)


def test_load_trained_model_reads_the_model_dirs_keras_file(tmp_path):
    config = small_config("tiny")
    write_config(str(tmp_path), config)
    model = build_model(config)
    images = tf.random.uniform([1, 64, 96, 3], maxval=255.0, seed=4)
    expected = model({"images": images})
    model.save(str(tmp_path / KERAS_MODEL))
    loaded, loaded_config = load_trained_model(str(tmp_path), weights="keras")
    assert loaded_config.model.backbone == "tiny"
    out = loaded({"images": images})
    np.testing.assert_allclose(out["detection_boxes"], expected["detection_boxes"], atol=1e-4)
    with pytest.raises(ValueError, match="precision"):
        load_trained_model(str(tmp_path), weights="keras", precision="bfloat16")
