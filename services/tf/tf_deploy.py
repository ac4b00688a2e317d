"""The tf service's WSGI app.

Production::

    gunicorn -c python:services.gunicorn_conf services.tf.tf_deploy:app

Development (from this folder)::

    FLASK_APP=tf_deploy.py flask run

Scores come from TF Serving when ``TF_SERVING_URL`` is set (``http://host:8501``), otherwise
from the SavedModels under ``LIBRECO_MODEL_DIR`` evaluated in the worker. Then ``POST
/deepfm/recommend`` (any tf model name) with ``{"user": "1", "n_rec": 10, "algo": "deepfm"}``,
optionally with ``"seq": [...]`` and ``"user_feats": {...}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file, not as part of the package: make it importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.app import create_app  # noqa: E402

app = create_app("tf")
