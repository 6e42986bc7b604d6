"""Fixtures of the unit tests: two tiny explorers (a torch vae and a TF cvae), trained once per session.

Used by test_explorer_http.py and test_explorer_bad_requests.py; nothing is trained unless a test asks.
"""
from __future__ import annotations

import pytest

from shared import api
from shared.explorer.server import Explorer
from tests.unit.explorer_helpers import TINY


@pytest.fixture(scope="session")
def explorers(tmp_path_factory):
    """``{"vae": torch vae Explorer, "cvae": tf cvae Explorer}``, trained here, serving on port 0."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    import torch

    root = tmp_path_factory.mktemp("explorer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core box
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEVAE_CACHE", str(root / "cache"))
        try:
            for name, backend in (("vae", "torch"), ("cvae", "tf")):
                api.train(api.build_config(backend=backend, model=name, **TINY), root / name, verbose=False)
                out[name] = Explorer(root / name, request_timeout=1.5).start()
            yield out
        finally:
            for ex in out.values():
                ex.stop()
            torch.set_num_threads(threads)


@pytest.fixture(params=["vae", "cvae"])
def ex(request, explorers) -> Explorer:
    return explorers[request.param]


@pytest.fixture
def vae(explorers) -> Explorer:
    return explorers["vae"]


@pytest.fixture
def cvae(explorers) -> Explorer:
    return explorers["cvae"]
