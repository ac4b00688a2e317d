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

# imported eagerly (numpy only): the function shares its module's name, and binding it here
# keeps ``libreco.utils.save_vector`` the function even after the submodule is imported
from libreco.utils.save_vector import save_vector  # noqa: E402, F401

__all__ = sorted([*_LAZY, "save_vector"])


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"libreco.utils.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'libreco.utils' has no attribute {name!r}")
