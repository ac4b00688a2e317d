"""Train / test splits of an interaction table.

Every splitter returns new DataFrames whose rows keep the order they had in the input, with a
fresh ``RangeIndex``. ``random_split`` splits the whole frame; the ``split_by_*`` functions split
each user's rows separately and always keep at least one row of every user in the training part,
so that every user of a test part is known to the model.

The per-user splitters share one vectorised core: the rows are put in the wanted order (a seeded
permutation, frame order, or by ``time``) and grouped by user with a linear-time counting sort
that keeps that order; each row's rank inside its user follows from the user's offset, and a
row's part is found by comparing its rank with per-user cut points. No Python loop runs over
users, so ten million rows split in a few seconds.

With ``filter_unknown=True`` (the default of the per-user splitters), rows of a test part whose
item never appears in the training part are dropped, and the number dropped is logged: a model
cannot score an item it has never seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from libreco import logger
from libreco.data.ids import group_order


def random_split(df: pd.DataFrame, test_size: float = 0.2,
                 multi_ratios: Sequence[float] | None = None, seed: int = 42,
                 filter_unknown: bool = False) -> list[pd.DataFrame]:
    """Split the whole frame at random, ignoring users.

    Parameters
    ----------
    df : DataFrame
    test_size : float in (0, 1)
        Fraction of rows in the test part (ignored when ``multi_ratios`` is given).
    multi_ratios : sequence of float, optional
        Fractions of several parts, e.g. ``[0.8, 0.1, 0.1]`` for train, eval and test; they are
        normalised to sum to one.
    seed : int
    filter_unknown : bool
        Drop rows of the later parts whose user or item is absent from the first part. Off by
        default, so that the parts partition ``df`` exactly.

    Returns
    -------
    list of DataFrame
        ``[train, test]``, or one frame per entry of ``multi_ratios``.
    """
    _check_input(df)
    ratios = _ratios(test_size, multi_ratios)
    n = len(df)
    perm = np.random.default_rng(seed).permutation(n)
    # the first round(c_j * n) rows of the permutation belong to parts 0..j
    cuts = np.rint(np.cumsum(ratios)[:-1] * n).astype(np.int64)
    part = np.empty(n, dtype=np.int8)
    part[perm] = np.searchsorted(cuts, np.arange(n), side="right")
    if filter_unknown:
        part = _filter_unknown(df, part, users=True)
    return _take_parts(df, part, len(ratios))


def split_by_ratio(df: pd.DataFrame, test_size: float = 0.2,
                   multi_ratios: Sequence[float] | None = None, shuffle: bool = True,
                   filter_unknown: bool = True, seed: int = 42) -> list[pd.DataFrame]:
    """Split each user's rows by a ratio.

    A user with ``n`` rows puts ``round(c_j * n)`` of them in parts ``0..j`` (``c_j`` the
    cumulative ratios), with at least one row in the training part.

    Parameters
    ----------
    df : DataFrame with a ``user`` column
    test_size : float in (0, 1)
        Fraction of each user's rows in the test part (ignored when ``multi_ratios`` is given).
    multi_ratios : sequence of float, optional
        Fractions of several parts, first the training part; normalised to sum to one.
    shuffle : bool
        Choose each user's test rows at random; otherwise the user's last rows in frame order
        go to the test part.
    filter_unknown : bool
        Drop test rows whose item is absent from the training part (see module notes).
    seed : int

    Returns
    -------
    list of DataFrame
        ``[train, test]``, or one frame per entry of ``multi_ratios``.
    """
    _check_input(df, "user")
    ratios = _ratios(test_size, multi_ratios)
    rank, count = _user_ranks(df, "random" if shuffle else "position", seed)
    return _finish(df, _ratio_parts(rank, count, ratios), len(ratios), filter_unknown)


def split_by_num(df: pd.DataFrame, test_size: int = 1, shuffle: bool = True,
                 filter_unknown: bool = True, seed: int = 42) -> list[pd.DataFrame]:
    """Put ``test_size`` rows of each user in the test part.

    A user with ``n <= test_size`` rows gives ``n - 1`` rows to the test part and keeps one for
    training.

    Parameters
    ----------
    df : DataFrame with a ``user`` column
    test_size : int >= 1
    shuffle : bool
        Choose the rows at random; otherwise the user's last rows in frame order.
    filter_unknown : bool
        Drop test rows whose item is absent from the training part (see module notes).
    seed : int

    Returns
    -------
    [train, test] : list of DataFrame
    """
    _check_input(df, "user")
    _check_num(test_size)
    rank, count = _user_ranks(df, "random" if shuffle else "position", seed)
    part = (rank >= np.maximum(count - test_size, 1)).astype(np.int8)
    return _finish(df, part, 2, filter_unknown)


def split_by_ratio_chrono(df: pd.DataFrame, test_size: float = 0.2,
                          multi_ratios: Sequence[float] | None = None,
                          filter_unknown: bool = True) -> list[pd.DataFrame]:
    """Like :func:`split_by_ratio`, with each user's most recent rows (by ``time``) as test.

    Rows with equal times keep their frame order.

    Raises
    ------
    ValueError
        When ``df`` has no ``time`` column.
    """
    _check_input(df, "user", "time")
    ratios = _ratios(test_size, multi_ratios)
    rank, count = _user_ranks(df, "time", None)
    return _finish(df, _ratio_parts(rank, count, ratios), len(ratios), filter_unknown)


def split_by_num_chrono(df: pd.DataFrame, test_size: int = 1,
                        filter_unknown: bool = True) -> list[pd.DataFrame]:
    """Like :func:`split_by_num`, with each user's ``test_size`` most recent rows as test.

    Raises
    ------
    ValueError
        When ``df`` has no ``time`` column.
    """
    _check_input(df, "user", "time")
    _check_num(test_size)
    rank, count = _user_ranks(df, "time", None)
    part = (rank >= np.maximum(count - test_size, 1)).astype(np.int8)
    return _finish(df, part, 2, filter_unknown)


# -- shared core ------------------------------------------------------------------------------
def _check_input(df, *columns: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"data must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("data is empty: it needs at least one row")
    for col in columns:
        if col not in df.columns:
            raise ValueError(f"data has no column {col!r}, which this split needs "
                             f"(columns: {list(df.columns)})")
    if "user" in columns and df["user"].isna().any():
        raise ValueError(f"column 'user' has {int(df['user'].isna().sum())} missing (NaN) ids")
    if "time" in columns:
        t = df["time"]
        if not (pd.api.types.is_numeric_dtype(t) or pd.api.types.is_datetime64_any_dtype(t)):
            raise ValueError("column 'time' must be numeric (e.g. a Unix timestamp) or datetime")
        if t.isna().any():
            raise ValueError(f"column 'time' has {int(t.isna().sum())} missing values")


def _ratios(test_size, multi_ratios) -> np.ndarray:
    if multi_ratios is None:
        if not 0.0 < float(test_size) < 1.0:
            raise ValueError(f"test_size must be a fraction between 0 and 1, got {test_size!r}")
        return np.array([1.0 - float(test_size), float(test_size)])
    ratios = np.asarray(multi_ratios, dtype=np.float64)
    if ratios.ndim != 1 or len(ratios) < 2 or (ratios <= 0).any() or not np.isfinite(ratios).all():
        raise ValueError(f"multi_ratios must hold at least two positive numbers, got "
                         f"{multi_ratios!r}")
    return ratios / ratios.sum()


def _check_num(test_size) -> None:
    if not isinstance(test_size, (int, np.integer)) or isinstance(test_size, bool) \
            or test_size < 1:
        raise ValueError(f"test_size must be a positive integer number of rows, got "
                         f"{test_size!r}")


def _user_ranks(df: pd.DataFrame, order: str, seed):
    """Each row's rank inside its user's rows, and its user's row count.

    ``order`` is ``"random"`` (seeded), ``"position"`` (frame order) or ``"time"`` (then frame
    order for ties).
    """
    codes, uniques = pd.factorize(df["user"], sort=False)
    n, n_users = len(codes), len(uniques)
    # 32-bit indices halve the memory traffic of the gathers below
    idx = np.int32 if n < 2 ** 31 else np.int64
    codes = codes.astype(idx)
    # bring the rows into the wanted order, then group them by user keeping that order
    if order == "random":
        rows = np.random.default_rng(seed).permutation(n).astype(idx)
    elif order == "time":
        t = df["time"]
        t = t.astype("int64") if pd.api.types.is_datetime64_any_dtype(t) else t
        t = t.to_numpy()
        rows = None if (np.diff(t) >= 0).all() else np.argsort(t, kind="stable")
    else:
        rows = None
    if rows is None:
        sorted_rows = group_order(codes, n_users)
    else:
        sorted_rows = rows[group_order(codes[rows], n_users)]
    count = np.bincount(codes, minlength=n_users).astype(idx)
    start = np.zeros(n_users, dtype=idx)
    np.cumsum(count[:-1], out=start[1:])
    rank = np.empty(n, dtype=idx)
    rank[sorted_rows] = np.arange(n, dtype=idx) - start[codes[sorted_rows]]
    return rank, count[codes]


def _ratio_parts(rank: np.ndarray, count: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Part of each row: a user's rows of rank >= round(c_j * n) are past the j-th cut."""
    part = np.zeros(len(rank), dtype=np.int8)
    for c in np.cumsum(ratios)[:-1]:
        # never below one training row per user
        part += rank >= np.clip(np.rint(c * count).astype(np.int64), 1, count)
    return part


def _filter_unknown(df: pd.DataFrame, part: np.ndarray, users: bool) -> np.ndarray:
    """Mark rows of parts > 0 whose item (and user) is absent from part 0 with part -1."""
    later = part > 0
    unknown = np.zeros(len(df), dtype=bool)
    for col in ("user", "item") if users else ("item",):
        if col not in df.columns:
            continue
        codes, uniques = pd.factorize(df[col], sort=False)
        in_train = np.zeros(len(uniques), dtype=bool)
        in_train[codes[part == 0]] = True
        unknown |= later & ~in_train[codes]
    n_drop = int(unknown.sum())
    if n_drop:
        logger.info("split: dropped %d of %d held-out rows with users or items absent from the "
                    "training part", n_drop, int(later.sum()))
        part = part.copy()
        part[unknown] = -1
    return part


def _finish(df, part, n_parts, filter_unknown):
    if filter_unknown:
        part = _filter_unknown(df, part, users=False)
    return _take_parts(df, part, n_parts)


def _take_parts(df: pd.DataFrame, part: np.ndarray, n_parts: int) -> list[pd.DataFrame]:
    return [df.iloc[np.flatnonzero(part == j)].reset_index(drop=True) for j in range(n_parts)]
