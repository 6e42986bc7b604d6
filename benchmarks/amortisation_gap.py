"""How much of a VAE's ELBO–IWAE gap is the encoder's amortisation error (TF runs).

The gap between −ELBO and −IWAE-k has two parts: the posterior family (a diagonal Gaussian cannot
match the true posterior's shape; an IAF posterior attacks that) and amortisation (the encoder's
output is not the best Gaussian for each face). This script takes a trained TF ``vae`` or ``iaf`` run
and its saved split, and for the first N test faces of the real data optimises each face's own
diagonal Gaussian q(z) = N(μ, diag(exp(logvar))) on the ELBO (Adam, 16 samples a step), starting from
the encoder's output (for an IAF run: its base Gaussian, without the flow). It prints the ELBO and the
IWAE-64 bound with the encoder's q and after the optimisation: when the optimised diagonal q closes
most of the gap, the gap is amortisation, which a richer posterior family cannot remove.

    .venv/bin/python benchmarks/amortisation_gap.py benchmarks/results/iaf_s2/vae [--faces 64] [--steps 300]

Nats per face (higher ELBO / IWAE is better); the same noise for every bound of a row.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a trained TF vae or iaf run")
    p.add_argument("--faces", type=int, default=64, help="first N test faces of the run's split")
    p.add_argument("--steps", type=int, default=300, help="Adam steps on each face's q")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--samples", type=int, default=16, help="samples per step of the ELBO's estimate")
    p.add_argument("--data", default=None, help="where the run's faces are now (default: the run's own spec)")
    a = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from shared.studio import held_out_faces, labels_for, open_run

    run_dir, config, model = open_run(a.run_dir)
    if config.backend != "tf":
        raise SystemExit(f"{run_dir}: a TF run is needed (this one is {config.backend})")
    net = model.keras_model
    faces = held_out_faces(run_dir, config, a.faces, data=a.data)
    x = tf.constant(faces.floats()[..., None])
    labels = labels_for(model, faces)
    y = tf.constant(np.zeros((len(faces), 0), np.float32) if labels is None else labels)
    post = net.posterior(x, y, training=False)
    mu, logvar = tf.Variable(post["mean"]), tf.Variable(post["logvar"])
    n, d = mu.shape

    def bounds(k: int, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-face ELBO and IWAE-k estimates with the current (μ, logvar), from one draw of k samples."""
        eps = tf.random.stateless_normal((n, k, d), seed=[seed, 0])
        z = mu[:, None] + tf.exp(0.5 * logvar)[:, None] * eps
        logits = net.decode_logits(tf.reshape(z, (-1, d)), tf.repeat(y, k, axis=0))
        log_px = -tf.reshape(net.nll(tf.repeat(x, k, axis=0), logits), (n, k))
        log_pz = -0.5 * tf.reduce_sum(z * z, -1) - 0.5 * d * math.log(2 * math.pi)
        log_qz = -0.5 * tf.reduce_sum(eps * eps + logvar[:, None], -1) - 0.5 * d * math.log(2 * math.pi)
        log_w = log_px + log_pz - log_qz
        return tf.reduce_mean(log_w, 1), tf.reduce_logsumexp(log_w, 1) - math.log(k)

    def row(name: str) -> list:
        elbo, iwae = bounds(64, seed=1)
        return [name, float(tf.reduce_mean(elbo)), float(tf.reduce_mean(iwae)),
                float(tf.reduce_mean(iwae - elbo))]

    rows = [row("encoder's q")]
    opt = tf.keras.optimizers.Adam(a.lr)
    for step in range(a.steps):
        with tf.GradientTape() as tape:
            elbo, _ = bounds(a.samples, seed=100 + step)
            loss = -tf.reduce_mean(elbo)
        opt.apply_gradients(zip(tape.gradient(loss, [mu, logvar]), [mu, logvar]))
    rows.append(row(f"each face's own diagonal q ({a.steps} Adam steps)"))
    print(f"{run_dir} ({config.model.family}, d={d}), {n} test faces; nats per face, 64 samples per bound\n")
    print("| q | ELBO | IWAE-64 | IWAE − ELBO |\n|---|---:|---:|---:|")
    for name, elbo, iwae, gap in rows:
        print(f"| {name} | {elbo:.2f} | {iwae:.2f} | {gap:.2f} |")
    closed = (rows[1][1] - rows[0][1]) / max(rows[0][3], 1e-9)
    print(f"\nthe optimised q raises the ELBO by {rows[1][1] - rows[0][1]:.2f} nats: {100 * closed:.0f} % of the "
          f"encoder's gap of {rows[0][3]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
