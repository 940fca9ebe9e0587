"""The SavedModel export: layout, signatures, pre/post-processing, bad input, loading without
tf_frcnn, saved_model_cli, TFSMLayer, the documented REST requests, and load_predictor."""

import base64
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.export import (
    OUTPUT_NAMES,
    SERVING_BYTES,
    SERVING_DEFAULT,
    export_saved_model,
    load_predictor,
    read_labels,
    resolve_saved_model,
)
from tf_frcnn.export.saved_model import version_dirs
from tf_frcnn.rundir import write_labels

# The serving examples of docs/deployment.md, checked below against the signatures of a real
# export and against the page's text, so the documentation cannot drift from the model.
MODEL_NAME = "NAME"
DOCKER_COMMAND = (
    f'docker run --rm -p 8501:8501 -v "$PWD/saved_models/{MODEL_NAME}:/models/{MODEL_NAME}" '
    f"-e MODEL_NAME={MODEL_NAME} tensorflow/serving"
)
PREDICT_URL = f"http://localhost:8501/v1/models/{MODEL_NAME}:predict"
# One request body per signature: a 2 x 2 RGB image (red, green / blue, white) as uint8 values,
# and the same image as a base64 PNG.
_EXAMPLE_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVQI12P4z8DA8J+BkYHh////"
    "DAAe9gT9SMYJHwAAAABJRU5ErkJggg=="
)
_EXAMPLE_PIXELS = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]]
REST_EXAMPLES = {
    SERVING_DEFAULT: json.dumps({"instances": [{"images": _EXAMPLE_PIXELS}]}),
    SERVING_BYTES: json.dumps(
        {"signature_name": SERVING_BYTES, "instances": [{"images": {"b64": _EXAMPLE_PNG_B64}}]}
    ),
}

OUTPUT_SPECS = {
    "detection_boxes": ([None, 100, 4], tf.float32),
    "detection_scores": ([None, 100], tf.float32),
    "detection_classes": ([None, 100], tf.int32),
    "num_detections": ([None], tf.int32),
}


def numpy(outputs):
    return {name: value.numpy() for name, value in outputs.items()}


def encode_png(image):
    return tf.io.encode_png(image).numpy()


def clean_env(tmp_path):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


# -- layout ----------------------------------------------------------------------------------
def test_export_writes_next_numbered_version_with_labels(saved_model_base, saved_model_dir, kit):
    assert sorted(p.name for p in saved_model_base.iterdir()) == ["3", "4", "notes"]
    assert (saved_model_dir / "saved_model.pb").is_file()
    assert (saved_model_dir / "variables").is_dir()
    assert (saved_model_dir / "labels.txt").read_text() == "square\nbar\n"
    assert read_labels(saved_model_dir) == list(kit.CLASS_NAMES)
    assert read_labels(saved_model_base) == list(kit.CLASS_NAMES)
    # "3" holds no SavedModel; the newest loadable version is picked.
    assert resolve_saved_model(saved_model_base) == saved_model_dir
    assert resolve_saved_model(saved_model_dir) == saved_model_dir
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        resolve_saved_model(saved_model_base / "notes")


def test_read_labels_of_a_model_dir_and_a_tflite_file(tmp_path):
    write_labels(tmp_path, ["square", "bar"])
    assert read_labels(tmp_path) == read_labels(tmp_path / "model.tflite") == ["square", "bar"]
    with pytest.raises(FileNotFoundError, match="no labels file"):
        read_labels(tmp_path / "sub" / "model.tflite")


def test_weights_are_stored_once(trained_model, saved_model_dir):
    weights = sum(int(np.prod(v.shape)) * 4 for v in trained_model.weights)
    stored = sum(p.stat().st_size for p in (saved_model_dir / "variables").iterdir())
    assert weights <= stored < 1.1 * weights


def test_export_refuses_existing_version_and_wrong_labels(trained_model, saved_model_base, kit):
    with pytest.raises(FileExistsError, match="exists already"):
        export_saved_model(
            trained_model, saved_model_base, kit.CLASS_NAMES, min_size=128, max_size=256, version=4
        )
    with pytest.raises(ValueError, match="1 class names for a model of 2 classes"):
        export_saved_model(trained_model, saved_model_base, ["square"], min_size=128, max_size=256)
    assert not any(p.name.startswith(".export") for p in saved_model_base.iterdir())


# -- signatures ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, shape, dtype",
    [(SERVING_DEFAULT, [None, None, None, 3], tf.uint8), (SERVING_BYTES, [None], tf.string)],
)
def test_signature_specs(loaded, name, shape, dtype):
    signature = loaded.signatures[name]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].shape.as_list() == shape
    assert inputs["images"].dtype == dtype
    outputs = signature.structured_outputs
    assert sorted(outputs) == sorted(OUTPUT_NAMES)
    for output, (output_shape, output_dtype) in OUTPUT_SPECS.items():
        assert outputs[output].shape.as_list() == output_shape, output
        assert outputs[output].dtype == output_dtype, output


def test_serving_default_matches_the_model(trained_model, loaded, scene, kit):
    out = numpy(loaded.signatures[SERVING_DEFAULT](images=tf.constant(scene[None])))
    direct = trained_model({"images": tf.constant(scene[None], tf.float32)})
    count = int(out["num_detections"][0])
    assert count >= 2 and count == int(direct["num_detections"][0])
    np.testing.assert_allclose(
        out["detection_boxes"][0, :count],
        direct["detection_boxes"].numpy()[0, :count] / kit.SIZE,
        atol=1e-4,
    )
    np.testing.assert_allclose(out["detection_scores"][0], direct["detection_scores"][0], atol=1e-4)
    np.testing.assert_array_equal(out["detection_classes"][0], direct["detection_classes"][0])
    assert (out["detection_classes"][0, count:] == 0).all()
    assert (out["detection_boxes"][0, count:] == 0).all()
    kit.assert_finds_scene(
        out["detection_boxes"][0], out["detection_classes"][0], out["detection_scores"][0]
    )


@pytest.mark.parametrize("side, width", [(96, 96), (64, 96), (200, 400)])
def test_serving_default_resizes_and_normalises_to_the_original(loaded, kit, side, width):
    """Smaller images are scaled up to a shorter side of 128, 200 x 400 down to a longer side
    of 256 (200 x 400 -> 128 x 256); the boxes are relative to the image given."""
    images = np.stack([kit.draw_scene(side, width)] * 2)
    out = numpy(loaded.signatures[SERVING_DEFAULT](images=tf.constant(images)))
    assert out["detection_boxes"].shape == (2, 100, 4)
    np.testing.assert_array_equal(out["num_detections"][0], out["num_detections"][1])
    boxes = out["detection_boxes"]
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0
    kit.assert_finds_scene(
        boxes[0],
        out["detection_classes"][0],
        out["detection_scores"][0],
        kit.scene_truth(side, width),
    )


def test_serving_bytes_takes_jpeg_and_png_of_different_sizes(loaded, scene, kit):
    wide = kit.draw_scene(96, 144)
    images = [encode_png(scene), tf.io.encode_jpeg(wide, quality=95).numpy()]
    out = numpy(loaded.signatures[SERVING_BYTES](images=tf.constant(images)))
    assert out["detection_boxes"].shape == (2, 100, 4)
    for index, truth in enumerate([kit.scene_truth(), kit.scene_truth(96, 144)]):
        kit.assert_finds_scene(
            out["detection_boxes"][index],
            out["detection_classes"][index],
            out["detection_scores"][index],
            truth,
        )
    # One image alone: nothing padded, so exactly what serving_default gives.
    alone = numpy(loaded.signatures[SERVING_BYTES](images=tf.constant(images[:1])))
    uint8 = numpy(loaded.signatures[SERVING_DEFAULT](images=tf.constant(scene[None])))
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(alone[name], uint8[name], atol=1e-5, err_msg=name)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "images, message",
    [
        (tf.zeros([1, 8, 8, 3], tf.float32), "uint8"),
        (tf.zeros([8, 8, 3], tf.uint8), "not compatible"),
        (tf.zeros([1, 8, 8, 4], tf.uint8), "not compatible"),
    ],
)
def test_serving_default_rejects_wrong_dtype_and_rank(loaded, images, message):
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
        loaded.signatures[SERVING_DEFAULT](images=images)


def test_serving_bytes_rejects_undecodable_strings(loaded, scene):
    serve = loaded.signatures[SERVING_BYTES]
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"could not decode the image\(s\) at batch index\] \[1\]",
    ):
        serve(images=tf.constant([encode_png(scene), b"not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8|string"):
        serve(images=tf.constant(scene[None]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        serve(images=tf.constant([[encode_png(scene)]]))


# -- loading elsewhere -----------------------------------------------------------------------
def test_loads_and_runs_with_tensorflow_alone(saved_model_dir, scene, kit, tmp_path):
    """A fresh interpreter that has TensorFlow but cannot import tf_frcnn: no site processing
    (so no editable-install hook), no repository on sys.path, a copy of the export elsewhere."""
    copy = shutil.copytree(saved_model_dir, tmp_path / "model" / "1")
    np.save(tmp_path / "scene.npy", scene)
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.path.append({sysconfig.get_paths()["purelib"]!r})
        assert importlib.util.find_spec("tf_frcnn") is None, "tf_frcnn is importable"
        import numpy as np
        import tensorflow as tf
        model = tf.saved_model.load(sys.argv[1])
        image = np.load(sys.argv[2])
        out = model.signatures["serving_default"](images=tf.constant(image[None]))
        data = tf.io.encode_png(image)
        out_bytes = model.signatures["serving_bytes"](images=tf.stack([data]))
        assert "tf_frcnn" not in sys.modules
        print(json.dumps({{name: value.numpy().tolist() for name, value in out.items()}}))
        print(json.dumps({{name: value.numpy().tolist() for name, value in out_bytes.items()}}))
    """)
    result = subprocess.run(
        [sys.executable, "-S", "-I", "-c", script, str(copy), str(tmp_path / "scene.npy")],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    for line in lines[-2:]:
        out = {name: np.array(value) for name, value in json.loads(line).items()}
        assert out["num_detections"][0] >= 2
        kit.assert_finds_scene(
            out["detection_boxes"][0], out["detection_classes"][0], out["detection_scores"][0]
        )


def saved_model_cli():
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_shows_both_signatures_and_runs_npy(saved_model_dir, scene, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    show = subprocess.run(
        saved_model_cli() + ["show", "--dir", str(saved_model_dir), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert show.returncode == 0, show.stderr[-3000:]
    for name in (SERVING_DEFAULT, SERVING_BYTES):
        assert f"signature_def['{name}']" in show.stdout
    assert "dtype: DT_UINT8" in show.stdout and "dtype: DT_STRING" in show.stdout
    for output in OUTPUT_NAMES:
        assert f"outputs['{output}']" in show.stdout

    np.save(tmp_path / "x.npy", scene[None])
    run = subprocess.run(
        saved_model_cli()
        + [
            "run",
            "--dir",
            str(saved_model_dir),
            "--tag_set",
            "serve",
            "--signature_def",
            SERVING_DEFAULT,
            "--inputs",
            f"images={tmp_path / 'x.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert np.load(tmp_path / "out" / "detection_boxes.npy").shape == (1, 100, 4)
    assert np.load(tmp_path / "out" / "num_detections.npy")[0] >= 2


def test_tfsmlayer_serves_the_export(loaded, saved_model_dir, scene):
    layer = keras.layers.TFSMLayer(str(saved_model_dir), call_endpoint=SERVING_DEFAULT)
    images = keras.Input(shape=(None, None, 3), dtype="uint8", name="images")
    wrapper = keras.Model(images, layer(images))
    out = wrapper(tf.constant(scene[None]))
    expected = loaded.signatures[SERVING_DEFAULT](images=tf.constant(scene[None]))
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(np.asarray(out[name]), expected[name].numpy(), atol=1e-5)


# -- docs/deployment.md's TF Serving requests ------------------------------------------------------
def rest_to_tensors(body, loaded):
    """What TF Serving does with a row-format ("instances") REST body: returns the signature
    and its keyword tensors, checking names, values and dtypes against the signature."""
    body = json.loads(body)
    assert set(body) <= {"signature_name", "instances"}
    signature = loaded.signatures[body.get("signature_name", SERVING_DEFAULT)]
    _, specs = signature.structured_input_signature
    instances = body["instances"]
    tensors = {}
    for name, spec in specs.items():
        values = []
        for instance in instances:
            assert set(instance) == set(specs), (set(instance), set(specs))
            value = instance[name]
            if spec.dtype == tf.string:
                assert set(value) == {"b64"}, "binary strings go as {'b64': ...}"
                values.append(base64.b64decode(value["b64"], validate=True))
            else:
                array = np.asarray(value)
                assert array.dtype.kind == "i", "uint8 pixels are JSON integers"
                assert array.min() >= 0 and array.max() <= 255
                values.append(array.astype(spec.dtype.as_numpy_dtype))
        tensor = tf.constant(values, dtype=spec.dtype)
        assert spec.shape.is_compatible_with(tensor.shape), (spec, tensor.shape)
        tensors[name] = tensor
    return signature, tensors


@pytest.mark.parametrize("name", [SERVING_DEFAULT, SERVING_BYTES])
def test_documented_rest_requests_fit_the_signatures(loaded, name):
    assert set(REST_EXAMPLES) == {SERVING_DEFAULT, SERVING_BYTES}
    signature, tensors = rest_to_tensors(REST_EXAMPLES[name], loaded)
    assert signature.name == loaded.signatures[name].name
    out = signature(**tensors)
    assert out["detection_boxes"].shape == (1, 100, 4)


def test_deployment_docs_show_the_checked_requests():
    """docs/deployment.md's serving section is REST_EXAMPLES, DOCKER_COMMAND and PREDICT_URL
    verbatim, so what the tests above check is what users read."""
    root = pathlib.Path(__file__).resolve().parents[2]
    readme = (root / "docs" / "deployment.md").read_text()
    missing = [
        text
        for text in (DOCKER_COMMAND, PREDICT_URL, *REST_EXAMPLES.values())
        if text not in readme
    ]
    assert not missing, f"docs/deployment.md lacks these serving examples verbatim: {missing}"


def test_docker_command_serves_the_base_directory(saved_model_base):
    """What TF Serving would load from DOCKER_COMMAND, applied to a real export: the mounted
    host folder is an export's base directory, mounted at /models/<MODEL_NAME> (TF Serving's
    model base path), whose newest numbered version holds the SavedModel; the URL names the
    same model on the published port."""
    mount = re.search(r'-v "\$PWD/(\S+):(\S+)"', DOCKER_COMMAND)
    name = re.search(r"-e MODEL_NAME=(\S+)", DOCKER_COMMAND).group(1)
    port = re.search(r"-p (\d+):(\d+)", DOCKER_COMMAND)
    host, container = mount.groups()
    assert container == f"/models/{name}" and port.group(2) == "8501"
    assert pathlib.PurePosixPath(host).parts == ("saved_models", name)
    # The fixture exported into saved_models/shapes (with a "3" and a stray folder there).
    versions = version_dirs(saved_model_base)
    assert max(versions) == 4 and (versions[4] / "saved_model.pb").is_file()
    assert not (saved_model_base / "saved_model.pb").exists()  # a base, not a version dir
    assert PREDICT_URL == f"http://localhost:{port.group(1)}/v1/models/{name}:predict"


# -- load_predictor --------------------------------------------------------------------------
def test_load_predictor_from_base_or_version_dir(
    saved_model_base, saved_model_dir, loaded, scene, kit
):
    expected = numpy(loaded.signatures[SERVING_DEFAULT](images=tf.constant(scene[None])))
    count = int(expected["num_detections"][0])
    for path in (saved_model_base, saved_model_dir):
        predictor = load_predictor(path)
        assert predictor.path == saved_model_dir
        assert predictor.labels == list(kit.CLASS_NAMES)
        out = predictor(scene)
        assert out["num_detections"] == count
        assert out["detection_boxes"].shape == (count, 4)
        np.testing.assert_allclose(
            out["detection_boxes"], expected["detection_boxes"][0, :count], atol=1e-6
        )
        np.testing.assert_array_equal(
            out["detection_classes"], expected["detection_classes"][0, :count]
        )
    with pytest.raises(ValueError, match="uint8"):
        predictor(scene.astype(np.float32))
    with pytest.raises(FileNotFoundError):
        load_predictor(saved_model_base / "notes")


def test_export_version_directory_is_readable_like_mkdir_makes_it(saved_model_dir):
    # mkdtemp makes 0700; the rename must not leave TF Serving's user locked out.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(saved_model_dir).st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(os.stat(saved_model_dir / "labels.txt").st_mode) == 0o666 & ~umask
