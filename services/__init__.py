"""HTTP serving of libreco models: the shared core, the family services and the Redis loaders.

The loader functions of the serving guide are importable from here::

    from services import sim2redis, user_consumed2redis, vector2redis, save_faiss_index
    from services import data_info2redis, seq2redis

They are imported on first use, so ``import services`` loads neither the training library, nor
faiss, nor TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_LOADERS = {
    "sim2redis": "services.loaders.knn",
    "user_consumed2redis": "services.loaders.knn",
    "vector2redis": "services.loaders.vector",
    "save_faiss_index": "services.loaders.vector",
    "data_info2redis": "services.loaders.tf",
    "seq2redis": "services.loaders.tf",
}

__all__ = sorted(_LOADERS)


def __getattr__(name: str) -> Any:
    module = _LOADERS.get(name)
    if module is None:
        raise AttributeError(f"module 'services' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LOADERS])
