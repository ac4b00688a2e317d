"""Model directories: JSON and ``.npy`` files described by a checksummed ``manifest.json``.

A model directory is written into a temporary sibling folder and renamed into place only when
every file and the manifest are on disk, so a crash never leaves a half-written directory under
the final name. Reading checks every file against the manifest's size and sha256 before any of it
is used, and arrays are read with ``allow_pickle=False``: loading never executes code.

Layout::

    <path>/manifest.json      format_version, algorithm, family, library_version, created_at,
                              hyperparameters, data_summary, metrics, files {name: {sha256, bytes}}
    <path>/*.json             id maps, metadata
    <path>/*.npy              arrays
    <path>/<subdir>/...       extra trees (a TF SavedModel), listed file by file as well
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from libreco import __version__, logger

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """A model directory is missing, tampered with, truncated or of an unknown format."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value):
    """Convert numpy scalars and arrays nested in ``value`` into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class ArtifactWriter:
    """Collects the files of one model directory and publishes them atomically.

    Use as a context manager; leaving the block without an exception writes the manifest and
    renames the directory into place (replacing an older directory of the same name).
    """

    def __init__(self, path: str | os.PathLike, algorithm: str, family: str,
                 hyperparameters: dict | None = None, data_summary: dict | None = None,
                 metrics: dict | None = None, extra: dict | None = None):
        self.path = Path(path)
        self.manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "algorithm": algorithm,
            "family": family,
            "library_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "hyperparameters": _jsonable(hyperparameters or {}),
            "data_summary": _jsonable(data_summary or {}),
            "metrics": _jsonable(metrics or {}),
        }
        if extra:
            self.manifest.update(_jsonable(extra))
        self.tmp: Path | None = None

    def __enter__(self) -> ArtifactWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self._publish()

    def file_path(self, name: str) -> Path:
        """Where a file named ``name`` (relative, may contain folders) is written."""
        assert self.tmp is not None, "use ArtifactWriter as a context manager"
        target = self.tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, name: str, obj) -> None:
        with open(self.file_path(name), "w", encoding="utf-8") as f:
            json.dump(_jsonable(obj), f, ensure_ascii=False, separators=(",", ":"))

    def write_array(self, name: str, array) -> None:
        arr = np.asarray(array)
        if arr.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; only numeric arrays are saved")
        np.save(self.file_path(name), arr, allow_pickle=False)

    def _publish(self) -> None:
        assert self.tmp is not None
        files = {}
        for p in sorted(self.tmp.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.tmp).as_posix()
                files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        self.manifest["files"] = files
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(self.manifest, f, indent=2, ensure_ascii=False)
        os.chmod(self.tmp, 0o755)
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("wrote model directory %s (%d files)", self.path, len(files))


class ArtifactReader:
    """Opens a model directory after checking every file against its manifest.

    Raises
    ------
    ArtifactError
        When the directory or manifest is missing, the format is unknown, or a file is missing,
        truncated or changed; the message names the file.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise ArtifactError(f"{self.path}: model directory not found")
        if not manifest_path.is_file():
            raise ArtifactError(f"{manifest_path}: manifest.json is missing")
        try:
            with open(manifest_path, encoding="utf-8") as f:
                self.manifest = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{manifest_path}: unreadable manifest ({e})") from e
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{manifest_path}: format_version {version!r} is not supported "
                f"(this library reads {FORMAT_VERSION})"
            )
        self.files: dict[str, dict] = self.manifest.get("files") or {}
        if verify:
            self.verify()

    @property
    def algorithm(self) -> str:
        return self.manifest["algorithm"]

    @property
    def family(self) -> str:
        return self.manifest["family"]

    def verify(self) -> None:
        for name, meta in self.files.items():
            p = self.path / name
            if not p.is_file():
                raise ArtifactError(f"{p}: file listed in the manifest is missing")
            size = p.stat().st_size
            if size != meta.get("bytes"):
                raise ArtifactError(
                    f"{p}: size {size} bytes differs from the manifest ({meta.get('bytes')}); "
                    "the file is truncated or was changed"
                )
            if sha256_file(p) != meta.get("sha256"):
                raise ArtifactError(f"{p}: sha256 differs from the manifest; the file was changed")

    def has(self, name: str) -> bool:
        return name in self.files

    def _checked_path(self, name: str) -> Path:
        if name not in self.files:
            raise ArtifactError(f"{self.path / name}: not listed in the manifest")
        return self.path / name

    def read_json(self, name: str):
        p = self._checked_path(name)
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{p}: unreadable JSON ({e})") from e

    def read_array(self, name: str, mmap: bool = False) -> np.ndarray:
        p = self._checked_path(name)
        try:
            return np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as e:
            raise ArtifactError(f"{p}: unreadable array ({e})") from e

    def subdir(self, name: str) -> Path:
        """Path of a folder inside the directory (e.g. a SavedModel), whose files were checked."""
        prefix = name.rstrip("/") + "/"
        if not any(f.startswith(prefix) for f in self.files):
            raise ArtifactError(f"{self.path / name}: folder not listed in the manifest")
        return self.path / name
