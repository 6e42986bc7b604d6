"""The figure and explorer functions of ``import facevae`` / ``import facevae_tf`` (see :mod:`shared.package_api`).

Written once for both backends and bound to one by :func:`shared.package_api.bind` (their first
argument, ``backend``, is filled in there; a run folder of either backend is accepted). Each is a
thin call of :mod:`shared.studio`, :mod:`shared.conditional` or the explorer, imported on call so
``import facevae`` stays cheap. ``generate``, ``attribute_grid`` and ``edit_attributes`` are bound
on ``facevae_tf`` only (conditional models exist only on TF).
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["interpolate", "denoise", "inpaint", "explore", "generate", "attribute_grid", "edit_attributes"]


def interpolate(backend: str, run: str | os.PathLike, *, grid: int = 9, slerp: bool = False, corners: str = "sample",
                seed: int = 0, traversal: bool = True, data: Any = None, save: bool = True, fmt: str = "png",
                dpi: int = 100):
    """The face interpolation matrix of a run and a latent traversal (a ``Result`` with the figure).

    Options (as :func:`shared.studio.interpolate`): ``grid``, ``slerp``, ``corners``
    (``sample``/``encode``), ``seed``, ``traversal``, ``data`` (where the run's faces are now),
    ``save``, ``fmt``, ``dpi``.

    Example::

        res = {pkg}.interpolate("runs/vae16", grid=7, slerp=True)
        res                      # the figure, in a notebook
    """
    from shared.studio import interpolate as _interpolate
    return _interpolate(run, grid=grid, slerp=slerp, corners=corners, seed=seed, traversal=traversal, data=data,
                        save=save, fmt=fmt, dpi=dpi)


def denoise(backend: str, run: str | os.PathLike, *, sigmas: Any = (0.1, 0.2, 0.3, 0.5), n: int = 256, seed: int = 0,
            refine_steps: int = 0, blend_pca: bool = False, data: Any = None, save: bool = True, fmt: str = "png",
            dpi: int = 100):
    """Denoising of noisy test faces by the VAE vs mean and median filters (a ``Result`` with a table).

    Options (see :func:`shared.studio.denoise`): ``sigmas``, ``n``, ``seed``, ``refine_steps`` (> 0
    adds ``vae_refined``: the encoder's z refined by that many Adam steps, see
    :func:`shared.inference.refine`), ``blend_pca`` (adds ``vae+pca``: the VAE blended with PCA
    projection, tuned per σ on the run's validation faces, see :mod:`shared.denoise_blend`),
    ``data``, ``save``, ``fmt``, ``dpi``.

    Example::

        res = {pkg}.denoise("runs/vae16", sigmas=(0.1, 0.3), blend_pca=True)
        res.table
    """
    from shared.studio import denoise as _denoise
    return _denoise(run, sigmas=sigmas, n=n, seed=seed, refine_steps=refine_steps, blend_pca=blend_pca, data=data,
                    save=save, fmt=fmt, dpi=dpi)


def inpaint(backend: str, run: str | os.PathLike, *, mask: str = "box", method: str = "iterate", n: int = 256,
            seed: int = 0, iterations: int = 50, steps: int = 200, data: Any = None, save: bool = True,
            fmt: str = "png", dpi: int = 100):
    """Inpainting of masked test faces vs the mean-fill baseline (a ``Result`` with a table).

    Options (see :func:`shared.studio.inpaint`): ``mask`` (``box``/``random``), ``method``
    (``decode``/``iterate``/``optimize``/``hybrid``), ``n``, ``seed``, ``iterations``, ``steps``, ``data``,
    ``save``, ``fmt``, ``dpi``.

    Example::

        res = {pkg}.inpaint("runs/vae16", mask="box", method="iterate")
        res.save("inpaint.pdf")
    """
    from shared.studio import inpaint as _inpaint
    return _inpaint(run, mask=mask, method=method, n=n, seed=seed, iterations=iterations, steps=steps, data=data,
                    save=save, fmt=fmt, dpi=dpi)


def explore(backend: str, run: str | os.PathLike, *, port: int = 0, host: str = "127.0.0.1", data: Any = None):
    """The latent explorer of a generative run, started: a local web page to play with the model.

    Sliders on the most informative latent dimensions, a four-corner interpolation pad, attribute
    controls (``cvae`` runs), denoising, inpainting with a mask drawn by mouse, and your own face.
    The server runs in a background thread (the notebook stays usable) until ``.stop()``; open
    ``.url`` in a browser. ``facevae explore RUN_DIR`` is the same, blocking until Ctrl-C.

    Args:
        run: a generative run folder (either backend: ``vae``, ``cvae``, ``iaf``).
        port: the TCP port; 0 (default) picks a free one.
        host: the address to listen on. The page has no authentication: anything other than
            ``127.0.0.1`` / ``localhost`` / ``::1`` lets other machines use it (a warning is logged).
        data: where the run's faces are now, when they moved (default: the run's own data spec).

    Returns:
        The started ``Explorer`` (``.url``, ``.stop()``; a context manager).

    Example::

        explorer = {pkg}.explore("runs/vae16")
        print(explorer.url)                      # http://127.0.0.1:PORT/
        explorer.stop()

    Raises:
        RunError: not a run folder, or not a generative run. OSError: the port is in use.
    """
    from shared.explorer.server import Explorer
    return Explorer(run, host=host, port=port, data=data).start()


def generate(backend: str, run: str | os.PathLike, *, gender: Any, ethnicity: Any, age: Any, n: int = 16, seed: int = 0,
             temperature: float = 1.0, data: Any = None, save: bool = True, fmt: str = "png", dpi: int = 100):
    """Faces with chosen labels from a conditional (``cvae``) run (a ``Result``).

    ``gender`` 0/1 or ``male``/``female``, ``ethnicity`` 0-4 or its name, ``age`` in years. Options
    (see :func:`shared.conditional.generate`): ``n``, ``seed``, ``temperature`` (in (0, 1]: lower
    shows the labels more clearly, with less variety), ``save``, ``fmt``, ``dpi``.

    Example::

        res = {pkg}.generate("runs/cvae", gender="female", ethnicity=2, age=30, n=8, temperature=0.7)
    """
    from shared.conditional import generate as _generate
    return _generate(run, gender=gender, ethnicity=ethnicity, age=age, n=n, seed=seed, temperature=temperature,
                     data=data, save=save, fmt=fmt, dpi=dpi)


def attribute_grid(backend: str, run: str | os.PathLike, *, seed: int = 0, temperature: float = 1.0, data: Any = None,
                   save: bool = True, fmt: str = "png", dpi: int = 100):
    """Faces of every gender × ethnicity × age band from one latent draw of a ``cvae`` run (a ``Result``).

    ``temperature`` in (0, 1] shrinks the draw (see :func:`shared.conditional.attribute_grid`).

    Example::

        {pkg}.attribute_grid("runs/cvae", seed=1, temperature=0.7)
    """
    from shared.conditional import attribute_grid as _attribute_grid
    return _attribute_grid(run, seed=seed, temperature=temperature, data=data, save=save, fmt=fmt, dpi=dpi)


def edit_attributes(backend: str, run: str | os.PathLike, *, n: int = 4, seed: int = 0, data: Any = None,
                    save: bool = True, fmt: str = "png", dpi: int = 100):
    """Real test faces of a ``cvae`` run re-decoded with changed labels (a ``Result``).

    Example::

        {pkg}.edit_attributes("runs/cvae", n=4)
    """
    from shared.conditional import edit_attributes as _edit_attributes
    return _edit_attributes(run, n=n, seed=seed, data=data, save=save, fmt=fmt, dpi=dpi)
