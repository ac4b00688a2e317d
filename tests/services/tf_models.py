"""Small fitted TF models shared by the tf service tests (one fit per test session, through
the ``tf_models`` fixture of ``tests/services/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

from libreco.data import DatasetFeat
from libreco.data.synthetic import FEATURE_COLUMNS, generate

TINY = {"n_epochs": 2, "embed_size": 8, "hidden_units": (16,), "batch_size": 128}


class TFModels:
    """DeepFM, DIN and YouTubeRanking on generated data with features, each saved with
    ``save_info`` into ``<folder>/<algo>`` and exported with ``save_model_tf_serving`` into
    ``<folder>/serving``."""

    def __init__(self, folder: Path, seed: int = 5):
        from libreco.algorithms import DIN, DeepFM, YouTubeRanking

        self.folder = folder
        self.serving = folder / "serving"
        df = generate(n_users=200, n_items=150, n_interactions=4000, seed=seed)
        self.df = df
        self.train, self.info = DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)
        self.models = {}
        self.paths = {}
        for cls in (DeepFM, DIN, YouTubeRanking):
            self.add(cls(task="ranking", data_info=self.info, seed=seed, **TINY))

    def add(self, model, name: str | None = None) -> None:
        """Fit ``model`` when needed, then save and export it under ``name``."""
        from libreco.utils import save_info, save_model_tf_serving

        if not model.fitted:
            model.fit(self.train, verbose=0)
        name = name or model.algorithm
        save_info(self.folder / name, model, self.train, self.info)
        save_model_tf_serving(self.serving, model, model.algorithm)
        self.models[name] = model
        self.paths[name] = self.folder / name

