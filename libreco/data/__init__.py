"""Data preparation: datasets, id maps, splits, readers, synthetic data, negative sampling."""

from libreco.data.data_info import DataInfo, FeatureInfo
from libreco.data.dataset import DatasetFeat, DatasetPure, TransformedSet, check_frame
from libreco.data.ids import IdMap

__all__ = ["DataInfo", "FeatureInfo", "DatasetPure", "DatasetFeat", "TransformedSet", "IdMap",
           "check_frame"]

from libreco.data.readers import read_csv, read_movielens_1m, read_movielens_100k
from libreco.data.sampling import NegativeSampler, sample_negatives
from libreco.data.split import (
    random_split,
    split_by_num,
    split_by_num_chrono,
    split_by_ratio,
    split_by_ratio_chrono,
)

__all__ += ["random_split", "split_by_ratio", "split_by_num", "split_by_ratio_chrono",
            "split_by_num_chrono", "read_movielens_100k", "read_movielens_1m", "read_csv",
            "NegativeSampler", "sample_negatives"]
