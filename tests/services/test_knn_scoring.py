"""The compiled knn scoring (services/knn/scoring.py) answers exactly as the general path.

Versions held in a worker's memory are answered by the kernels; every user, several
``k_neighbors`` and ``n_rec`` (up to more than the catalogue) must give the items, order and
scores that ``candidates`` + ``rank`` give, including with negative similarities (pearson),
where items no neighbour reaches can enter the answer.
"""

from __future__ import annotations

import numpy as np
import pytest

from libreco.algorithms import ItemCF, UserCF
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from libreco.utils import save_knn
from services.core.app import create_app
from services.core.family import FamilyHandler
from services.knn import scoring
from services.loaders.knn import load_knn


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    df = generate(n_users=150, n_items=120, n_interactions=2500, seed=5, features=False)
    train, info = DatasetPure.build_trainset(df)
    folder = tmp_path_factory.mktemp("knn_scoring")
    paths = {}
    for cls in (ItemCF, UserCF):
        for sim_type in ("cosine", "pearson"):
            model = cls(task="ranking", data_info=info, k_sim=12, sim_type=sim_type)
            model.fit(train, verbose=0)
            path = folder / f"{model.algorithm}_{sim_type}"
            save_knn(path, model, train, k=12)
            paths[f"{model.algorithm}_{sim_type}"] = path
    return paths, info


@pytest.mark.parametrize("name", ["item_cf_cosine", "item_cf_pearson", "user_cf_cosine",
                                  "user_cf_pearson"])
def test_kernels_answer_as_the_general_path(saved, redis_client, redis_server, name,
                                            monkeypatch):
    paths, info = saved
    load_knn(paths[name], name=name, client=redis_client)
    app = create_app("knn", {"REDIS_URL": redis_server.url, "LIBRECO_POLL_INTERVAL": "0"})
    state = app.extensions["libreco"]
    handler, version = state.handler, state.models.get(name)
    assert version.extra.consumed is not None  # held in memory: the kernels apply

    general = []
    original = type(handler).candidates

    def counted(*args, **kwargs):
        general.append(1)
        return original(handler, *args, **kwargs)

    monkeypatch.setattr(handler, "candidates", counted)
    calls = 0
    for user in range(info.n_users):
        for k in (1, 5, 12):
            for n_rec in (1, 10, 200):  # 200 > 120 items
                fast = handler.recommend(version, user, k, n_rec)
                reference = FamilyHandler.recommend(handler, version, user, k, n_rec)
                calls += 2
                np.testing.assert_array_equal(fast[0], reference[0])
                np.testing.assert_allclose(fast[1], reference[1], rtol=1e-12, atol=0)
    # the kernels answered most requests themselves: the general path ran for every
    # reference call, and for the fast calls only where the answer ran short
    fast_through_general = len(general) - calls // 2
    assert fast_through_general < calls // 2 * 0.7


def test_scratch_is_per_thread_and_bounded():
    import threading

    total, mark, tick = scoring.scratch(50)
    _, _, next_tick = scoring.scratch(50)
    assert total.shape == (51,) and mark.shape == (51,) and next_tick == tick + 1
    seen = []
    thread = threading.Thread(target=lambda: seen.append(scoring.scratch(50)[0]))
    thread.start()
    thread.join()
    assert seen[0] is not total
    for size in range(100, 100 + scoring.MAX_SCRATCH_SIZES + 2):
        scoring.scratch(size)
    assert len(scoring._scratch.sizes) <= scoring.MAX_SCRATCH_SIZES
