"""The model directory's files are written atomically and as readable as the umask allows."""

import os
import stat

import keras

from tf_frcnn.config import Config
from tf_frcnn.rundir import (
    RunState,
    atomic_write_text,
    save_weights_atomic,
    write_config,
    write_labels,
)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_model_dir_files_take_the_umask_not_tempfiles_private_mode(tmp_path):
    old = os.umask(0o022)
    try:
        RunState(str(tmp_path), "alternating", ["rpn1"]).save()
        write_config(str(tmp_path), Config())
        write_labels(str(tmp_path), ["circle", "square"])
        atomic_write_text(str(tmp_path / "notes.txt"), "x\n")
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
        save_weights_atomic(
            keras.Sequential([keras.Input((3,)), layer]), str(tmp_path / "w.weights.h5")
        )
        os.umask(0o077)
        atomic_write_text(str(tmp_path / "private.txt"), "x\n")
    finally:
        os.umask(old)
    names = ["state.json", "config.yaml", "labels.txt", "notes.txt", "w.weights.h5"]
    assert {name: mode(tmp_path / name) for name in names} == dict.fromkeys(names, 0o644)
    assert mode(tmp_path / "private.txt") == 0o600
    assert sorted(os.listdir(tmp_path)) == sorted(names + ["private.txt"])  # no temporary left
