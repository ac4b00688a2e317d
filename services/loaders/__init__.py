"""Loaders: model directories into versioned Redis keys (see :mod:`services.core.store`).

:data:`FAMILY_LOADERS` maps a model family (the ``family`` of its ``manifest.json``) to the
function ``python -m jobs.load`` runs for it; each takes ``(path, name=None, client=None)`` and
returns the version id it wrote. A new family adds one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

FAMILY_LOADERS: dict[str, str] = {
    "knn": "services.loaders.knn:load_knn",
    "tf": "services.loaders.tf:load_tf",
    "vector": "services.loaders.vector:load_vector",
}


def family_loader(family: str) -> Callable[..., str]:
    """The loader function registered for ``family``."""
    target = FAMILY_LOADERS.get(family)
    if target is None:
        raise ValueError(f"no loader for model family {family!r}; known: "
                         f"{sorted(FAMILY_LOADERS)}")
    module_name, _, func = target.partition(":")
    return getattr(importlib.import_module(module_name), func)
