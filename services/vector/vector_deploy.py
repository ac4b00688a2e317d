"""The vector service's WSGI app.

Production::

    gunicorn -c python:services.gunicorn_conf services.vector.vector_deploy:app

Development (from this folder)::

    FLASK_APP=vector_deploy.py flask run

Then ``POST /vector/recommend`` (the model named by ``LIBRECO_MODEL``, or the only vector
model loaded) or ``/<model>/recommend`` (``/als/recommend``, ``/svd/recommend``, ...) with
``{"user": "1", "n_rec": 10, "use_faiss": true}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file, not as part of the package: make it importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.app import create_app  # noqa: E402

app = create_app("vector")
