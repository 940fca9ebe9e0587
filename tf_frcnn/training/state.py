"""Moved to ``tf_frcnn.rundir``. Kept only for ``evaluation/report.py`` and ``data/analysis.py``,
which parallel changes own and which import it inside functions: delete this module once they
import ``tf_frcnn.rundir``."""

from tf_frcnn.rundir import CONFIG_FILE, atomic_write_text, read_config

__all__ = ["CONFIG_FILE", "atomic_write_text", "read_config"]
