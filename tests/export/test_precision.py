"""The detector under float16 / bfloat16 policies and XLA, against its float32 self: the
overfitted scene model of conftest, its weights copied into a twin built under each policy."""

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import FasterRCNN, ProposalLayer
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.backbones import build_backbone
from tf_frcnn.export import export_saved_model, export_tflite, frozen_inference
from tf_frcnn.export.saved_model import OUTPUT_NAMES
from tf_frcnn.head import FastRCNNHead
from tf_frcnn.precision import compute_dtype, policy_scope
from tf_frcnn.rpn import RPNHead

# Largest differences allowed against float32 on the scene (bfloat16 keeps 8 significant
# bits, float16 11). Measured on an AVX-512 EPYC: objectness probabilities and detection
# scores differ by at most 0.005 (bfloat16) / 0.0005 (float16), box corners by 0.1 / 0.01 px
# of the 128 px scene; the bounds leave 4x (probability) and more (boxes) for other CPUs.
# Box corners within box_px pixels (on a 128 px scene; bfloat16 keeps 8 bits of mantissa, so
# ~0.4% of a coordinate): an IoU bound would fail on the scene's 4 px wide bar, where a 0.2 px
# shift already costs 5% of IoU.
TOLERANCE = {
    "bfloat16": {"probability": 0.02, "box_px": 1.0},
    "float16": {"probability": 0.002, "box_px": 0.25},
}


def twin_under(model, precision, num_classes):
    """A copy of conftest's model (same parts, same weights) built under ``precision``."""
    with policy_scope(precision):
        backbone = build_backbone("tiny")
        rpn_head = RPNHead(num_anchors=9, channels=64)
        head = FastRCNNHead(num_classes)
    twin = FasterRCNN(
        backbone.features,
        num_classes=num_classes,
        anchor_generator=AnchorGenerator(scales=(2, 4, 8)),
        rpn_head=rpn_head,
        proposal_layer=ProposalLayer(
            train_pre_nms=300, train_post_nms=64, test_pre_nms=200, test_post_nms=32, min_size=4.0
        ),
        detector_head=head,
    )
    twin({"images": tf.zeros([1, 64, 64, 3])})
    twin.set_weights(model.get_weights())
    return twin


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def policy_twin(request, trained_model, kit):
    return request.param, twin_under(trained_model, request.param, len(kit.CLASS_NAMES))


def _detections(model, scene):
    out = model({"images": tf.constant(scene[None], tf.float32)})
    count = int(out["num_detections"][0])
    return {
        name: out[name][0, :count].numpy()
        for name in ("detection_boxes", "detection_scores", "detection_classes")
    }


def assert_same_detections(reference, other, tolerance, scale=1.0):
    """Every reference detection scoring > 0.3 has one of its class in ``other`` whose box
    corners are within tolerance["box_px"] of its own (absolute pixels, or normalised boxes
    times ``scale``) and whose score is within tolerance["probability"]."""
    confident = reference["detection_scores"] > 0.3
    assert confident.sum() >= 2, reference
    for box, score, cls in zip(
        reference["detection_boxes"][confident],
        reference["detection_scores"][confident],
        reference["detection_classes"][confident],
    ):
        candidates = [
            (float(np.max(np.abs(box - b))) * scale, abs(score - s))
            for b, s, c in zip(
                other["detection_boxes"], other["detection_scores"], other["detection_classes"]
            )
            if c == cls
        ]
        assert candidates, (cls, other)
        box_gap, score_gap = min(candidates)
        assert box_gap <= tolerance["box_px"] and score_gap <= tolerance["probability"], (
            box,
            score,
            cls,
            min(candidates),
        )


def test_policy_forward_gives_the_float32_detections(policy_twin, trained_model, scene):
    precision, twin = policy_twin
    assert compute_dtype(twin) == precision
    assert twin.features.compute_dtype == precision
    assert all(w.dtype == "float32" for w in twin.weights)
    images = tf.constant(scene[None], tf.float32)
    _, logits, deltas, _ = twin.rpn_forward(images)
    _, ref_logits, ref_deltas, _ = trained_model.rpn_forward(images)
    assert logits.dtype == deltas.dtype == tf.float32
    gap = np.abs(tf.nn.softmax(logits).numpy() - tf.nn.softmax(ref_logits).numpy()).max()
    assert gap <= TOLERANCE[precision]["probability"]
    out = twin({"images": images})
    assert out["detection_boxes"].dtype == out["detection_scores"].dtype == tf.float32
    ref = _detections(trained_model, scene)
    mine = _detections(twin, scene)
    assert_same_detections(ref, mine, TOLERANCE[precision])


def test_saved_model_under_a_policy_takes_uint8_and_returns_float32_normalised_boxes(
    policy_twin, loaded, kit, scene, tmp_path
):
    precision, twin = policy_twin
    version = export_saved_model(
        twin, tmp_path / "policy", kit.CLASS_NAMES, min_size=kit.SIZE, max_size=kit.MAX_SIZE
    )
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.uint8
    out = serve(images=tf.constant(scene[None]))
    assert out["detection_boxes"].dtype == out["detection_scores"].dtype == tf.float32
    assert out["detection_classes"].dtype == out["num_detections"].dtype == tf.int32
    count = int(out["num_detections"][0])
    boxes = out["detection_boxes"][0, :count].numpy()
    assert np.all((boxes >= 0.0) & (boxes <= 1.0))
    kit.assert_finds_scene(
        boxes,
        out["detection_classes"][0, :count].numpy(),
        out["detection_scores"][0, :count].numpy(),
    )
    ref = loaded.signatures["serving_default"](images=tf.constant(scene[None]))

    def trimmed(outputs):
        n = int(outputs["num_detections"][0])
        return {name: outputs[name][0, :n].numpy() for name in OUTPUT_NAMES[:3]}

    # Normalised boxes, compared in pixels of the scene.
    assert_same_detections(trimmed(ref), trimmed(out), TOLERANCE[precision], scale=scene.shape[0])


def test_tflite_export_of_a_policy_model_is_a_one_line_error(policy_twin, kit, tmp_path):
    precision, twin = policy_twin
    with pytest.raises(ValueError, match=f"computes in {precision}.*float32"):
        export_tflite(
            twin,
            tmp_path / "m.tflite",
            height=kit.SIZE,
            width=kit.SIZE,
            min_size=kit.SIZE,
            max_size=kit.MAX_SIZE,
        )


def test_xla_frozen_inference_gives_the_plain_frozen_detections(trained_model, scene):
    images = tf.constant(scene[None], tf.float32)
    shape = tf.constant([scene.shape[:2]], tf.int32)
    size = scene.shape[:2]
    plain = frozen_inference(trained_model, *size)(images, shape)
    compiled = frozen_inference(trained_model, *size, jit_compile=True)(images, shape)
    count = int(plain["num_detections"][0])
    assert count > 0 and int(compiled["num_detections"][0]) == count
    np.testing.assert_array_equal(compiled["detection_classes"], plain["detection_classes"])
    np.testing.assert_allclose(compiled["detection_scores"], plain["detection_scores"], atol=1e-4)
    np.testing.assert_allclose(compiled["detection_boxes"], plain["detection_boxes"], atol=1e-2)
