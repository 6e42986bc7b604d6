"""Every parity test runs torch on one intra-op thread.

The tolerances in this folder were measured that way: with several threads oneDNN splits its
reductions differently, the rounding differences between the two frameworks grow, and in the
chaotic cases (the ``seed`` preset, a few hundred Adam steps) the runs part beyond the stated
tolerances although every step is still correct to float32 precision.
"""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")  # before the module-scoped trained fixtures
def _torch_one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
