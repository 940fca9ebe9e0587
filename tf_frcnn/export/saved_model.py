"""SavedModel export with serving signatures for TF Serving and SavedModel import.

The SavedModel holds the whole detector, pre- and post-processing included, as plain TensorFlow
graphs: it loads and runs with TensorFlow alone, without this package. Two signatures:

- ``serving_default``: ``images`` uint8 [batch, height, width, 3] RGB (batch and size dynamic;
  the images of one batch share their size).
- ``serving_bytes``: ``images`` string [batch], each an encoded JPEG or PNG (GIF and BMP decode
  too); the images of one batch may differ in size.

Both prepare an image as the eval pipeline does (`tf_frcnn.data.build_pipeline`), so that
``tf-frcnn eval`` reports what the export does: JPEGs are decoded with the accurate integer IDCT
(``INTEGER_ACCURATE``, what Pillow, the pipeline's decoder, uses; TensorFlow's default fast IDCT
differs), each image is resized by `tf_frcnn.data.resize_image` (shorter side ``min_size``,
longer at most ``max_size``), and the batch is zero-padded at the bottom/right to ``pad_to``
(the config's ``data.pad_to``; with None, to the batch's largest image): with 'same'
convolutions the padding changes the features along the bottom and right borders. The model
then runs on raw float32 pixels 0..255 (the backbone normalises). Both return:

- ``detection_boxes``: float32 [batch, max_detections, 4], NORMALISED [ymin, xmin, ymax, xmax]
  relative to the original image; zero rows past ``num_detections``.
- ``detection_scores``: float32 [batch, max_detections], best first; 0 on padding.
- ``detection_classes``: int32 [batch, max_detections], 1-based (line i of ``labels.txt``);
  0 on padding.
- ``num_detections``: int32 [batch].
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from tf_frcnn.boxes import to_normalized
from tf_frcnn.data.pipeline import resize_image
from tf_frcnn.rundir import readable, write_labels

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
INPUT_NAME = "images"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")

# Leading bytes of the formats tf.io.decode_image reads. Checked up front because decode_image's
# own error ("Unknown image file format") does not say which input failed.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def serving_outputs(model, images, image_shape):
    """The signature outputs of a ``FasterRCNN`` on a padded batch.

    Args:
      model: the ``FasterRCNN`` (or its ``builtin_twin``).
      images: float32 [batch, H, W, 3], pixels 0..255.
      image_shape: int32 [batch, 2], (height, width) of each resized image inside the padding.

    Returns:
      dict of ``OUTPUT_NAMES``; boxes normalised [ymin, xmin, ymax, xmax] by ``image_shape``. The
      resized image covers the original exactly, so these are also relative to the original
      image.
    """
    detections = model({"images": images, "image_shape": image_shape}, training=False)
    return {
        "detection_boxes": to_normalized(detections["detection_boxes"], image_shape[:, tf.newaxis]),
        "detection_scores": detections["detection_scores"],
        "detection_classes": tf.cast(detections["detection_classes"], tf.int32),
        "num_detections": tf.cast(detections["num_detections"], tf.int32),
    }


def _checked(images, shape):
    # A signature's input spec pins dtypes at call time but not ranks; this makes a wrong rank
    # fail on its own message instead of deep inside the resize.
    return tf.ensure_shape(images, shape, name="check_images_shape")


class DetectionModule:
    """The serving functions of a ``FasterRCNN`` (see the module docstring)."""

    def __init__(self, model, *, min_size, max_size, pad_to=None):
        self.model = model
        self.min_size = int(min_size)
        self.max_size = None if max_size is None else int(max_size)
        self.pad_to = None if pad_to is None else tuple(int(side) for side in pad_to)

    def _pad(self, images):
        """float32 [batch, h, w, 3] -> zero-padded at the bottom/right to ``pad_to`` (or kept,
        where the images are larger or ``pad_to`` is None)."""
        if self.pad_to is None:
            return images
        shape = tf.shape(images)
        return tf.image.pad_to_bounding_box(
            images, 0, 0, tf.maximum(shape[1], self.pad_to[0]), tf.maximum(shape[2], self.pad_to[1])
        )

    def _detect(self, images, image_shape):
        return serving_outputs(self.model, self._pad(images), image_shape)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)])
    def serve_images(self, images):
        """uint8 [batch, height, width, 3] RGB -> detections (all images of one size)."""
        images = _checked(images, [None, None, None, 3])
        resized, _ = resize_image(images, self.min_size, self.max_size)
        shape = tf.shape(resized)
        image_shape = tf.tile(shape[tf.newaxis, 1:3], [shape[0], 1])
        return self._detect(resized, image_shape)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve_bytes(self, images):
        """string [batch] encoded images -> detections (sizes may differ within the batch)."""
        images = _checked(images, [None])
        matches = [tf.equal(tf.strings.substr(images, 0, len(m)), m) for m in _IMAGE_SIGNATURES]
        known = tf.reduce_any(tf.stack(matches), axis=0)
        check = tf.debugging.Assert(
            tf.reduce_all(known),
            [
                "serving_bytes could not decode the image(s) at batch index",
                tf.where(~known)[:, 0],
                ": not a JPEG, PNG, GIF or BMP file",
            ],
        )

        def decode_and_resize(data):
            image = tf.cond(
                tf.equal(tf.strings.substr(data, 0, 3), _IMAGE_SIGNATURES[0]),
                lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
            )
            resized, _ = resize_image(image, self.min_size, self.max_size)
            return tf.RaggedTensor.from_tensor(resized, ragged_rank=1), tf.shape(resized)[:2]

        ragged_spec = tf.RaggedTensorSpec([None, None, 3], tf.float32, ragged_rank=1)
        signature = (ragged_spec, tf.TensorSpec([2], tf.int32))
        with tf.control_dependencies([check]):
            ragged, image_shape = tf.map_fn(
                decode_and_resize, images, fn_output_signature=signature
            )
        return self._detect(ragged.to_tensor(), image_shape)

    def archive(self):
        """A ``keras.export.ExportArchive`` of the model's weights and both signatures."""
        # Not tf.saved_model.save on a tf.Module holding the model: that SavedModel runs in
        # TF2 but not in session-based (TF1) loaders such as TF Serving and
        # `saved_model_cli run` ("Could not find variable ..."). The archive saves the
        # variables its endpoints capture; archive.track(model) on top would store every
        # weight twice.
        archive = keras.export.ExportArchive()
        archive.add_endpoint(SERVING_DEFAULT, self.serve_images)
        archive.add_endpoint(SERVING_BYTES, self.serve_bytes)
        return archive


def version_dirs(out_base):
    """{version: path} of the numbered version directories under ``out_base``."""
    base = pathlib.Path(out_base)
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}


def export_saved_model(
    model, out_base, class_names, *, min_size, max_size, pad_to=None, version=None
):
    """Write ``model`` as a SavedModel into ``out_base/<version>/`` for TF Serving.

    Args:
      model: a built ``tf_frcnn.FasterRCNN``.
      out_base: the model's base directory (``saved_models/NAME``); TF Serving serves it as is
        (``--model_base_path``) and picks the highest version.
      class_names: names of classes 1..C, written to ``labels.txt`` in the version directory,
        line i = class i.
      min_size, max_size: the in-graph resize (shorter side, cap on the longer side; None: no
        cap); use the training pipeline's values.
      pad_to: (height, width) the resized images are padded to, the config's ``data.pad_to``
        (None: a batch is padded to its largest image only).
      version: the version number; None: 1 or the next after the highest existing one.

    Returns:
      pathlib.Path of the version directory (holding ``saved_model.pb``, ``variables/`` and
      ``labels.txt``).

    Raises:
      ValueError: ``class_names`` does not have ``model.num_classes`` entries.
      FileExistsError: the version directory exists already.
    """
    class_names = [str(name) for name in class_names]
    if len(class_names) != model.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model of {model.num_classes} classes"
        )
    if any("\n" in name or not name.strip() for name in class_names):
        raise ValueError("class names must be non-empty single lines")
    base = pathlib.Path(out_base)
    version = max(version_dirs(base), default=0) + 1 if version is None else int(version)
    target = base / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists already; pick another version")
    base.mkdir(parents=True, exist_ok=True)

    module = DetectionModule(model, min_size=min_size, max_size=max_size, pad_to=pad_to)
    # Write beside the target, then rename: TF Serving polls the base directory and must never
    # see a half-written version (non-numeric names are ignored by it).
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        module.archive().write_out(os.fspath(staging), verbose=False)
        write_labels(staging, class_names)
        readable(staging, directory=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
