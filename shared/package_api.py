"""The user API of ``import facevae`` (PyTorch) and ``import facevae_tf`` (TensorFlow), written once.

Each backend package binds the functions here to its backend with :func:`bind`, so both expose the
same names with the same options; only where a backend matters does it differ: ``train`` and
``sweep`` train on the package's backend and ``convert`` converts *to* it. Functions that take a run
folder accept a run of either backend (its ``config.json`` names it). ``facevae_tf`` also has
``generate``, ``attribute_grid`` and ``edit_attributes`` (conditional models exist only on TF).

Nothing heavy is imported here: the frameworks, pandas and matplotlib are imported when a function
is called, so ``import facevae`` stays cheap. The functions are thin: the work is in
:mod:`shared.api`, :mod:`shared.studio`, :mod:`shared.conditional` and :mod:`shared.sweep`. The
figure and explorer functions are written in :mod:`shared.package_studio` and imported here.
"""
from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable

# the figure and explorer functions live in shared.package_studio; bind finds them here (re-exported)
from shared.package_studio import (attribute_grid, denoise, edit_attributes, explore, generate,  # noqa: F401
                                   inpaint, interpolate)

__all__ = ["bind", "COMMON", "TF_ONLY", "DEFAULT_DATA", "package_version", "lazy_class"]

DEFAULT_DATA = "synthetic:4000"
COMMON = ("load_data", "train", "load", "open_run", "evaluate", "sweep", "interpolate", "denoise", "inpaint",
          "convert", "explore")
TF_ONLY = ("generate", "attribute_grid", "edit_attributes")


def _is_spec(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def _flat(config: Any) -> dict[str, Any]:
    """A RunConfig as the flat options of :func:`shared.api.build_config` (family, spec and backend apart)."""
    model = {k: v for k, v in config.model.to_dict().items() if k not in ("family", "image_size")}
    data = {k: getattr(config.data, k) for k in ("val_fraction", "test_fraction", "split_seed")}
    return {**model, **config.train.to_dict(), **data, "image_size": config.data.image_size}


def _base_config(config: Any) -> Any:
    """``config`` given to train/sweep: a RunConfig, a JSON config file or a run folder (its config.json)."""
    from shared.config import RunConfig
    from shared.errors import ConfigError
    from shared.runs import load_run_config

    if config is None or isinstance(config, RunConfig):
        return config
    if _is_spec(config):
        return load_run_config(config) if os.path.isdir(config) else RunConfig.load(config)
    raise ConfigError(f"`config` must be a RunConfig, a JSON config file or a run folder. "
                      f"Received: config of type {type(config).__name__}")


def _config(backend: str, data: Any, model: str | None, config: Any, options: dict[str, Any]) -> Any:
    """The RunConfig of a new run from the keyword arguments of ``train``/``sweep``."""
    from shared import api
    from shared.data import RUN_SPEC_PREFIX
    from shared.errors import ConfigError
    from shared.faces import as_faces
    from shared.runs import FACES

    known = api.option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; the options (as on the command line, with '_' for '-') "
                          f"are: {known}")
    base = _base_config(config)
    flat = {**(_flat(base) if base is not None else {}), **{k: v for k, v in options.items() if v is not None}}
    family = model or (base.model.family if base is not None else "vae")
    if data is None:
        spec = base.data.spec if base is not None else DEFAULT_DATA
    elif _is_spec(data):
        spec = os.fspath(data)
    else:
        spec = RUN_SPEC_PREFIX + FACES  # the faces are stored in the run folder by shared.api.train
        if flat.get("image_size") is None:  # train at the size the faces have
            flat["image_size"] = int(as_faces(data).images.shape[1])
    image_size = flat.pop("image_size", None) or 48
    return api.build_config(backend=backend, model=family, data=spec, image_size=image_size, **flat)


def load_data(backend: str, spec: str | os.PathLike, image_size: int = 48):
    """The faces of a data SPEC, as ``Faces`` (``images`` uint8 ``(N, S, S)`` and a ``labels`` DataFrame).

    SPEC is ``synthetic[:N]``, a Kaggle-layout ``.csv``/``.csv.gz``/``.parquet`` file, a UTKFace
    image folder, or ``orl`` (see :mod:`shared.data`). Filter or edit the faces and train on them
    with ``{pkg}.train(out, data=faces)``.

    Example::

        faces = {pkg}.load_data("faces.csv.gz", image_size=48)
        women = faces.subset((faces.labels.gender == 1).to_numpy().nonzero()[0])
        run = {pkg}.train("runs/women", data=women, epochs=10)

    Raises:
        DataError: the data is unusable (names the file, row and field).
    """
    from shared.data import load
    return load(os.fspath(spec), image_size=image_size)


def train(backend: str, out: str | os.PathLike, *, data: Any = None, model: str | None = None, config: Any = None,
          resume: bool = False, verbose: bool | None = None, **options: Any):
    """Train a {backend} model into the run folder ``out``; returns the ``Run``.

    Args:
        out: the run folder (new, or empty).
        data: a SPEC or path (default ``synthetic:4000``, or the ``config``'s), a ``Faces``, or
            ``(images, labels)`` with images ``(N, S, S)`` uint8 or float in [0, 1] and labels a
            DataFrame with ``age``, ``ethnicity`` and ``gender``. Faces held in memory are stored in
            the run (``faces.npz``), so later commands need nothing else. With ``resume``: where
            the run's faces are now, when they moved.
        model: ``vae`` (default){models}.
        config: a ``RunConfig``, a JSON config file or a run folder to start from; ``options``
            override its values.
        resume: continue the run in ``out``; ``options`` may then change training fields
            (``epochs=40`` extends a finished run; ``lr``, ``early_stopping``, ``schedule``,
            ``batch_size``, ...), which are written into its ``config.json``.
        verbose: print a line per epoch and a progress bar (default) or nothing (``False``).
        **options: every option of ``facevae train`` with ``_`` for ``-``: ``latent_dim``,
            ``beta``, ``epochs``, ``lr``, ``batch_size``, ``image_size``, ``seed``, ``preset``,
            ``likelihood``, ``channels``, ``hidden_dims``, ``val_fraction``, ``split_seed``,
            ``tensorboard``, ... (an unknown name is refused with the list).

    Example::

        import {pkg}
        run = {pkg}.train("runs/vae16", data="synthetic:4000", latent_dim=16, epochs=5)
        run.metrics.tail()                                      # one row per epoch
        run = {pkg}.train("runs/vae16", resume=True, epochs=10)   # five more epochs

    Raises:
        ConfigError: an unknown option or an invalid value. DataError: unusable data.
        RunError: ``out`` already holds a run (without ``resume``), or its data moved (with it).
    """
    from shared import api
    from shared.errors import ConfigError

    if resume:
        if config is not None or model is not None:
            raise ConfigError("`config` and `model` cannot be given with resume=True: a run continues with the "
                              "config saved in its folder (pass training options such as epochs=40 to change it)")
        return api.train(None, out, resume=True, updates=options, verbose=verbose, data=data)
    cfg = _config(backend, data, model, config, options)
    return api.train(cfg, out, verbose=verbose, data=None if data is None or _is_spec(data) else data)


def load(backend: str, run: str | os.PathLike):
    """The trained model of a run folder (either backend): for a VAE a ``GenerativeModel``.

    Its numpy methods ``encode(images, labels=None) -> (mean, logvar)``, ``decode(z)``,
    ``sample(n, seed)`` and ``reconstruct(images)`` take and give images as floats in [0, 1].

    Example::

        model = {pkg}.load("runs/vae16")
        faces = model.sample(16, seed=0)        # (16, S, S)
    """
    from shared.api import load_model
    return load_model(run)


def open_run(backend: str, run: str | os.PathLike):
    """A run folder as a ``Run``: ``.config``, ``.metrics`` (DataFrame), ``.figure`` (curves), ``.eval``.

    Example::

        run = {pkg}.open_run("runs/vae16")
        run.metrics[["epoch", "val_loss"]]
        run.figure                               # the training curves, shown in a notebook

    Raises:
        RunError: not a run folder.
    """
    from shared.runs import open_run as _open
    return _open(run)


def evaluate(backend: str, run: str | os.PathLike, *, data: Any = None, run_data: Any = None, iwae_k: int = 64,
             classifier: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Any]:
    """Metrics of a run on its test split (written to ``eval.json``), or on every face of ``data``.

    Args:
        run: the run folder.
        data: other faces (SPEC/path, ``Faces`` or ``(images, labels)``), all of them evaluated;
            written to ``eval_<name>.json`` beside ``eval.json``.
        run_data: where the run's own faces are now, when they moved (checked to be the same faces).
        iwae_k: importance samples of the IWAE bound.
        classifier: a torch CNN run used for Fréchet distance and label fidelity.
        seed: seeds every sampled quantity.

    Returns:
        The metrics, with ``warnings`` and ``written_to`` (the file written).

    Example::

        metrics = {pkg}.evaluate("runs/vae16")
        metrics["psnr"], metrics["written_to"]
    """
    from shared.api import evaluate as _evaluate
    return _evaluate(run, data=data, run_data=run_data, iwae_k=iwae_k, classifier=classifier, seed=seed)


def sweep(backend: str, out: str | os.PathLike, *, latent_dims: Any, betas: Any, data: Any = None,
          model: str | None = None, config: Any = None, jobs: int = 1, shard: Any = None, batched: bool = False,
          **options: Any):
    """Train and evaluate every ``latent_dims`` × ``betas`` {backend} model into ``out`` (one run each).

    ``data`` is a SPEC or path (every run reads it); ``model``, ``config`` and ``options`` are those of
    ``{pkg}.train``, plus ``iwae_k``. Re-running continues an interrupted sweep. ``jobs=N`` trains N
    grid points at once in N processes (the same numbers); ``shard=(i, n)`` trains only the points
    whose grid index % n == i and writes no table (for an array job): afterwards
    ``shared.sweep.report(out)`` (``facevae sweep --report --out DIR``) writes the table and figures.
    ``batched=True`` (torch) trains every β of one latent size at once as one vectorised model: the
    same run folders and, up to float rounding, the same numbers (not with ``jobs`` > 1).

    Example::

        {pkg}.sweep("runs/sweep", latent_dims=(4, 16, 64), betas=(0.5, 1.0), data="synthetic:4000", epochs=10)
        {pkg}.sweep("runs/sweep", latent_dims=(4, 16, 64), betas=(0.5, 1.0), data="synthetic:4000", jobs=4)
    """
    from shared.errors import ConfigError
    from shared.sweep import sweep as _sweep

    if data is not None and not _is_spec(data):
        raise ConfigError("`data` of sweep must be a SPEC or a path (every run of the sweep reads it); "
                          f"save faces held in memory with shared.data.convert first. Received: {type(data).__name__}")
    extra = {k: options.pop(k) for k in ("iwae_k",) if k in options}
    dims = list(latent_dims)
    cfg = _config(backend, data, model, config, {"latent_dim": dims[0] if dims else None, **options})
    return _sweep(cfg, out, latent_dims=dims, betas=list(betas), jobs=jobs, shard=shard, batched=batched, **extra)


def convert(backend: str, run: str | os.PathLike, out: str | os.PathLike):
    """A trained ``vae`` run of the other backend, converted to a {backend} run folder ``out``.

    The converted run loads and evaluates like any run of this backend; it cannot be resumed.

    Example::

        run = {pkg}.convert("runs/vae16_other_backend", "runs/vae16_{backend}")
        model = {pkg}.load(run)
    """
    from shared.convert import convert as _convert
    from shared.runs import Run
    return Run(_convert(run, to=backend, out=out))


_MODELS = {"torch": ", or ``cnn`` (a classifier; ``task`` option)",
           "tf": ", ``cvae`` (conditional on the labels) or ``iaf`` (flow posterior)"}


def _bound(impl: Callable[..., Any], backend: str, package: str) -> Callable[..., Any]:
    @functools.wraps(impl)
    def function(*args: Any, **kwargs: Any) -> Any:
        return impl(backend, *args, **kwargs)

    sig = inspect.signature(impl)
    function.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    function.__module__ = package
    function.__qualname__ = impl.__name__
    doc = inspect.cleandoc(impl.__doc__ or "")
    for key, value in (("{pkg}", package), ("{backend}", backend), ("{models}", _MODELS.get(backend, ""))):
        doc = doc.replace(key, value)
    function.__doc__ = doc
    return function


def bind(backend: str, package: str) -> dict[str, Callable[..., Any]]:
    """The user functions of ``package`` bound to ``backend`` (``torch``: :data:`COMMON`; ``tf``: plus
    :data:`TF_ONLY`), with docstrings naming the package."""
    names = COMMON + (TF_ONLY if backend == "tf" else ())
    return {name: _bound(globals()[name], backend, package) for name in names}


_LAZY_CLASSES = {"Faces": "shared.faces", "Run": "shared.runs", "Result": "shared.results"}


def package_version() -> str:
    """The installed version of facevae (``0.0.0+unknown`` in a source checkout that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("facevae")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def lazy_class(package: str, name: str) -> Any:
    """``Faces``, ``Run`` or ``Result`` for a package's module ``__getattr__``: these pull in pandas and
    matplotlib, so they are imported on first use and ``import facevae`` stays cheap."""
    import importlib

    if name not in _LAZY_CLASSES:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_CLASSES[name]), name)
