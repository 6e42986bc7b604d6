"""facevae: convolutional VAEs on faces — the whole user API, on the PyTorch backend.

One import gives every function, bound to PyTorch (``import facevae_tf`` gives the same names on
TensorFlow, plus the conditional-model functions)::

    import facevae
    faces = facevae.load_data("synthetic:4000")
    run = facevae.train("runs/vae16", data=faces, latent_dim=16, epochs=5)
    run.figure                                   # training curves (in a notebook)
    facevae.evaluate(run)                        # test-split metrics -> eval.json
    facevae.interpolate(run, grid=7)             # a Result: figure, images, table
    explorer = facevae.explore(run)              # the latent explorer: a local web page at explorer.url
    facevae.train("runs/vae16", resume=True, epochs=10)   # extend the run by five epochs

Each function is documented (``help(facevae.train)``) and mirrors a ``facevae`` CLI command; the
implementation is shared by both backends (:mod:`shared.package_api`, :mod:`shared.api`).
Importing this package imports neither PyTorch nor TensorFlow: the framework loads on first use.
The backend internals are submodules (``facevae.backend``: ``train``/``load``/``evaluate``).
"""
from __future__ import annotations

from typing import Any

from shared.package_api import bind as _bind, lazy_class as _lazy_class, package_version as _package_version

__all__ = ["load_data", "train", "load", "open_run", "evaluate", "sweep", "interpolate", "denoise", "inpaint",
           "convert", "explore", "Faces", "Run", "Result", "__version__"]

_api = _bind("torch", __name__)
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
del _api


__version__ = _package_version()


def __getattr__(name: str) -> Any:
    return _lazy_class(__name__, name)
