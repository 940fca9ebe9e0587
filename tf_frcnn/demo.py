"""``tf-frcnn demo`` (what ``make demo`` runs): generate the synthetic dataset,
train with the paper's 4-step alternating schedule, evaluate on the test split,
export a SavedModel (and TFLite), draw predictions, print a summary."""

import os
import time

from tf_frcnn.config import load_config
from tf_frcnn.data import inputs, synthetic_builder
from tf_frcnn.data.resolve import resolve_config
from tf_frcnn.evaluation import format_table
from tf_frcnn.evaluation.runner import evaluate_model_dir
from tf_frcnn.export import export_saved_model, export_tflite, load_predictor, read_labels
from tf_frcnn.rundir import load_trained_model
from tf_frcnn.training import Trainer
from tf_frcnn.visualize import draw_predictions

DEFAULT_CONFIG = os.path.join("configs", "shapes.yaml")
EXPORT_DIR = os.path.join("saved_models", "shapes")
NUM_PICTURES = 6


def _step(number, text):
    print(f"\n[{number}/5] {text}", flush=True)


def run_demo(config_path=None, model_dir="runs/demo", data_dir=None, export_dir=EXPORT_DIR):
    start = time.perf_counter()
    config = load_config(config_path or DEFAULT_CONFIG)
    config.data.data_dir = data_dir or config.data.data_dir or os.path.join("runs", "tfds")
    d = config.data

    _step(
        1,
        f"synthetic dataset ({d.num_train} train / {d.num_eval} test images of "
        f"{d.image_size}x{d.image_size}) in {d.data_dir}",
    )
    synthetic_builder(d.data_dir, **inputs.synthetic_options(d))

    _step(
        2,
        f"4-step alternating training into {model_dir} (resumes a killed run; "
        "a finished one is reused)",
    )
    train_start = time.perf_counter()
    Trainer(config, model_dir, resolve=resolve_config).run(resume=True)
    train_seconds = time.perf_counter() - train_start
    model, _ = load_trained_model(model_dir)

    _step(3, f"evaluation on the '{d.eval_split}' split")
    metrics, report = evaluate_model_dir(config, model, model_dir)

    _step(4, f"export to {export_dir}")
    class_names = read_labels(model_dir)
    version_dir = export_saved_model(
        model, export_dir, class_names, min_size=d.min_size, max_size=d.max_size, pad_to=d.pad_to
    )
    tflite_path = export_tflite(
        model,
        os.path.join(version_dir, "model.tflite"),
        height=d.image_size,
        width=d.image_size,
        min_size=d.min_size,
        max_size=d.max_size,
    )

    _step(5, "predictions of the SavedModel on test images")
    predictor = load_predictor(version_dir)
    # A slice of the split, read to its end: `take` on TFDS's auto-cached split would leave the
    # cache half-read, which TensorFlow warns about.
    records, _ = inputs.source(config, f"{d.eval_split}[:{NUM_PICTURES}]")
    pictures = os.path.join(model_dir, "predictions")
    for record in records.as_numpy_iterator():
        name = record["image_id"].decode()
        path = os.path.join(pictures, f"{name}.png")
        kept = draw_predictions(predictor, record["image"], class_names, path)
        print(f"  {name}: {len(kept)} detections (score >= 0.5) -> {path}")

    print("\n" + format_table(metrics))
    print(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s (training {train_seconds:.0f} s)"
    )
    print(f"  model dir:   {model_dir} (metrics.json, report.md, report.html, plots)")
    print(f"  SavedModel:  {version_dir}")
    print(f"  TFLite:      {tflite_path}")
    print(f"  predictions: {pictures}/")
    print(f"  report:      {report}")
    return metrics
