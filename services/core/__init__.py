"""The serving core shared by the knn, vector and tf services.

``create_app(family)`` builds a family's Flask app: configuration from the environment
(:mod:`~services.core.config`), JSON errors (:mod:`~services.core.errors`), health and metrics
routes, the versioned Redis store (:mod:`~services.core.store`, :mod:`~services.core.versions`)
and the recommend route around the family's :class:`~services.core.family.FamilyHandler`.

Names are imported on first use, so that the loaders can use the store without Flask.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "services.core.app",
    "Config": "services.core.config",
    "ConfigError": "services.core.config",
    "RedisSettings": "services.core.config",
    "ServiceError": "services.core.errors",
    "BadRequest": "services.core.errors",
    "NotFound": "services.core.errors",
    "StoreUnavailable": "services.core.errors",
    "Candidates": "services.core.family",
    "FamilyHandler": "services.core.family",
    "ModelVersion": "services.core.versions",
    "Store": "services.core.versions",
    "VersionWriter": "services.core.store",
    "redis_client": "services.core.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'services.core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
