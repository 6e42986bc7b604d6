"""The latent explorer: a local web page over any trained generative run (issue 13).

:class:`~shared.explorer.server.Explorer` is a standard-library threaded HTTP server; the page's
HTML/JS/CSS is package data in ``static/``; the model is reached only through the numpy protocol
(:mod:`shared.explorer.session`), so torch and TF runs share every line. ``shared`` never imports a
framework: the run's backend is loaded lazily by :func:`shared.api.load_model`.
"""
from __future__ import annotations

from shared.explorer.server import Explorer

__all__ = ["Explorer"]
