"""The few lines each ``tf-frcnn`` command ends with: what it made, where, and what to run next
(as Ultralytics ends a run with its best weights and results folder)."""

import os

from tf_frcnn.evaluation.report_tables import headline, verdict
from tf_frcnn.progress import duration
from tf_frcnn.rundir import (
    CONFIG_FILE,
    LABELS_FILE,
    LOGS_DIR,
    STATE_FILE,
    RunState,
    read_config,
    trained_weights,
)
from tf_frcnn.stages import RPN_METRIC, RPN_RECALL_AT, STAGES


def _value(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _validations(state, select_by):
    """ "rpn1 recall@300 0.9123 (step 40), ..." of each validated stage's best value (detector
    stages by ``select_by``, ``train.select_by``)."""
    parts = []
    for stage in state.stages:
        record = state.validation.get(stage)
        if record and record.get("best") is not None:
            metric = STAGES[stage].metric
            metric = metric if metric == RPN_METRIC else select_by
            parts.append(f"{stage} {metric} {_value(record['best'])} (step {record['best_step']})")
    return ", ".join(parts)


def _best(best, select_by=None):
    """ "fitness 0.2412 (AP 0.2123, mAP50 0.5012; 44 images) at stage detector4, step 40" of
    state.json's ``best``: the value it was selected by (``train.select_by``; None: the first
    of fitness, AP, mAP50 it holds) first."""
    if select_by is None:
        select_by = next((k for k in ("fitness", "AP", "mAP50") if k in best), "")
    others = [k for k in ("AP", "mAP50") if k in best and k != select_by]
    values = ", ".join(f"{k} {_value(best[k])}" for k in others)
    images = f"{best['images']} images" if "images" in best else ""
    detail = "; ".join(part for part in (values, images) if part)
    detail = f" ({detail})" if detail else ""
    head = f"{select_by} {_value(best[select_by])}" if select_by in best else ""
    return f"{head}{detail} at stage {best['stage']}, step {best['step']}"


def train_summary(model_dir, seconds):
    """The lines ``tf-frcnn train`` ends with: the best validation value with its stage and
    step, the weights ``eval`` will use, where the run's files are, and the next command."""
    state = RunState.load(model_dir)
    select_by = read_config(model_dir).train.select_by
    weights, path = trained_weights(model_dir)
    lines = [f"trained {model_dir} in {duration(seconds)}"]
    if state.best:
        lines.append(f"  best validation: {_best(state.best, select_by)}")
    else:
        lines.append(
            "  best validation: none (the final stage did not validate: "
            "set train.eval_every and data.val_split)"
        )
    validated = _validations(state, select_by)
    if validated:
        lines.append(f"  validations:     {validated}")
    lines += [
        f"  eval will use:   {path} ({weights}; --weights final for the last step)",
        f"  model dir:       {model_dir} ({CONFIG_FILE}, {LABELS_FILE}, {STATE_FILE}, "
        f"{LOGS_DIR}/ for TensorBoard)",
        f"  next:            tf-frcnn eval --model-dir {model_dir}",
    ]
    return "\n".join(lines)


def eval_summary(metrics, files):
    """The lines ``tf-frcnn eval`` ends with: the headline numbers, the RPN's recall@300, the
    error type that costs most, and the files written (``files``: {label: path})."""
    run = metrics.get("run") or {}
    weights = run.get("weights", "")
    if run.get("best"):
        weights += f", {_best(run['best'])}"
    lines = [
        f"evaluated {run.get('model_dir', '')} ({weights}) on split '{metrics.get('split')}', "
        f"{metrics.get('num_images', '?')} images",
        f"  {headline(metrics)}",
    ]
    if RPN_METRIC in metrics:
        lines.append(
            f"  RPN {RPN_METRIC}: {metrics[RPN_METRIC]:.4f} "
            f"(objects the RPN's top {RPN_RECALL_AT} proposals cover at IoU 0.5)"
        )
    lines += [f"  {line}" for line in verdict(metrics, metrics.get("label_errors"))]
    width = max(len(label) for label in files)
    lines += [f"  {label + ':':<{width + 1}} {path}" for label, path in files.items()]
    return "\n".join(lines)


def _size(path):
    """Bytes of a file, of a SavedModel (saved_model.pb, variables/, assets/: not the other
    files of its version directory), or of every file under another directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    parts = [path]
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        parts = [os.path.join(path, name) for name in ("saved_model.pb", "variables", "assets")]
    total = 0
    for part in parts:
        if os.path.isfile(part):
            total += os.path.getsize(part)
        for root, _, names in os.walk(part):
            total += sum(os.path.getsize(os.path.join(root, name)) for name in names)
    return total


def file_size(path):
    """ "812 B", "14.2 kB" or "3.8 MB"."""
    size = _size(path)
    if size < 1000:
        return f"{size} B"
    return f"{size / 1e3:.1f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def export_summary(model_dir, artifacts, verify=None, next_command=None):
    """The lines ``tf-frcnn export`` ends with: each artifact ({name: path}) with its size and,
    from a ``verify_export`` report, its AP change against the Keras model."""
    checked = [row for row in (verify or {}).get("artifacts", []) if row.get("bytes") is not None]
    width = max(len(name) for name in artifacts)
    lines = [f"exported {model_dir}:"]
    for name, path in artifacts.items():
        line = f"  {name:<{width}}  {path}  {file_size(path)}"
        rows = [r for r in checked if os.path.abspath(r["path"]) == os.path.abspath(path)]
        if rows:
            # A SavedModel's two signatures: the worse one.
            row = min(rows, key=lambda r: r["AP_change"])
            line += f"  AP {row['AP']:.4f} ({row['AP_change']:+.4f} vs the Keras model)"
        lines.append(line)
    if verify is not None:
        outcome = "ok" if verify["ok"] else "FAILED"
        lines.append(f"  verified on {verify.get('images', '?')} images: {outcome}")
    if next_command:
        lines.append(f"  next: {next_command}")
    return "\n".join(lines)
