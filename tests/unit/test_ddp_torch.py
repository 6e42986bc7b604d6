"""Several processes, one run (``torchrun``, issue 12): two gloo processes on CPU train the run one process trains.

One ``torchrun --nproc_per_node=2`` launch (starting processes costs seconds on this machine) runs
a script that does, in both processes:

* ``gradient_error``: one engine step on an uneven global batch (31 faces: shards of 16 and 15)
  against the gradient of one plain model on the whole batch (shard weights, pooled BatchNorm);
* ``straight``: ``facevae train`` (the CLI's ``main``, which ``-m facevae`` runs), 2 epochs;
* ``resumed``: ``facevae.train`` (the Python API), 1 epoch, then ``facevae train --resume --epochs 2``;
* ``refused``: ``facevae train`` into ``straight`` again, which rank 0 refuses: both ranks must fail
  with its message instead of waiting for each other;
* ``gloo_threads_left``: the process group's threads still running once the exit handler has
  destroyed it. Any that are left (the group was still referenced: by torch._dynamo when imported
  after the group was made) run into the interpreter's finalisation and abort the exit (SIGABRT)
  in 3 launches of 24 with the two cores loaded.

The reference is the same config trained in this process (batch 32: shards of 16).

Tolerances. Two processes add the per-rank sums in another order than one process does; nothing
else differs (one step's gradient agrees to 2.3e-6 relative, BatchNorm included). Training
amplifies such round-off as a change of thread count does: two single-process runs of this config
with 1 and 2 threads differ by 1.2e-5 in the weights and 4e-6 relative in the loss terms; two
processes differ from one by 5.7e-6 and 1.7e-6. The bounds below leave a margin of about 10 over
that floor; dropping the BatchNorm pooling or the shard weights breaks them by orders of magnitude.
The optimiser is SGD: Adam divides each step by the root of the gradient's second moment, so a
parameter whose exact gradient is zero (a conv bias just before a BatchNorm) takes lr-sized steps
driven by round-off alone; two single-process Adam runs with 1 and 2 threads already differ by 0.02
there, which says nothing about the distribution itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared import distributed as env
from shared.errors import ConfigError

torch = pytest.importorskip("torch")

from facevae import distributed  # noqa: E402  (after the skip: needs torch)

REPO = Path(__file__).resolve().parents[2]
# bernoulli: the tolerances below were measured with it (the learned-σ loss weighs each face by 1/MSE and
# amplifies the all-reduce's different summation order)
OPTIONS = dict(data="synthetic:240", image_size=32, channels=(8, 16), hidden_dims=(32,), epochs=2, batch_size=32,
               min_steps_per_epoch=0, optimizer="sgd", lr=0.002, device="cpu", likelihood="bernoulli")
CLI = ["--backend", "torch", "--model", "vae", "--data", "synthetic:240", "--image-size", "32", "--channels", "8,16",
       "--hidden-dims", "32", "--batch-size", "32", "--min-steps-per-epoch", "0", "--optimizer", "sgd", "--lr",
       "0.002", "--device", "cpu", "--likelihood", "bernoulli"]
GRADIENT_RTOL = 1e-4   # measured 2.3e-6
WEIGHT_ATOL = 1e-4     # measured 5.7e-6; the 1-vs-2-thread floor of one process is 1.2e-5
TERM_RTOL = 2e-5       # measured 1.7e-6; floor 4e-6
TERM_ATOL = 1e-4       # the rate is a few nats: its round-off is absolute
PRINTED = "epoch 1/2  train"

SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile
    from pathlib import Path
    import numpy as np, torch
    import facevae
    from shared.cli import main

    def gradient_error(options):
        # one step of the engine on an uneven global batch (31 faces: shards of 16 and 15) against the
        # gradient of one plain model on the whole batch
        from facevae.backend import build_vae
        from facevae.engine import TorchEngine
        from shared.api import build_config
        from shared.synthetic import generate_faces
        config = build_config(backend="torch", model="vae", **{**options, "data": "synthetic:64"})
        images = generate_faces(64, 32, 0).images
        plain, engine = build_vae(config.model, 1), TorchEngine(build_vae(config.model, 1), {"images": images},
                                                               {"images": images[:8]}, config, tempfile.mkdtemp())
        idx, eps = np.arange(3, 34), np.random.default_rng(0).standard_normal((31, engine.noise_dim), np.float32)
        plain.loss_terms({"images": torch.from_numpy(images[idx]).float().div(255).unsqueeze(1),
                          "eps": torch.from_numpy(eps)}, beta=1.0)["loss"].backward()
        engine.train_step(idx, 1.0, eps)
        return max(float((p.grad - q.grad).abs().max() / p.grad.abs().max())
                   for (name, p), q in zip(plain.named_parameters(), engine.model.parameters())
                   if not name.endswith("bias") or p.grad.abs().max() > 1e-3)  # biases before BN: gradient 0

    root, cli, options = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
    codes = {"gradient_error": gradient_error(options)}
    codes["straight"] = main(["train", *cli, "--epochs", "2", "--out", str(root / "straight")])
    facevae.train(root / "resumed", **{**options, "epochs": 1}, verbose=False)
    codes["resumed"] = main(["train", "--out", str(root / "resumed"), "--resume", "--epochs", "2", "-q"])
    codes["refused"] = main(["train", *cli, "--epochs", "2", "--out", str(root / "straight"), "-q"])
    facevae.distributed._destroy()  # what the exit handler does
    tasks = Path("/proc/self/task")
    codes["gloo_threads_left"] = sum("gloo" in (t / "comm").read_text() for t in tasks.iterdir()) if tasks.is_dir() else 0
    (root / f"codes{os.environ['RANK']}.json").write_text(json.dumps(codes))
""")

# ------------------------------------------------------------------------------------- pure helpers
class TestEnvironment:
    def test_a_single_process_without_torchrun(self, monkeypatch):
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(name, raising=False)
        assert (env.rank(), env.world_size(), env.is_distributed(), env.is_writer()) == (0, 1, False, True)

    def test_torchrun_variables(self, monkeypatch):
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("RANK", "3")
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert (env.rank(), env.world_size(), env.local_rank(), env.is_writer()) == (3, 4, 1, False)

    def test_a_stray_rank_without_a_world_is_ignored(self, monkeypatch):
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.setenv("RANK", "3")
        assert env.is_writer() and not env.is_distributed()

    @pytest.mark.parametrize("name, value", [("RANK", "4"), ("RANK", "x"), ("WORLD_SIZE", "0")])
    def test_bad_variables_are_named(self, monkeypatch, name, value):
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=f"{name}"):
            env.rank()

    def test_timeout(self, monkeypatch):
        monkeypatch.setenv(env.TIMEOUT_ENV, "5")
        with pytest.raises(ConfigError, match=env.TIMEOUT_ENV):
            env.timeout_s()
        monkeypatch.setenv(env.TIMEOUT_ENV, "120")
        assert env.timeout_s() == 120.0

    def test_the_tf_backend_is_refused_under_torchrun(self, monkeypatch):
        import shared.registry
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setattr(shared.registry, "get_backend", lambda name: object())  # no collectives
        with pytest.raises(ConfigError, match="without torchrun"):
            env.Ranks("tf")


class TestShards:
    @pytest.mark.parametrize("n, world", [(31, 2), (32, 2), (7, 3), (2, 2), (2, 3), (1, 4)])
    def test_weighted_shard_means_are_the_global_mean(self, n, world):
        values = np.random.default_rng(n).standard_normal(n)
        parts = [distributed.shard_of(n, r, world) for r in range(world)]
        total = sum(p.weight * values[p.rows].mean() for p in parts)
        assert total == pytest.approx(values.mean(), rel=1e-12)
        if n >= world:  # a partition, sizes within one of each other
            assert sorted(np.concatenate([p.rows for p in parts]).tolist()) == list(range(n))
            assert max(len(p.rows) for p in parts) - min(len(p.rows) for p in parts) <= 1
            assert all(p.sync_bn for p in parts)
        else:  # no empty shard: every rank computes the whole batch
            assert all(len(p.rows) == n and not p.sync_bn for p in parts)

    def test_shard_is_strided(self):
        assert env.shard(np.arange(10, 17), 1, 3).tolist() == [11, 14]
        with pytest.raises(ConfigError, match="rank"):
            env.shard(np.arange(4), 2, 2)


class TestGlobalBatchNorm:
    def test_conversion_keeps_weights_and_checkpoint_keys(self):
        import copy

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 6 * 6, 5), torch.nn.BatchNorm1d(5))
        plain = copy.deepcopy(model)
        converted = distributed.convert_batchnorm(model)
        assert sum(isinstance(m, distributed.GlobalBatchNorm) for m in converted.modules()) == 2
        assert list(converted.state_dict()) == list(plain.state_dict())
        # outside a process group it is the plain BatchNorm (train mode: batch statistics, buffers updated)
        x = torch.rand(6, 1, 8, 8)
        torch.testing.assert_close(converted(x), plain(x))
        for (name, got), want in zip(converted.state_dict().items(), plain.state_dict().values()):
            torch.testing.assert_close(got, want, msg=name)


# -------------------------------------------------------------------------------- two processes
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(folder of the one-process run, folder holding straight/ and resumed/, torchrun's output, exit codes)``."""
    from shared import api

    root = tmp_path_factory.mktemp("ddp")
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "FACEVAE_CACHE": str(root / "cache"),
               env.TIMEOUT_ENV: "60", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        environ.pop(name, None)
    (root / "script.py").write_text(SCRIPT)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              str(root / "script.py"), str(root), json.dumps(CLI), json.dumps(OPTIONS)]
    proc = subprocess.Popen(launch, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the reference trains here while the two processes start
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FACEVAE_CACHE", str(root / "cache1"))
            one = api.train(api.build_config(backend="torch", model="vae", **OPTIONS), root / "one", verbose=False)
    finally:
        torch.set_num_threads(threads)
    try:
        output, _ = proc.communicate(timeout=300)  # a hang fails the test instead of the suite
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    codes = [json.loads((root / f"codes{r}.json").read_text()) for r in (0, 1)]
    return Path(one), root, output, codes


def _metrics(run: Path) -> pd.DataFrame:
    return pd.read_json(run / "metrics.jsonl", lines=True)


def _weights(run: Path, which: str) -> dict[str, np.ndarray]:
    from facevae.checkpoint import checkpoint_path, load_checkpoint
    state = load_checkpoint(checkpoint_path(run, which))
    return {k: v.double().numpy() for k, v in state["model"].items()}


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


class TestTwoProcesses:
    def test_every_step_succeeded(self, runs):
        _, _, output, codes = runs
        assert [c["straight"] for c in codes] == [0, 0] and [c["resumed"] for c in codes] == [0, 0], output[-3000:]

    def test_uneven_shards_give_the_global_gradient(self, runs):
        _, _, _, codes = runs
        assert codes[0]["gradient_error"] < GRADIENT_RTOL

    def test_losses_equal_one_process(self, runs):
        one, root, _, _ = runs
        a, b = _metrics(one), _metrics(root / "straight")
        terms = [c for c in a.columns if c.startswith(("train_", "val_"))]
        assert len(a) == len(b) == 2 and "train_loss" in terms and "val_rate" in terms
        np.testing.assert_allclose(b[terms].to_numpy(), a[terms].to_numpy(), rtol=TERM_RTOL, atol=TERM_ATOL)
        assert b["step"].tolist() == a["step"].tolist()

    @pytest.mark.parametrize("which", ["last", "best"])
    def test_weights_equal_one_process(self, runs, which):
        one, root, _, _ = runs
        a, b = _weights(one, which), _weights(root / "straight", which)
        assert list(a) == list(b)
        for name in a:  # BatchNorm running statistics included: they are pooled over both shards
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=WEIGHT_ATOL, err_msg=name)

    def test_the_run_folder_is_that_of_one_process(self, runs):
        one, root, _, _ = runs
        assert _files(root / "straight") == _files(one) == _files(root / "resumed")
        for name in ("config.json", "split.json"):
            assert (root / "straight" / name).read_text() == (one / name).read_text()

    def test_resume_equals_the_straight_run(self, runs):
        _, root, _, _ = runs
        straight, resumed = root / "straight", root / "resumed"
        terms = [c for c in _metrics(straight).columns if c.startswith(("train_", "val_"))]
        # the same shards and the same sums in the same order, and 'last' restores every tensor exactly:
        # bitwise equal, as a one-process resume is
        np.testing.assert_array_equal(_metrics(resumed)[terms].to_numpy(), _metrics(straight)[terms].to_numpy())
        a, b = _weights(straight, "last"), _weights(resumed, "last")
        for name in a:
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)

    def test_only_rank_0_prints_epoch_lines(self, runs):
        _, _, output, _ = runs
        assert output.count(PRINTED) == 1, output[-3000:]  # 'straight' alone prints; rank 1 stays silent

    def test_the_process_group_is_freed_at_exit(self, runs):
        _, _, _, codes = runs
        assert [c["gloo_threads_left"] for c in codes] == [0, 0]

    def test_a_refusal_reaches_every_rank(self, runs):
        _, _, output, codes = runs
        assert [c["refused"] for c in codes] == [2, 2]
        assert "already holds a run" in output and "rank 0 could not start the run" in output
