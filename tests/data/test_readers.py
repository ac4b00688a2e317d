"""MovieLens and CSV readers on tiny files written in the original formats."""

import numpy as np
import pandas as pd
import pytest

from libreco.data import DatasetFeat, read_csv, read_movielens_1m, read_movielens_100k
from libreco.data.readers import ML100K_GENRES, MOVIELENS_COLUMNS


def flags(*names):
    return "|".join("1" if g in names else "0" for g in ML100K_GENRES)


@pytest.fixture
def ml100k(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(
        "1\t1\t5\t874965758\n"
        "1\t2\t3\t876893171\n"
        "2\t3\t4\t878542960\n"
        "2\t4\t1\t876893119\n"
    )
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    kids = "Children's"
    lines = [
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', kids, 'Comedy')}",
        f"2|Café Noir (1949)|01-Jan-1949||http://x|"
        f"{flags('Crime', 'Drama', 'Film-Noir', 'Thriller')}",
        f"3|Unknown (1990)|01-Jan-1990||http://x|{flags('unknown')}",
        f"4|Speed (1994)|01-Jan-1994||http://x|{flags('Action')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def test_movielens_100k(ml100k):
    df = read_movielens_100k(ml100k)
    assert list(df.columns) == MOVIELENS_COLUMNS
    assert len(df) == 4
    row = df.set_index("item")
    assert row.loc[1, ["genre1", "genre2", "genre3"]].tolist() == ["animation", "children's",
                                                                  "comedy"]
    # four genres: the first three in file order
    assert row.loc[2, ["genre1", "genre2", "genre3"]].tolist() == ["crime", "drama", "film-noir"]
    # the "unknown" flag is not a genre
    assert row.loc[3, ["genre1", "genre2", "genre3"]].tolist() == ["missing"] * 3
    assert row.loc[4, ["genre1", "genre2", "genre3"]].tolist() == ["action", "missing",
                                                                  "missing"]
    assert row.loc[1, ["user", "label", "time", "sex", "age", "occupation"]].tolist() == [
        1, 5, 874965758, "M", 24, "technician"]
    assert row.loc[3, "sex"] == "F"
    # ready for the feature dataset
    DatasetFeat.build_trainset(df, user_col=["sex", "age", "occupation"],
                               item_col=["genre1", "genre2", "genre3"],
                               sparse_col=["sex", "occupation", "genre1", "genre2", "genre3"],
                               dense_col=["age"])


def test_movielens_100k_genre_file_overrides_order(ml100k):
    # a u.genre that names the flags differently is honoured
    names = [g.upper() if g == "Action" else g for g in ML100K_GENRES]
    (ml100k / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(names)))
    df = read_movielens_100k(ml100k)
    assert df.loc[df["item"] == 4, "genre1"].item() == "action"


def test_movielens_100k_missing_file(ml100k):
    (ml100k / "u.user").unlink()
    with pytest.raises(ValueError, match="u.user"):
        read_movielens_100k(ml100k)
    with pytest.raises(ValueError, match="not found"):
        read_movielens_100k(ml100k / "nope")


def test_movielens_100k_bad_item_line(ml100k):
    (ml100k / "u.item").write_text("1|Toy Story|x||y|0|1\n")
    with pytest.raises(ValueError, match="u.item"):
        read_movielens_100k(ml100k)


@pytest.fixture
def ml1m(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text(
        "1::1193::5::978300760\n"
        "1::661::3::978302109\n"
        "2::1::4::978298413\n"
        "2::3000::2::978299000\n"
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "movies.dat").write_bytes((
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical|Fantasy\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "3000::Château (2000)::Sci-Fi|Film-Noir\n"
    ).encode("latin-1"))
    return folder


def test_movielens_1m(ml1m):
    df = read_movielens_1m(ml1m)
    assert list(df.columns) == MOVIELENS_COLUMNS
    row = df.set_index("item")
    genres = ["genre1", "genre2", "genre3"]
    assert row.loc[1193, genres].tolist() == ["drama", "missing", "missing"]
    assert row.loc[661, genres].tolist() == ["animation", "children's", "musical"]
    assert row.loc[3000, genres].tolist() == ["sci-fi", "film-noir", "missing"]
    assert row.loc[1193, ["user", "label", "time", "sex", "age", "occupation"]].tolist() == [
        1, 5, 978300760, "F", 1, 10]
    assert row.loc[1, "sex"] == "M"


def test_movielens_1m_rating_of_unlisted_movie(ml1m):
    with open(ml1m / "ratings.dat", "a") as f:
        f.write("2::9999::3::978299999\n")
    df = read_movielens_1m(ml1m)
    genres = df.loc[df["item"] == 9999, ["genre1", "genre2", "genre3"]]
    assert genres.values.tolist() == [["missing"] * 3]


def test_read_csv_default_mapping(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp,extra\n1,10,4.5,100,a\n2,11,3.0,200,b\n")
    df = read_csv(path)
    assert list(df.columns) == ["user", "item", "label", "time", "extra"]
    assert df["label"].tolist() == [4.5, 3.0]


def test_read_csv_custom_mapping_and_separator(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("who\twhat\tscore\nalice\tbook\t1\nbob\tpen\t0\n")
    df = read_csv(path, columns={"user": "who", "item": "what", "label": "score"}, sep="\t")
    assert df.to_dict("list") == {"user": ["alice", "bob"], "item": ["book", "pen"],
                                  "label": [1, 0]}


def test_read_csv_errors(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("userId,movieId,score\n1,10,4\n")
    with pytest.raises(ValueError, match="'rating'"):
        read_csv(path)
    with pytest.raises(ValueError, match="'item'"):
        read_csv(path, columns={"user": "userId", "label": "score"})
    path.write_text("userId,movieId,rating\n1,10,great\n")
    with pytest.raises(ValueError, match="'label'"):
        read_csv(path, columns={"user": "userId", "item": "movieId", "label": "rating"})
    path.write_text("userId,movieId,rating\n,10,4\n1,11,3\n")
    with pytest.raises(ValueError, match="'user'"):
        read_csv(path, columns={"user": "userId", "item": "movieId", "label": "rating"})
    path.write_text("userId,movieId,rating,user\n1,10,4,x\n")
    with pytest.raises(ValueError, match="'user'"):
        read_csv(path, columns={"user": "userId", "item": "movieId", "label": "rating"})


def test_read_csv_passes_options(tmp_path):
    path = tmp_path / "r.csv"
    rows = "\n".join(f"{i},{i % 3},{i % 5}" for i in range(20))
    path.write_text("u,i,r\n" + rows + "\n")
    df = read_csv(path, columns={"user": "u", "item": "i", "label": "r"}, nrows=7)
    assert len(df) == 7
    np.testing.assert_array_equal(df["label"], np.arange(7) % 5)
    assert isinstance(df, pd.DataFrame)
