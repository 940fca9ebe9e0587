"""`frcnn_shapes`: an offline, procedurally drawn detection dataset as a TFDS builder.

Each image is a textured, noisy background with 0-8 filled shapes of four classes
(`SYNTHETIC_CLASS_NAMES`). A class has a shape and a dominant hue, but hues are jittered and
one object in five gets a random hue, so colour alone does not give the class away. Object
sides range from 16 px (less on images smaller than 64 px) to half the image, aspect ratios
(height / width) from 0.5 to 2 (log-uniform); objects may overlap, but a placement that would
hide more than half of an earlier object's box is rejected, so every labelled object stays
recognisable. Boxes are the full extent of the drawn shape.

Generation is deterministic: image i of a split is drawn from `numpy.random.default_rng((seed,
split_index, i))`, whatever order TFDS asks for it. Each config is generated once and cached in
the TFDS data dir under frcnn_shapes/<config name>/<version>/. The features use TFDS's
detection layout (PNG images, "image/filename" "train_00012.png"), read by `tfds_to_record`.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from tf_frcnn.data.catalog import tfds_to_record

SYNTHETIC_CLASS_NAMES = ("ellipse", "rectangle", "triangle", "cross")
# Dominant hue of each class, in degrees: red, green, blue, yellow.
_CLASS_HUES = (0.0, 120.0, 225.0, 55.0)
_SPLITS = ("train", "validation", "test")
_VERSION = tfds.core.Version("1.0.0")
_MAX_OBJECTS = 8
_RANDOM_HUE_PROBABILITY = 0.2
_MAX_HIDDEN_FRACTION = 0.5


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Size of the generated dataset: image (height, width) and images per split."""

    image_size: tuple[int, int] = (128, 128)
    num_train: int = 512
    num_validation: int = 64
    num_test: int = 128
    seed: int = 0


def _describe(image_size, num_train, num_validation, num_test, seed) -> str:
    height, width = image_size
    counts = f"{num_train}/{num_validation}/{num_test}"
    return f"{height}x{width} images; train/validation/test = {counts}; seed {seed}"


_DEFAULT_OPTIONS = dict(
    image_size=(128, 128), num_train=512, num_validation=64, num_test=128, seed=0
)
_DEFAULT_CONFIG = ShapesConfig(
    name="default", version=_VERSION, description=_describe(**_DEFAULT_OPTIONS), **_DEFAULT_OPTIONS
)


def shapes_config(
    image_size=128, num_train=512, num_validation=64, num_test=128, seed=0
) -> ShapesConfig:
    """A `ShapesConfig`; its name encodes the options so each size is cached apart.

    image_size: int (square) or (height, width), in pixels, at least 16.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    options = dict(
        image_size=(int(height), int(width)),
        num_train=int(num_train),
        num_validation=int(num_validation),
        num_test=int(num_test),
        seed=int(seed),
    )
    if min(options["image_size"]) < 16:
        raise ValueError(
            f"synthetic images must be at least 16x16 pixels, got {options['image_size']}"
        )
    if options == _DEFAULT_OPTIONS:
        # TFDS accepts a config named like a built-in one only if it is that very object.
        return _DEFAULT_CONFIG
    name = f"{height}x{width}_n{num_train}_{num_validation}_{num_test}_seed{seed}"
    return ShapesConfig(name=name, version=_VERSION, description=_describe(**options), **options)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float [H, W, 3]: a base colour, smooth colour blobs, a gradient and a few clutter lines."""
    base = rng.uniform(40, 200, size=3)
    cell = int(rng.choice([8, 16, 32]))
    coarse = rng.normal(0, 35, size=(height // cell + 2, width // cell + 2, 3))
    blobs = np.stack(
        [
            np.asarray(
                Image.fromarray(channel.astype(np.float32)).resize(
                    (width, height), Image.Resampling.BILINEAR
                )
            )
            for channel in np.moveaxis(coarse, -1, 0)
        ],
        axis=-1,
    )
    direction = rng.normal(size=2)
    rows, cols = np.mgrid[0:height, 0:width]
    ramp = direction[0] * rows / height + direction[1] * cols / width
    gradient = ramp[..., None] * rng.uniform(0, 40, 3)
    canvas = Image.fromarray(np.clip(base + blobs + gradient, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 7)):
        ends = rng.uniform(0, 1, size=4) * [width, height, width, height]
        draw.line(
            list(ends),
            fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
            width=int(rng.integers(1, 3)),
        )
    return np.asarray(canvas, dtype=np.float32)


def _colour(rng: np.random.Generator, label: int) -> tuple[int, int, int]:
    if rng.uniform() < _RANDOM_HUE_PROBABILITY:
        hue = rng.uniform(0, 360)
    else:
        hue = _CLASS_HUES[label] + rng.uniform(-20, 20)
    red, green, blue = colorsys.hsv_to_rgb(
        (hue % 360) / 360, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0)
    )
    return int(red * 255), int(green * 255), int(blue * 255)


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, label: int, box, fill) -> None:
    """Draws class `label` filling the pixels of box = (y0, x0, y1, x1), y1/x1 exclusive."""
    y0, x0, y1, x1 = box
    right, bottom = x1 - 1, y1 - 1
    shape = SYNTHETIC_CLASS_NAMES[label]
    outline = tuple(int(v * 0.5) for v in fill) if rng.uniform() < 0.5 else None
    if shape == "ellipse":
        draw.ellipse([x0, y0, right, bottom], fill=fill, outline=outline)
    elif shape == "rectangle":
        draw.rectangle([x0, y0, right, bottom], fill=fill, outline=outline)
    elif shape == "triangle":
        middle_x, middle_y = (x0 + right) / 2, (y0 + bottom) / 2
        apex_and_base = {
            "up": [(middle_x, y0), (x0, bottom), (right, bottom)],
            "down": [(middle_x, bottom), (x0, y0), (right, y0)],
            "left": [(x0, middle_y), (right, y0), (right, bottom)],
            "right": [(right, middle_y), (x0, y0), (x0, bottom)],
        }[("up", "down", "left", "right")[rng.integers(4)]]
        draw.polygon(apex_and_base, fill=fill, outline=outline)
    else:
        thickness = rng.uniform(0.25, 0.4)
        half_h, half_w = max(1.0, (y1 - y0) * thickness / 2), max(1.0, (x1 - x0) * thickness / 2)
        middle_x, middle_y = (x0 + x1) / 2, (y0 + y1) / 2
        draw.rectangle([x0, middle_y - half_h, right, middle_y + half_h - 1], fill=fill)
        draw.rectangle([middle_x - half_w, y0, middle_x + half_w - 1, bottom], fill=fill)


def draw_scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic image with its objects.

    Returns:
      image uint8 [height, width, 3] RGB,
      boxes float32 [N, 4] absolute pixel [ymin, xmin, ymax, xmax] (max exclusive),
      labels int64 [N] 0-based indices into SYNTHETIC_CLASS_NAMES; 0 <= N <= 8.
    """
    shortest = min(height, width)
    smallest, largest = min(16.0, shortest / 4), shortest / 2
    canvas = Image.fromarray(_background(rng, height, width).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    boxes, labels, hidden = [], [], []
    for _ in range(rng.integers(0, _MAX_OBJECTS + 1)):
        label = int(rng.integers(len(SYNTHETIC_CLASS_NAMES)))
        for _attempt in range(20):
            side = np.exp(rng.uniform(np.log(smallest), np.log(largest)))
            ratio = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            box_h = int(np.clip(round(side * np.sqrt(ratio)), smallest / 2, largest))
            box_w = int(np.clip(round(side / np.sqrt(ratio)), smallest / 2, largest))
            y0 = int(rng.integers(0, height - box_h + 1))
            x0 = int(rng.integers(0, width - box_w + 1))
            box = (y0, x0, y0 + box_h, x0 + box_w)
            covers = np.zeros((height, width), bool)
            covers[box[0] : box[2], box[1] : box[3]] = True
            if all(
                np.mean((mask | covers)[b[0] : b[2], b[1] : b[3]]) <= _MAX_HIDDEN_FRACTION
                for mask, b in zip(hidden, boxes)
            ):
                break
        else:
            continue
        hidden = [mask | covers for mask in hidden]
        hidden.append(np.zeros((height, width), bool))
        _draw_shape(draw, rng, label, box, _colour(rng, label))
        boxes.append(box)
        labels.append(label)
    noise = rng.normal(0, rng.uniform(3, 12), size=(height, width, 3))
    image = np.clip(np.asarray(canvas, np.float32) + noise, 0, 255).astype(np.uint8)
    return image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


class FrcnnShapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic shapes for Faster R-CNN demos and tests, generated offline (numpy, Pillow)."""

    VERSION = _VERSION
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_DEFAULT_CONFIG]
    # TFDS only uses the code path to find a checksums file, and we download nothing.
    # Computing it imports `importlib_resources`, which TFDS 4.9 does not install on
    # Python >= 3.9, so it fails for any builder outside the tensorflow_datasets package.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        height, width = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(height, width, 3), encoding_format="png"),
                    "image/filename": tfds.features.Text(),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=SYNTHETIC_CLASS_NAMES),
                        }
                    ),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        counts = (config.num_train, config.num_validation, config.num_test)
        return {
            split: self._generate_examples(split, count) for split, count in zip(_SPLITS, counts)
        }

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        height, width = config.image_size
        scale = np.array([height, width, height, width], np.float32)
        for index in range(count):
            rng = np.random.default_rng((config.seed, _SPLITS.index(split), index))
            image, boxes, labels = draw_scene(rng, height, width)
            filename = f"{split}_{index:05d}.png"
            objects = [
                {"bbox": tfds.features.BBox(*(box / scale).tolist()), "label": int(label)}
                for box, label in zip(boxes, labels)
            ]
            yield filename, {"image": image, "image/filename": filename, "objects": objects}


def synthetic_builder(data_dir=None, **size_options) -> FrcnnShapes:
    """The `frcnn_shapes` builder for `size_options` (`shapes_config`); generates if not cached."""
    builder = FrcnnShapes(data_dir=data_dir, config=shapes_config(**size_options))
    builder.download_and_prepare()
    return builder


def synthetic_dataset(split: str, data_dir=None, **size_options) -> tf.data.Dataset:
    """Records (see `tf_frcnn.data.records`) of the synthetic shapes dataset.

    Args:
      split: "train", "validation" or "test" (or any TFDS split expression over them).
      data_dir: TFDS data dir for the cache; None means ~/tensorflow_datasets.
      **size_options: image_size, num_train, num_validation, num_test, seed (`shapes_config`).
    Returns:
      records in a fixed order; labels index SYNTHETIC_CLASS_NAMES, "image_id" is like
      "train_00012", "difficult" and "iscrowd" are all False.
    """
    dataset = synthetic_builder(data_dir, **size_options).as_dataset(
        split=split, shuffle_files=False
    )
    return dataset.map(tfds_to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
