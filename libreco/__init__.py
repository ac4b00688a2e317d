"""libreco: train recommendation models and hand them to the serving stack.

The training library depends on numpy, scipy and pandas only; TensorFlow is imported inside the
TF models, and nothing here imports the serving stack (flask, redis, gunicorn).
"""

import logging

__version__ = "0.1.0"

logger = logging.getLogger("libreco")
logger.addHandler(logging.NullHandler())
