"""The torch ConvVAE: shapes, presets, ELBO terms against a hand computation, warm-up, free bits."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facevae.layers import build_layers  # noqa: E402
from facevae.models import MIN_SIGMA, ConvVAE  # noqa: E402
from shared.architecture import Layer  # noqa: E402
from shared.config import ModelConfig  # noqa: E402
from tests.unit.torch_vae_helpers import single_thread, tiny_model_config  # noqa: E402, F401


def _batch(n: int = 5, size: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n, 1, size, size, generator=g)}


def _terms_with_eps(model: ConvVAE, batch: dict, seed: int = 7):
    """loss_terms under a fixed global seed, and the eps it drew (same seed, same draw)."""
    x = batch["images"]
    with torch.no_grad():
        torch.manual_seed(seed)
        terms = model.loss_terms(batch)
        mean, logvar = model.encode(x)
        torch.manual_seed(seed)
        eps = torch.randn_like(mean)
        logits = model.decode_logits(mean + torch.exp(0.5 * logvar) * eps)
    as_np = lambda t: t.double().numpy()  # noqa: E731
    return {k: float(v) for k, v in terms.items()}, as_np(mean), as_np(logvar), as_np(logits), as_np(x)


def _hand_kl(mean: np.ndarray, logvar: np.ndarray) -> float:
    return float(np.mean(np.sum(0.5 * (mean ** 2 + np.exp(logvar) - 1 - logvar), axis=1)))


class TestShapes:
    @pytest.mark.parametrize("size", [48, 64])
    def test_default_preset_sizes(self, size: int):
        torch.manual_seed(0)
        model = ConvVAE(ModelConfig(image_size=size, latent_dim=8)).eval()
        x = torch.rand(3, 1, size, size)
        with torch.no_grad():
            mean, logvar = model.encode(x)
            out = model.decode(mean)
        assert mean.shape == logvar.shape == (3, 8)
        assert out.shape == (3, 1, size, size)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    def test_seed_preset_has_about_82m_parameters(self):
        model = ConvVAE(ModelConfig(preset="seed", latent_dim=256))
        assert 81_000_000 < model.n_parameters < 83_000_000
        # the original layout: conv 1->32->128->512, dense 2048->1024->512, deconv k2 s2 512->128->32->1
        convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [32, 128, 512]
        deconvs = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
        assert [(d.out_channels, d.kernel_size, d.stride) for d in deconvs] == [
            (128, (2, 2), (2, 2)), (32, (2, 2), (2, 2)), (1, (2, 2), (2, 2))]
        assert model.mean_head.in_features == 512

    def test_default_preset_is_much_smaller(self):
        assert ConvVAE(ModelConfig(latent_dim=256)).n_parameters < 10_000_000

    def test_heads_are_plain_linear(self):
        model = ConvVAE(tiny_model_config())
        assert type(model.mean_head) is torch.nn.Linear and type(model.logvar_head) is torch.nn.Linear

    def test_builder_rejects_unknown_kind(self):
        with pytest.raises(ValueError, match="unknown layer kind"):
            build_layers([Layer("dropout")])


class TestElboTerms:
    def test_bernoulli_against_hand_computation(self):
        torch.manual_seed(0)
        model = ConvVAE(tiny_model_config(beta=0.5, likelihood="bernoulli")).eval()
        terms, mean, logvar, logits, x = _terms_with_eps(model, _batch())
        p = 1.0 / (1.0 + np.exp(-logits))
        bce = -(x * np.log(p) + (1 - x) * np.log(1 - p))
        distortion = float(np.mean(bce.reshape(len(x), -1).sum(1)))
        rate = _hand_kl(mean, logvar)
        assert terms["distortion"] == pytest.approx(distortion, rel=1e-4)
        assert terms["rate"] == pytest.approx(rate, rel=1e-4)
        assert terms["elbo"] == pytest.approx(distortion + rate, rel=1e-4)
        assert terms["loss"] == pytest.approx(distortion + 0.5 * rate, rel=1e-4)
        assert terms["beta"] == 0.5

    def test_gaussian_fixed_sigma(self):
        torch.manual_seed(0)
        model = ConvVAE(tiny_model_config(likelihood="gaussian", sigma_mode="fixed", sigma=0.2)).eval()
        terms, _, _, logits, x = _terms_with_eps(model, _batch())
        mu = 1.0 / (1.0 + np.exp(-logits))
        d = x[0].size
        nll = 0.5 * ((x - mu) ** 2).reshape(len(x), -1).sum(1) / 0.04 + d * (math.log(0.2) + 0.5 * math.log(2 * math.pi))
        assert terms["distortion"] == pytest.approx(float(nll.mean()), rel=1e-4)

    def test_gaussian_learned_sigma_is_the_per_image_optimum(self):
        torch.manual_seed(0)
        model = ConvVAE(tiny_model_config(likelihood="gaussian", sigma_mode="learned")).eval()
        terms, _, _, logits, x = _terms_with_eps(model, _batch())
        mu = 1.0 / (1.0 + np.exp(-logits))
        sq = ((x - mu) ** 2).reshape(len(x), -1)
        d = sq.shape[1]
        var = np.maximum(sq.mean(1), MIN_SIGMA ** 2)
        nll = 0.5 * d * (np.log(var) + math.log(2 * math.pi) + 1)
        assert terms["distortion"] == pytest.approx(float(nll.mean()), rel=1e-4)
        for sigma in (0.05, 0.1, 0.3, 1.0):  # any fixed σ explains the same images worse
            fixed = 0.5 * sq.sum(1) / sigma ** 2 + d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
            assert np.all(nll <= fixed + 1e-6)


class TestTrainingShaping:
    def test_kl_warmup_beta_reaches_the_loss_and_defaults_to_the_target(self):
        cfg = tiny_model_config(beta=2.0, kl_warmup_epochs=4)
        model = ConvVAE(cfg)
        seen = [float(model.train().loss_terms(_batch(), beta=cfg.beta_at(e))["beta"]) for e in (0, 2, 4, 9)]
        assert seen == pytest.approx([2.0 / 5, 2.0 * 3 / 5, 2.0, 2.0])  # β·min(1, (epoch+1)/(W+1))
        assert float(model.eval().loss_terms(_batch())["beta"]) == 2.0  # no β given: the target objective

    def test_free_bits_shape_the_loss_but_not_the_logged_rate(self):
        torch.manual_seed(0)
        model = ConvVAE(tiny_model_config(free_bits=50.0)).train()
        terms = {k: float(v.detach()) for k, v in model.loss_terms(_batch()).items()}
        assert terms["rate"] < 50.0 * 3
        assert terms["loss"] - terms["distortion"] == pytest.approx(50.0 * 3, rel=1e-5)
        assert terms["elbo"] == pytest.approx(terms["distortion"] + terms["rate"], rel=1e-6)

    def test_gradient_reaches_encoder_through_kl(self):
        torch.manual_seed(0)
        model = ConvVAE(tiny_model_config(beta=1.0))
        model.loss_terms(_batch())["loss"].backward()
        assert model.logvar_head.weight.grad is not None and float(model.logvar_head.weight.grad.abs().sum()) > 0
