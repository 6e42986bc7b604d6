"""``TrainConfig.devices`` on the tf backend: 2 replicas (tf.distribute over logical CPU devices) train what
1 device trains, through the CLI, into a normal run folder; and the refusals.

The two trainings run as ``python -m facevae_tf train`` subprocesses, side by side: logical CPU devices
can only be made before TensorFlow's runtime starts, which this test process cannot promise.

Tolerances. Both runs see the same batches and noise (the shared loop draws them); 2 replicas compute
the same sums in another order (BatchNorm's synchronised moments, gathered per-image terms, an
all-reduced gradient), so float32 rounding is the only difference: ~1e-7 relative per step, measured
≤ 1e-6 relative on every logged term and ≤ 2e-6 on every weight after 12 SGD steps. The tests allow
1e-5 relative on the terms and 2e-5 on weights of size ~0.1-1. SGD, not Adam, and an L2 weight decay:
Adam divides the gradient by its own scale, so a gradient off by the replica count would hide there;
here it moves the weights by ~1e-3 and the losses by ~1e-4 relative, far outside the tolerances.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.config import RunConfig, TrainConfig
from shared.errors import ConfigError

tf = pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--model", "vae", "--data", "synthetic:240", "--image-size", "32", "--channels", "8,16", "--hidden-dims", "32",
         "--latent-dim", "8", "--epochs", "2", "--batch-size", "32", "--seed", "3", "--device", "cpu",
         "--optimizer", "sgd", "--lr", "1e-3", "--weight-decay", "0.01", "-q"]
TERMS_RTOL = 1e-5
LABEL_TERMS_RTOL = 3e-3
LABEL_LOSS = 5
WEIGHTS_ATOL = 2e-5


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """Run folders trained with ``--devices 1`` and ``--devices 2`` (otherwise the same command)."""
    return _train_pair(tmp_path_factory.mktemp("tf_distribute"), FLAGS)


@pytest.fixture(scope="module")
def cvae_runs(tmp_path_factory) -> dict[int, Path]:
    """The same for a cvae with label consistency (its classifier and generated faces on every replica)."""
    flags = [("cvae" if f == "vae" else f) for f in FLAGS] + ["--label-loss", str(LABEL_LOSS)]
    return _train_pair(tmp_path_factory.mktemp("tf_distribute_cvae"), flags)


def _train_pair(root: Path, flags: list[str]) -> dict[int, Path]:
    procs = {d: subprocess.Popen([sys.executable, "-m", "facevae_tf", "train", *flags, "--devices", str(d),
                                  "--out", str(root / f"devices{d}")], cwd=ROOT, env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for d in (1, 2)}
    for d, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"--devices {d} failed:\n{out[-3000:]}"
        assert f"wrote: {root / f'devices{d}'}" in out
    return {d: root / f"devices{d}" for d in (1, 2)}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _checkpoint(run: Path, which: str = "last") -> dict[str, np.ndarray]:
    prefix = str(run / "checkpoints" / which / "ckpt")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
            if name.startswith(("model/", "optimizer/"))}


class TestTwoReplicasTrainWhatOneTrains:
    def test_every_logged_term_matches(self, runs):
        one, two = _records(runs[1]), _records(runs[2])
        assert [r["epoch"] for r in two] == [0, 1] and [r["step"] for r in two] == [r["step"] for r in one]
        for a, b in zip(one, two):
            keys = sorted(k for k in a if k.startswith(("train_", "val_")))
            assert keys and keys == sorted(k for k in b if k.startswith(("train_", "val_")))
            np.testing.assert_allclose([b[k] for k in keys], [a[k] for k in keys], rtol=TERMS_RTOL, atol=1e-6,
                                       err_msg=f"epoch {a['epoch']}: {keys}")
        assert one[-1]["train_loss"] < one[0]["train_loss"] - 10  # it trained: the comparison means something

    def test_label_consistency_terms_and_weights_match(self, cvae_runs):
        one, two = _records(cvae_runs[1]), _records(cvae_runs[2])
        for a, b in zip(one, two):
            keys = sorted(k for k in a if k.startswith(("train_", "val_")))
            assert {"train_label_real", "train_label_generated"} <= set(keys)
            # the terms of generated faces (decoded from the prior, scored with the age error in decades)
            # magnify the replicas' rounding: 6e-4 relative measured once on train_label_generated/excess
            for k in keys:
                rtol = LABEL_TERMS_RTOL if "label_generated" in k or "label_excess" in k else TERMS_RTOL
                atol = 1e-6
                if k.endswith("_loss"):  # the loss holds label_loss x the excess, and with it its rounding
                    atol += LABEL_TERMS_RTOL * LABEL_LOSS * abs(a[k.replace("_loss", "_label_excess")])
                np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=atol, err_msg=f"epoch {a['epoch']}: {k}")
        w1, w2 = _checkpoint(cvae_runs[1]), _checkpoint(cvae_runs[2])
        assert sorted(w1) == sorted(w2) and any("label_classifier" in k for k in w1)
        for name in w1:
            np.testing.assert_allclose(w2[name], w1[name], rtol=0, atol=WEIGHTS_ATOL, err_msg=name)

    def test_final_weights_and_optimizer_state_match(self, runs):
        one, two = _checkpoint(runs[1]), _checkpoint(runs[2])
        assert sorted(one) == sorted(two)
        assert sum(k.startswith("model/") for k in one) == 30  # every weight and BatchNorm statistic compared
        for name in one:
            np.testing.assert_allclose(two[name], one[name], rtol=0, atol=WEIGHTS_ATOL, err_msg=name)

    def test_checkpoint_layout_is_a_one_device_runs(self, runs):
        for which in ("last", "best"):
            layout = {d: sorted((n, tuple(s)) for n, s in tf.train.list_variables(str(runs[d] / "checkpoints" /
                                                                                     which / "ckpt")))
                      for d in (1, 2)}
            assert layout[1] == layout[2], which

    def test_the_two_device_run_loads_and_reconstructs_like_the_other(self, runs):
        from shared.api import load_model
        from shared.synthetic import generate_faces

        faces = generate_faces(8, 32, 5).images.astype(np.float32) / 255.0
        one, two = (load_model(runs[d]).reconstruct(faces) for d in (1, 2))
        assert two.shape == (8, 32, 32)
        np.testing.assert_allclose(two, one, atol=1e-4)

    def test_config_records_the_devices(self, runs):
        assert RunConfig.load(runs[2] / "config.json").train.devices == 2
        assert RunConfig.load(runs[1] / "config.json").train.devices == 1

    def test_devices_may_change_on_resume(self, runs):
        from shared.run_inputs import updated_config

        config = RunConfig.load(runs[2] / "config.json")
        assert updated_config(runs[2], config, {"devices": 1}).train.devices == 1


class TestRefusals:
    @pytest.mark.parametrize("bad", [0, 65, 2.0, True, "2"])
    def test_a_bad_value_is_refused_by_name(self, bad):
        with pytest.raises(ConfigError, match=r"`devices` must be an integer in \[1, 64\]. Received: devices="):
            TrainConfig(devices=bad)

    def test_torch_with_several_devices_points_to_torchrun(self):
        with pytest.raises(ConfigError, match=r"torchrun --nproc_per_node=2 -m facevae train"):
            RunConfig(backend="torch", train=TrainConfig(devices=2))
        assert RunConfig(backend="tf", train=TrainConfig(devices=2)).train.devices == 2

    def test_the_cli_refuses_with_exit_2(self, capsys, tmp_path):
        from shared.cli import main

        out = str(tmp_path / "never")
        assert main(["train", "--backend", "torch", "--devices", "2", "--out", out]) == 2
        assert "torchrun --nproc_per_node=2" in capsys.readouterr().err
        assert main(["train", "--backend", "tf", "--devices", "0", "--out", out]) == 2
        assert "`devices` must be an integer in [1, 64]" in capsys.readouterr().err
        assert not Path(out).exists()

    def test_an_old_config_without_the_field_loads_with_one_device(self):
        data = RunConfig(backend="tf").to_dict()
        del data["train"]["devices"]
        assert RunConfig.from_dict(data).train.devices == 1

    def test_after_tensorflow_started_more_cpu_devices_are_refused_with_what_to_do(self):
        from facevae_tf.distributed import configure_cpu_devices

        tf.constant(0.0)  # the runtime has started in this process
        n = len(tf.config.list_logical_devices("CPU")) + 1
        with pytest.raises(ConfigError, match=r"fresh Python process.*configure_cpu_devices"):
            configure_cpu_devices(n)

    def test_compile_is_refused_with_several_devices(self):
        from facevae_tf.distributed import strategy_for

        with pytest.raises(ConfigError, match=r"`compile` is not supported with devices=2"):
            strategy_for(dataclasses.replace(TrainConfig(), devices=2, compile=True))


class TestCluster:
    """``TF_CONFIG``: which process writes the run."""

    @pytest.mark.parametrize("cluster, task, chief", [
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
        ({"worker": ["a:1"]}, {"type": "worker", "index": 0}, True),  # one task: not a cluster
    ])
    def test_only_the_chief_writes(self, monkeypatch, cluster, task, chief):
        from facevae_tf.distributed import cluster_spec, is_chief

        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_chief() is chief
        assert (cluster_spec() is None) == (sum(map(len, cluster.values())) == 1)

    def test_without_tf_config_there_is_no_cluster(self, monkeypatch):
        from facevae_tf.distributed import cluster_spec, is_chief, strategy_for

        monkeypatch.delenv("TF_CONFIG", raising=False)
        assert cluster_spec() is None and is_chief() and strategy_for(TrainConfig()) is None

    def test_a_malformed_tf_config_is_refused_by_name(self, monkeypatch):
        from facevae_tf.distributed import cluster_spec

        monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}}')
        with pytest.raises(ConfigError, match=r"`TF_CONFIG` must be JSON with a 'cluster'"):
            cluster_spec()

    @pytest.mark.slow
    def test_two_workers_train_what_two_devices_train(self, runs, tmp_path):
        """MultiWorkerMirroredStrategy: two worker processes on this machine (about a minute of CPU)."""
        import socket

        socks = [socket.socket() for _ in range(2)]
        for s in socks:
            s.bind(("localhost", 0))
        hosts = [f"localhost:{s.getsockname()[1]}" for s in socks]
        for s in socks:
            s.close()
        procs = []
        for i in range(2):
            env = {**_env(), "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                      "task": {"type": "worker", "index": i}})}
            procs.append(subprocess.Popen([sys.executable, "-m", "facevae_tf", "train", *FLAGS, "--out",
                                           str(tmp_path / f"worker{i}")], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for i, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"worker {i} failed:\n{out[-3000:]}"
        chief, other = tmp_path / "worker0", tmp_path / "worker1"
        assert not (other / "checkpoints").exists() and not (other / "metrics.jsonl").exists()
        two, cluster = _checkpoint(runs[2]), _checkpoint(chief)
        for name in two:
            np.testing.assert_allclose(cluster[name], two[name], rtol=0, atol=WEIGHTS_ATOL, err_msg=name)
        for a, b in zip(_records(runs[2]), _records(chief)):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=TERMS_RTOL)
