"""Safety properties of the code base: YAML only through the safe loader, no pickle, an
export writes only under its output directory, and every file of the model directory that
a resume relies on is written atomically."""

import ast
import os
import pathlib
import tempfile

import pytest

from tf_frcnn_cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for folder in ("tf_frcnn", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")
)
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_YAML = {
    "load",
    "load_all",
    "full_load",
    "full_load_all",
    "unsafe_load",
    "unsafe_load_all",
    "Loader",
    "FullLoader",
    "UnsafeLoader",
    "CLoader",
    "CFullLoader",
    "CUnsafeLoader",
}


def _trees():
    for path in SOURCES:
        yield path.relative_to(ROOT), ast.parse(path.read_text(), str(path))


def test_yaml_is_only_read_with_the_safe_loader():
    offences = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr in UNSAFE_YAML
            ):
                offences.append(f"{path}:{node.lineno} yaml.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                offences += [
                    f"{path}:{node.lineno} from yaml import {a.name}"
                    for a in node.names
                    if a.name in UNSAFE_YAML
                ]
    assert not offences


def test_nothing_is_pickled_or_unpickled():
    offences = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offences += [
                    f"{path}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in PICKLERS
                ]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in PICKLERS:
                    offences.append(f"{path}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.keyword):
                # np.load(allow_pickle=True), keras.saving.load_model(safe_mode=False)
                if (node.arg == "allow_pickle" and not _is_false(node.value)) or (
                    node.arg == "safe_mode" and _is_false(node.value)
                ):
                    offences.append(f"{path}:{node.value.lineno} {node.arg}=")
    assert not offences


def _is_false(node):
    return isinstance(node, ast.Constant) and node.value is False


def test_a_config_cannot_run_code(tmp_path, capsys):
    """The safe loader refuses Python tags (the corpus checks the CLI's one-line error)."""
    from tf_frcnn import ConfigError, load_config

    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    assert not marker.exists()


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in pathlib.Path(folder).rglob("*")
    }


def test_export_writes_only_under_its_output_dir(trained_dir, tmp_path, monkeypatch):
    """`tf-frcnn export --tflite` from a finished model dir, run from an empty working dir
    with its own temp dir: afterwards the model dir is unchanged, the working dir is empty,
    the temp dir holds nothing of the export, and every new file is under OUT/1/."""
    work, scratch, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "exports" / "smoke"
    work.mkdir()
    scratch.mkdir()
    before = _snapshot(trained_dir)
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["export", "--model-dir", str(trained_dir), "--out", str(out), "--tflite"]) == 0
    assert _snapshot(trained_dir) == before
    assert list(work.iterdir()) == []
    # Autograph keeps the Python source of each function it converts in the temp dir until
    # the process exits; the TFLite converter's temporary SavedModel is gone already.
    assert [
        p.name for p in scratch.iterdir() if not p.name.startswith("__autograph_generated_file")
    ] == []
    written = sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p.is_file() and not p.is_relative_to(trained_dir) and not p.is_relative_to(scratch)
    )
    assert written and all(
        name.startswith(os.path.join("exports", "smoke", "1", "")) for name in written
    ), written
    assert {"saved_model.pb", "labels.txt", "model.tflite"} <= {
        os.path.basename(n) for n in written
    }


def test_training_writes_its_files_only_through_the_atomic_helpers():
    """Under tf_frcnn/training, files are written (``open(.., "w")``, ``save_weights``,
    ``write_text``) only in state.py, whose helpers write a temporary file and rename it.
    Allowed elsewhere: TF checkpoints (``CheckpointManager.save``, temp-and-rename by TF),
    TensorBoard event files and the append-only ``losses.jsonl`` (a row repeated after a
    kill is read once, the later one winning)."""
    offences = []
    for path in sorted((ROOT / "tf_frcnn" / "training").glob("*.py")):
        if path.name == "state.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("save_weights", "write_text", "write_bytes", "save"):
                owner = getattr(node.func, "value", None)
                # ``manager.save`` / ``state.save``, also as ``self.records.manager.save``
                owner_name = getattr(owner, "id", getattr(owner, "attr", ""))
                if name == "save" and owner_name in ("manager", "state"):
                    continue
                offences.append(f"{path.name}:{node.lineno} {name}")
            if name == "open" and any(
                isinstance(a, ast.Constant) and "w" in str(a.value) for a in node.args[1:2]
            ):
                offences.append(f"{path.name}:{node.lineno} open(.., 'w')")
    assert not offences


def test_a_killed_run_leaves_only_complete_files(smoke_runs):
    """After three SIGKILLs, every state, weights and checkpoint file under its real name
    parses; a leftover ``.tmp-*`` file (a kill mid-write) is never read."""
    import json

    import h5py
    import tensorflow as tf

    killed = pathlib.Path(smoke_runs[1])
    json.loads((killed / "state.json").read_text())
    for weights in killed.rglob("*.weights.h5"):
        if not weights.name.startswith(".tmp-"):
            with h5py.File(weights, "r"):
                pass
    for stage in ("rpn1", "detector2", "rpn3", "detector4"):
        latest = tf.train.latest_checkpoint(str(killed / "stages" / stage))
        assert latest and tf.train.list_variables(latest)
