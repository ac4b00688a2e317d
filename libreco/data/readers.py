"""Readers for MovieLens folders and for any CSV file with a column mapping.

Every reader returns a DataFrame with our column names (``user``, ``item``, ``label`` and, where
the source has them, ``time`` and feature columns), checked with
:func:`libreco.data.check_frame`. The MovieLens readers return the columns
``user, item, label, time, sex, age, occupation, genre1, genre2, genre3``: genres are lower-case
names, a movie's first three genres in the file's order, padded with ``"missing"``.

File formats (GroupLens):

* MovieLens 100K: ``u.data`` (tab-separated ``user item rating timestamp``), ``u.user``
  (``id|age|gender|occupation|zip``), ``u.item`` (latin-1, ``id|title|release date|video release
  date|IMDb URL|`` then 19 genre flags in the order of ``u.genre``).
* MovieLens 1M: ``ratings.dat`` (``user::movie::rating::timestamp``), ``users.dat``
  (``user::gender::age::occupation::zip``), ``movies.dat`` (latin-1,
  ``movie::title::Genre1|Genre2``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from libreco import logger
from libreco.data.dataset import check_frame

MOVIELENS_COLUMNS = ["user", "item", "label", "time", "sex", "age", "occupation",
                     "genre1", "genre2", "genre3"]
N_GENRES = 3
MISSING = "missing"

# the 19 flags of u.item, in file order (u.genre lists the same names with their positions)
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]

DEFAULT_CSV_COLUMNS = {"user": "userId", "item": "movieId", "label": "rating", "time": "timestamp"}


def read_movielens_100k(folder: str | os.PathLike) -> pd.DataFrame:
    """Read a MovieLens 100K folder (``u.data``, ``u.user``, ``u.item``).

    The ``unknown`` genre flag is not a genre: a movie with only that flag gets three
    ``"missing"`` genres.

    Returns
    -------
    DataFrame with columns ``user, item, label, time, sex, age, occupation, genre1..genre3``
    """
    folder = _folder(folder, ["u.data", "u.user", "u.item"])
    ratings = _read_table(folder / "u.data", "\t", ["user", "item", "label", "time"])
    users = _read_table(folder / "u.user", "|", ["user", "age", "sex", "occupation", "zip"])
    n_meta = 5
    genre_names = _ml100k_genre_names(folder)
    items = _read_table(folder / "u.item", "|", None, encoding="latin-1")
    if items.shape[1] != n_meta + len(genre_names):
        raise ValueError(f"{folder / 'u.item'}: expected {n_meta + len(genre_names)} "
                         f"'|'-separated fields per line, found {items.shape[1]}")
    flags = items.iloc[:, n_meta:].to_numpy(dtype=np.int8)
    names = np.array([g.lower() for g in genre_names], dtype=object)
    flags[:, names == "unknown"] = 0
    genres = _first_genres(flags.astype(bool), names)
    genres.insert(0, "item", items.iloc[:, 0].to_numpy())
    return _merge(ratings, users[["user", "sex", "age", "occupation"]], genres, folder)


def read_movielens_1m(folder: str | os.PathLike) -> pd.DataFrame:
    """Read a MovieLens 1M folder (``ratings.dat``, ``users.dat``, ``movies.dat``).

    Returns
    -------
    DataFrame with columns ``user, item, label, time, sex, age, occupation, genre1..genre3``
    """
    folder = _folder(folder, ["ratings.dat", "users.dat", "movies.dat"])
    ratings = _read_table(folder / "ratings.dat", "::", ["user", "item", "label", "time"])
    users = _read_table(folder / "users.dat", "::", ["user", "sex", "age", "occupation", "zip"])
    movies = _read_table(folder / "movies.dat", "::", ["item", "title", "genres"],
                         encoding="latin-1")
    split = movies["genres"].fillna("").astype(str).str.lower().str.split("|", n=N_GENRES,
                                                                            expand=True)
    genres = pd.DataFrame({"item": movies["item"].to_numpy()})
    for j in range(N_GENRES):
        col = split[j] if j in split.columns else pd.Series([None] * len(movies))
        values = col.where(col.notna() & (col != ""), MISSING)
        genres[f"genre{j + 1}"] = values.to_numpy(dtype=object)
    return _merge(ratings, users[["user", "sex", "age", "occupation"]], genres, folder)


def read_csv(path: str | os.PathLike, columns: dict[str, str | None] | None = None,
             sep: str = ",", **kwargs) -> pd.DataFrame:
    """Read an interaction table from a CSV file and rename its columns to ours.

    Parameters
    ----------
    path : str or path
    columns : dict, optional
        Our column name -> the file's column name. The default reads MovieLens' ``ratings.csv``:
        ``{"user": "userId", "item": "movieId", "label": "rating", "time": "timestamp"}``.
        ``user``, ``item`` and ``label`` must be mapped; a ``time`` mapping is optional (map it
        to ``None`` to leave it out). Other file columns keep their names.
    sep : str
        Field separator.
    **kwargs
        Passed to :func:`pandas.read_csv` (e.g. ``nrows``, ``encoding``).

    Raises
    ------
    ValueError
        When a mapped column is absent from the file, or the data fails
        :func:`~libreco.data.check_frame` (the message names the column).
    """
    mapping = dict(DEFAULT_CSV_COLUMNS if columns is None else columns)
    for ours in ("user", "item", "label"):
        if not mapping.get(ours):
            raise ValueError(f"columns must map {ours!r} to a column of the file")
    mapping = {ours: theirs for ours, theirs in mapping.items() if theirs}
    df = pd.read_csv(path, sep=sep, **kwargs)
    missing = [f"{theirs!r} (for {ours!r})" for ours, theirs in mapping.items()
               if theirs not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)}; the file has "
                         f"{list(df.columns)}")
    renamed = {theirs: ours for ours, theirs in mapping.items()}
    clashes = [c for c in df.columns if c in mapping and c not in renamed]
    if clashes:
        raise ValueError(f"{path}: column {clashes[0]!r} would be shadowed by the renamed "
                         f"column of the same name; map it explicitly or rename it")
    df = df.rename(columns=renamed)
    order = [c for c in ("user", "item", "label", "time") if c in df.columns]
    df = df[order + [c for c in df.columns if c not in order]]
    check_frame(df, name=str(path))
    logger.info("read %d rows from %s", len(df), path)
    return df


# -- helpers ----------------------------------------------------------------------------------
def _folder(folder, required: list[str]) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: folder not found")
    absent = [name for name in required if not (folder / name).is_file()]
    if absent:
        raise ValueError(f"{folder}: missing {', '.join(absent)}")
    return folder


def _read_table(path: Path, sep: str, names, encoding: str = "utf-8") -> pd.DataFrame:
    if len(sep) == 1:
        return pd.read_csv(path, sep=sep, header=None, names=names, encoding=encoding)
    # pandas reads a multi-character separator such as "::" only with its slow python engine;
    # swapping it for a control character lets the C parser read a million lines in a second
    text = path.read_bytes().decode(encoding).replace(sep, "\x1f")
    return pd.read_csv(io.StringIO(text), sep="\x1f", header=None, names=names)


def _ml100k_genre_names(folder: Path) -> list[str]:
    """Genre names from ``u.genre`` (``name|position`` lines) when present, else the default."""
    path = folder / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    table = pd.read_csv(path, sep="|", header=None, names=["name", "pos"], encoding="latin-1")
    table = table.dropna().sort_values("pos")
    return [str(name) for name in table["name"]]


def _first_genres(flags: np.ndarray, names: np.ndarray) -> pd.DataFrame:
    """The first ``N_GENRES`` flagged genre names of every row, padded with ``MISSING``."""
    n = len(flags)
    # column positions of the set flags, in order; unset flags sort to the end
    pos = np.where(flags, np.arange(flags.shape[1]), flags.shape[1])
    first = np.sort(pos, axis=1)[:, :N_GENRES]
    padded = np.append(names, MISSING)
    out = pd.DataFrame(index=range(n))
    for j in range(N_GENRES):
        col = first[:, j] if j < first.shape[1] else np.full(n, flags.shape[1])
        out[f"genre{j + 1}"] = padded[col]
    return out


def _merge(ratings: pd.DataFrame, users: pd.DataFrame, genres: pd.DataFrame,
           folder: Path) -> pd.DataFrame:
    df = ratings.merge(users, on="user", how="left", validate="many_to_one")
    df = df.merge(genres, on="item", how="left", validate="many_to_one")
    for col in ("genre1", "genre2", "genre3"):
        df[col] = df[col].fillna(MISSING)
    n_no_user = int(df["sex"].isna().sum())
    if n_no_user:
        logger.warning("%s: %d ratings have a user without a profile line", folder, n_no_user)
    df = df[MOVIELENS_COLUMNS]
    check_frame(df, name=str(folder))
    logger.info("read %d ratings of %d users on %d items from %s", len(df),
                df["user"].nunique(), df["item"].nunique(), folder)
    return df
