"""facevae_tf: the TensorFlow / Keras 3 backend of facevae (``vae``, ``cvae``, ``iaf``).

The package mirrors the PyTorch backend ``facevae``: the same layer plans
(:mod:`shared.architecture`), the same loss terms and the same numpy protocol
(:class:`shared.protocol.GenerativeModel`). Its public surface is :mod:`facevae_tf.backend`
(``train``, ``load``, ``evaluate``, ``inpaint_optimize``).

Environment: importing this package runs
``os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")`` before TensorFlow is imported, which hides
TensorFlow's C++ info and warning lines (errors still show). ``setdefault`` means a value the user
has already set wins. (TensorFlow 2.21 still prints a few start-up lines before its logging is
configured; the variable cannot hide those.) Nothing else global is changed at import time;
training seeds the global RNGs (see :mod:`facevae_tf.engine`).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__: list[str] = []
