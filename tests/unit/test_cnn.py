"""facevae.cnn: shapes per task/preset/size, losses on logits, multi-task sum, augmentation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facevae.cnn import HUBER_DELTA, TASK_WEIGHTS, FaceCNN, augment_batch, tasks_of
from shared.config import ModelConfig
from shared.errors import ConfigError
from shared.faces import AGE_SCALE

OUT_SHAPES = {"gender": (2,), "ethnicity": (5,), "age": ()}


def _model(preset: str, task: str, size: int = 48, smoothing: float = 0.0) -> FaceCNN:
    torch.manual_seed(0)
    return FaceCNN(ModelConfig(family="cnn", preset=preset, task=task, image_size=size), smoothing).eval()


def _batch(n: int = 6, size: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n, 1, size, size, generator=g),
            "gender": torch.randint(0, 2, (n,), generator=g),
            "ethnicity": torch.randint(0, 5, (n,), generator=g),
            "age": torch.randint(1, 90, (n,), generator=g).float()}


class TestShapes:
    @pytest.mark.parametrize("preset", ["seed", "default"])
    @pytest.mark.parametrize("size", [48, 64])
    def test_every_task(self, preset, size):
        x = _batch(3, size)["images"]
        for task in ("gender", "ethnicity", "age", "all"):
            model = _model(preset, task, size)
            out = model(x)
            assert set(out) == set(tasks_of(task))
            for t, v in out.items():
                assert v.shape == (3, *OUT_SHAPES[t]), (preset, size, task, t, v.shape)
            assert model.features(x).shape == (3, model.feature_dim)
        assert model.feature_dim == (512 if preset == "seed" else 256)

    def test_seed_layers_match_the_original(self):
        model = _model("seed", "gender")
        convs = [m for m in model.trunk if isinstance(m, nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
            (1, 16, (3, 3), (1, 1)), (16, 64, (3, 3), (1, 1)), (64, 256, (3, 3), (1, 1))]
        kinds = [type(m).__name__ for m in model.trunk[:4]]
        assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d"]
        linears = [m for m in model.dense if isinstance(m, nn.Linear)]
        assert [(l.in_features, l.out_features) for l in linears] == [(256 * 6 * 6, 1024), (1024, 1024),
                                                                      (1024, 512)]
        assert sum(isinstance(m, nn.BatchNorm1d) for m in model.dense) == 3
        assert sum(isinstance(m, nn.LeakyReLU) for m in model.dense) == 3

    def test_default_is_smaller_and_size_must_divide(self):
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert n(_model("default", "gender")) < n(_model("seed", "gender")) / 5
        with pytest.raises(ConfigError, match="divisible"):
            ModelConfig(family="cnn", preset="default", image_size=40)
        with pytest.raises(ValueError, match="family='cnn'"):
            FaceCNN(ModelConfig(family="vae"))


class TestLoss:
    @pytest.mark.parametrize("preset,smoothing", [("seed", 0.0), ("default", 0.1)])
    def test_cross_entropy_on_returned_logits(self, preset, smoothing):
        model, batch = _model(preset, "all", smoothing=smoothing), _batch()
        assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)) for m in model.modules())
        with torch.no_grad():
            out, terms = model(batch["images"]), model.loss_terms(batch)
        for t in ("gender", "ethnicity"):
            expected = F.cross_entropy(out[t], batch[t], label_smoothing=smoothing)
            torch.testing.assert_close(terms[f"{t}_loss"], expected)
            # a softmax fed into the loss would give a different (compressed) value
            assert not torch.isclose(terms[f"{t}_loss"],
                                     F.cross_entropy(out[t].softmax(1), batch[t], label_smoothing=smoothing))
            acc = (out[t].argmax(1) == batch[t]).float().mean()
            torch.testing.assert_close(terms[f"{t}_acc"], acc)
        pred, tgt = out["age"] / AGE_SCALE, batch["age"] / AGE_SCALE
        age = F.l1_loss(pred, tgt) if preset == "seed" else F.huber_loss(pred, tgt, delta=HUBER_DELTA) / HUBER_DELTA
        torch.testing.assert_close(terms["age_loss"], age)
        torch.testing.assert_close(terms["age_mae"], (out["age"] - batch["age"]).abs().mean())
        total = sum(TASK_WEIGHTS[t] * terms[f"{t}_loss"] for t in ("gender", "ethnicity", "age"))
        torch.testing.assert_close(terms["loss"], total)

    def test_single_task_loss_is_its_own_term_and_trains(self):
        model, batch = _model("default", "ethnicity"), _batch(16)
        terms = model.loss_terms(batch)
        assert set(terms) == {"loss", "ethnicity_loss", "ethnicity_acc"}
        torch.testing.assert_close(terms["loss"], terms["ethnicity_loss"])
        model.train()
        terms = model.loss_terms(batch)
        terms["loss"].backward()
        assert all(p.grad is not None for p in model.parameters())
        assert not terms["ethnicity_acc"].requires_grad

    def test_age_is_in_years(self):
        model = _model("seed", "age")
        with torch.no_grad():
            model.heads["age"].weight.zero_()
            model.heads["age"].bias.fill_(0.3)
            out = model(_batch(2)["images"])
        torch.testing.assert_close(out["age"], torch.full((2,), 0.3 * AGE_SCALE))


class TestAugment:
    def test_shapes_range_labels_and_determinism(self):
        batch = _batch(8)
        a = augment_batch(batch, torch.Generator().manual_seed(3))
        b = augment_batch(batch, torch.Generator().manual_seed(3))
        assert a["images"].shape == batch["images"].shape
        assert 0.0 <= float(a["images"].min()) and float(a["images"].max()) <= 1.0
        torch.testing.assert_close(a["images"], b["images"])
        for k in ("gender", "ethnicity", "age"):
            assert a[k] is batch[k]
        assert not torch.equal(a["images"], batch["images"])

    def test_flip_only_is_identity_or_mirror_per_face(self):
        batch = _batch(32)
        out = augment_batch(batch, torch.Generator().manual_seed(0), max_shift=0, contrast=0.0,
                            brightness=0.0)["images"]
        x = batch["images"]
        same = ((out - x).abs() < 1e-6).flatten(1).all(1)
        mirrored = ((out - x.flip(-1)).abs() < 1e-6).flatten(1).all(1)
        assert bool((same | mirrored).all())
        assert 0 < int(mirrored.sum()) < 32  # both kinds occur

    def test_shift_moves_content(self):
        x = torch.zeros(64, 1, 48, 48)
        x[:, :, 20:28, 20:28] = 1.0
        out = augment_batch({"images": x}, torch.Generator().manual_seed(1), max_shift=3, contrast=0.0,
                            brightness=0.0)["images"]
        assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # square stays inside the frame
        centres = (out[:, 0].sum(1) * torch.arange(48)).sum(1) / out[:, 0].sum((1, 2))
        assert float((centres - 23.5).abs().max()) <= 3.0 and float(centres.std()) > 0.5
