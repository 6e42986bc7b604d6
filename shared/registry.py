"""Backend registry: the one place a backend name becomes a module.

A backend is a module exposing the same small surface (``facevae.backend``, ``facevae_tf.backend``):

* ``train(config: RunConfig, faces: Faces, split: Split, run_dir: Path, *, resume: bool = False) -> dict``
  trains, writing ``metrics.jsonl`` and ``checkpoints/{last,best}`` into ``run_dir`` (the caller has
  already written ``config.json`` and ``split.json``); returns the best validation metrics.
* ``load(run_dir: Path)`` -> the trained model: a :class:`shared.protocol.GenerativeModel` for
  ``vae``/``cvae``/``iaf``, a classifier for ``cnn``.
* ``evaluate(model, faces: Faces, *, iwae_k: int, classifier=None, seed: int = 0) -> dict`` metrics
  on ``faces`` (JSON-serialisable).

Frameworks are imported only when their backend is asked for, as Keras 3 picks its backend.
The name is resolved as: explicit argument, then ``$FACEVAE_BACKEND``, then ``torch``.
A missing framework is one :class:`~shared.errors.FaceVAEError` naming the pip extra that installs it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from types import ModuleType
from typing import Optional

from shared.config import BACKENDS
from shared.errors import ConfigError, FaceVAEError

__all__ = ["BACKEND_MODULES", "DEFAULT_BACKEND", "BACKEND_PACKAGES", "resolve_backend_name", "get_backend",
           "import_backend_module", "require_backend", "missing_framework", "installed_versions"]

BACKEND_MODULES = {"torch": "facevae.backend", "tf": "facevae_tf.backend"}
DEFAULT_BACKEND = "torch"
_EXTRAS = {"torch": "torch", "tf": "tf"}
# what each backend imports at run time: (import name, distribution name)
BACKEND_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "torch": (("torch", "torch"), ("torchmetrics", "torchmetrics")),
    "tf": (("tensorflow", "tensorflow"), ("keras", "keras")),
}
# top-level modules whose absence means "install the extra", never a bug of ours
_FRAMEWORK_MODULES = {"torch": "torch", "torchmetrics": "torch", "tensorflow": "tf", "keras": "tf",
                      "tf_keras": "tf", "tensorflow_probability": "tf"}


def resolve_backend_name(name: str | None = None) -> str:
    """Explicit ``name``, else ``$FACEVAE_BACKEND``, else ``torch``; unknown names list the choices."""
    chosen = name or os.environ.get("FACEVAE_BACKEND") or DEFAULT_BACKEND
    if chosen not in BACKEND_MODULES:
        raise ConfigError(f"`backend` must be one of {set(BACKENDS)}. Received: backend={chosen!r}")
    return chosen


def _needs(backend: str, module: str, why: str = "which is not installed") -> FaceVAEError:
    return FaceVAEError(f"backend {backend!r} needs {module!r}, {why}: pip install 'facevae[{_EXTRAS[backend]}]'")


def missing_framework(exc: BaseException, backend: Optional[str] = None) -> Optional[FaceVAEError]:
    """The one-line error for an ``ImportError`` of a framework, or ``None`` when ``exc`` is something else.

    Args:
        exc: the exception an import raised.
        backend: the backend being loaded (else the one the missing module belongs to).
    """
    if not isinstance(exc, ImportError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    if top not in _FRAMEWORK_MODULES:
        return None
    why = ("which is not installed" if isinstance(exc, ModuleNotFoundError)
           else f"which is installed but cannot be imported ({exc})")  # e.g. a broken or mismatched install
    return _needs(backend or _FRAMEWORK_MODULES[top], top, why)


def import_backend_module(backend: str, module: str) -> ModuleType:
    """Import ``module`` of ``backend`` (e.g. ``facevae_tf.weights_io``); a missing framework is one line.

    Raises:
        FaceVAEError: the framework is not installed (the message names the pip extra).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = missing_framework(exc, backend)
        if error is None:
            raise
        raise error from None


def get_backend(name: str | None = None) -> ModuleType:
    """Import and return the backend module for ``name`` (see :func:`resolve_backend_name`).

    Raises:
        FaceVAEError: the framework is not installed (the message names the pip extra).
    """
    chosen = resolve_backend_name(name)
    return import_backend_module(chosen, BACKEND_MODULES[chosen])


def require_backend(name: str | None = None) -> str:
    """Check, without importing it, that ``name``'s framework is installed; returns the resolved name.

    Lets a command refuse ``--backend tf`` before it loads data or creates a run folder.

    Raises:
        FaceVAEError: a package the backend imports is missing (the message names the pip extra).
    """
    chosen = resolve_backend_name(name)
    for module, _ in BACKEND_PACKAGES[chosen]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-imported package counts as missing
            found = False
        if not found:
            raise _needs(chosen, module)
    return chosen


def installed_versions() -> dict[str, dict[str, Optional[str]]]:
    """``{backend: {distribution: version or None}}`` from package metadata; nothing is imported."""
    versions: dict[str, dict[str, Optional[str]]] = {}
    for backend, packages in BACKEND_PACKAGES.items():
        versions[backend] = {}
        for _, dist in packages:
            try:
                versions[backend][dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                versions[backend][dist] = None
    return versions
