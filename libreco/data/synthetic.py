"""Seeded synthetic interactions with structure a model can learn.

The generator plants four signals, so that tests and benchmarks can check that a model learns
something a popularity baseline cannot:

* **taste groups**: every user and item belongs to one of ``n_groups`` groups; a user picks an
  item of their own group with probability ``taste``, otherwise any item by popularity;
* **popularity skew**: item popularity follows a Zipf-like law ``p(rank) ~ 1 / rank ** zipf``;
* **features with signal**: the user's ``occupation`` and ``age`` and the item's ``genre`` are
  noisy copies of the group; ``sex`` and ``price`` are noise;
* **sequential habits**: every item has a fixed successor in its group; with probability
  ``sequential`` a user's next interaction is the successor of the previous one, ordered by
  ``time``.

Labels are 1-5 ratings, higher when the item is of the user's group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_COLUMNS = {
    "user_col": ["sex", "age", "occupation"],
    "item_col": ["genre", "price"],
    "sparse_col": ["sex", "occupation", "genre"],
    "dense_col": ["age", "price"],
}
"""Keyword arguments for ``DatasetFeat.build_trainset`` on generated data."""


def generate(n_users: int = 1000, n_items: int = 500, n_interactions: int = 20_000,
             n_groups: int = 8, taste: float = 0.8, zipf: float = 0.9,
             sequential: float = 0.3, min_per_user: int = 5, features: bool = True,
             seed: int = 42) -> pd.DataFrame:
    """Generate interactions.

    Parameters
    ----------
    n_users, n_items : int
        Population sizes; every user appears at least once (``min_per_user`` times when
        ``n_interactions`` allows), some rare items may not appear.
    n_interactions : int
        Number of rows returned (each (user, item) pair occurs at most once).
    n_groups : int
        Number of latent taste groups.
    taste, sequential : float in [0, 1]
        Strength of the group preference and of the successor habit.
    zipf : float
        Popularity exponent.
    features : bool
        Add ``sex``, ``age``, ``occupation`` (user) and ``genre``, ``price`` (item) columns.
    seed : int

    Returns
    -------
    DataFrame with columns ``user``, ``item``, ``label``, ``time`` (int64 seconds) and the
    feature columns, sorted by time.
    """
    if n_users < 1 or n_items < 2 or n_interactions < 1:
        raise ValueError("n_users >= 1, n_items >= 2 and n_interactions >= 1 are required")
    if n_interactions > n_users * n_items:
        raise ValueError(f"n_interactions={n_interactions} exceeds n_users * n_items")
    rng = np.random.default_rng(seed)
    n_groups = max(1, min(n_groups, n_items))

    # items: group, popularity, successor within the group
    item_group = rng.integers(0, n_groups, n_items)
    item_group[:n_groups] = np.arange(n_groups)  # every group has an item
    pop = 1.0 / np.arange(1, n_items + 1) ** zipf
    pop = pop[rng.permutation(n_items)]
    by_group = np.lexsort((rng.random(n_items), item_group))
    group_start = np.searchsorted(item_group[by_group], np.arange(n_groups + 1))
    successor = np.empty(n_items, dtype=np.int64)
    for g in range(n_groups):
        members = by_group[group_start[g]:group_start[g + 1]]
        successor[members] = np.roll(members, -1)
    # cumulative popularity within each group, shifted by the group number, so that one
    # searchsorted over all groups samples "an item of group g" as g + uniform
    cdf = np.empty(n_items)
    for g in range(n_groups):
        members = by_group[group_start[g]:group_start[g + 1]]
        c = np.cumsum(pop[members])
        cdf[group_start[g]:group_start[g + 1]] = g + c / c[-1]
    global_cdf = np.cumsum(pop) / pop.sum()

    # users: group and activity
    user_group = rng.integers(0, n_groups, n_users)
    floor = min(min_per_user, max(1, n_interactions // n_users))
    activity = rng.lognormal(0.0, 1.0, n_users)
    factor = 1.25
    for _ in range(8):  # draw more when repeated pairs leave too few distinct ones
        df = _draw(rng, int(n_interactions * factor) + n_users, floor, activity,
                               taste, sequential, user_group, by_group, cdf, global_cdf,
                               successor, n_items)
        if len(df) >= n_interactions:
            break
        factor *= 1.6
    if len(df) > n_interactions:
        # keep every user's first rows, then a random sample of the rest
        firsts = df.groupby("user", sort=False).head(floor)
        rest = df.drop(firsts.index)
        need = n_interactions - len(firsts)
        if need > 0:
            firsts = pd.concat([firsts, rest.sample(n=need, random_state=seed)])
        else:
            firsts = firsts.sample(n=n_interactions, random_state=seed)
        df = firsts
    u = df["user"].to_numpy()
    i = df["item"].to_numpy()

    same = (user_group[u] == item_group[i]).astype(np.float64)
    item_quality = rng.normal(0.0, 0.5, n_items)
    user_bias = rng.normal(0.0, 0.4, n_users)
    raw = 2.6 + 1.4 * same + item_quality[i] + user_bias[u] + rng.normal(0.0, 0.6, len(df))
    df["label"] = np.clip(np.rint(raw), 1, 5).astype(np.int64)

    if features:
        occ_noise = rng.random(n_users) < 0.3
        occupation = np.where(occ_noise, rng.integers(0, n_groups, n_users), user_group)
        age = 20 + 4 * user_group + rng.normal(0, 3, n_users)
        sex = rng.choice(np.array(["F", "M"]), n_users)
        genre_noise = rng.random(n_items) < 0.2
        genre = np.where(genre_noise, rng.integers(0, n_groups, n_items), item_group)
        price = np.round(rng.gamma(2.0, 10.0, n_items), 2)
        df["sex"] = sex[u]
        df["age"] = np.round(age[u]).astype(np.int64)
        df["occupation"] = np.array([f"occ{g}" for g in range(n_groups)])[occupation[u]]
        df["genre"] = np.array([f"genre{g}" for g in range(n_groups)])[genre[i]]
        df["price"] = price[i]

    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    cols = ["user", "item", "label", "time"] + [c for c in df.columns
                                                  if c not in ("user", "item", "label", "time")]
    return df[cols]


def _draw(rng, oversample, floor, activity, taste, sequential, user_group, by_group, cdf,
          global_cdf, successor, n_items):
    """Draw about ``oversample`` interactions and drop repeated (user, item) pairs."""
    n_users = len(user_group)
    counts = floor + rng.multinomial(max(oversample - floor * n_users, 0),
                                     activity / activity.sum())
    users = np.repeat(np.arange(n_users), counts)
    n = len(users)

    in_group = rng.random(n) < taste
    items = np.searchsorted(global_cdf, rng.random(n), side="right")
    grouped = np.searchsorted(cdf, user_group[users] + rng.random(n), side="right")
    items = np.where(in_group, by_group[np.minimum(grouped, n_items - 1)], items)
    items = np.minimum(items, n_items - 1)
    # sequential habit: the next item is the previous item's successor
    first = np.ones(n, dtype=bool)
    first[1:] = users[1:] != users[:-1]
    follow = (rng.random(n) < sequential) & ~first
    prev = np.roll(items, 1)
    items = np.where(follow, successor[prev], items)

    # time: each user starts somewhere in a year and acts every few hours
    start = rng.integers(1_600_000_000, 1_600_000_000 + 365 * 86400, n_users)
    gaps = rng.exponential(3600.0 * 6, n).astype(np.int64) + 1
    user_first = np.flatnonzero(first)
    cum = np.cumsum(gaps)
    offset = cum - np.repeat(cum[user_first] - gaps[user_first], np.diff(np.r_[user_first, n]))
    times = start[users] + offset

    df = pd.DataFrame({"user": users, "item": items, "time": times})
    return df.drop_duplicates(["user", "item"], keep="first")
