"""Builders of tiny on-disk datasets for the data tests.

Every image here is a few dozen pixels, written with Pillow into tmp_path; nothing is
downloaded and no shared data is read.
"""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

# Solid colour of each test image kind and how it is stored.
RGB_COLOUR = (30, 60, 200)


def write_image(path, kind="rgb", size=(40, 30)):
    """Writes an image of `kind` and (width, height) `size`; returns the RGB a reader should get.

    Kinds: rgb (JPEG), gray, rgba, palette, palette_transparent (PNG), cmyk (JPEG),
    corrupt (not an image at all), truncated (a JPEG cut in the middle).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if kind == "corrupt":
        path.write_bytes(b"this is not an image" * 10)
        return None
    if kind == "truncated":
        # Noise so that the JPEG is long enough for the cut to land inside the scan data.
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return None
    if kind == "rgb":
        Image.new("RGB", size, RGB_COLOUR).save(path, format="JPEG", quality=95)
        return RGB_COLOUR
    if kind == "gray":
        Image.new("L", size, 100).save(path, format="PNG")
        return (100, 100, 100)
    if kind == "rgba":
        Image.new("RGBA", size, (200, 10, 10, 0)).save(path, format="PNG")
        return (200, 10, 10)
    if kind in ("palette", "palette_transparent"):
        image = Image.new("P", size, 1)
        image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
        if kind == "palette_transparent":
            image.save(path, format="PNG", transparency=0)
        else:
            image.save(path, format="PNG")
        return (10, 200, 30)
    if kind == "cmyk":
        Image.new("RGB", size, RGB_COLOUR).convert("CMYK").save(path, format="JPEG", quality=95)
        return RGB_COLOUR
    raise ValueError(kind)


def voc_xml(objects=(), size=(40, 30), filename="ignored.jpg"):
    """VOC annotation text; objects: (name, xmin, ymin, xmax, ymax[, difficult]), 1-based."""
    width, height = size
    parts = [
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, xmin, ymin, xmax, ymax, *difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(difficult[0]) if difficult else 0}</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


class VocWriter:
    """Writes a VOC directory entry by entry, then the split file."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image_id,
        objects=(),
        kind="rgb",
        size=(40, 30),
        xml_size=None,
        image=True,
        annotation=True,
    ):
        """Adds one image; xml_size overrides the <size> written; returns the image's colour."""
        if annotation:
            (self.root / "Annotations" / f"{image_id}.xml").write_text(
                voc_xml(objects, xml_size or size)
            )
        if image:
            return write_image(self.root / "JPEGImages" / f"{image_id}.jpg", kind, size)
        return None

    def split(self, name, ids):
        (self.root / "ImageSets" / "Main" / f"{name}.txt").write_text(
            "".join(f"{i}\n" for i in ids)
        )
        return name


class CocoWriter:
    """Writes a COCO instances JSON and its image directory."""

    def __init__(self, root, categories=((1, "cat"), (2, "dog"))):
        self.root = pathlib.Path(root)
        self.image_dir = self.root / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.content = {
            "images": [],
            "annotations": [],
            "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n in categories],
        }

    def add_image(
        self, image_id, file_name=None, kind="rgb", size=(40, 30), declared_size=None, write=True
    ):
        extension = "jpg" if kind in ("rgb", "cmyk", "corrupt", "truncated") else "png"
        file_name = file_name or f"{image_id:012d}.{extension}"
        width, height = declared_size or size
        self.content["images"].append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        if write:
            return write_image(self.image_dir / file_name, kind, size)
        return None

    def add_box(self, image_id, category_id, bbox, iscrowd=0):
        self.content["annotations"].append(
            {
                "id": len(self.content["annotations"]) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": list(bbox),
                "area": float(bbox[2] * bbox[3]),
                "iscrowd": iscrowd,
            }
        )

    def write(self, name="instances.json"):
        path = self.root / name
        path.write_text(json.dumps(self.content))
        return path


class YoloWriter:
    """Writes a YOLO txt dataset: data.yaml (unless names is None) and, per split, images/
    and labels/ in the Roboflow (ROOT/SPLIT/images) or Ultralytics (ROOT/images/SPLIT) layout."""

    def __init__(self, root, names=("cat", "dog"), layout="roboflow"):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout = layout
        if names is not None:
            (self.root / "data.yaml").write_text(f"nc: {len(names)}\nnames: [{', '.join(names)}]\n")

    def dirs(self, split):
        if self.layout == "roboflow":
            return self.root / split / "images", self.root / split / "labels"
        return self.root / "images" / split, self.root / "labels" / split

    def add(
        self, split, stem, rows=(), kind="rgb", size=(40, 30), suffix=".jpg", label=True, image=True
    ):
        """rows: label lines, each a string or a tuple (class, cx, cy, w, h); label=False
        writes no label file, image=False no image."""
        images, labels = self.dirs(split)
        (labels / stem).parent.mkdir(parents=True, exist_ok=True)
        if label:
            (labels / f"{stem}.txt").write_text(
                "".join(
                    (row if isinstance(row, str) else " ".join(str(v) for v in row)) + "\n"
                    for row in rows
                )
            )
        if image:
            return write_image(images / f"{stem}{suffix}", kind, size)
        images.mkdir(parents=True, exist_ok=True)
        return None


class CsvWriter:
    """Writes a CSV table of boxes and an image directory beside it."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.image_dir = self.root / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)

    def image(self, name, kind="rgb", size=(40, 30)):
        return write_image(self.image_dir / name, kind, size)

    def table(self, lines, name="boxes.csv"):
        path = self.root / name
        path.write_text("".join(f"{line}\n" for line in lines))
        return path


@pytest.fixture
def yolo(tmp_path):
    return YoloWriter(tmp_path / "yolo")


@pytest.fixture
def yolo_writer(tmp_path):
    """`YoloWriter` for a tmp dir, with the names and layout to choose."""
    return lambda **kwargs: YoloWriter(tmp_path / "yolo", **kwargs)


@pytest.fixture
def table(tmp_path):
    return CsvWriter(tmp_path / "csv")


@pytest.fixture
def voc(tmp_path):
    return VocWriter(tmp_path / "VOC")


@pytest.fixture
def coco(tmp_path):
    return CocoWriter(tmp_path / "coco")


@pytest.fixture
def image_writer():
    """`write_image`, for tests that write single files."""
    return write_image
