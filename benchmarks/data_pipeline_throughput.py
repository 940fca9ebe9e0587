"""Examples per second of the training input pipeline (decode, resize, flip, pad, batch).

    python benchmarks/data_pipeline_throughput.py [--data-dir DIR] [--voc-root DIR]
        [--min-size 128 300 600] [--max-size 1000] [--batch-size 2]

Times `build_pipeline(..., training=True)` over the synthetic demo dataset, and over a VOC
directory when `--voc-root` is given, after one warm-up pass. The detector must not wait
for data: compare the rate with the training steps per second times the batch size.
"""

from __future__ import annotations

import argparse
import time

from tf_frcnn.data import build_pipeline, discover_voc_classes, synthetic_dataset, voc_dataset


def examples_per_second(records, *, batch_size, min_size, max_size, passes=2, augment=None):
    pipeline = build_pipeline(
        records,
        training=True,
        batch_size=batch_size,
        min_size=min_size,
        max_size=max_size,
        seed=0,
        augment=augment,
    )
    for _ in pipeline:  # warm-up: tracing, TFDS's in-memory cache, file system cache
        pass
    count, start = 0, time.perf_counter()
    for _ in range(passes):
        for batch in pipeline:
            count += int(batch["images"].shape[0])
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="TFDS data dir for the synthetic dataset")
    parser.add_argument("--voc-root", default=None, help="a VOC-layout directory to time as well")
    parser.add_argument("--voc-split", default="trainval")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--min-size", type=int, nargs="+", default=[128, 300, 600])
    parser.add_argument("--max-size", type=int, default=1000)
    args = parser.parse_args()

    sources = {
        "synthetic train (default: 512 x 128x128 PNG)": synthetic_dataset("train", args.data_dir)
    }
    if args.voc_root:
        classes = discover_voc_classes(args.voc_root, args.voc_split)
        sources[f"VOC {args.voc_root} {args.voc_split} (JPEG)"] = voc_dataset(
            args.voc_root, args.voc_split, class_names=classes
        )
    print("| source | min_size / max_size | batch | examples/s |\n|---|---|---:|---:|")
    for name, records in sources.items():
        for min_size in args.min_size:
            rate = examples_per_second(
                records, batch_size=args.batch_size, min_size=min_size, max_size=args.max_size
            )
            print(f"| {name} | {min_size} / {args.max_size} | {args.batch_size} | {rate:.0f} |")


if __name__ == "__main__":
    main()
