"""What every family's loader shares: opening a model directory and the common parts.

A version's id is the first 16 hex digits of the sha256 of the directory's ``manifest.json``
(which lists every file's sha256), so two loader calls on the same directory write the same
version and a re-run finds the parts already done.

Common parts:

``ids``
    ``user_ids`` and ``item_ids`` (JSON lists of original ids in inner-index order) and
    ``popular`` (``RECORD`` bytes: every item by training popularity, most interactions first,
    with its interaction count). Every family writes it; the services read it once per
    version.
``consumed``
    Hash ``consumed``: inner user -> ``RECORD`` bytes of (item, label), oldest first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from libreco.data.data_info import DataInfo
from libreco.utils.artifacts import MANIFEST, ArtifactError, ArtifactReader
from services.core.config import LoadSettings, RedisSettings, is_model_name
from services.core.store import (
    RECORD,
    RedisClient,
    VersionWriter,
    describe,
    field_name,
    pack_records,
    redis_client,
)

log = logging.getLogger("libreco.services")


@dataclass
class ModelDirectory:
    """A checked model directory and the version id it loads as."""

    path: Path
    reader: ArtifactReader
    version: str

    @property
    def family(self) -> str:
        return self.reader.family

    @property
    def algorithm(self) -> str:
        return self.reader.algorithm

    @property
    def manifest(self) -> dict[str, Any]:
        return self.reader.manifest

    def data_info(self) -> DataInfo:
        return DataInfo.load(self.reader)

    def base_meta(self) -> dict[str, Any]:
        """Facts every version records in its meta hash."""
        m = self.manifest
        return {
            "algorithm": m.get("algorithm", ""),
            "task": (m.get("hyperparameters") or {}).get("task", ""),
            "hyperparameters": m.get("hyperparameters") or {},
            "model_created_at": m.get("created_at", ""),
            "library_version": m.get("library_version", ""),
            "manifest_sha256": self.manifest_sha256,
        }

    @property
    def manifest_sha256(self) -> str:
        with open(self.path / MANIFEST, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()


def open_model(path: str | os.PathLike, family: str | None = None) -> ModelDirectory:
    """Open and check a model directory (every file against its manifest).

    Raises
    ------
    ArtifactError
        When the directory is damaged, or holds a model of another family than ``family``.
    """
    reader = ArtifactReader(path)
    if family is not None and reader.family != family:
        raise ArtifactError(f"{path}: holds a {reader.family} model ({reader.algorithm}); "
                            f"this loader loads {family} models")
    with open(Path(path) / MANIFEST, "rb") as f:
        version = hashlib.sha256(f.read()).hexdigest()[:16]
    return ModelDirectory(Path(path), reader, version)


def model_name(model: ModelDirectory, name: str | None) -> str:
    name = name or model.algorithm
    if not is_model_name(name):
        raise ValueError(f"model name {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


def get_client(client: RedisClient | None) -> RedisClient:
    """``client``, or one built from ``REDIS_URL`` and friends (retrying a few times)."""
    if client is not None:
        return client
    return redis_client(RedisSettings.from_env(), retries=3)


def version_writer(model: ModelDirectory, name: str, client: RedisClient,
                   parts: Sequence[str], meta: Mapping[str, Any]) -> VersionWriter:
    """A :class:`VersionWriter` for ``model`` with the settings from the environment."""
    settings = LoadSettings.from_env()
    writer = VersionWriter(client, name, model.version, model.family, parts,
                           {**model.base_meta(), **meta}, grace_period=settings.grace_period,
                           stale_after=settings.stale_after, batch=settings.batch)
    previous = writer.begin()
    log.info("%s: loading %s as version %s into Redis %s%s", name, model.path, model.version,
             describe(client), f" (was {previous})" if previous else "")
    return writer


def write_ids(writer: VersionWriter, info: DataInfo) -> None:
    """Write the ``ids`` part unless it is already there."""
    if writer.has_part("ids"):
        return
    popular = info.popular_items()
    writer.write_part("ids", strings={
        "user_ids": _json_bytes(info.id2user),
        "item_ids": _json_bytes(info.id2item),
        "popular": pack_records(popular, info.item_counts[popular]),
    })


def write_consumed(writer: VersionWriter, info: DataInfo) -> None:
    """Write the ``consumed`` part unless it is already there."""
    if writer.has_part("consumed"):
        return
    writer.write_part("consumed", hashes={
        "consumed": rows_of(pack_records(info.consumed_items, info.consumed_labels),
                            info.consumed_indptr * RECORD.itemsize),
    })


def rows_of(blob: bytes, offsets: np.ndarray) -> list[tuple[bytes, bytes]]:
    """Hash fields ``0 .. n - 1`` holding ``blob[offsets[r]:offsets[r + 1]]``."""
    bounds = offsets.tolist()
    return [(field_name(r), blob[bounds[r]:bounds[r + 1]]) for r in range(len(bounds) - 1)]


def finish(writer: VersionWriter, started: float) -> str:
    """Activate the version if every part is in; returns the version id."""
    active = writer.activate()
    log.info("%s: version %s %s after %.2fs", writer.name, writer.version,
             "is active" if active else "is waiting for its other parts",
             time.perf_counter() - started)
    return writer.version


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
