"""All algorithms, imported on first use so that TensorFlow loads only for the TF models.

========================  =============  ==========  =================
class                     algorithm      family      module
========================  =============  ==========  =================
Popular                   popular        baseline    popular
UserCF, ItemCF            user_cf, ...   knn         user_cf, item_cf
SVD, SVDpp, ALS, BPR      svd, ...       vector      svd, svdpp, ...
YouTubeMatch              youtube_match  vector      youtube_match
WideDeep, FM, DeepFM      wide_deep ...  tf          wide_deep, ...
YouTubeRanking, AutoInt   ...            tf          ...
DIN                       din            tf          din
========================  =============  ==========  =================
"""

from __future__ import annotations

import importlib

from libreco.algorithms.base import (
    NonFiniteError,
    NotFittedError,
    Recommender,
    UnknownUserError,
)

# class name -> (module, algorithm name used in artifacts, Redis and URLs)
REGISTRY: dict[str, tuple[str, str]] = {
    "Popular": ("popular", "popular"),
    "UserCF": ("user_cf", "user_cf"),
    "ItemCF": ("item_cf", "item_cf"),
    "SVD": ("svd", "svd"),
    "SVDpp": ("svdpp", "svdpp"),
    "ALS": ("als", "als"),
    "BPR": ("bpr", "bpr"),
    "YouTubeMatch": ("youtube_match", "youtube_match"),
    "WideDeep": ("wide_deep", "wide_deep"),
    "FM": ("fm", "fm"),
    "DeepFM": ("deepfm", "deepfm"),
    "YouTubeRanking": ("youtube_ranking", "youtube_ranking"),
    "AutoInt": ("autoint", "autoint"),
    "DIN": ("din", "din"),
}
ALGORITHMS: dict[str, str] = {algo: cls for cls, (_, algo) in REGISTRY.items()}

__all__ = ["Recommender", "NonFiniteError", "NotFittedError", "UnknownUserError",
           "get_algorithm", *REGISTRY]


def __getattr__(name: str):
    if name in REGISTRY:
        module = importlib.import_module(f"libreco.algorithms.{REGISTRY[name][0]}")
        return getattr(module, name)
    raise AttributeError(f"module 'libreco.algorithms' has no attribute {name!r}")


def get_algorithm(name: str) -> type[Recommender]:
    """The class for an algorithm name (``"item_cf"``) or class name (``"ItemCF"``)."""
    cls_name = ALGORITHMS.get(name, name if name in REGISTRY else None)
    if cls_name is None:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}")
    try:
        return __getattr__(cls_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"algorithm {name!r} is not available: {e}") from e
