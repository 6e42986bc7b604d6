"""``demo_summary.md``: the headline numbers of every demo model in small tables, and every figure linked.

Every figure under the demo folder (``.png``, ``.pdf``, ``.svg``, found on disk, so nothing written
is left out) gets a relative link that resolves from the summary's own folder; a few are also shown
inline. Tables read the runs' ``eval.json`` and the studio JSON files, so a re-run that reused
finished runs writes the same summary.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from shared.inpainting import METHODS
from shared.io import atomic_write_text
from shared.results import markdown_table

if TYPE_CHECKING:  # pragma: no cover
    from shared.demo import DemoSettings
    from shared.demo_tf import TFDemo

__all__ = ["SUMMARY", "FIGURE_SUFFIXES", "figure_files", "write_summary"]

log = logging.getLogger(__name__)

SUMMARY = "demo_summary.md"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
# a few figures shown inline; every figure is linked in any case
_INLINE = ("figures/data_preview.png", "vae/figures/interpolation_slerp_sample.png",
           "sweep/figures/rate_distortion.png", "tf/cvae/generated/attribute_grid_female.png",
           "tf/cvae/generated/attribute_edits.png")
_NOTES = {
    "data_preview": "synthetic faces and their labels",
    "interpolation_lerp_sample": "interpolation matrix, prior corners, linear",
    "interpolation_slerp_sample": "interpolation matrix, prior corners, spherical",
    "interpolation_lerp_encode": "interpolation matrix between four encoded test faces",
    "traversal": "latent traversal of the most active dimensions",
    "denoise": "clean | noisy | mean | median | VAE | VAE ⊕ PCA",
    "rate_distortion": "rate–distortion of the sweep",
    "reconstructions": "held-out faces and every sweep model's reconstruction",
    "training_curves": "training and validation loss per epoch",
    "attribute_grid_male": "cvae: one latent draw decoded as male, rows ethnicity × columns age band",
    "attribute_grid_female": "cvae: one latent draw decoded as female, rows ethnicity × columns age band",
    "attribute_edits": "cvae: test faces re-decoded with changed gender, age and ethnicity",
}
_SECTIONS = (("figures", "Data"), ("cnn", "torch CNN"), ("vae", "torch VAE"), ("sweep", "torch sweep"),
             ("tf", "tf vae / cvae / iaf"))
# column -> (eval.json keys that may hold it, first found wins; format). Nats keep two decimals: the
# models differ by tenths of a nat on ~1400, which four significant digits would hide.
_NATS, _INT = "{:.2f}", "{:,.0f}"
_GEN_COLUMNS = {"-ELBO": (("neg_elbo",), _NATS), "-IWAE": (("neg_iwae", "iwae"), _NATS),
                "rate": (("rate",), _NATS), "distortion": (("distortion",), _NATS),
                "PSNR (dB)": (("psnr",), "{:.2f}"), "SSIM": (("ssim",), "{:.3f}"),
                "Fréchet (CNN)": (("frechet_distance",), "{:.1f}"), "parameters": (("n_parameters",), _INT)}


def figure_files(out: Path) -> list[Path]:
    """Every figure under ``out``, sorted."""
    return sorted(p for p in Path(out).rglob("*") if p.suffix.lower() in FIGURE_SUFFIXES and p.is_file())


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _first(result: dict[str, Any], keys: Iterable[str], fmt: str = "{}") -> Optional[str]:
    """The first of ``keys`` holding a number, formatted; ``None`` (shown as –) when none does."""
    value = next((result[k] for k in keys if isinstance(result.get(k), (int, float))), None)
    return None if value is None else fmt.format(value)


def _cnn_table(ev: dict[str, Any]) -> str:
    rows = []
    for task in ("gender", "ethnicity"):
        t = ev.get(task) or {}
        rows.append([task, t.get("accuracy"), t.get("balanced_accuracy"), t.get("macro_f1"), None])
    age = ev.get("age") or {}
    rows.append(["age", None, None, None, age.get("mae")])
    return markdown_table(["task", "accuracy", "balanced accuracy", "macro F1", "MAE (years)"], rows)


def _generative_table(models: dict[str, tuple[str, int, dict[str, Any]]], iwae_k: int) -> str:
    header = ["run", "model", "epochs"] + [c.replace("IWAE", f"IWAE-{iwae_k}") for c in _GEN_COLUMNS]
    rows = [[f"`{run}/`", model, epochs] + [_first(ev, keys, fmt) for keys, fmt in _GEN_COLUMNS.values()]
            for run, (model, epochs, ev) in models.items()]
    return markdown_table(header, rows)


def _sweep_table(out: Path) -> Optional[str]:
    data = _read_json(out / "sweep" / "sweep.json")
    if not isinstance(data, dict) or not data.get("runs"):
        return None
    return markdown_table(["run", "latent", "β", "rate", "distortion", "-IWAE", "PSNR (dB)"],
                          [[r.get("name"), r.get("latent_dim"), r.get("beta"), _first(r, ("rate",), _NATS),
                            _first(r, ("distortion",), _NATS), _first(r, ("iwae", "neg_iwae"), _NATS),
                            _first(r, ("psnr",), "{:.2f}")] for r in data["runs"]])


def _studio_tables(vae: Path) -> list[str]:
    lines = []
    den = _read_json(vae / "denoise.json")
    if isinstance(den, dict) and den.get("results"):
        by = {(r["sigma"], r["method"]): r["psnr"] for r in den["results"]}
        sigmas = sorted({s for s, _ in by})
        lines += ["Denoising, PSNR (dB) against the clean test faces:", "",
                  markdown_table(["σ", "noisy", "3×3 mean", "3×3 median", "VAE", "VAE ⊕ PCA"],
                                 [[s] + [by.get((s, m)) for m in ("noisy", "mean", "median", "vae", "vae+pca")]
                                  for s in sigmas])]
    rows = []
    for mask in ("box", "random"):
        for method in METHODS:
            res = _read_json(vae / f"inpaint_{mask}_{method}.json")
            if isinstance(res, dict) and "results" in res:
                r = res["results"]
                rows.append([mask, method, r.get("mean_fill", {}).get("psnr"), r.get(method, {}).get("psnr"),
                             r.get(method, {}).get("ssim")])
    if rows:
        lines += ["Inpainting, PSNR (dB) over the missing pixels:", "",
                  markdown_table(["mask", "method", "mean-fill PSNR", "method PSNR", "method SSIM"], rows)]
    return lines


def _link(rel: str) -> str:
    return f"[`{rel}`]({rel})"


def _figures(out: Path) -> list[str]:
    figures = [p.relative_to(out).as_posix() for p in figure_files(out)]
    lines: list[str] = []
    done: set[str] = set()
    for top, title in _SECTIONS + (("", "Other"),):
        mine = [f for f in figures if f not in done and (not top or f.split("/")[0] == top)]
        if not mine:
            continue
        lines += [f"### {title}", ""]
        for rel in mine:
            done.add(rel)
            note = _NOTES.get(Path(rel).stem) or Path(rel).stem.replace("_", " ")
            lines.append(f"- {_link(rel)} — {note}")
            if rel in _INLINE:
                lines += ["", f"  ![{note}]({rel})", ""]
        lines.append("")
    return lines


def write_summary(out: Path, s: "DemoSettings", evals: dict[str, dict[str, Any]], tf: "TFDemo", *,
                  written: Iterable[Path] = (), seconds: Optional[dict[str, float]] = None) -> Path:
    """Write ``out/demo_summary.md``.

    Args:
        out: the demo folder.
        s: the demo's sizes.
        evals: the torch evaluations (``cnn``, ``vae``).
        tf: the tf part's outcome (its evaluations, the IAF comparison, or why it was skipped).
        written: files the studio calls reported; a figure among them missing on disk is logged.
        seconds: wall time of each part of this invocation (reused runs make a re-run faster).

    Returns:
        The summary's path.
    """
    out = Path(out)
    lines = [f"# facevae demo — `{out}`", "",
             f"Synthetic faces `{s.spec}` at {s.image_size}×{s.image_size}; every model is scored on its own "
             f"held-out test split (nats per image, lower is better for -ELBO / -IWAE).", ""]
    if seconds:
        lines += ["This invocation: " + ", ".join(f"{k} part {v:.0f} s" for k, v in seconds.items())
                  + " (finished runs in the folder are reused).", ""]
    lines += ["## Headline numbers", ""]
    if "cnn" in evals:
        lines += ["torch CNN `cnn/` (one trunk, three heads), test split:", "", _cnn_table(evals["cnn"])]
    models = {"vae": ("torch vae", s.vae_epochs, evals["vae"])} if "vae" in evals else {}
    models.update({f"tf/{name}": (f"tf {name}", s.tf_epochs, ev) for name, ev in tf.evals.items()})
    lines += ["Generative models (the same encoder/decoder shape; Fréchet distance in the torch CNN's "
              "feature space):", "", _generative_table(models, s.iwae_k)]
    if tf.comparison is not None:
        from shared.demo_tf import comparison_sentence
        lines += [f"**{comparison_sentence(tf.comparison)}** Details: {_link('tf/iaf_vs_diagonal.md')}.", ""]
    else:
        lines += [f"**The TensorFlow part (tf vae, cvae, iaf) was skipped:** {tf.skipped}", ""]
    sweep = _sweep_table(out)
    if sweep:
        lines += [f"torch sweep `sweep/` (latent size × β, {s.sweep_epochs} epochs each):", "", sweep]
    lines += _studio_tables(out / "vae")

    lines += ["## Figures", ""] + _figures(out)
    lines += ["## Tables and evaluations", ""]
    lines += [f"- {_link(p.relative_to(out).as_posix())}" for p in sorted(out.rglob("*.md")) if p.name != SUMMARY]
    lines += [f"- {_link(p.relative_to(out).as_posix())}" for p in sorted(out.rglob("eval.json"))]
    missing = [p for p in written if Path(p).suffix.lower() in FIGURE_SUFFIXES and not Path(p).is_file()]
    if missing:
        log.warning("figures reported as written but missing: %s", missing)
    path = atomic_write_text(out / SUMMARY, "\n".join(lines) + "\n")
    return path
