import os

import pytest

from tf_frcnn import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture()
def smoke_config(tfds_dir):
    config = load_config(os.path.join(ROOT, "configs", "smoke.yaml"))
    config.data.data_dir = tfds_dir
    return config
