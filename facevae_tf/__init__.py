"""facevae_tf: convolutional VAEs on faces — the whole user API, on the TensorFlow / Keras 3 backend.

The same functions as ``import facevae`` (PyTorch), bound to TensorFlow, plus the conditional
models' ``generate``, ``attribute_grid`` and ``edit_attributes`` (``cvae`` and ``iaf`` exist only
here)::

    import facevae_tf
    run = facevae_tf.train("runs/cvae", model="cvae", data="synthetic:4000", latent_dim=16, epochs=5)
    facevae_tf.generate(run, gender="female", ethnicity=2, age=30, n=8)
    facevae_tf.evaluate(run)
    explorer = facevae_tf.explore(run)           # the latent explorer: a local web page at explorer.url

Each function is documented (``help(facevae_tf.train)``) and mirrors a ``facevae`` CLI command.
Both packages build the same architecture from the same config (:mod:`shared.architecture`), so
``facevae_tf.convert`` moves a torch ``vae`` run here. The backend internals are submodules
(``facevae_tf.backend``: ``train``/``load``/``evaluate``/``inpaint_optimize``).

Environment: importing this package runs
``os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")`` before TensorFlow is imported, which hides
TensorFlow's C++ info and warning lines (errors still show). ``setdefault`` means a value the user
has already set wins. (TensorFlow 2.21 still prints a few start-up lines before its logging is
configured; the variable cannot hide those.) Nothing else global is changed at import time, and
TensorFlow itself is imported on first use; training seeds the global RNGs (see
:mod:`facevae_tf.engine`).
"""
from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# after the environment default above  # noqa: E402
from shared.package_api import bind as _bind, lazy_class as _lazy_class, package_version as _package_version  # noqa: E402

__all__ = ["load_data", "train", "load", "open_run", "evaluate", "sweep", "interpolate", "denoise", "inpaint",
           "convert", "explore", "generate", "attribute_grid", "edit_attributes", "Faces", "Run", "Result",
           "__version__"]

_api = _bind("tf", __name__)
load_data = _api["load_data"]
train = _api["train"]
load = _api["load"]
open_run = _api["open_run"]
evaluate = _api["evaluate"]
sweep = _api["sweep"]
interpolate = _api["interpolate"]
denoise = _api["denoise"]
inpaint = _api["inpaint"]
convert = _api["convert"]
explore = _api["explore"]
generate = _api["generate"]
attribute_grid = _api["attribute_grid"]
edit_attributes = _api["edit_attributes"]
del _api


__version__ = _package_version()


def __getattr__(name: str) -> Any:
    return _lazy_class(__name__, name)
