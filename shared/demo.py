"""``facevae demo``: the main job, end to end, on the embedded synthetic faces, on both backends.

In a notebook::

    from shared.demo import demo
    demo("demo_out")            # under 3 minutes on 2 CPU cores; demo(quick=True) takes seconds

Steps, every output under one folder ``out``:

1. ``figures/data_preview.png`` — a grid of synthetic faces titled with their labels.
2. ``cnn/`` — a small torch CNN (task ``all``: gender, ethnicity and age heads), evaluated.
3. ``vae/`` — a small torch VAE, evaluated on its test split with the CNN as the feature
   extractor of the Fréchet distance; then interpolation matrices (lerp and slerp from prior
   corners, lerp between encoded test faces), latent traversal, denoising (with the VAE ⊕ PCA
   blend), and inpainting (box and random masks; decode, iterate, optimize and hybrid).
4. ``sweep/`` — a tiny latent size × β sweep with its rate–distortion table and figures.
5. ``tf/`` — the TensorFlow backend (:mod:`shared.demo_tf`): a ``vae``, a conditional ``cvae``
   (attribute grids, attribute edits, generated faces) and an ``iaf`` trained exactly like the
   ``vae`` but for its posterior, compared on the test split (``tf/iaf_vs_diagonal.md``).
   Without TensorFlow this step is skipped and the summary says why.
6. ``demo_summary.md`` — the headline numbers of every model in small tables and a link to every
   figure written (:mod:`shared.demo_summary`).

Re-running on the same ``out`` reuses finished runs (see :func:`shared.sweep.ensure_run`).
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from matplotlib.figure import Figure

from shared import api
from shared.faces import ETHNICITY_NAMES, Faces
from shared.runs import atomic_write_bytes, figures_dir

__all__ = ["DemoSettings", "FULL", "QUICK", "demo", "data_preview", "written_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo; :data:`FULL` is the real job, :data:`QUICK` a seconds-long smoke run.

    The tf ``vae``, ``cvae`` and ``iaf`` share ``spec``, the architecture, ``tf_epochs`` and
    ``kl_warmup_epochs`` with each other (and the architecture with the torch ``vae``), so their
    numbers compare like with like.
    """

    spec: str
    image_size: int
    channels: tuple[int, ...]
    hidden_dims: tuple[int, ...]
    latent_dim: int
    cnn_epochs: int
    vae_epochs: int
    sweep_epochs: int
    sweep_dims: tuple[int, ...]
    sweep_betas: tuple[float, ...]
    batch_size: int
    iwae_k: int
    grid: int
    n_faces: int          # test faces used by denoise / inpaint
    iterations: int       # iterative-projection rounds
    steps: int            # latent-optimisation steps
    tf_epochs: int        # tf vae, cvae and iaf alike
    kl_warmup_epochs: int  # tf models: β ramps up over these epochs (keeps the posterior in use for the flow)
    flow_steps: int       # iaf: K flow steps ...
    flow_hidden: int      # ... of MADEs this wide ...
    context_dim: int      # ... fed this context vector h
    n_edit: int           # test faces in the cvae attribute-edit figure
    n_generate: int       # faces per generated label set


# Epochs are sized so the WHOLE demo (torch + tf, TF import included) stays under 3 minutes on 2 CPU
# cores: `time facevae demo` measured 2 min 20 s and 2 min 28 s (torch part 75 s, tf part 61-69 s) with
# the load average at 0.6-1.8. The fixed costs are the TF import (~4 s), each tf model's first
# (tracing) epoch and its IWAE evaluation (~5 s each).
FULL = DemoSettings(spec="synthetic:2000", image_size=48, channels=(16, 32, 64), hidden_dims=(128,),
                    latent_dim=16, cnn_epochs=5, vae_epochs=10, sweep_epochs=5, sweep_dims=(4, 16),
                    sweep_betas=(0.1, 1.0), batch_size=64, iwae_k=16, grid=9, n_faces=128, iterations=30,
                    steps=100, tf_epochs=8, kl_warmup_epochs=2, flow_steps=4, flow_hidden=256, context_dim=64,
                    n_edit=6, n_generate=8)
QUICK = DemoSettings(spec="synthetic:240", image_size=32, channels=(8, 16), hidden_dims=(32,), latent_dim=4,
                     cnn_epochs=1, vae_epochs=1, sweep_epochs=1, sweep_dims=(2, 4), sweep_betas=(1.0,),
                     batch_size=64, iwae_k=2, grid=3, n_faces=8, iterations=2, steps=3, tf_epochs=1,
                     kl_warmup_epochs=0, flow_steps=1, flow_hidden=16, context_dim=8, n_edit=2, n_generate=4)


def written_paths(results: Iterable[Any]) -> list[Path]:
    """The files studio calls wrote: each :class:`shared.results.Result`'s ``paths``.

    A call that returns a path (the studio API before it returned Results) counts as that path.
    """
    paths: list[Path] = []
    for r in results:
        paths += [Path(p) for p in getattr(r, "paths", [r])]
    return paths


def _label_text(row: Any) -> str:
    return f"{'FM'[int(row.gender)]} {int(row.age)}y\n{ETHNICITY_NAMES[int(row.ethnicity)]}"


def data_preview(faces: Faces, path: str | Path, *, n: int = 24, cols: int = 8) -> Path:
    """A grid of the first ``n`` faces, each titled with its labels (gender, age, ethnicity).

    Returns:
        ``path`` (PNG, written atomically).
    """
    n = min(n, len(faces))
    rows = -(-n // cols)
    fig = Figure(figsize=(1.3 * cols, 1.8 * rows))
    for i, row in enumerate(faces.labels.head(n).itertuples()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(faces.images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(_label_text(row), fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{len(faces)} faces; first {n} with their labels (F/M, age, ethnicity)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(Path(path), buf.getvalue())


def common_config(s: DemoSettings, backend: str) -> dict[str, Any]:
    """The :func:`shared.api.build_config` keywords every demo run of ``backend`` shares."""
    return dict(backend=backend, data=s.spec, image_size=s.image_size, batch_size=s.batch_size,
                channels=s.channels, hidden_dims=s.hidden_dims, early_stopping=0)


def _torch_part(out: Path, s: DemoSettings) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """CNN, VAE (+ interpolation, denoising, inpainting) and the sweep; returns evaluations and files written."""
    from shared.inpainting import METHODS
    from shared.studio import denoise, inpaint, interpolate
    from shared.sweep import ensure_run, sweep

    common = common_config(s, "torch")
    log.info("demo 1/5: torch CNN (task all) on %s", s.spec)
    cnn_cfg = api.build_config(model="cnn", task="all", epochs=s.cnn_epochs, **common)
    evals = {"cnn": ensure_run(cnn_cfg, out / "cnn", iwae_k=s.iwae_k)}

    log.info("demo 2/5: torch VAE (d=%d) on %s", s.latent_dim, s.spec)
    vae_cfg = api.build_config(model="vae", latent_dim=s.latent_dim, beta=1.0, epochs=s.vae_epochs, **common)
    vae = out / "vae"
    evals["vae"] = ensure_run(vae_cfg, vae, iwae_k=s.iwae_k, classifier=out / "cnn")

    log.info("demo 3/5: interpolation, denoising, inpainting")
    results: list[Any] = [
        interpolate(vae, grid=s.grid, corners="sample"),
        interpolate(vae, grid=s.grid, corners="sample", slerp=True, traversal=False),
        interpolate(vae, grid=s.grid, corners="encode", traversal=False),
        denoise(vae, n=s.n_faces, blend_pca=True)]
    for mask in ("box", "random"):
        for method in METHODS:
            results.append(inpaint(vae, mask=mask, method=method, n=s.n_faces, iterations=s.iterations,
                                   steps=s.steps))

    log.info("demo 4/5: torch sweep %s x %s", s.sweep_dims, s.sweep_betas)
    sweep_cfg = api.build_config(model="vae", latent_dim=s.sweep_dims[0], epochs=s.sweep_epochs, **common)
    results.append(sweep(sweep_cfg, out / "sweep", latent_dims=s.sweep_dims, betas=s.sweep_betas,
                         iwae_k=s.iwae_k))
    # the traversal figure is a Result of its own inside the first interpolation's extra
    results += [x for r in results for x in getattr(r, "extra", {}).values() if hasattr(x, "paths")]
    return evals, written_paths(results)


def demo(out: str | Path = "demo_out", *, quick: bool = False) -> Path:
    """Run the whole facevae workflow on synthetic faces: the torch part, then the tf part.

    Args:
        out: folder for every run, table and figure (created; finished runs in it are reused).
        quick: tiny settings (:data:`QUICK`), for tests and smoke checks.

    Returns:
        ``out``; its ``demo_summary.md`` holds the headline numbers and links every figure.

    Raises:
        FaceVAEError: the torch backend is not installed (a missing TensorFlow only skips the tf part).
    """
    from shared.data import load
    from shared.demo_summary import write_summary
    from shared.demo_tf import tf_demo

    s = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    faces = load(s.spec, image_size=s.image_size)
    data_preview(faces, figures_dir(out) / "data_preview.png")
    evals, written = _torch_part(out, s)
    t_torch = time.perf_counter() - t0

    log.info("demo 5/5: tf vae, cvae and iaf on %s", s.spec)
    tf = tf_demo(out, s, classifier=out / "cnn")
    seconds = {"torch": t_torch, "tf": time.perf_counter() - t0 - t_torch}
    summary = write_summary(out, s, evals, tf, written=written + tf.paths, seconds=seconds)
    log.info("demo written to %s (summary: %s)", out, summary)
    return out
