"""The one rule for relative paths in a config: they are read from the current directory (where
``tf-frcnn`` runs), as a shell reads them, not from the config file's directory. The CLI makes
them absolute when it loads a config, so every error names the resolved path and the model
directory's config.yaml means the same files from any directory."""

import os

# (section, key) of the config keys holding a file or directory; data.root is a TFDS dataset's
# name, not a path, when data.source is "tfds"; model.weights may be "imagenet".
PATH_KEYS = (
    ("data", "root"),
    ("data", "annotations"),
    ("data", "eval_annotations"),
    ("data", "eval_root"),
    ("data", "data_dir"),
    ("model", "weights"),
)
NOT_PATHS = {("data", "root"): ("tfds",)}


def absolute_paths(config):
    """``config`` with its relative paths (``PATH_KEYS``) made absolute against the current
    directory; changed in place and returned."""
    for section, key in PATH_KEYS:
        part = getattr(config, section)
        value = getattr(part, key)
        if not isinstance(value, str) or not value or os.path.isabs(value):
            continue
        if value == "imagenet" and key == "weights":
            continue
        if config.data.source in NOT_PATHS.get((section, key), ()):
            continue
        setattr(part, key, os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(value))))
    return config
