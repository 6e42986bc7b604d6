"""Benchmark: the same conv VAE on PyTorch and TensorFlow, side by side.

Same architecture (``vae``, ``default`` preset, 48×48, latent 32, from :func:`shared.architecture.vae_plan`),
same data (synthetic faces), same batch sizes and optimiser (Adam) on both backends. Variants:

* ``torch_eager``, ``torch_channels_last`` (NHWC memory format), ``torch_compile`` (``torch.compile``
  of the loss and of the inference function; reported as failed if the compiler is missing);
* ``tf_function`` (``tf.function``), ``tf_xla`` (``tf.function(jit_compile=True)``).

Measured per variant, each in its own subprocess (so peak memory is that backend's alone):
training images/s (median over repeats of several steps, warm-up excluded), inference latency per
batch of 1, 64 and 1024 (reconstruction, eval mode, median), peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and time to first step (model construction to the
end of the first training step, tracing/compilation included; framework import reported apart).
CUDA is used when present, else the CPU.

    .venv/bin/python benchmarks/frameworks.py                 # full run, JSON in benchmarks/results/
    .venv/bin/python benchmarks/frameworks.py --quick         # a smoke run (few steps)

Prints a markdown table with the machine description (CPU model, cores, load, versions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("torch_eager", "torch_channels_last", "torch_compile", "tf_function", "tf_xla")
INFER_BATCHES = (1, 64, 1024)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {VARIANTS}")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps / calls")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for both frameworks (0: their default)")
    p.add_argument("--quick", action="store_true", help="1 step x 2 repeats, inference batches 1 and 64")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.repeats, a.warmup = 1, 2, 1
    return a


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _median_rate(times: list[float], images: int) -> float:
    return images / statistics.median(times)


# -- torch ----------------------------------------------------------------------------------------
def _torch_worker(variant: str, a: argparse.Namespace, faces) -> dict:
    import torch

    from facevae.models import ConvVAE
    from shared.config import ModelConfig

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    fmt = torch.channels_last if variant == "torch_channels_last" else torch.contiguous_format
    t_build = time.perf_counter()
    torch.manual_seed(0)
    vae = ConvVAE(ModelConfig(family="vae", preset="default", image_size=a.image_size,
                              latent_dim=a.latent_dim)).to(dev).to(memory_format=fmt)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x_all = torch.from_numpy(faces).to(dev).unsqueeze(1).contiguous(memory_format=fmt)

    def loss_fn(x):
        return vae.loss_terms({"images": x})["loss"]

    def infer_fn(x):
        return vae.decode(vae.encode(x)[0])

    if variant == "torch_compile":
        loss_fn, infer_fn = torch.compile(loss_fn), torch.compile(infer_fn, dynamic=False)
    b = a.batch_size
    n_batches = len(x_all) // b

    def train_step(i: int) -> None:
        vae.train()
        x = x_all[(i % n_batches) * b:(i % n_batches + 1) * b]
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_step(0)
    sync()
    first = time.perf_counter() - t_build
    for i in range(a.warmup):
        train_step(i + 1)
    sync()
    times = []
    for r in range(a.repeats):
        t = time.perf_counter()
        for i in range(a.steps):
            train_step(r * a.steps + i)
        sync()
        times.append(time.perf_counter() - t)
    latency = {}
    vae.eval()
    with torch.no_grad():
        for bs in a.infer_batches:
            x = x_all[:bs]
            for _ in range(a.warmup):
                infer_fn(x)
            sync()
            lat = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                infer_fn(x)
                sync()
                lat.append(time.perf_counter() - t)
            latency[str(bs)] = statistics.median(lat) * 1e3
    return {"device": str(dev), "threads": torch.get_num_threads(), "first_step_s": first,
            "train_images_per_s": _median_rate(times, a.steps * b), "train_repeats_s": times,
            "infer_ms": latency, "versions": {"torch": torch.__version__}}


# -- tensorflow -----------------------------------------------------------------------------------
def _tf_worker(variant: str, a: argparse.Namespace, faces) -> dict:
    import keras
    import tensorflow as tf

    from facevae_tf.models import build_model
    from shared.config import ModelConfig

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    jit = variant == "tf_xla"
    gpus = tf.config.list_physical_devices("GPU")
    t_build = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(family="vae", preset="default", image_size=a.image_size, latent_dim=a.latent_dim))
    opt = keras.optimizers.Adam(learning_rate=1e-3)
    x_all = tf.constant(faces[..., None])
    b = a.batch_size
    n_batches = len(faces) // b
    y_train, gen = tf.zeros((b, 0)), tf.random.Generator.from_seed(0)

    @tf.function(jit_compile=jit)
    def step(x, eps):
        with tf.GradientTape() as tape:
            loss = model.loss_terms(x, y_train, eps, beta=1.0, training=True)["loss"]
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(jit_compile=jit, reduce_retracing=False)
    def infer(x):
        return tf.sigmoid(model((x, tf.zeros((tf.shape(x)[0], 0))), training=False))

    def train_step(i: int) -> None:
        j = i % n_batches
        step(x_all[j * b:(j + 1) * b], gen.normal((b, a.latent_dim))).numpy()  # .numpy() waits for the step

    train_step(0)
    first = time.perf_counter() - t_build
    for i in range(a.warmup):
        train_step(i + 1)
    times = []
    for r in range(a.repeats):
        t = time.perf_counter()
        for i in range(a.steps):
            train_step(r * a.steps + i)
        times.append(time.perf_counter() - t)
    latency = {}
    for bs in a.infer_batches:
        x = x_all[:bs]
        for _ in range(a.warmup):
            infer(x).numpy()
        lat = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            infer(x).numpy()
            lat.append(time.perf_counter() - t)
        latency[str(bs)] = statistics.median(lat) * 1e3
    return {"device": "GPU" if gpus else "CPU", "threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "first_step_s": first, "train_images_per_s": _median_rate(times, a.steps * b), "train_repeats_s": times,
            "infer_ms": latency, "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}


def worker(a: argparse.Namespace) -> None:
    """Run one variant in this process and write its JSON to ``a.result``."""
    import numpy as np

    from shared.synthetic import generate_faces

    n = max(max(a.infer_batches), a.batch_size * 8)
    faces = generate_faces(n, a.image_size, seed=0).floats().astype(np.float32)
    rss_data = _rss_mib()
    t0 = time.perf_counter()
    if a.worker.startswith("torch"):
        import torch  # noqa: F401  (import time measured apart)
        fn = _torch_worker
    else:
        import tensorflow  # noqa: F401
        fn = _tf_worker
    import_s = time.perf_counter() - t0
    rss_import = _rss_mib()
    try:
        out = {"ok": True, **fn(a.worker, a, faces)}
    except Exception as exc:  # a variant that cannot run here (e.g. no compiler) is reported, not fatal
        out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
    out.update(variant=a.worker, import_s=import_s, rss_after_data_mib=rss_data, rss_after_import_mib=rss_import,
               peak_rss_mib=_rss_mib())
    Path(a.result).write_text(json.dumps(out, indent=2))


# -- driver ---------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_start": list(os.getloadavg())}


def run_variant(variant: str, a: argparse.Namespace, tmp: Path) -> dict:
    result = tmp / f"{variant}.json"
    cmd = [sys.executable, __file__, "--worker", variant, "--result", str(result),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--repeats", str(a.repeats),
           "--warmup", str(a.warmup), "--threads", str(a.threads), "--image-size", str(a.image_size), "--latent-dim", str(a.latent_dim)]
    if a.quick:
        cmd.append("--quick")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if not result.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"variant": variant, "ok": False, "error": f"worker exited {proc.returncode}: {tail[0][:300]}"}
    return json.loads(result.read_text())


def markdown(report: dict) -> str:
    m = report["machine"]
    vers = {k: v for r in report["variants"] for k, v in r.get("versions", {}).items()}
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, "
             + ", ".join(f"{k} {v}" for k, v in sorted(vers.items()))
             + f". Load average {m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end.",
             f"Settings: vae default preset {report['settings']['image_size']}×{report['settings']['image_size']}, "
             f"latent {report['settings']['latent_dim']}, Adam, train batch {report['settings']['batch_size']}, "
             f"median of {report['settings']['repeats']} repeats × {report['settings']['steps']} steps "
             f"({report['settings']['warmup']} warm-up), intra-op threads "
             f"{report['settings']['threads'] or 'framework default'} (column `threads`).", "",
             "| variant | device | threads | train img/s | infer ms b=1 | b=64 | b=1024 | first step s | import s "
             "| peak RSS MiB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["variants"]:
        if not r.get("ok"):
            lines.append(f"| {r['variant']} | failed: {r.get('error', '?')} | | | | | | | | |")
            continue
        ms = r["infer_ms"]
        cell = [f"{ms[str(bs)]:.1f}" if str(bs) in ms else "–" for bs in INFER_BATCHES]
        lines.append(f"| {r['variant']} | {r['device']} | {r['threads']} | {r['train_images_per_s']:.0f} | {' | '.join(cell)} | "
                     f"{r['first_step_s']:.2f} | {r['import_s']:.1f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.infer_batches = INFER_BATCHES[:2] if a.quick else INFER_BATCHES
    if a.worker:
        worker(a)
        return 0
    import tempfile

    from shared.runs import atomic_write_json, atomic_write_text

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {VARIANTS}")
    report = {"machine": machine(), "settings": {k: getattr(a, k) for k in ("batch_size", "steps", "repeats", "warmup",
                                                                          "image_size", "latent_dim", "quick",
                                                                          "threads")},
              "variants": []}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            print(f"running {v} ...", file=sys.stderr, flush=True)
            report["variants"].append(run_variant(v, a, Path(tmp)))
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["command"] = " ".join([".venv/bin/python", "benchmarks/frameworks.py", *(argv or sys.argv[1:])])
    table = markdown(report)
    out = Path(a.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    atomic_write_json(out / f"frameworks-{stamp}.json", report)
    atomic_write_text(out / f"frameworks-{stamp}.md", table + "\n")
    print(table)
    print(f"\nresults written to {out / f'frameworks-{stamp}.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
