"""``sweep --batched``: the β values of one latent size trained as one ensemble give the runs of one by one.

Tolerance. Batched and one-by-one runs do the same arithmetic, but the ensemble runs each layer as
one grouped convolution (or batched matrix product) for all members, which sums in another order:
float32 rounding differs in the last bits. Where a weight has a gradient, that stays in the last
bits (after 2 epochs: training terms ~1e-8 relative, weights ~5e-7). Adam amplifies it where a
weight has none: the conv biases just before a BatchNorm (the normalisation removes them, so their
gradient is rounding noise and Adam's normalised step moves them by up to ``lr`` per step either
way, ~3e-2 after 48 steps at lr 2e-3) and the BatchNorm running means that track them; the
validation terms, computed with the running statistics, inherit that (~7e-4 relative, the rate
~1e-2; over 5 epochs the training rate drifts to ~5e-4). A one-by-one run trained with 2 threads
instead of 1 differs from itself by as much or more (training terms ~1e-6, weights ~1e-3, those
biases ~4e-2). On an AVX-512 machine whose single-thread grouped convolutions sum in yet another
order the validation rate was 4.3e-2 apart after one epoch. Free bits are checked step by step, not
over epochs: their clamp max(KL_d, λ) switches a dimension's gradient off at a threshold, so rounding
can flip one dimension on one side only, and the runs part for good (6e-3 in a weight after 2 epochs,
a bifurcation, not an error). So the checks are: training terms within 1e-3 relative, validation
loss/distortion/ELBO within 1e-2 and the rate within 1e-1, weights with a gradient within 1e-3,
the biases before a BatchNorm and its running means within ``2·lr × steps`` (Adam's bound); a β
applied to the wrong member moves the training rate by 3x.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facevae.checkpoint import load_checkpoint  # noqa: E402
from facevae.engine import TorchEngine  # noqa: E402
from facevae.backend import build_vae  # noqa: E402
from facevae.ensemble import StackedVAE  # noqa: E402
from shared import api  # noqa: E402
from shared.cli import main  # noqa: E402
from shared.config import RunConfig  # noqa: E402
from shared.errors import ConfigError, RunError  # noqa: E402
from shared.sweep import sweep  # noqa: E402
from shared.sweep_batched import Lockstep  # noqa: E402
from tests.unit.torch_vae_helpers import single_thread  # noqa: E402,F401  (one intra-op thread)

BETAS = (0.1, 1.0)
NAMES = ("d4_b0.1", "d4_b1")
TIMING = {"seconds", "images_per_s"}  # wall-clock fields of a metrics record
TRAIN_RTOL, VAL_RTOL, RATE_RTOL, WEIGHT_ATOL = 1e-3, 1e-2, 1e-1, 1e-3
NO_SIGNAL = ("encoder.0.bias", "encoder.3.bias", "decoder.5.bias")  # conv biases right before a BatchNorm
SHAPED = dict(kl_warmup_epochs=1)  # each member's warmed-up β (free bits: test_one_ensemble_step_...)


def _base(epochs: int = 2, data: str = "synthetic:240", **train) -> RunConfig:
    # bernoulli: the equality tolerances were measured with it; the learned-σ loss weighs each face by
    # 1/MSE, which amplifies the grouped convolutions' different summation order
    return api.build_config(backend="torch", model="vae", data=data, image_size=32, channels=(8, 16),
                            hidden_dims=(32,), latent_dim=4, epochs=epochs, device="cpu", likelihood="bernoulli",
                            **train)


def _sweep(base: RunConfig, out: Path, betas=BETAS, **kw):
    return sweep(base, out, latent_dims=(4,), betas=betas, iwae_k=1, save=False, **kw)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same 2-epoch grid trained one by one and batched."""
    root = tmp_path_factory.mktemp("batched")
    _sweep(_base(**SHAPED), root / "one")
    _sweep(_base(**SHAPED), root / "batched", batched=True)
    return root / "one", root / "batched"


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _close_records(a: list[dict], b: list[dict]) -> None:
    assert [list(r) for r in a] == [list(r) for r in b]  # the same epochs, the same fields in the same order
    for ra, rb in zip(a, b):
        for key in ra.keys() - TIMING:
            if key in ("epoch", "step", "lr") or key.endswith("beta"):
                assert ra[key] == rb[key], key
            else:
                rtol = TRAIN_RTOL if key.startswith("train_") else RATE_RTOL if key == "val_rate" else VAL_RTOL
                assert rb[key] == pytest.approx(ra[key], rel=rtol), (key, ra["epoch"])


def _close_checkpoints(a: Path, b: Path, which: str) -> None:
    ca, cb = load_checkpoint(a / "checkpoints" / f"{which}.pt"), load_checkpoint(b / "checkpoints" / f"{which}.pt")
    assert set(ca) == set(cb) and list(ca["model"]) == list(cb["model"])
    drift = ca["loop"]["step"] * ca["optimizer"]["param_groups"][0]["lr"] * 2  # Adam's bound, lr at most 2x the last
    for name, wa in ca["model"].items():
        wb = cb["model"][name]
        no_signal = name in NO_SIGNAL or name.endswith("running_mean")
        assert wa.shape == wb.shape and wa.dtype == wb.dtype, name
        assert torch.allclose(wa.double(), wb.double(), rtol=0, atol=drift if no_signal else WEIGHT_ATOL), name
    oa, ob = ca["optimizer"], cb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert [sorted(s) for s in oa["state"].values()] == [sorted(s) for s in ob["state"].values()]
    la, lb = dict(ca["loop"]), dict(cb["loop"])
    for key in ("best", "best_metrics", "last_record"):
        la.pop(key), lb.pop(key)
    assert la == lb  # epoch, step, patience, stopped, the training recipe
    assert all(torch.equal(ca["rng"][k], cb["rng"][k]) for k in ca["rng"])


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def test_batched_sweep_writes_the_runs_of_one_by_one(pair):
    one, batched = pair
    for name in NAMES:
        a, b = one / name, batched / name
        assert _files(a) == _files(b)
        assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
        assert (a / "split.json").read_bytes() == (b / "split.json").read_bytes()
        _close_records(_records(a), _records(b))
        for which in ("best", "last"):
            _close_checkpoints(a, b, which)
        ea, eb = (json.loads((r / "eval.json").read_text()) for r in (a, b))
        assert abs(ea["psnr"] - eb["psnr"]) < 0.1
    # the members really had their own β: their rates differ by far more than the tolerance
    ra, rb = (_records(batched / n)[-1]["train_rate"] for n in NAMES)
    assert abs(ra - rb) / ra > 100 * TRAIN_RTOL


def test_batched_runs_load_evaluate_and_report_like_any_run(pair):
    _, batched = pair
    model = api.load_model(batched / "d4_b1")
    faces = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    assert model.reconstruct(faces).shape == (3, 32, 32)
    from shared.sweep import report
    assert list(report(batched, save=False).table["name"]) == list(NAMES)


def _one_step_each(configs, idx, eps, tmp_path, noise=None):
    """One step of every config through a one-model TorchEngine (``noise``: the denoising input noise)."""
    images = np.random.default_rng(1).integers(0, 256, (48, 32, 32), dtype=np.uint8)
    train, val = {"images": images[:40]}, {"images": images[40:]}
    singles = []
    for k, c in enumerate(configs):
        engine = TorchEngine(build_vae(c.model, c.train.seed), train, val, c, tmp_path / str(k))
        engine.set_lr(c.train.lr)
        terms = engine.train_step(idx, c.model.beta, eps, noise=noise)
        singles.append((engine.model, torch.stack([terms[t] for t in ("loss", "distortion", "rate", "elbo")])))
    stack = StackedVAE(configs, train, val)
    out = stack.train_step(idx, eps, [c.model.beta for c in configs], configs[0].train.lr, noise)
    return singles, stack, out


def test_one_ensemble_step_with_input_noise_is_each_members_own_step(tmp_path):
    from shared.training import input_noise

    configs = [_base(beta=b, input_noise=0.5) for b in BETAS]
    idx = np.arange(0, 40, 2)
    eps = np.random.default_rng(2).standard_normal((len(idx), 4), np.float32)
    noise = input_noise(0, 0, 0, len(idx), (32, 32), 0.5)
    singles, _, out = _one_step_each(configs, idx, eps, tmp_path / "noisy", noise)
    for k, (_, terms) in enumerate(singles):
        assert torch.allclose(out[k, :4], terms, rtol=1e-5)
    _, _, clean = _one_step_each(configs, idx, eps, tmp_path / "clean")
    # the encoders really read the noisy faces: the rate of the first step moves by ~20 % (1e-5 is the tolerance)
    assert float(((out[:, 2] - clean[:, 2]) / clean[:, 2]).abs().min()) > 0.05


def test_a_denoising_grid_batched_gives_the_runs_of_one_by_one(tmp_path):
    _sweep(_base(epochs=1, input_noise=0.4), tmp_path / "one")
    _sweep(_base(epochs=1, input_noise=0.4), tmp_path / "batched", batched=True)
    for name in NAMES:
        a, b = tmp_path / "one" / name, tmp_path / "batched" / name
        assert json.loads((b / "config.json").read_text())["train"]["input_noise"] == 0.4
        _close_records(_records(a), _records(b))
        _close_checkpoints(a, b, "last")


@pytest.mark.parametrize("train", [dict(optimizer="adam"), dict(optimizer="adamw", weight_decay=0.1, grad_clip=5.0),
                                   dict(optimizer="sgd", weight_decay=0.01, grad_clip=5.0),
                                   dict(free_bits=0.05, kl_warmup_epochs=1),
                                   dict(preset="seed")])  # ReLU, max-pooling, BatchNorm1d after the linear layers
def test_one_ensemble_step_is_each_members_own_step(train, tmp_path):
    configs = [_base(beta=b, **train) for b in BETAS]
    idx = np.arange(0, 40, 2)
    eps = np.random.default_rng(2).standard_normal((len(idx), 4), np.float32)
    singles, stack, out = _one_step_each(configs, idx, eps, tmp_path)
    lr = configs[0].train.lr
    for k, (model, terms) in enumerate(singles):
        assert torch.allclose(out[k, :4], terms, rtol=1e-5)
        for name, value in model.state_dict().items():
            stacked = (stack.params.get(name) if name in stack.params
                       else stack.buffers[name])[k]
            # BatchNorm running statistics are per member, updated in place. Adam's first step is about
            # ±lr whatever |g|: a weight whose gradient is rounding noise may step either way (2·lr apart),
            # so: every weight within Adam's bound, all but a rare few within lr/20 (the weights with no
            # signal at all, NO_SIGNAL, only within the bound). Without per-member clipping SGD's weights
            # differ by 5e-2, 10x the bound.
            diff = (stacked.detach().double() - value.double()).abs()
            assert float(diff.max()) <= 2.5 * lr, name
            assert name in NO_SIGNAL or float((diff > lr / 20).double().mean()) <= 1e-3, name
    bn = next(n for n in stack.buffers if n.endswith("num_batches_tracked"))
    assert stack.buffers[bn].tolist() == [1, 1]


def test_one_member_stops_early_and_the_other_trains_on(tmp_path):
    # on 120 faces at lr 3e-3, β=0.1 gets worse after epoch 3 (by 0.6 %, far beyond the tolerance) and stops;
    # β=4 improves until epoch 4 and trains all 5 epochs
    base = _base(epochs=5, data="synthetic:120", lr=3e-3, schedule="constant", early_stopping=1)
    _sweep(base, tmp_path / "batched", betas=(0.1, 4.0), batched=True)
    for beta, name in zip((0.1, 4.0), ("d4_b0.1", "d4_b4")):
        cfg = RunConfig.from_dict({**base.to_dict(), "model": {**base.model.to_dict(), "beta": beta}})
        api.train(cfg, tmp_path / "one" / name, verbose=False)
        a, b = tmp_path / "one" / name, tmp_path / "batched" / name
        _close_records(_records(a), _records(b))
        _close_checkpoints(a, b, "best")
    stopped = load_checkpoint(tmp_path / "batched" / "d4_b0.1" / "checkpoints" / "last.pt")["loop"]
    assert stopped["stopped"] and stopped["epoch"] == 4  # it kept its checkpoints while the other went on
    assert len(_records(tmp_path / "batched" / "d4_b4")) == 5


def test_an_interrupted_batched_sweep_resumes_like_one_by_one(pair, tmp_path):
    _, batched = pair
    resumed, alone = tmp_path / "resumed", tmp_path / "alone"
    shutil.copytree(batched, resumed)
    shutil.copytree(batched, alone)
    longer = _base(epochs=3, **SHAPED)
    for name in NAMES:  # a 3-epoch sweep interrupted after its second epoch
        cfg = RunConfig.from_dict(json.loads((resumed / name / "config.json").read_text()))
        RunConfig.from_dict({**cfg.to_dict(), "train": {**cfg.train.to_dict(), "epochs": 3}}).save(
            resumed / name / "config.json")
        (resumed / name / "eval.json").unlink()
        api.train(None, alone / name, resume=True, updates={"epochs": 3}, verbose=False)
    _sweep(longer, resumed, batched=True)
    for name in NAMES:
        before, after = _records(batched / name), _records(resumed / name)
        assert after[:2] == before  # the first two epochs were not trained again
        _close_records(_records(alone / name), after)
        _close_checkpoints(alone / name, resumed / name, "last")
    # run again: every point is finished and evaluated, nothing is trained
    stamps = {n: (resumed / n / "metrics.jsonl").stat().st_mtime_ns for n in NAMES}
    _sweep(longer, resumed, batched=True)
    assert stamps == {n: (resumed / n / "metrics.jsonl").stat().st_mtime_ns for n in NAMES}


def test_batched_is_refused_on_tf_and_with_jobs(tmp_path, capsys):
    tf_base = api.build_config(backend="tf", model="vae", data="synthetic:80", image_size=32, epochs=1)
    with pytest.raises(ConfigError, match=r"^--batched needs the torch backend; ") as info:
        _sweep(tf_base, tmp_path / "tf", batched=True)
    assert "\n" not in str(info.value) and "backend='tf'" in str(info.value)
    with pytest.raises(ConfigError, match="`batched` cannot be combined with `jobs` > 1"):
        _sweep(_base(), tmp_path / "jobs", batched=True, jobs=2)
    assert not (tmp_path / "tf").exists() and not (tmp_path / "jobs").exists()  # refused before anything is written
    rc = main(["sweep", "--backend", "tf", "--batched", "--data", "synthetic:80", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--batched needs the torch backend" in err, err


def test_lockstep_refuses_members_out_of_step():
    import threading

    lockstep = Lockstep(2, lambda kind, payloads: {m: (kind, p) for m, p in payloads.items()})
    answers: dict[int, object] = {}

    def member(k: int, kind: str) -> None:
        try:
            answers[k] = lockstep.together(k, "train", k)
            answers[k] = lockstep.together(k, kind, k)
        except RunError as exc:
            answers[k] = exc
        finally:
            lockstep.leave(k)

    threads = [threading.Thread(target=member, args=(0, "train")), threading.Thread(target=member, args=(1, "val"))]
    for t in threads:
        t.start()
    lockstep.serve()
    for t in threads:
        t.join()
    assert all(isinstance(a, RunError) and "out of step" in str(a) for a in answers.values()), answers
