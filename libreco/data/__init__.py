"""Data preparation: datasets, id maps, splits, readers, synthetic data, negative sampling."""

from libreco.data.data_info import DataInfo, FeatureInfo
from libreco.data.dataset import DatasetFeat, DatasetPure, TransformedSet, check_frame
from libreco.data.ids import IdMap

__all__ = ["DataInfo", "FeatureInfo", "DatasetPure", "DatasetFeat", "TransformedSet", "IdMap",
           "check_frame"]
