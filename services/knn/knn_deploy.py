"""The knn service's WSGI app.

Production::

    gunicorn -c python:services.gunicorn_conf services.knn.knn_deploy:app

Development (from this folder)::

    FLASK_APP=knn_deploy.py flask run

Then ``POST /item_cf/recommend`` or ``/user_cf/recommend`` with ``{"user": "1", "n_rec": 10,
"k_neighbors": 10}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file, not as part of the package: make it importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.app import create_app  # noqa: E402

app = create_app("knn")
