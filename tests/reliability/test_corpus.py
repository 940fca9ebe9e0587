"""The bad-input corpus: every kind of broken input across configs, model directories,
datasets, the command line, the serving signatures and ``predict``, each with its
documented outcome. Everything is generated here, in tmp dirs; nothing is stored.

``CORPUS`` is the table (``benchmarks/reliability_corpus_table.py`` prints it as Markdown
for docs/bad-input.md). A row either has a check here, or names the test elsewhere that already
covers it (the reader unit tests in tests/data, the CLI tests, the export tests); for
those the check is that the named test still exists, so the table cannot drift. A row
whose ``gap`` is set documents an outcome the code does not give yet: its check is
``xfail(strict=True)`` and ``gap`` says what change makes it pass (then drop the gap).

Documented outcomes:
- error: the program (or reader) stops with ONE line naming the cause (key, file, id), no
  traceback, exit status 2 for the CLI; for config and model-dir errors before any
  training starts.
- skip: the item is skipped or repaired with a ``DataWarning`` naming it; the rest is used.
"""

import ast
import collections
import errno
import json
import os
import pathlib

import numpy as np
import pytest
import yaml
from PIL import Image

from tf_frcnn.data import DataError, DataWarning, coco_dataset, voc_dataset
from tf_frcnn_cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

Case = collections.namedtuple("Case", "kind surface input outcome check gap", defaults=(None,))


# -- helpers --------------------------------------------------------------------------------
class Env:
    """What a check gets: a tmp dir, pytest's capsys and monkeypatch, and lazy fixtures."""

    def __init__(self, request, tmp_path, capsys, monkeypatch):
        self.request, self.tmp, self.capsys, self.monkeypatch = (
            request,
            tmp_path,
            capsys,
            monkeypatch,
        )

    def fixture(self, name):
        return self.request.getfixturevalue(name)

    def write(self, name, text):
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def cli_error(self, argv, *needles):
        """Run ``tf-frcnn argv`` in-process: exit 2 and one stderr line holding every needle."""
        self.capsys.readouterr()
        code = main(argv)
        err = self.capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, err
        assert len(lines) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in lines[0], lines[0]
        return lines[0]

    def train_error(self, config, *needles, data_dir=None, reaches_trainer=False):
        """``tf-frcnn train`` on a config (YAML text, or a dict merged into the smoke
        config): a one-line error and nothing trained. Unless ``reaches_trainer``, the
        error must come before the trainer is even called."""
        if isinstance(config, dict):
            config = yaml.safe_dump(
                _merged(yaml.safe_load(pathlib.Path(SMOKE).read_text()), config)
            )
        path = self.write("bad.yaml", config)
        if not reaches_trainer:
            import tf_frcnn.cli

            def train(*args, **kwargs):
                raise AssertionError("the config was accepted and training started")

            # Where the command calls it.
            self.monkeypatch.setattr(tf_frcnn.cli, "train", train)
        model_dir = self.tmp / "model"
        argv = [
            "train",
            "--config",
            path,
            "--model-dir",
            str(model_dir),
            "--data-dir",
            data_dir or str(self.tmp / "tfds"),
        ]
        line = self.cli_error(argv, *needles)
        assert not (model_dir / "state.json").exists()
        return line


def _merged(base, override):
    for key, value in override.items():
        base[key] = _merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return base


def jpeg(path, size=(40, 30)):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (30, 60, 200)).save(path, format="JPEG")
    return path


def voc_dir(root, ids=("a",), xml=None):
    """A VOC directory with one cat box per image; ``xml`` overrides every annotation."""
    root = pathlib.Path(root)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    for image_id in ids:
        jpeg(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(
            xml
            if xml is not None
            else (
                "<annotation><size><width>40</width><height>30</height></size><object><name>cat"
                "</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax>"
                "</bndbox></object></annotation>"
            )
        )
    return root


def voc_split(root, name, ids):
    (pathlib.Path(root) / "ImageSets" / "Main" / f"{name}.txt").write_text(
        "".join(f"{i}\n" for i in ids)
    )
    return name


def coco_files(tmp, images, annotations=()):
    image_dir = tmp / "coco" / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    jpeg(image_dir / "ok.jpg")
    content = {
        "images": list(images),
        "annotations": list(annotations),
        "categories": [{"id": 1, "name": "cat"}],
    }
    path = tmp / "coco" / "instances.json"
    path.write_text(json.dumps(content))
    return path, image_dir


def data_error(call, *needles):
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# -- checks: configs ------------------------------------------------------------------------
def fg_fraction_above_one(env):
    env.train_error({"roi": {"fg_fraction": 1.5}}, "roi.fg_fraction", "bad.yaml")


def negative_image_size(env):
    env.train_error({"data": {"min_size": -600}}, "data.min_size")


def negative_proposal_min_size(env):
    env.train_error({"rpn": {"min_size": -16}}, "rpn.min_size")


def negative_anchor_size(env):
    env.train_error({"model": {"anchor_base_size": -16}}, "model.anchor_base_size")


def wrong_value_type(env):
    env.train_error({"data": {"batch_size": "two"}}, "data.batch_size")


def unknown_choice(env):
    env.train_error({"data": {"source": "imagenet"}}, "data.source")


def yaml_python_tag(env):
    pwned = env.tmp / "pwned"
    env.train_error(
        f'model: !!python/object/apply:os.system ["touch {pwned}"]\n', "invalid YAML", "bad.yaml"
    )
    assert not pwned.exists()


def yaml_not_a_mapping(env):
    env.train_error("- model\n- rpn\n", "top level must be a mapping")


def num_classes_mismatch(env):
    env.train_error(
        {"model": {"num_classes": 3}},
        "model.num_classes",
        "4 classes",
        data_dir=env.fixture("smoke_data_dir"),
        reaches_trainer=True,
    )


# -- checks: model directories ---------------------------------------------------------------
def model_dir_is_a_file(env):
    model_dir = env.write("model", "not a directory")
    env.cli_error(
        ["train", "--config", SMOKE, "--model-dir", model_dir],
        f"model dir {model_dir} is not writable",
    )


def model_dir_unwritable(env):
    if os.geteuid() != 0:
        parent = env.tmp / "readonly"
        parent.mkdir()
        parent.chmod(0o500)
        model_dir = str(parent / "model")
    else:
        # chmod does not stop root: a path under a regular file cannot be written by anyone.
        model_dir = os.path.join(env.write("plainfile", "x"), "model")
    try:
        env.cli_error(
            ["train", "--config", SMOKE, "--model-dir", model_dir],
            f"model dir {model_dir} is not writable",
        )
    finally:
        if os.geteuid() != 0:
            parent.chmod(0o700)


def disk_full(env):
    from tf_frcnn import rundir as state

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    env.monkeypatch.setattr(state, "atomic_write_text", full)
    model_dir = str(env.tmp / "model")
    env.cli_error(
        ["train", "--config", SMOKE, "--model-dir", model_dir, "--data-dir", str(env.tmp / "tfds")],
        "No space left on device",
        model_dir,
    )


def damaged_state(env):
    model_dir = env.tmp / "model"
    model_dir.mkdir()
    (model_dir / "state.json").write_text('{"schedule": "alternat')
    env.cli_error(
        [
            "train",
            "--config",
            SMOKE,
            "--model-dir",
            str(model_dir),
            "--data-dir",
            str(env.tmp / "tfds"),
            "--resume",
        ],
        str(model_dir / "state.json"),
        "damaged",
    )


def finished_without_final_weights(env):
    model_dir = env.fixture("trained_dir")
    os.remove(model_dir / "final.weights.h5")
    assert (
        main(
            [
                "train",
                "--config",
                SMOKE,
                "--model-dir",
                str(model_dir),
                "--data-dir",
                env.fixture("smoke_data_dir"),
                "--resume",
            ]
        )
        == 0
    )
    assert (model_dir / "final.weights.h5").exists()


def torn_loss_log(env):
    from tf_frcnn.rundir import read_history

    log_dir = env.tmp / "logs"
    log_dir.mkdir()
    (log_dir / "rpn1.losses.jsonl").write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "lo'  # killed in the middle of a flush
        '{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.0}\n'
    )  # the resumed run's rows
    assert read_history(str(log_dir), "rpn1") == [(1, 2.0), (2, 1.5), (3, 1.0)]


# -- checks: datasets -----------------------------------------------------------------------
def voc_id_climbing_out(env):
    root = voc_dir(env.tmp / "VOC")
    split = voc_split(root, "evil", ["a", "../../etc/passwd"])
    data_error(
        lambda: voc_dataset(root, split, class_names=["cat"]),
        "'../../etc/passwd'",
        "'evil'",
        "outside",
    )


def voc_id_climbing_out_cli(env):
    root = voc_dir(env.tmp / "VOC")
    voc_split(root, "evil", ["../JPEGImages/a"])
    env.train_error(
        {
            "model": {"num_classes": 1, "class_names": ["cat"]},
            "data": {"source": "voc", "root": str(root), "train_split": "evil"},
        },
        "'../JPEGImages/a'",
        "outside",
        reaches_trainer=True,
    )


def voc_absolute_id(env):
    root = voc_dir(env.tmp / "VOC")
    outside = voc_dir(env.tmp / "elsewhere", ids=("b",))
    split = voc_split(root, "abs", [str(outside / "Annotations" / "b")])
    data_error(lambda: voc_dataset(root, split, class_names=["cat"]), "outside")


def coco_file_name_climbing_out(env):
    path, image_dir = coco_files(env.tmp, [{"id": 1, "file_name": "../outside.jpg"}])
    jpeg(image_dir.parent / "outside.jpg")  # it exists: the refusal is not a "not found"
    data_error(lambda: coco_dataset(path, image_dir), "'../outside.jpg'", "image id 1", "outside")


def coco_absolute_file_name(env):
    target = jpeg(env.tmp / "elsewhere" / "x.jpg")
    path, image_dir = coco_files(env.tmp, [{"id": 7, "file_name": str(target)}])
    data_error(lambda: coco_dataset(path, image_dir), str(target), "image id 7", "outside")


def coco_missing_file_name(env):
    path, image_dir = coco_files(env.tmp, [{"id": 3, "width": 40, "height": 30}])
    data_error(lambda: coco_dataset(path, image_dir), "image id 3", "not a file name")


def coco_invalid_json(env):
    path = env.write("coco/instances.json", '{"images": [')
    data_error(lambda: coco_dataset(path, env.tmp), "cannot parse", "instances.json")


def coco_malformed_bbox(env):
    path, image_dir = coco_files(
        env.tmp,
        [{"id": 1, "file_name": "ok.jpg"}],
        [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}],
    )
    data_error(lambda: coco_dataset(path, image_dir), "annotation 5", "bbox [1, 2, 3]")


def voc_empty_xml(env):
    root = voc_dir(env.tmp / "VOC", xml="")
    data_error(
        lambda: voc_dataset(root, voc_split(root, "s", ["a"]), class_names=["cat"]),
        "cannot parse VOC annotation",
        "a.xml",
    )


def voc_non_numeric_coordinate(env):
    xml = (
        "<annotation><object><name>cat</name><bndbox><xmin>2</xmin><ymin>two</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    root = voc_dir(env.tmp / "VOC", xml=xml)
    data_error(
        lambda: voc_dataset(root, voc_split(root, "s", ["a"]), class_names=["cat"]),
        "a.xml",
        "'two' is not a number",
    )


def voc_nan_coordinate(env):
    xml = (
        "<annotation><size><width>40</width><height>30</height></size>"
        "<object><name>cat</name><bndbox><xmin>nan</xmin><ymin>2</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object><object><name>cat</name><bndbox><xmin>2</xmin>"
        "<ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    root = voc_dir(env.tmp / "VOC", xml=xml)
    with pytest.warns(DataWarning, match=r"voc_dataset\(.*dropped 1 boxes"):
        dataset = voc_dataset(root, voc_split(root, "s", ["a"]), class_names=["cat"])
    (record,) = list(dataset.as_numpy_iterator())
    assert record["boxes"].shape == (1, 4) and np.all(np.isfinite(record["boxes"]))


def yolo_dir(root, rows):
    """A Roboflow-layout YOLO dataset: data.yaml naming one class, one image a.jpg and its
    label rows."""
    root = pathlib.Path(root)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("nc: 1\nnames: [cat]\n")
    jpeg(root / "train" / "images" / "a.jpg")
    (root / "train" / "labels" / "a.txt").write_text("".join(f"{row}\n" for row in rows))
    return root


def yolo_class_out_of_range_cli(env):
    root = yolo_dir(env.tmp / "yolo", ["0 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2 0.2"])
    env.train_error(
        {
            "model": {"num_classes": 1, "class_names": None},
            "data": {"source": "yolo", "root": str(root)},
        },
        "a.txt:2",
        "class index 1 is outside 0..0",
        reaches_trainer=True,
    )


def csv_eval_class_unknown_to_training(env):
    images = env.tmp / "images"
    jpeg(images / "a.jpg")
    train = env.write("train.csv", "a.jpg,1,1,20,20,cat\n")
    test = env.write("test.csv", "a.jpg,1,1,20,20,cat\na.jpg,2,2,9,9,dog\n")
    config = env.write(
        "csv.yaml",
        yaml.safe_dump(
            _merged(
                yaml.safe_load(pathlib.Path(SMOKE).read_text()),
                {
                    "model": {"num_classes": 1, "class_names": None},
                    "data": {
                        "source": "csv",
                        "root": str(images),
                        "annotations": train,
                        "eval_annotations": test,
                    },
                },
            )
        ),
    )
    from tf_frcnn.config import load_config
    from tf_frcnn.data import inputs

    records, names = inputs.source(load_config(config), "train")
    assert names == ["cat"] and len(list(records.as_numpy_iterator())) == 1
    data_error(
        lambda: inputs.source(load_config(config), "test"), "test.csv:2", "unknown class 'dog'"
    )


def csv_without_annotations_cli(env):
    env.train_error(
        {
            "model": {"num_classes": 1, "class_names": ["cat"]},
            "data": {"source": "csv", "root": str(env.tmp)},
        },
        "'data.annotations' must be set",
        reaches_trainer=True,
    )


# -- checks: command line and predict -------------------------------------------------------
def predict_on_a_training_dir(env):
    model_dir = env.tmp / "run"
    model_dir.mkdir()
    jpeg(env.tmp / "x.jpg")
    env.cli_error(
        [
            "predict",
            "--model",
            str(model_dir),
            str(env.tmp / "x.jpg"),
            "--out",
            str(env.tmp / "preds"),
        ],
        str(model_dir),
        "saved_model.pb",
    )


def predict_out_is_a_file(env):
    import tf_frcnn.cli as export  # the command's own names of load_predictor, read_labels

    def predictor(image):
        return {
            "num_detections": 0,
            "detection_boxes": np.zeros([0, 4], np.float32),
            "detection_classes": np.zeros([0], np.int32),
            "detection_scores": np.zeros([0], np.float32),
        }

    env.monkeypatch.setattr(export, "load_predictor", lambda path: predictor)
    env.monkeypatch.setattr(export, "read_labels", lambda path: ["cat"])
    out = env.write("preds", "a file where the output directory should be")
    jpeg(env.tmp / "x.jpg")
    env.cli_error(["predict", "--model", str(env.tmp), str(env.tmp / "x.jpg"), "--out", out], out)


def export_out_under_a_file(env):
    model_dir = env.fixture("trained_dir")
    out = os.path.join(env.write("plainfile", "x"), "saved_models", "smoke")
    env.cli_error(["export", "--model-dir", str(model_dir), "--out", out], "plainfile")


# -- the table --------------------------------------------------------------------------------
GAP_CONFIG = (
    "config.py `_validate`: check every size and count is > 0 (rpn.min_size >= 0, "
    "model.anchor_base_size, anchor_scales, anchor_ratios, data.image_size, pad_to, "
    "train.checkpoint_every, ...)"
)
GAP_OSERROR = (
    "cli.py `main`: catch OSError after FileNotFoundError and print "
    "`error: {strerror}: {filename}` (exit 2)"
)

CORPUS = [
    # configs
    Case(
        "unknown config key",
        "config",
        "`model: {anchor_sizes: [1, 2]}`",
        "error naming `model.anchor_sizes` and the file",
        "tests/test_cli.py::test_unknown_config_key",
    ),
    Case(
        "IoU threshold outside [0, 1]",
        "config",
        "`rpn: {positive_iou: 1.5}`",
        "error naming `rpn.positive_iou`",
        "tests/test_cli.py::test_out_of_range_config_value",
    ),
    Case(
        "fg fraction > 1",
        "config",
        "`roi: {fg_fraction: 1.5}`",
        "error naming `roi.fg_fraction` and the file, before training",
        fg_fraction_above_one,
    ),
    Case(
        "negative image size",
        "config",
        "`data: {min_size: -600}`",
        "error naming `data.min_size`, before training",
        negative_image_size,
    ),
    Case(
        "negative proposal size",
        "config",
        "`rpn: {min_size: -16}`",
        "error naming `rpn.min_size`, before training",
        negative_proposal_min_size,
    ),
    Case(
        "negative anchor size",
        "config",
        "`model: {anchor_base_size: -16}`",
        "error naming `model.anchor_base_size`, before training",
        negative_anchor_size,
    ),
    Case(
        "value of the wrong type",
        "config",
        "`data: {batch_size: two}`",
        "error naming `data.batch_size`, before training",
        wrong_value_type,
    ),
    Case(
        "unknown choice",
        "config",
        "`data: {source: imagenet}`",
        "error naming `data.source`, before training",
        unknown_choice,
    ),
    Case(
        "invalid YAML",
        "config",
        "`model: [unclosed`",
        "error: invalid YAML, line and column",
        "tests/test_cli.py::test_invalid_yaml",
    ),
    Case(
        "YAML with a Python object tag",
        "config",
        "`model: !!python/object/apply:os.system [...]`",
        "error: invalid YAML (safe loader); the command never runs",
        yaml_python_tag,
    ),
    Case(
        "top level not a mapping",
        "config",
        "`- model`",
        "error naming the file",
        yaml_not_a_mapping,
    ),
    Case(
        "missing config file",
        "config",
        "`--config nope.yaml`",
        "error naming the path",
        "tests/test_cli.py::test_missing_config_file",
    ),
    Case(
        "num_classes disagrees with the dataset",
        "config",
        "smoke config, `num_classes: 3`",
        "error naming `model.num_classes`, before training",
        num_classes_mismatch,
    ),
    # model directories
    Case(
        "model dir is a file",
        "model dir",
        "`--model-dir` names a regular file",
        "error: model dir ... is not writable",
        model_dir_is_a_file,
    ),
    Case(
        "unwritable model dir",
        "model dir",
        "read-only dir (non-root) or a path under a regular file (root)",
        "error: model dir ... is not writable, before training",
        model_dir_unwritable,
    ),
    Case(
        "disk full",
        "model dir",
        "ENOSPC on the first write into the model dir",
        "error: No space left on device, naming the file",
        disk_full,
    ),
    Case(
        "damaged state.json",
        "model dir",
        "`--resume` with a truncated state.json",
        "error naming state.json: restore it or train afresh",
        damaged_state,
    ),
    Case(
        "killed after the last stage, before final.weights.h5",
        "model dir",
        "finished state.json, no final.weights.h5, `--resume`",
        "resume writes final.weights.h5 from the last stage",
        finished_without_final_weights,
    ),
    Case(
        "killed while appending losses.jsonl",
        "model dir",
        "a torn row (a flush over 8 KB is several writes)",
        "the torn row is skipped; the resumed run's rows win",
        torn_loss_log,
    ),
    Case(
        "SIGKILL at any moment of training",
        "training",
        "kills in 3 stages, then --resume",
        "finishes all four stages; final weights bit-identical to an uninterrupted run",
        "tests/reliability/test_fault_injection.py::"
        "test_final_weights_equal_the_uninterrupted_run_bit_for_bit",
    ),
    Case(
        "NaN loss",
        "training",
        "NaN images from step 5",
        "error naming stage and step; last good checkpoint kept",
        "tests/training/test_failures.py::"
        "test_nan_in_a_run_names_stage_and_step_and_keeps_last_checkpoint",
    ),
    # datasets
    Case(
        "VOC id climbing out of the root",
        "dataset",
        "split lists `../../etc/passwd`",
        "error naming the id and split: refused",
        voc_id_climbing_out,
    ),
    Case(
        "VOC id climbing out, via tf-frcnn train",
        "dataset",
        "split lists `../JPEGImages/a`",
        "one-line error naming the id, before training",
        voc_id_climbing_out_cli,
    ),
    Case(
        "VOC absolute id",
        "dataset",
        "split lists `/abs/path/Annotations/b`",
        "error naming the id: refused",
        voc_absolute_id,
    ),
    Case(
        "COCO file_name climbing out",
        "dataset",
        "`file_name: ../outside.jpg` (which exists)",
        "error naming file_name and image id: refused",
        coco_file_name_climbing_out,
    ),
    Case(
        "COCO absolute file_name",
        "dataset",
        "`file_name: /abs/x.jpg`",
        "error naming file_name and image id: refused",
        coco_absolute_file_name,
    ),
    Case(
        "COCO image without file_name",
        "dataset",
        "`{id: 3}`",
        "error naming image id 3",
        coco_missing_file_name,
    ),
    Case(
        "COCO invalid JSON", "dataset", '`{"images": [`', "error naming the file", coco_invalid_json
    ),
    Case(
        "COCO malformed bbox",
        "dataset",
        "`bbox: [1, 2, 3]`",
        "error naming the annotation id and bbox",
        coco_malformed_bbox,
    ),
    Case(
        "COCO unknown category",
        "dataset",
        "`category_id: 99`",
        "error naming the category id",
        "tests/data/test_coco.py::test_undeclared_category_or_image_and_missing_files_are_errors",
    ),
    Case(
        "VOC unknown class",
        "dataset",
        "`<name>unicorn</name>`",
        "error naming the class and file",
        "tests/data/test_voc.py::test_missing_files_and_unknown_class_are_errors_naming_them",
    ),
    Case(
        "VOC missing annotation",
        "dataset",
        "id without Annotations/{id}.xml",
        "error naming the file",
        "tests/data/test_voc.py::test_missing_files_and_unknown_class_are_errors_naming_them",
    ),
    Case(
        "zero-size XML",
        "dataset",
        "empty Annotations/a.xml",
        "error naming the file: cannot parse",
        voc_empty_xml,
    ),
    Case(
        "non-numeric coordinate",
        "dataset",
        "`<ymin>two</ymin>`",
        "error naming the file and value",
        voc_non_numeric_coordinate,
    ),
    Case(
        "NaN coordinate",
        "dataset",
        "`<xmin>nan</xmin>`",
        "skip: box dropped, one DataWarning naming the dataset",
        voc_nan_coordinate,
    ),
    Case(
        "box outside the image, xmin > xmax",
        "dataset",
        "boxes past the border, inverted",
        "skip: clipped or dropped, one DataWarning with counts",
        "tests/data/test_voc.py::test_bad_boxes_are_clipped_or_dropped_with_one_warning",
    ),
    Case(
        "truncated or corrupt JPEG",
        "dataset",
        "half a JPEG; text named .jpg",
        "skip with a DataWarning naming the file (strict: error)",
        "tests/data/test_voc.py::test_corrupt_and_truncated_images_are_skipped_with_a_warning",
    ),
    Case(
        "empty split",
        "dataset",
        "empty ImageSets/Main/s.txt",
        "error naming the split file",
        "tests/data/test_voc.py::test_empty_or_missing_split_is_an_error",
    ),
    Case(
        "YOLO empty label file",
        "dataset",
        "empty labels/a.txt",
        "valid: a background image (no objects)",
        "tests/data/test_yolo.py::test_reads_both_layouts_with_exact_counts_and_backgrounds",
    ),
    Case(
        "YOLO image without a label file",
        "dataset",
        "images/a.jpg, no labels/a.txt",
        "background image (the Ultralytics convention), counted in one DataWarning",
        "tests/data/test_yolo.py::test_reads_both_layouts_with_exact_counts_and_backgrounds",
    ),
    Case(
        "YOLO class index out of range",
        "dataset",
        "`1 0.5 0.5 0.2 0.2` with 1 class name",
        "error naming the label file and line",
        "tests/data/test_yolo.py::test_bad_rows_are_errors_naming_file_and_line",
    ),
    Case(
        "YOLO class index out of range, via tf-frcnn train",
        "dataset",
        "data.yaml names 1 class, a row of class 1",
        "one-line error naming `a.txt:2`",
        yolo_class_out_of_range_cli,
    ),
    Case(
        "YOLO malformed row",
        "dataset",
        "`0 0.5 0.5 0.1`, `cat 0.5 ...`, a polygon row",
        "error naming the label file and line",
        "tests/data/test_yolo.py::test_bad_rows_are_errors_naming_file_and_line",
    ),
    Case(
        "YOLO zero-size or outside box",
        "dataset",
        "`w = 0`, `cx = 0.9, w = 0.4`",
        "skip: dropped or clipped, one DataWarning with counts",
        "tests/data/test_yolo.py::test_zero_size_dropped_and_outside_clipped_in_one_warning",
    ),
    Case(
        "YOLO missing image",
        "dataset",
        "labels/gone.txt without images/gone.*",
        "error naming the label file and the image looked for",
        "tests/data/test_yolo.py::test_label_without_image_names_the_missing_image",
    ),
    Case(
        "YOLO split or data.yaml broken",
        "dataset",
        "no train/images, no labels/, `nc` disagreeing with `names`",
        "error naming the directory or data.yaml",
        "tests/data/test_yolo.py::test_missing_split_labels_dir_or_images_are_errors",
    ),
    Case(
        "CSV unknown class",
        "dataset",
        "eval table names `dog`, the training table only `cat`",
        "error naming the table, line and class",
        csv_eval_class_unknown_to_training,
    ),
    Case(
        "CSV non-numeric coordinate or malformed row",
        "dataset",
        "`a.jpg,0,zero,20,15,dog`, 5 fields, a partly empty row",
        "error naming the table and line",
        "tests/data/test_csv.py::test_bad_rows_are_errors_naming_file_and_line",
    ),
    Case(
        "CSV xmin > xmax, zero-size or outside box",
        "dataset",
        "`a.jpg,20,5,10,15,dog`",
        "skip: dropped or clipped, one DataWarning with counts",
        "tests/data/test_csv.py::test_bad_boxes_are_dropped_or_clipped_in_one_warning",
    ),
    Case(
        "CSV missing image or path climbing out",
        "dataset",
        "`missing.jpg,...`, `../outside.jpg,...`",
        "error naming the table, line and path",
        "tests/data/test_csv.py::test_bad_rows_are_errors_naming_file_and_line",
    ),
    Case(
        "CSV empty split",
        "dataset",
        "no rows, or only the header",
        "error naming the table",
        "tests/data/test_csv.py::test_empty_or_missing_table_is_an_error",
    ),
    Case(
        "CSV source without its table",
        "config",
        "`data: {source: csv}`, no `annotations`",
        "one-line error naming `data.annotations`",
        csv_without_annotations_cli,
    ),
    # command line, predict, export, serving
    Case(
        "eval on an untrained dir",
        "CLI",
        "`tf-frcnn eval` on an empty dir",
        "error naming final.weights.h5",
        "tests/test_cli.py::test_eval_without_training",
    ),
    Case(
        "predict on a corrupt image",
        "predict",
        "`corrupt.jpg` (not a JPEG)",
        "error naming the file",
        "tests/test_cli.py::test_train_eval_export_predict",
    ),
    Case(
        "predict on a missing image",
        "predict",
        "`missing.png`",
        "error naming the file",
        "tests/test_cli.py::test_train_eval_export_predict",
    ),
    Case(
        "predict with a training dir as --model",
        "predict",
        "`--model runs/x` (no export)",
        "error naming the path: no saved_model.pb",
        predict_on_a_training_dir,
    ),
    Case(
        "predict --out is a file",
        "predict",
        "`--out` names a regular file",
        "error naming the path",
        predict_out_is_a_file,
    ),
    Case(
        "export --out under a file",
        "CLI",
        "`--out plainfile/saved_models/x`",
        "error naming the path",
        export_out_under_a_file,
    ),
    Case(
        "wrong dtype at serving_default",
        "serving",
        "float32 images",
        "InvalidArgument: uint8",
        "tests/export/test_saved_model.py::test_serving_default_rejects_wrong_dtype_and_rank",
    ),
    Case(
        "wrong rank at serving_default",
        "serving",
        "[8, 8, 3] or 4 channels",
        "InvalidArgument: not compatible",
        "tests/export/test_saved_model.py::test_serving_default_rejects_wrong_dtype_and_rank",
    ),
    Case(
        "undecodable bytes at serving_bytes",
        "serving",
        '`b"not an image"` at index 1',
        "InvalidArgument naming the batch index",
        "tests/export/test_saved_model.py::test_serving_bytes_rejects_undecodable_strings",
    ),
]


def _test_exists(reference):
    path, name = reference.split("::")
    tree = ast.parse((ROOT / path).read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in ast.walk(tree))


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
    return pytest.param(case, id=case.kind.replace(" ", "-"), marks=marks)


def test_corpus_has_at_least_20_kinds_over_every_surface():
    assert len({case.kind for case in CORPUS}) == len(CORPUS) >= 20
    assert {case.surface for case in CORPUS} >= {
        "config",
        "model dir",
        "dataset",
        "CLI",
        "serving",
        "predict",
        "training",
    }


@pytest.mark.parametrize("case", [_param(case) for case in CORPUS])
def test_bad_input(case, request, tmp_path, capsys, monkeypatch):
    if isinstance(case.check, str):
        assert _test_exists(case.check), f"{case.check} is gone: update the corpus table"
        return
    case.check(Env(request, tmp_path, capsys, monkeypatch))
