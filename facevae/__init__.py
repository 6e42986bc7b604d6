"""facevae's PyTorch backend: its training engine, the convolutional VAE, the CNNs and their evaluation.

The backend surface (``train``, ``load``, ``evaluate``) lives in :mod:`facevae.backend`; submodules are
imported explicitly so that ``import facevae`` stays cheap.
"""
__all__: list[str] = []
