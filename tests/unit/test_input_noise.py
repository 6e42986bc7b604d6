"""``TrainConfig.input_noise``: a denoising VAE, the encoder reads noisy faces and the likelihood scores clean ones.

What a user relies on: the noise is a pure function of the step (so resume is exact and both backends
add the same noise), each face gets its own σ in [0, input_noise], only training sees it (validation
stays clean), the config refuses what it cannot do, and a run trains, resumes bit for bit, and
differs from one trained without the noise.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from shared import training
from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from shared.errors import ConfigError, RunError
from tests.unit.test_training_loop import NumpyEngine


class TestNoiseFunction:
    def test_a_pure_function_of_its_position(self):
        a = training.input_noise(3, 1, 2, 8, (16, 16), 0.3)
        assert a.shape == (8, 16, 16) and a.dtype == np.float32
        np.testing.assert_array_equal(a, training.input_noise(3, 1, 2, 8, (16, 16), 0.3))
        for other in ((3, 1, 3), (3, 2, 2), (4, 1, 2)):  # another step, epoch or seed
            assert not np.allclose(a, training.input_noise(*other, 8, (16, 16), 0.3))
        # a stream of its own: not the ε of the same step
        eps = training.train_noise(3, 1, 2, 8, 256).reshape(8, 16, 16)
        assert not np.allclose(a / np.abs(a).max(), eps / np.abs(eps).max(), atol=0.1)

    def test_each_face_has_its_own_sigma_in_range(self):
        max_sigma = 0.3
        noise = training.input_noise(0, 0, 0, 400, (48, 48), max_sigma)
        sigma = noise.reshape(400, -1).std(axis=1)  # 2304 pixels: ~1.5% estimation error
        assert sigma.max() <= max_sigma * 1.05 and sigma.min() >= 0.0
        assert sigma.min() < 0.1 * max_sigma and sigma.max() > 0.9 * max_sigma  # spread over U(0, max)
        assert sigma.mean() == pytest.approx(max_sigma / 2, rel=0.1)
        assert abs(float(noise.mean())) < 0.01  # zero-mean pixels

    def test_zero_sigma_is_zero_noise(self):
        assert not np.any(training.input_noise(0, 0, 0, 4, (8, 8), 0.0))


class NoisyEngine(NumpyEngine):
    """The loop's numpy engine, recording the input noise it is given."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.noise: list = []

    def train_step(self, idx, beta, eps, *, noise=None):
        self.noise.append(noise)
        return super().train_step(idx, beta, eps)


def _loop_config(input_noise: float, **train) -> RunConfig:
    base = dict(epochs=2, batch_size=16, lr=0.1, early_stopping=0, seed=7, input_noise=input_noise)
    base.update(train)
    return RunConfig(model=ModelConfig(image_size=32, channels=(4, 8), hidden_dims=(8,)),
                     train=TrainConfig(**base), data=DataConfig(image_size=32))


class TestLoop:
    def test_off_needs_no_noise_argument(self, tmp_path):
        engine = NumpyEngine()  # its train_step takes no `noise`
        training.fit(engine, _loop_config(0.0), tmp_path)
        assert len([c for c in engine.calls if c[0] == "step"]) == 8

    def test_on_every_step_gets_the_noise_of_its_position(self, tmp_path):
        engine = NoisyEngine()
        training.fit(engine, _loop_config(0.25), tmp_path)
        assert len(engine.noise) == 8
        for step, noise in enumerate(engine.noise):
            epoch, b = divmod(step, 4)
            n = len(training.batch_plan(50, 16, 7, epoch)[b])
            np.testing.assert_array_equal(noise, training.input_noise(7, epoch, b, n, (32, 32), 0.25))

    def test_resume_reads_input_noise_from_the_run_config(self, tmp_path, caplog):
        store: dict = {}
        training.fit(NoisyEngine(store=store), _loop_config(0.25, epochs=1), tmp_path)
        resumed = NoisyEngine(store=store)
        with caplog.at_level("INFO"):
            training.fit(resumed, _loop_config(0.5, epochs=2), tmp_path, resume=True)
        assert "input_noise changed from 0.25 to 0.5" in caplog.text
        np.testing.assert_array_equal(resumed.noise[0], training.input_noise(7, 1, 0, 16, (32, 32), 0.5))


class TestConfig:
    @pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "0.3"])
    def test_out_of_range_is_refused(self, bad):
        with pytest.raises(ConfigError, match=r"`input_noise` must be a finite number in \[0.0, 1.0\]"):
            TrainConfig(input_noise=bad)

    def test_old_configs_load_with_zero_and_round_trip(self):
        old = TrainConfig().to_dict()
        del old["input_noise"]
        assert TrainConfig.from_dict(old).input_noise == 0.0
        cfg = RunConfig(train=TrainConfig(input_noise=0.3))
        assert RunConfig.from_json(cfg.to_json()).train.input_noise == 0.3

    def test_cnn_is_refused_and_generative_families_are_allowed(self):
        with pytest.raises(ConfigError) as info:
            RunConfig(model=ModelConfig(family="cnn"), train=TrainConfig(input_noise=0.3))
        assert str(info.value) == ("`input_noise` is for the generative families (vae, cvae, iaf). "
                                   "Received: family='cnn', input_noise=0.3")
        RunConfig(model=ModelConfig(family="cnn"), train=TrainConfig(input_noise=0.0))
        RunConfig(backend="torch", train=TrainConfig(input_noise=0.3))
        for family in ("vae", "cvae", "iaf"):
            RunConfig(backend="tf", model=ModelConfig(family=family), train=TrainConfig(input_noise=0.3))

    def test_cli_flag_on_train_and_sweep(self, capsys):
        from shared.cli import build_parser, main
        from shared.cli_options import config_from_args

        parser = build_parser()
        args = parser.parse_args(["train", "--backend", "torch", "--model", "vae", "--data", "synthetic:100",
                                  "--out", "x", "--input-noise", "0.3"])
        assert config_from_args(args).train.input_noise == 0.3
        args = parser.parse_args(["sweep", "--backend", "torch", "--latent-dims", "4", "--betas", "1",
                                  "--data", "synthetic:100", "--out", "x", "--input-noise", "0.2"])
        assert config_from_args(args, latent_dim=4, beta=1.0).train.input_noise == 0.2
        main(["train", "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--input-noise X denoising VAE: max σ of the Gaussian noise added to encoder inputs" in help_text


torch = pytest.importorskip("torch")

from facevae import backend  # noqa: E402
from facevae.checkpoint import load_checkpoint  # noqa: E402
from facevae.models import ConvVAE  # noqa: E402
from tests.unit.torch_vae_helpers import faces, single_thread, split_of, tiny_run_config  # noqa: E402,F401


class TestTorchModel:
    def test_encodes_the_noisy_faces_and_scores_the_clean_ones(self, monkeypatch):
        cfg = tiny_run_config(latent_dim=3).model
        torch.manual_seed(0)
        vae = ConvVAE(cfg).eval()  # eval: BatchNorm on running statistics, the same for every call
        x = torch.from_numpy(faces(8, 32, seed=2).floats()).unsqueeze(1)
        noise = torch.from_numpy(training.input_noise(0, 0, 0, 8, (32, 32), 0.5)).unsqueeze(1)
        eps = torch.randn(8, 3)
        seen = []
        original = ConvVAE.encode
        monkeypatch.setattr(ConvVAE, "encode", lambda self, t: seen.append(t) or original(self, t))
        with torch.no_grad():
            terms = vae.loss_terms({"images": x, "eps": eps, "noise": noise})
            clean = vae.loss_terms({"images": x, "eps": eps})
        noisy = (x + noise).clamp(0, 1)
        assert torch.equal(seen[0], noisy) and torch.equal(seen[1], x)
        with torch.no_grad():
            mean, logvar = original(vae, noisy)
            logits = vae.decode_logits(mean + torch.exp(0.5 * logvar) * eps)
            scored_clean = vae.recon_nll(logits, x).mean()
            scored_noisy = vae.recon_nll(logits, noisy).mean()
        assert float(terms["distortion"]) == pytest.approx(float(scored_clean), rel=1e-6)
        # the mutations this guards against would be far off: scoring the noisy faces, or ignoring the noise
        assert abs(float(scored_noisy - scored_clean)) > 100 * abs(float(terms["distortion"] - scored_clean)) + 1.0
        # the rate is the noisy posterior's, and that posterior is not the clean one (the noise reached the encoder)
        from facevae.losses import kl_diag_normal
        with torch.no_grad():
            assert float(terms["rate"]) == pytest.approx(float(kl_diag_normal(mean, logvar).sum(1).mean()), rel=1e-6)
            assert float((original(vae, x)[0] - mean).abs().max()) > 1e-3
        assert float(clean["distortion"]) != float(terms["distortion"])


N, VAL, TEST = 300, 40, 40  # 220 training faces, batch 32: 7 steps per epoch


def _train(run_dir: Path, input_noise: float, *, resume: bool = False, data=None):
    config = tiny_run_config(epochs=3)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, input_noise=input_noise))
    return backend.train(config, data, split_of(N, VAL, TEST), run_dir, resume=resume)


class TestTorchTraining:
    def test_trains_resumes_bit_for_bit_and_differs_from_clean_training(self, tmp_path, monkeypatch):
        data = faces(N, 32, seed=0)
        original, calls, modes = ConvVAE.loss_terms, [], []

        def spy(self, batch, beta=None):
            modes.append((self.training, "noise" in batch))
            return original(self, batch, beta)

        monkeypatch.setattr(ConvVAE, "loss_terms", spy)
        _train(tmp_path / "full", 0.3, data=data)
        assert {m for m in modes} == {(True, True), (False, False)}  # validation sees clean faces

        def interrupt(self, batch, beta=None):
            if self.training:
                calls.append(1)
                if len(calls) == 10:  # inside epoch 2
                    raise KeyboardInterrupt
            return original(self, batch, beta)

        monkeypatch.setattr(ConvVAE, "loss_terms", interrupt)
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path / "part", 0.3, data=data)
        monkeypatch.setattr(ConvVAE, "loss_terms", original)
        _train(tmp_path / "part", 0.3, resume=True, data=data)
        _train(tmp_path / "clean", 0.0, data=data)
        for which in ("last", "best"):
            a = load_checkpoint(tmp_path / "full" / "checkpoints" / f"{which}.pt")["model"]
            b = load_checkpoint(tmp_path / "part" / "checkpoints" / f"{which}.pt")["model"]
            assert all(torch.equal(a[k], b[k]) for k in a), which
        c = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")["model"]
        assert not torch.equal(a["mean_head.weight"], c["mean_head.weight"])


DDP_OPTIONS = dict(data="synthetic:240", image_size=32, channels=(8, 16), hidden_dims=(32,), epochs=1, batch_size=32,
                   min_steps_per_epoch=0, optimizer="sgd", lr=0.002, device="cpu", input_noise=0.3,
                   likelihood="bernoulli")  # the likelihood test_ddp_torch.py measured its tolerance with
DDP_SCRIPT = """
import json, sys
from pathlib import Path
import facevae
facevae.train(Path(sys.argv[1]), **json.loads(sys.argv[2]), verbose=False)
"""


class TestTorchDDP:
    def test_two_processes_add_each_face_its_own_noise(self, tmp_path):
        """Under torchrun the noise is sharded with the faces: the run equals one process (tolerance of
        tests/unit/test_ddp_torch.py, 1e-4 on the weights) and differs from a clean run far beyond it."""
        import os
        import subprocess
        import sys

        from facevae.checkpoint import checkpoint_path
        from shared import api
        from shared import distributed as env

        repo = Path(__file__).resolve().parents[2]
        environ = {**os.environ, "OMP_NUM_THREADS": "1", "FACEVAE_CACHE": str(tmp_path / "cache"),
                   env.TIMEOUT_ENV: "60", "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            environ.pop(name, None)
        (tmp_path / "script.py").write_text(DDP_SCRIPT)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(tmp_path / "script.py"), str(tmp_path / "ddp"), json.dumps(DDP_OPTIONS)],
                              env=environ, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        one = api.train(api.build_config(backend="torch", model="vae", **DDP_OPTIONS), tmp_path / "one", verbose=False)
        clean = api.train(api.build_config(backend="torch", model="vae", **{**DDP_OPTIONS, "input_noise": 0.0}),
                          tmp_path / "clean", verbose=False)

        def weights(run):
            return {k: v.double() for k, v in load_checkpoint(checkpoint_path(run, "last"))["model"].items()}

        a, b, c = weights(one), weights(tmp_path / "ddp"), weights(clean)
        for name in a:
            assert torch.allclose(b[name], a[name], rtol=0, atol=1e-4), name
        assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-2


tf = pytest.importorskip("tensorflow")


class TestTFTraining:
    def test_resume_equals_a_straight_run(self, tmp_path):
        from facevae_tf import backend as tf_backend
        from facevae_tf import checkpoint
        from facevae_tf.engine import enable_determinism
        from facevae_tf.models import build_model
        from tests.unit.tf_test_helpers import new_run_dir, tiny_faces, tiny_run_config as tf_config
        from tests.unit.tf_test_helpers import split_of as tf_split

        enable_determinism(0)  # process-wide, as tests/unit/test_tf_trainer.py does
        data, split = tiny_faces(100, seed=1), tf_split(100, 20, 10)  # 70 faces: 3 steps per epoch
        full_cfg, half_cfg = tf_config("vae", epochs=2, input_noise=0.3), tf_config("vae", epochs=1, input_noise=0.3)
        full = new_run_dir(tmp_path, "full", full_cfg)
        tf_backend.train(full_cfg, data, split, full)
        part = new_run_dir(tmp_path, "part", half_cfg)
        tf_backend.train(half_cfg, data, split, part)
        tf_backend.train(full_cfg, data, split, part, resume=True)
        clean_cfg = tf_config("vae", epochs=2)
        clean = new_run_dir(tmp_path, "clean", clean_cfg)
        tf_backend.train(clean_cfg, data, split, clean)

        def weights(run):
            model = build_model(full_cfg.model)
            checkpoint.restore(run, "last", checkpoint.model_checkpoint(model), partial=True)
            return [v.numpy() for v in model.variables]

        a, b, c = weights(full), weights(part), weights(clean)
        for va, vb in zip(a, b):
            np.testing.assert_array_equal(va, vb)
        assert any(not np.array_equal(va, vc) for va, vc in zip(a, c))


TF_FLAGS = ["--model", "vae", "--data", "synthetic:240", "--image-size", "32", "--channels", "8,16", "--hidden-dims",
            "32", "--latent-dim", "8", "--epochs", "1", "--batch-size", "32", "--seed", "3", "--device", "cpu",
            "--optimizer", "sgd", "--lr", "1e-3", "--likelihood", "bernoulli", "-q"]


class TestTFMirroredStrategy:
    def test_two_replicas_train_what_one_trains(self, tmp_path):
        """``--devices 2`` slices the noisy encoder input with the faces: the weights equal one device's
        (tolerance of tests/unit/test_tf_distributed.py, 2e-5) and differ from a clean run far beyond it."""
        import os
        import subprocess
        import sys

        repo = Path(__file__).resolve().parents[2]
        env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
        env.update(OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(repo))
        runs = {"one": ["--devices", "1", "--input-noise", "0.3"], "two": ["--devices", "2", "--input-noise", "0.3"],
                "clean": ["--devices", "1"]}
        procs = {name: subprocess.Popen([sys.executable, "-m", "facevae_tf", "train", *TF_FLAGS, *extra, "--out",
                                         str(tmp_path / name)], cwd=repo, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True) for name, extra in runs.items()}
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{name} failed:\n{out[-3000:]}"

        def weights(name):
            prefix = str(tmp_path / name / "checkpoints" / "last" / "ckpt")
            reader = tf.train.load_checkpoint(prefix)
            return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix) if n.startswith("model/")}

        one, two, clean = weights("one"), weights("two"), weights("clean")
        assert sorted(one) == sorted(two) and len(one) > 10
        for name in one:
            np.testing.assert_allclose(two[name], one[name], rtol=0, atol=2e-5, err_msg=name)
        assert max(float(np.abs(one[n] - clean[n]).max()) for n in one) > 1e-3
