"""facevae's backend-neutral core: data, synthetic faces, splits, grids, corruptions, plots, configs, CLI.

Imports only numpy, pandas, pyarrow, Pillow, matplotlib and scipy — never torch or tensorflow
(a test enforces it). Submodules are imported on demand, so ``import shared`` is cheap.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
