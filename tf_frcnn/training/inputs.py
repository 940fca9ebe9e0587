"""Moved to ``tf_frcnn.data.inputs``. Kept only for ``data/analysis.py``, which a parallel change
owns and which imports it inside a function: delete this module once it imports
``tf_frcnn.data.inputs``."""

from tf_frcnn.data.inputs import batches, source

__all__ = ["batches", "source"]
