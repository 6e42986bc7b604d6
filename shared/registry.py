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
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

from shared.config import BACKENDS
from shared.errors import ConfigError, FaceVAEError

__all__ = ["BACKEND_MODULES", "DEFAULT_BACKEND", "resolve_backend_name", "get_backend"]

BACKEND_MODULES = {"torch": "facevae.backend", "tf": "facevae_tf.backend"}
DEFAULT_BACKEND = "torch"
_EXTRAS = {"torch": "torch", "tf": "tf"}


def resolve_backend_name(name: str | None = None) -> str:
    """Explicit ``name``, else ``$FACEVAE_BACKEND``, else ``torch``; unknown names list the choices."""
    chosen = name or os.environ.get("FACEVAE_BACKEND") or DEFAULT_BACKEND
    if chosen not in BACKEND_MODULES:
        raise ConfigError(f"`backend` must be one of {set(BACKENDS)}. Received: backend={chosen!r}")
    return chosen


def get_backend(name: str | None = None) -> ModuleType:
    """Import and return the backend module for ``name`` (see :func:`resolve_backend_name`).

    Raises:
        FaceVAEError: the framework is not installed (the message names the pip extra).
    """
    chosen = resolve_backend_name(name)
    try:
        return importlib.import_module(BACKEND_MODULES[chosen])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "torchmetrics", "tensorflow", "tf_keras", "keras",
                                                   "tensorflow_probability"):
            raise FaceVAEError(f"backend {chosen!r} needs {exc.name!r}: pip install 'facevae[{_EXTRAS[chosen]}]'") from None
        raise

