"""Saving models for serving, and shared helpers.

The savers are imported on first use, so ``import libreco.utils`` never imports TensorFlow.
"""

from __future__ import annotations

import importlib

# public name -> module under libreco.utils
_LAZY: dict[str, str] = {
    "save_knn": "knn_export",
    "save_info": "tf_export",
    "save_model_tf_serving": "tf_export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"libreco.utils.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'libreco.utils' has no attribute {name!r}")
