"""Hand a TF model to the tf service: its model directory and a TF Serving SavedModel.

:func:`save_info` writes the model directory the service reads (ids, consumed items, feature
tables, parameters and how to call the model). :func:`save_model_tf_serving` exports the network
as a versioned SavedModel in the layout TF Serving watches. The service (in-process or through
TF Serving's REST API) needs both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from libreco import logger

SIGNATURE = "predict"


def _check_tf_model(model) -> None:
    if getattr(model, "family", None) != "tf" or not hasattr(model, "serving_module"):
        raise ValueError(f"{type(model).__name__} is not a TF model (WideDeep, FM, DeepFM, "
                         "YouTubeRanking, AutoInt, DIN); use save_knn or save_vector for it")
    model._require_fitted()


def save_info(path: str | os.PathLike, model, train_data, data_info) -> Path:
    """Write the model directory of a TF model for the tf service.

    The directory is what ``model.save(path)`` writes (so ``Recommender.load(path)`` returns the
    model), with the ``"tf"`` entry of :meth:`TFModel.serving_spec
    <libreco.algorithms.tf_base.TFModel.serving_spec>` added to ``manifest.json``: the signature
    name and its inputs with dtypes and shapes, the output name and kind, the indices that stand
    for an unknown user and item, the feature columns in input order, the number of training
    interactions and, for sequence models, ``recent_num`` and ``pad_index``. Like every model
    directory it is checksummed and replaced atomically
    (:class:`~libreco.utils.artifacts.ArtifactWriter`).

    Parameters
    ----------
    path : str or path-like
        The model directory to write.
    model : TFModel
        A fitted TF model.
    train_data : TransformedSet
        The training split the model was fitted on (its size is recorded).
    data_info : DataInfo
        The model's data info; its feature tables are the per-user and per-item features the
        service looks up.

    Returns
    -------
    Path of the directory.
    """
    _check_tf_model(model)
    if data_info is not model.data_info and (
            (data_info.n_users, data_info.n_items) != (model.data_info.n_users,
                                                       model.data_info.n_items)):
        raise ValueError("data_info is not the DataInfo the model was trained with")
    if train_data is not None and getattr(train_data, "data_info", None) is not None and (
            train_data.data_info.n_users != data_info.n_users
            or train_data.data_info.n_items != data_info.n_items):
        raise ValueError("train_data was built with a different DataInfo")
    spec = dict(model.serving_spec())
    spec["n_train_interactions"] = None if train_data is None else len(train_data)
    path = Path(path)
    model.save(path, manifest_extra={"tf": spec})
    return path


def _versions(base: Path) -> list[int]:
    """Integer-named entries of a model's base directory (versions, or names taken)."""
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())


def save_model_tf_serving(path: str | os.PathLike, model, model_name: str) -> Path:
    """Export a fitted TF model as ``{path}/{model_name}/{version}/``, a TF Serving SavedModel.

    ``version`` is one more than the largest integer version directory already there (1 for
    the first export), so an export never overwrites a version that may be served: the
    SavedModel is written into a hidden temporary folder beside the versions (TF Serving skips
    names that are not integers) and renamed into place when complete.

    The SavedModel has a signature ``"predict"`` (also exported as ``"serving_default"``) with
    these named inputs (``B`` rows, one per (user, item) pair to score):

    ==================  =======  ==============  ===============================================
    input               dtype    shape           meaning
    ==================  =======  ==============  ===============================================
    ``user_indices``    int32    (B,)            inner user index (``n_users``: unknown user)
    ``item_indices``    int32    (B,)            inner item index (``n_items``: unknown item)
    ``sparse_indices``  int32    (B, n_sparse)   global categorical indices, user fields then
                                                 item fields; only when the model has
                                                 categorical features
    ``dense_values``    float32  (B, n_dense)    standardised numeric features, user fields
                                                 then item fields; only when the model has
                                                 numeric features
    ``seq``             int32    (B, recent_num) sequence models (DIN, YouTubeRanking): recent
                                                 items, oldest first, left-aligned, padded with
                                                 ``n_items + 1``
    ``seq_len``         int32    (B,)            sequence models: valid entries of ``seq``
    ==================  =======  ==============  ===============================================

    and one output, ``score`` (float32, shape (B,)): the probability of an interaction for
    ``task="ranking"``, the predicted label for ``task="rating"``. The exact inputs of a model
    (which of the optional ones, and their widths) are in the ``"tf"`` entry of the manifest
    written by :func:`save_info`, and ``model.build_inputs(users, items)`` builds them from inner
    indices.

    Parameters
    ----------
    path : str or path-like
        TF Serving's model base directory's parent (``--model_base_path={path}/{model_name}``).
    model : TFModel
        A fitted TF model.
    model_name : str
        Directory name of the model, e.g. ``"deepfm"``.

    Returns
    -------
    Path of the new version directory.
    """
    _check_tf_model(model)
    if (not isinstance(model_name, str) or not model_name or model_name.startswith(".")
            or "/" in model_name or os.sep in model_name):
        raise ValueError(f"model_name must be a plain directory name, got {model_name!r}")
    import tensorflow as tf

    base = Path(path) / model_name
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        module, predict = model.serving_module()
        tf.saved_model.save(module, str(tmp),
                            signatures={SIGNATURE: predict, "serving_default": predict})
        os.chmod(tmp, 0o755)
        while True:
            existing = _versions(base)
            version = (existing[-1] + 1) if existing else 1
            target = base / str(version)
            if target.exists():  # a concurrent export took the name meanwhile
                continue
            try:
                os.rename(tmp, target)
            except OSError:
                if target.exists():
                    continue
                raise
            break
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s as TF Serving model %s version %d at %s",
                model.algorithm, model_name, version, target)
    return target
