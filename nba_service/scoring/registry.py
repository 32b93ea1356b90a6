"""A file-system model registry and the holder of the model the service is serving.

Layout:

    REGISTRY/<slot>/versions/<model_version>/   a verified artifact (see artifact.py)
    REGISTRY/<slot>/current                     text file: the version being served

`current` is replaced with write-temp + `os.replace`, so a reader sees the old name or the new
one, never a torn file; a version directory is likewise renamed into place only once it is
complete and verified. Slots (`propensity` today) leave room for a challenger or shadow model
next to the champion.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from features.schema import FeatureSchema
from nba_service.scoring.artifact import (
    MANIFEST_FILE,
    ArtifactError,
    LoadedModel,
    load_artifact,
)
from nba_service.scoring.base import Scorer

__all__ = [
    "CURRENT_FILE",
    "DEFAULT_SLOT",
    "ModelHolder",
    "RegistryError",
    "list_versions",
    "publish",
    "read_current",
    "set_current",
    "version_dir",
]

log = logging.getLogger(__name__)

DEFAULT_SLOT = "propensity"
CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class RegistryError(ValueError):
    """A registry operation failed; the message names the slot, version or path."""


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise RegistryError(f"{kind} {name!r} is not a valid name ({_NAME_RE.pattern})")
    return name


def slot_dir(registry: str | Path, slot: str = DEFAULT_SLOT) -> Path:
    return Path(registry) / _check_name("slot", slot)


def version_dir(registry: str | Path, slot: str, version: str) -> Path:
    return slot_dir(registry, slot) / VERSIONS_DIR / _check_name("version", version)


def list_versions(registry: str | Path, slot: str = DEFAULT_SLOT) -> list[str]:
    """Published versions of a slot, oldest first (versions embed their creation time)."""
    root = slot_dir(registry, slot) / VERSIONS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))


def read_current(registry: str | Path, slot: str = DEFAULT_SLOT) -> str | None:
    """The version name in `<slot>/current`, or None if nothing was published yet."""
    path = slot_dir(registry, slot) / CURRENT_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    return _check_name("version", text)


def set_current(registry: str | Path, slot: str, version: str) -> None:
    """Atomically point `<slot>/current` at an already published version."""
    target = version_dir(registry, slot, version)
    if not (target / MANIFEST_FILE).is_file():
        raise RegistryError(f"slot {slot!r}: version {version!r} is not published ({target})")
    sdir = slot_dir(registry, slot)
    fd, tmp = tempfile.mkstemp(prefix=f".{CURRENT_FILE}.", dir=sdir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, sdir / CURRENT_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(sdir)


def publish(
    artifact_dir: str | Path,
    registry: str | Path,
    schema: FeatureSchema,
    slot: str = DEFAULT_SLOT,
    make_current: bool = True,
) -> str:
    """Verify an artifact, copy it into the registry and (by default) make it current.

    Publishing the same version again is a no-op for the copy; a different artifact under an
    existing version name is refused.
    """
    source = load_artifact(artifact_dir, schema)
    version = _check_name("version", source.version)
    dest = version_dir(registry, slot, version)
    if dest.exists():
        existing = (dest / MANIFEST_FILE).read_bytes() if (dest / MANIFEST_FILE).is_file() else b""
        if existing != (Path(artifact_dir) / MANIFEST_FILE).read_bytes():
            raise RegistryError(f"slot {slot!r}: version {version!r} already exists with "
                                f"different content ({dest})")
        load_artifact(dest, schema)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=dest.parent))
        try:
            # manifest.sig (an Ed25519 signature of the manifest) travels with it when present.
            signed = [n for n in ("manifest.sig",) if (Path(artifact_dir) / n).is_file()]
            for name in [MANIFEST_FILE, *source.manifest.files, *signed]:
                shutil.copy2(Path(artifact_dir) / name, tmp / name)
            load_artifact(tmp, schema)  # the copy, not just the source, must verify
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(dest.parent)
    if make_current:
        set_current(registry, slot, version)
    return version


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ModelHolder:
    """The model being served, swapped atomically; a bad artifact never replaces a good one.

    Readers take `holder.model` (one attribute read, atomic under the GIL) and use that object
    for the whole decision, so a swap in the middle of a decision cannot mix two models.
    `backend` is passed to `load_artifact`: `auto` serves the fastest backend that passes
    parity on each loaded model (selection.py).
    """

    def __init__(self, schema: FeatureSchema, slot: str = DEFAULT_SLOT,
                 backend: str = "auto") -> None:
        self.schema = schema
        self.slot = slot
        self.backend = backend
        # The registry version whose load failed last: the watcher does not retry it every
        # poll (an explicit reload does).
        self.failed_version: str | None = None
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self.loaded_at: float | None = None
        # Optional check run before load_artifact, e.g. the Ed25519 manifest signature.
        self.verifier: Callable[[Path], None] | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.loads = 0
        self.failures = 0

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def scorer(self) -> Scorer | None:
        model = self._model
        return None if model is None else model.scorer

    @property
    def version(self) -> str | None:
        model = self._model
        return None if model is None else model.version

    def try_load(self, path: str | Path) -> bool:
        """Verify and swap in the artifact at `path`; on failure keep the current model and
        record why in `last_error`."""
        with self._lock:
            try:
                if self.verifier is not None:
                    # The signature is checked before a byte of the artifact is parsed.
                    self.verifier(Path(path))
                loaded = load_artifact(path, self.schema, backend=self.backend)
            except Exception as exc:  # whatever failed, the old model stays
                self.failures += 1
                detail = str(exc) if isinstance(exc, (ArtifactError, OSError)) else repr(exc)
                self.last_error = f"{path}: {detail}" if str(path) not in detail else detail
                self.last_error_at = time.time()
                log.error("slot %s: model not loaded, %s keeps serving: %s", self.slot,
                          self.version or "nothing", self.last_error)
                return False
            self._model = loaded
            self.loaded_at = time.time()
            self.loads += 1
            self.last_error = None
            self.last_error_at = None
            self.failed_version = None
            log.info("slot %s: serving model %s with the %s backend", self.slot, loaded.version,
                     loaded.backend)
            return True

    def try_load_current(self, registry: str | Path, force: bool = False) -> bool:
        """Load the registry's current version of this slot unless it is already loaded (or,
        without `force`, unless it is the version that failed last time)."""
        try:
            version = read_current(registry, self.slot)
        except (RegistryError, OSError) as exc:
            with self._lock:
                self.failures += 1
                self.last_error, self.last_error_at = str(exc), time.time()
            return False
        if version is None:
            with self._lock:
                self.last_error = f"registry {registry}: slot {self.slot!r} has no current model"
                self.last_error_at = time.time()
            return False
        if version == self.version:
            return True
        if version == self.failed_version and not force:
            return False
        ok = self.try_load(version_dir(registry, self.slot, version))
        if not ok:
            self.failed_version = version
        return ok

    def health(self) -> dict[str, object]:
        """Details for health checks and the admin API."""
        model = self._model
        return {
            "slot": self.slot,
            "version": None if model is None else model.version,
            "path": None if model is None else str(model.path),
            "loaded_at": self.loaded_at,
            "loads": self.loads,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "backend": None if model is None else model.backend,
            "backend_checks": None if model is None else "; ".join(
                f"{name} {check.summary()}" for name, check in model.checks.items()) or None,
            "score_cost_us": None if model is None else
            f"{model.cost.fixed_us:.1f} + {model.cost.per_row_us:.3f} x N",
        }
