"""facevae's PyTorch backend: the shared trainer, the convolutional VAE and its evaluation.

The backend surface (``train``, ``load``, ``evaluate``) lives in :mod:`facevae.backend`; submodules are
imported explicitly so that ``import facevae`` stays cheap.
"""
__all__: list[str] = []
