"""``facevae demo``: the main job, end to end, on the embedded synthetic faces.

In a notebook::

    from shared.demo import demo
    demo("demo_out")            # a few minutes on 2 CPU cores; demo(quick=True) takes seconds

Steps, every output under one folder ``out``:

1. ``figures/data_preview.png`` — a grid of synthetic faces titled with their labels.
2. ``cnn/`` — a small torch CNN (task ``all``: gender, ethnicity and age heads), evaluated.
3. ``vae/`` — a small torch VAE, evaluated on its test split with the CNN as the feature
   extractor of the Fréchet distance; then interpolation matrices (lerp and slerp from prior
   corners, lerp between encoded test faces), latent traversal, denoising, and inpainting
   (box and random masks; decode, iterate and optimize).
4. ``sweep/`` — a tiny latent size × β sweep with its rate–distortion table and figures.
5. ``demo_summary.md`` — every figure and table written, with the headline numbers.

Re-running on the same ``out`` reuses finished runs (see :func:`shared.sweep.ensure_run`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from shared import api
from shared.faces import ETHNICITY_NAMES, Faces
from shared.runs import EVAL, atomic_write_bytes, atomic_write_text, figures_dir

__all__ = ["DemoSettings", "FULL", "QUICK", "demo", "data_preview"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo; :data:`FULL` is the real job, :data:`QUICK` a seconds-long smoke run."""

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


FULL = DemoSettings(spec="synthetic:2000", image_size=48, channels=(16, 32, 64), hidden_dims=(128,),
                    latent_dim=16, cnn_epochs=5, vae_epochs=10, sweep_epochs=5, sweep_dims=(4, 16),
                    sweep_betas=(0.1, 1.0), batch_size=64, iwae_k=16, grid=9, n_faces=128, iterations=30,
                    steps=100)
QUICK = DemoSettings(spec="synthetic:240", image_size=32, channels=(8, 16), hidden_dims=(32,), latent_dim=4,
                     cnn_epochs=1, vae_epochs=1, sweep_epochs=1, sweep_dims=(2, 4), sweep_betas=(1.0,),
                     batch_size=64, iwae_k=2, grid=3, n_faces=8, iterations=2, steps=3)


def _label_text(row: Any) -> str:
    return f"{'FM'[int(row.gender)]} {int(row.age)}y\n{ETHNICITY_NAMES[int(row.ethnicity)]}"


def data_preview(faces: Faces, path: str | Path, *, n: int = 24, cols: int = 8) -> Path:
    """A grid of the first ``n`` faces, each titled with its labels (gender, age, ethnicity).

    Returns:
        ``path`` (PNG, written atomically).
    """
    import io

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


def _headline(result: dict[str, Any], limit: int = 20) -> str:
    """The numbers of an evaluation (top level and one level down, e.g. ``gender.accuracy``) as a list."""
    def scalar(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    items = [(k, v) for k, v in result.items() if scalar(v)]
    items += [(f"{k}.{kk}", vv) for k, v in result.items() if isinstance(v, dict) and k != "by_group"
              for kk, vv in v.items() if scalar(vv)]
    return "\n".join(f"- `{k}`: {v:.4g}" if isinstance(v, float) else f"- `{k}`: {v}" for k, v in items[:limit])


_FIGURE_NOTES = {
    "data_preview": "synthetic faces and their labels",
    "interpolation_lerp_sample": "interpolation matrix, prior corners, linear",
    "interpolation_slerp_sample": "interpolation matrix, prior corners, spherical",
    "interpolation_lerp_encode": "interpolation matrix between four encoded test faces",
    "traversal": "latent traversal of the most active dimensions",
    "denoise": "clean | noisy | mean | median | VAE",
    "rate_distortion": "rate–distortion of the sweep",
    "reconstructions": "held-out faces and every sweep model's reconstruction",
}


def _summary(out: Path, evals: dict[str, dict[str, Any]]) -> str:
    lines = [f"# facevae demo — `{out}`", ""]
    for name, result in evals.items():
        lines += [f"## `{name}/` evaluation (test split)", "", _headline(result), ""]
    lines += ["## Figures", ""]
    for png in sorted(out.rglob("*.png")):
        note = _FIGURE_NOTES.get(png.stem) or (png.stem.replace("_", " ") if png.stem.startswith("inpaint") else "")
        lines.append(f"- `{png.relative_to(out)}`" + (f" — {note}" if note else ""))
    lines += ["", "## Tables", ""]
    for table in sorted(out.rglob("*.md")):
        if table.name != "demo_summary.md":
            lines.append(f"- `{table.relative_to(out)}` (+ `.json`)")
    for ev in sorted(out.rglob(EVAL)):
        lines.append(f"- `{ev.relative_to(out)}`")
    return "\n".join(lines) + "\n"


def demo(out: str | Path = "demo_out", *, quick: bool = False) -> Path:
    """Run the whole facevae workflow on synthetic faces with the torch backend.

    Args:
        out: folder for every run, table and figure (created; finished runs in it are reused).
        quick: tiny settings (:data:`QUICK`), for tests and smoke checks.

    Returns:
        ``out``.

    Raises:
        FaceVAEError: the torch backend is not installed.
    """
    from shared.data import load
    from shared.studio import denoise, inpaint, interpolate
    from shared.sweep import ensure_run, sweep

    s = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faces = load(s.spec, image_size=s.image_size)
    data_preview(faces, figures_dir(out) / "data_preview.png")
    common = dict(backend="torch", data=s.spec, image_size=s.image_size, batch_size=s.batch_size,
                  channels=s.channels, hidden_dims=s.hidden_dims, early_stopping=0)

    log.info("demo 1/4: CNN (task all) on %s", s.spec)
    cnn_cfg = api.build_config(model="cnn", task="all", epochs=s.cnn_epochs, **common)
    evals = {"cnn": ensure_run(cnn_cfg, out / "cnn", iwae_k=s.iwae_k)}

    log.info("demo 2/4: VAE (d=%d) on %s", s.latent_dim, s.spec)
    vae_cfg = api.build_config(model="vae", latent_dim=s.latent_dim, beta=1.0, epochs=s.vae_epochs, **common)
    vae = out / "vae"
    evals["vae"] = ensure_run(vae_cfg, vae, iwae_k=s.iwae_k, classifier=out / "cnn")

    log.info("demo 3/4: interpolation, denoising, inpainting")
    interpolate(vae, grid=s.grid, corners="sample")
    interpolate(vae, grid=s.grid, corners="sample", slerp=True, traversal=False)
    interpolate(vae, grid=s.grid, corners="encode", traversal=False)
    denoise(vae, n=s.n_faces)
    for mask in ("box", "random"):
        for method in ("decode", "iterate", "optimize"):
            inpaint(vae, mask=mask, method=method, n=s.n_faces, iterations=s.iterations, steps=s.steps)

    log.info("demo 4/4: sweep %s x %s", s.sweep_dims, s.sweep_betas)
    sweep_cfg = api.build_config(model="vae", latent_dim=s.sweep_dims[0], epochs=s.sweep_epochs, **common)
    sweep(sweep_cfg, out / "sweep", latent_dims=s.sweep_dims, betas=s.sweep_betas, iwae_k=s.iwae_k)

    atomic_write_text(out / "demo_summary.md", _summary(out, evals))
    log.info("demo written to %s (summary: %s)", out, out / "demo_summary.md")
    return out
