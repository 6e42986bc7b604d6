"""The torch backend on a briefly trained toy VAE: protocol round trip, IWAE bounds, evaluation, inpainting."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facevae import backend  # noqa: E402
from facevae.checkpoint import load_checkpoint  # noqa: E402
from facevae.models import ConvVAE  # noqa: E402
from facevae.evaluation import iwae_bound, per_image_metrics  # noqa: E402
from shared.protocol import GenerativeModel  # noqa: E402
from shared.runs import read_metrics  # noqa: E402
from tests.unit.torch_vae_helpers import single_thread, faces, split_of, tiny_run_config  # noqa: E402, F401

N, VAL, TEST = 320, 40, 40


@pytest.fixture(scope="module")
def data():
    return faces(N, 32, seed=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    run_dir = tmp_path_factory.mktemp("vae_run")
    config = tiny_run_config(epochs=4, latent_dim=4)
    config.save(run_dir / "config.json")
    best = backend.train(config, data, split_of(N, VAL, TEST), run_dir)
    assert np.isfinite(best["val_loss"])
    return run_dir


class TestTraining:
    def test_metrics_and_learning(self, run: Path):
        records = read_metrics(run)
        assert len(records) == 4
        for key in ("train_loss", "train_rate", "train_distortion", "train_elbo", "val_loss", "val_rate",
                    "val_distortion", "val_elbo", "val_beta", "images_per_s"):
            assert key in records[0], key
        assert records[-1]["val_elbo"] < records[0]["val_elbo"]

    def test_vae_resume_is_bit_identical(self, tmp_path: Path, data, monkeypatch):
        config = tiny_run_config(epochs=3)
        split = split_of(N, VAL, TEST)
        full, part = tmp_path / "full", tmp_path / "part"
        backend.train(config, data, split, full)

        original, calls = ConvVAE.loss_terms, []

        def interrupt(self, batch, beta=None):
            if self.training:
                calls.append(1)
                if len(calls) == 12:  # inside epoch 2 (8 steps per epoch)
                    raise KeyboardInterrupt
            return original(self, batch, beta)

        monkeypatch.setattr(ConvVAE, "loss_terms", interrupt)
        with pytest.raises(KeyboardInterrupt):
            backend.train(config, data, split, part)
        monkeypatch.setattr(ConvVAE, "loss_terms", original)
        backend.train(config, data, split, part, resume=True)
        for which in ("last", "best"):
            a = load_checkpoint(full / "checkpoints" / f"{which}.pt")["model"]
            b = load_checkpoint(part / "checkpoints" / f"{which}.pt")["model"]
            assert all(torch.equal(a[k], b[k]) for k in a), which


class TestProtocol:
    def test_round_trip(self, run: Path, data):
        model = backend.load(run)
        assert isinstance(model, GenerativeModel)
        assert isinstance(model.module, ConvVAE) and not model.module.training
        imgs = data.images[-TEST:]
        mean, logvar = model.encode(imgs)
        assert mean.shape == logvar.shape == (TEST, 4) and mean.dtype == np.float32
        rec = model.reconstruct(imgs)
        assert rec.shape == (TEST, 32, 32) and rec.dtype == np.float32
        assert 0.0 <= rec.min() and rec.max() <= 1.0
        np.testing.assert_allclose(model.decode(mean), rec, atol=1e-6)
        np.testing.assert_array_equal(model.encode(imgs.astype(np.float32) / 255)[0], mean)
        s1, s2, s3 = model.sample(6, seed=3), model.sample(6, seed=3), model.sample(6, seed=4)
        assert s1.shape == (6, 32, 32)
        np.testing.assert_array_equal(s1, s2)
        assert not np.array_equal(s1, s3)
        again = backend.load(run)
        np.testing.assert_array_equal(again.reconstruct(imgs), rec)
        np.testing.assert_array_equal(again.sample(6, seed=3), s1)
        with pytest.raises(ValueError, match="z must"):
            model.decode(np.zeros((2, 5), np.float32))


class TestBounds:
    def test_iwae_above_elbo_and_tightening_with_k(self, run: Path, data):
        model = backend.load(run)
        imgs = data.images[-TEST:]
        per = {k: per_image_metrics(model, imgs, iwae_k=k, seed=0)["neg_iwae"].mean() for k in (1, 8, 64)}
        neg_elbo = per_image_metrics(model, imgs, iwae_k=0, seed=1)["neg_elbo"].mean()
        # negative bounds: -log p <= neg_iwae_64 <= neg_iwae_8 <= neg_iwae_1 ~ neg_elbo
        assert per[64] <= per[8] <= per[1] + 1e-3
        assert per[64] < neg_elbo
        assert per[1] == pytest.approx(neg_elbo, rel=0.05)

    def test_iwae_chunking_and_seed(self, run: Path, data):
        vae = backend.load(run).module
        x = torch.from_numpy(data.images[-8:].astype(np.float32) / 255).unsqueeze(1)
        a = iwae_bound(vae, x, 16, torch.Generator().manual_seed(0), max_decode=8)   # 1 sample per chunk
        b = iwae_bound(vae, x, 16, torch.Generator().manual_seed(0), max_decode=8)
        c = iwae_bound(vae, x, 16, torch.Generator().manual_seed(0), max_decode=1024)  # one chunk
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert a.shape == (8,) and torch.isfinite(a).all()
        assert float((a - c).abs().mean()) < 0.05 * float(c.abs().mean())
        with pytest.raises(ValueError, match="iwae_k"):
            iwae_bound(vae, x, 0, torch.Generator())


class TestEvaluate:
    def test_evaluate_dict(self, run: Path, data):
        model = backend.load(run)
        test = data.subset(np.arange(N - TEST, N))

        class Features:  # a stand-in classifier: 4x4-pooled pixels as features
            def features(self, images01):
                return images01.reshape(len(images01), 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(images01), -1)

        result = backend.evaluate(model, test, iwae_k=8, classifier=Features(), seed=0)
        json.dumps(result)
        for key in ("neg_elbo", "rate", "distortion", "neg_iwae", "psnr", "ssim", "frechet_distance"):
            assert np.isfinite(result[key]), key
        assert result["neg_iwae"] <= result["neg_elbo"] + 1.0
        assert 0 < result["ssim"] <= 1 and result["psnr"] > 5
        assert result["frechet_distance"] >= 0
        groups = result["by_group"]
        assert set(groups) >= {"ethnicity", "gender"}
        n_by_gender = sum(g["n"] for g in groups["gender"].values())
        assert n_by_gender == TEST
        again = backend.evaluate(model, test, iwae_k=8, classifier=None, seed=0)
        assert again["neg_iwae"] == result["neg_iwae"] and "frechet_distance" not in again


class TestInpaintOptimize:
    def test_fits_known_pixels(self, run: Path, data):
        model = backend.load(run)
        clean = data.images[-6:].astype(np.float32) / 255
        mask = np.zeros_like(clean, dtype=bool)
        mask[:, 5:15, 5:27] = True
        masked = np.where(mask, 0.0, clean).astype(np.float32)
        start = model.decode(model.encode(masked)[0])
        out = backend.inpaint_optimize(model, masked, mask, steps=40, prior_weight=0.0, seed=0)
        assert out.shape == clean.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        err = lambda img: float(((img - clean)[~mask] ** 2).mean())  # noqa: E731
        assert err(out) < err(start)
        again = backend.inpaint_optimize(model, masked, mask, steps=40, prior_weight=0.0, seed=0)
        np.testing.assert_array_equal(out, again)
        assert all(p.requires_grad for p in model.module.parameters())
