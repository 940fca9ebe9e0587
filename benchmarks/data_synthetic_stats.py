"""Statistics of the synthetic `frcnn_shapes` dataset, and a PNG grid of samples with their boxes.

    python benchmarks/data_synthetic_stats.py [--data-dir DIR] [--image-size 128] [--grid PATH]

Builds (or reuses) the dataset in the TFDS data dir, prints Markdown tables per split:
objects per image, object size (sqrt of box area, pixels), aspect ratio (height / width) and
per-class counts, then draws the first training images with their labelled boxes.

The grid is drawn with Pillow: `keras.visualization.draw_bounding_boxes` needs OpenCV and
`plot_bounding_box_gallery` needs matplotlib, and neither is a dependency of this project.
"""

from __future__ import annotations

import argparse
import collections
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from tf_frcnn.data import SYNTHETIC_CLASS_NAMES, synthetic_dataset

SIZE_EDGES = (0, 16, 24, 32, 48, 64, 96, 128, 10**6)
RATIO_EDGES = (0.5, 0.71, 0.9, 1.1, 1.41, 2.0001)
# Outline colours of the classes in the grid, apart from their fill hues so boxes stay visible.
BOX_COLOURS = ((255, 255, 255), (255, 0, 255), (0, 255, 255), (255, 128, 0))


def _histogram_rows(values, edges, fmt):
    counts, _ = np.histogram(values, bins=edges)
    total = max(len(values), 1)
    return [
        (f"[{fmt(low)}, {fmt(high)})", count, 100.0 * count / total)
        for low, high, count in zip(edges, edges[1:], counts)
    ]


def _table(title, header, rows):
    print(f"\n{title}\n\n| {header} | count | share |\n|---|---:|---:|")
    for name, count, share in rows:
        print(f"| {name} | {count} | {share:.1f}% |")


def split_statistics(split, **options):
    objects_per_image, sizes, ratios, labels, overlapping = [], [], [], [], 0
    for record in synthetic_dataset(split, **options).as_numpy_iterator():
        height, width = record["image"].shape[:2]
        boxes = record["boxes"] * [height, width, height, width]
        box_h, box_w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        objects_per_image.append(len(boxes))
        sizes.extend(np.sqrt(box_h * box_w))
        ratios.extend(box_h / box_w)
        labels.extend(record["labels"])
        for i in range(len(boxes)):
            others = np.delete(boxes, i, axis=0)
            overlap_h = np.minimum(boxes[i, 2], others[:, 2]) - np.maximum(
                boxes[i, 0], others[:, 0]
            )
            overlap_w = np.minimum(boxes[i, 3], others[:, 3]) - np.maximum(
                boxes[i, 1], others[:, 1]
            )
            overlapping += bool(np.any((overlap_h > 0) & (overlap_w > 0)))
    return (
        np.array(objects_per_image),
        np.array(sizes),
        np.array(ratios),
        np.array(labels),
        overlapping,
    )


def print_statistics(split, **options):
    per_image, sizes, ratios, labels, overlapping = split_statistics(split, **options)
    overlap_share = 100.0 * overlapping / max(len(sizes), 1)
    print(
        f"\n### {split}: {len(per_image)} images, {len(sizes)} objects, "
        f"{np.sum(per_image == 0)} images without objects, "
        f"{overlapping} objects ({overlap_share:.1f}%) overlapping another; "
        f"object size {sizes.min():.1f}-{sizes.max():.1f} px, "
        f"aspect ratio {ratios.min():.2f}-{ratios.max():.2f}"
    )
    counts = collections.Counter(per_image.tolist())
    _table(
        "Objects per image",
        "objects",
        [(str(n), counts[n], 100.0 * counts[n] / len(per_image)) for n in range(max(counts) + 1)],
    )
    _table(
        "Object size, sqrt(box area) in pixels",
        "size",
        _histogram_rows(sizes, SIZE_EDGES, lambda v: f"{v:g}" if v < 10**6 else "inf"),
    )
    _table(
        "Aspect ratio, height / width",
        "ratio",
        _histogram_rows(ratios, RATIO_EDGES, lambda v: f"{v:.2f}"),
    )
    class_counts = collections.Counter(labels.tolist())
    _table(
        "Objects per class",
        "class",
        [
            (name, class_counts[index + 1], 100.0 * class_counts[index + 1] / max(len(labels), 1))
            for index, name in enumerate(SYNTHETIC_CLASS_NAMES)
        ],
    )


def save_grid(path, columns=4, rows=4, zoom=2, **options):
    """PNG of the first training images, enlarged `zoom` times, boxes outlined with class names."""
    tiles = []
    for record in synthetic_dataset("train", **options).take(columns * rows).as_numpy_iterator():
        height, width = record["image"].shape[:2]
        tile = Image.fromarray(record["image"]).resize(
            (width * zoom, height * zoom), Image.Resampling.NEAREST
        )
        draw = ImageDraw.Draw(tile)
        for (ymin, xmin, ymax, xmax), label in zip(
            record["boxes"] * [height, width, height, width] * zoom, record["labels"]
        ):
            colour = BOX_COLOURS[(label - 1) % len(BOX_COLOURS)]
            draw.rectangle([xmin, ymin, xmax - 1, ymax - 1], outline=colour, width=2)
            draw.text((xmin + 2, ymin + 1), SYNTHETIC_CLASS_NAMES[label - 1], fill=colour)
        tiles.append(tile)
    tile_w, tile_h = tiles[0].size
    gap = 4
    grid = Image.new(
        "RGB", (columns * (tile_w + gap) - gap, rows * (tile_h + gap) - gap), (255, 255, 255)
    )
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * (tile_w + gap), (index // columns) * (tile_h + gap)))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=None, help="TFDS data dir (default ~/tensorflow_datasets)"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-validation", type=int, default=64)
    parser.add_argument("--num-test", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--grid", default="benchmarks/data_synthetic_samples.png", help="output PNG"
    )
    args = parser.parse_args()
    options = dict(
        data_dir=args.data_dir,
        image_size=args.image_size,
        num_train=args.num_train,
        num_validation=args.num_validation,
        num_test=args.num_test,
        seed=args.seed,
    )
    print(f"## frcnn_shapes statistics ({args.image_size}x{args.image_size}, seed {args.seed})")
    for split in ("train", "validation", "test"):
        print_statistics(split, **options)
    print(f"\nsample grid: {save_grid(args.grid, **options)}")


if __name__ == "__main__":
    main()
