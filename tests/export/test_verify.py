"""`tf_frcnn.export.verify` and the eval / serving agreement, on real JPEG files: the scene of
the fixture model drawn at a few sizes (odd ones too), JPEG-encoded with Pillow into a VOC
directory, read back by the project's VOC reader."""

import inspect
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_frcnn import load_config
from tf_frcnn.data import build_pipeline, voc_dataset
from tf_frcnn.export import export_saved_model
from tf_frcnn.export.saved_model import SERVING_BYTES, SERVING_DEFAULT
from tf_frcnn.export.tflite import calibration_inputs, export_tflite_variants
from tf_frcnn.export.verify import (
    KERAS,
    VERIFY_JSON,
    VERIFY_TABLE,
    VerifyError,
    _batch_mismatch,
    verify_export,
)

SMOKE = "configs/smoke.yaml"
# (side, width, height) of draw_scene: the scene at its size, widened, lengthened, enlarged.
SCENES = ((128, None, None), (128, 151, None), (128, None, 141), (160, None, None))
PAD = 256
DEFAULT_TOLERANCE = inspect.signature(verify_export).parameters["tolerance"].default
# AP here averages 2 classes x 10 IoU thresholds over 4 objects a class: one of the 8 boxes
# crossing one IoU threshold (int8 rounding of the box deltas) moves AP by up to
# 1 / (4 * 2 * 10) = 0.0125. The fixture's training is deterministic on one machine, but CPUs
# of other kinds train it to other weights: the int8 file lost 0.0043 (one crossing at most)
# on an EPYC with AVX-512 and 0.0376 (three) on one without. It may lose four, no more.
INT8_TOLERANCE = 4 * 0.0125


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, kit):
    root = tmp_path_factory.mktemp("voc_scenes")
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    ids = []
    for number, (side, width, height) in enumerate(SCENES):
        image = kit.draw_scene(side, width=width, height=height)
        image_id = f"scene{number}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        h, w = image.shape[:2]
        objects = "".join(
            f"<object><name>{kit.CLASS_NAMES[label - 1]}</name><difficult>0</difficult>"
            f"<bndbox><xmin>{x0 * w}</xmin><ymin>{y0 * h}</ymin><xmax>{x1 * w}</xmax>"
            f"<ymax>{y1 * h}</ymax></bndbox></object>"
            for (y0, x0, y1, x1), label in zip(kit.scene_truth(side, width, height), (1, 2))
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"{objects}</annotation>"
        )
        ids.append(image_id)
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def config(voc_root, kit):
    config = load_config(SMOKE)
    config.model.num_classes = len(kit.CLASS_NAMES)
    config.model.class_names = list(kit.CLASS_NAMES)
    d = config.data
    d.source, d.root, d.train_split, d.eval_split = "voc", str(voc_root), "train", "val"
    d.min_size, d.max_size, d.pad_to, d.batch_size = kit.SIZE, kit.MAX_SIZE, [PAD, PAD], 2
    return config


@pytest.fixture(scope="module")
def export_dir(trained_model, config, tmp_path_factory, kit):
    d = config.data
    return export_saved_model(
        trained_model,
        tmp_path_factory.mktemp("verify") / "scenes",
        kit.CLASS_NAMES,
        min_size=d.min_size,
        max_size=d.max_size,
        pad_to=d.pad_to,
    )


@pytest.fixture(scope="module")
def tflite_files(trained_model, config, export_dir, voc_root):
    d = config.data
    rule = (d.min_size, d.max_size)
    images = [np.asarray(Image.open(path)) for path in sorted(voc_root.glob("JPEGImages/*"))]
    written = export_tflite_variants(
        trained_model,
        export_dir,
        height=PAD,
        width=PAD,
        min_size=d.min_size,
        max_size=d.max_size,
        canvas=True,
        variants=["float32", "int8"],
        representative_images=calibration_inputs(images, PAD, PAD, rule),
    )
    return {name: entry for name, entry in written.items()}


def test_verify_passes_and_writes_its_report(trained_model, config, export_dir, tflite_files, kit):
    tflite = [(name, entry["path"], entry["resize"]) for name, entry in tflite_files.items()]
    # The float32 file is held to verify_export's default tolerance (measured: AP change 0.0,
    # its detections equal the Keras model's to 1e-5), int8 to INT8_TOLERANCE (measured
    # -0.0043 and -0.0376 on two CPU kinds).
    report = verify_export(
        trained_model, config, list(kit.CLASS_NAMES), export_dir, tflite, tolerance=INT8_TOLERANCE
    )
    assert report["ok"] and report["images"] == len(SCENES)
    assert report["tolerance"] == INT8_TOLERANCE
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert list(rows) == [
        KERAS,
        f"SavedModel {SERVING_DEFAULT}",
        f"SavedModel {SERVING_BYTES}",
        "TFLite float32",
        "TFLite int8",
    ]
    keras = rows[KERAS]
    # The fixture model finds most of its scenes (a real comparison, not one of empty outputs);
    # AP50 1.0 from the deterministic fixture training here, a margin for other CPUs.
    assert keras["AP50"] > 0.5, keras
    # Same decoder, resize and padding as the eval pipeline: the SavedModel scores what eval
    # scores (to float rounding), on JPEGs of odd sizes too.
    for name in (SERVING_DEFAULT, SERVING_BYTES):
        assert abs(rows[f"SavedModel {name}"]["AP"] - keras["AP"]) < 1e-3, rows
    for row in rows.values():
        assert row["ok"] and row["problem"] is None and row["ms_per_image"] > 0
    assert abs(rows["TFLite float32"]["AP_change"]) <= DEFAULT_TOLERANCE, rows
    assert rows["TFLite int8"]["bytes"] < 0.4 * rows["TFLite float32"]["bytes"]
    assert json.loads((export_dir / VERIFY_JSON).read_text()) == json.loads(json.dumps(report))
    table = (export_dir / VERIFY_TABLE).read_text()
    assert table.count("\n") == 2 + len(rows) and "| TFLite int8 | model_int8.tflite |" in table


def test_a_broken_artifact_fails_naming_it(trained_model, config, export_dir, tflite_files, kit):
    """The float32 file fed images at a third of the model's scale (the wrong preprocessing)."""
    path = tflite_files["float32"]["path"]
    tflite = [("float32", path, (kit.SIZE, kit.MAX_SIZE)), ("broken", path, (40, 80))]
    with pytest.raises(VerifyError) as error:
        verify_export(trained_model, config, list(kit.CLASS_NAMES), export_dir, tflite)
    message = str(error.value)
    assert message.startswith(f"TFLite broken ({path}): AP ") and "below the Keras" in message
    report = json.loads((export_dir / VERIFY_JSON).read_text())
    assert not report["ok"]
    assert [row["artifact"] for row in report["artifacts"] if not row["ok"]] == ["TFLite broken"]


def test_batch_of_n_equals_n_single_calls(loaded_scenes, voc_root):
    files = [path.read_bytes() for path in sorted(voc_root.glob("JPEGImages/*.jpg"))]
    serve = loaded_scenes.signatures[SERVING_BYTES]
    # Different sizes in one batch: each is padded to the same pad_to canvas as alone.
    assert _batch_mismatch(serve, np.array(files, dtype=object)) is None

    def depends_on_the_batch(images):
        outputs = dict(serve(images=images))
        outputs["detection_scores"] = outputs["detection_scores"] * (
            1.0 - 0.01 * tf.cast(tf.shape(images)[0] - 1, tf.float32)
        )
        return outputs

    message = _batch_mismatch(depends_on_the_batch, np.array(files, dtype=object))
    assert message and "detection_scores differ" in message


@pytest.fixture(scope="module")
def loaded_scenes(export_dir):
    return tf.saved_model.load(str(export_dir))


def test_serving_bytes_detects_what_the_eval_pipeline_does(
    trained_model, config, loaded_scenes, voc_root, kit
):
    """Per image, the signature's detections on the JPEG file equal the Keras model's on the
    eval pipeline's batch (Pillow decoding, resize, padding to pad_to). With TensorFlow's
    default JPEG decoder (fast IDCT, pixels up to 10 levels off Pillow's) the boxes move by
    5e-4, five times the tolerance; without the padding the export's AP moves too."""
    d = config.data
    batches = build_pipeline(
        voc_dataset(voc_root, "val", class_names=list(kit.CLASS_NAMES)),
        training=False,
        batch_size=1,
        min_size=d.min_size,
        max_size=d.max_size,
        pad_to=d.pad_to,
    )
    compared = 0
    for batch in batches:
        image_id = batch["image_id"][0].numpy().decode()
        data = (voc_root / "JPEGImages" / f"{image_id}.jpg").read_bytes()
        served = loaded_scenes.signatures[SERVING_BYTES](images=tf.constant([data]))
        eval_out = trained_model.infer(
            {"images": batch["images"], "image_shape": batch["image_shape"]}
        )
        count = int(eval_out["num_detections"][0])
        assert count >= 2 and int(served["num_detections"][0]) == count
        size = tf.cast(tf.tile(batch["image_shape"], [1, 2]), tf.float32)[:, None]
        np.testing.assert_allclose(
            served["detection_boxes"][0, :count],
            (eval_out["detection_boxes"] / size)[0, :count],
            atol=1e-4,
        )
        np.testing.assert_allclose(
            served["detection_scores"][0, :count],
            eval_out["detection_scores"][0, :count],
            atol=1e-4,
        )
        compared += 1
    assert compared == len(SCENES)
