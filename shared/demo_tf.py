"""The TensorFlow half of ``facevae demo``: ``vae``, conditional ``cvae`` and ``iaf`` under ``out/tf/``.

* ``tf/vae`` — the torch demo VAE's architecture on the tf backend, evaluated on its test split.
* ``tf/cvae`` — the same, conditioned on (gender, ethnicity, age): attribute grids
  (:func:`shared.conditional.attribute_grid`), attribute edits of test faces
  (:func:`shared.conditional.edit_attributes`) and generated faces for two label sets
  (:func:`shared.conditional.generate`), all under ``tf/cvae/generated/``.
* ``tf/iaf`` — trained like ``tf/vae`` (encoder, decoder, data, split, epochs, warm-up, seed) but
  with an inverse-autoregressive-flow posterior; :func:`iaf_vs_diagonal` compares the two on the
  test split (IWAE-k and ELBO, nats per image, lower is better) and ``tf/iaf_vs_diagonal.md`` /
  ``.json`` say which won and by how much — whichever it is.

Without TensorFlow (the ``tf`` extra) nothing is trained and :attr:`TFDemo.skipped` says why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from shared import api
from shared.errors import FaceVAEError
from shared.io import atomic_write_json, atomic_write_text
from shared.results import markdown_table

if TYPE_CHECKING:  # pragma: no cover
    from shared.demo import DemoSettings

__all__ = ["TFDemo", "TF_FOLDER", "GENERATE_LABELS", "IAF_TARGET_NATS", "tf_unavailable", "tf_demo", "iaf_vs_diagonal",
           "comparison_sentence"]

log = logging.getLogger(__name__)

TF_FOLDER = "tf"
IAF_TARGET_NATS = 1.0  # the IAF is worth its cost when it tightens the test bound by more than this (per image)
# two label sets far apart, so the generated figures show the conditioning at work
GENERATE_LABELS = ({"gender": "female", "ethnicity": "Asian", "age": 25},
                   {"gender": "male", "ethnicity": "Black", "age": 65})


@dataclass
class TFDemo:
    """What the tf part produced.

    Attributes:
        evals: test-split evaluations by run name (``vae``, ``cvae``, ``iaf``); empty when skipped.
        comparison: :func:`iaf_vs_diagonal` of the ``vae`` and ``iaf`` runs (``None`` when skipped).
        skipped: why the tf part did not run (``None`` when it ran).
        paths: the files the conditional studio calls wrote.
    """

    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparison: Optional[dict[str, Any]] = None
    skipped: Optional[str] = None
    paths: list[Path] = field(default_factory=list)


def tf_unavailable() -> Optional[str]:
    """``None`` when the tf backend imports, else the one-line reason (it names the pip extra)."""
    from shared.registry import get_backend, require_backend

    try:
        require_backend("tf")  # cheap: finds the packages without importing them
        get_backend("tf")      # a broken install shows only on import
    except FaceVAEError as exc:
        return str(exc)
    return None


def iaf_vs_diagonal(vae: dict[str, Any], iaf: dict[str, Any]) -> dict[str, Any]:
    """Compare a diagonal-posterior and an IAF-posterior evaluation of the same test faces.

    Args:
        vae, iaf: ``eval.json`` contents (``neg_iwae``, ``neg_elbo``, ``rate``, ``distortion``, ...).

    Returns:
        ``{"vae": {...}, "iaf": {...}, "iaf_gain_iwae", "iaf_gain_elbo", "better", "iwae_k", "n_faces"}``:
        gains are ``vae - iaf`` in nats per image (positive: the IAF's bound is tighter), ``better`` is
        ``"iaf"``, ``"vae"`` or ``"tie"`` on the IWAE bound.
    """
    keys = ("neg_iwae", "neg_elbo", "rate", "distortion", "n_parameters")
    gain_iwae = float(vae["neg_iwae"]) - float(iaf["neg_iwae"])
    return {"vae": {k: vae.get(k) for k in keys}, "iaf": {k: iaf.get(k) for k in keys},
            "iaf_gain_iwae": gain_iwae, "iaf_gain_elbo": float(vae["neg_elbo"]) - float(iaf["neg_elbo"]),
            "better": "iaf" if gain_iwae > 0 else "vae" if gain_iwae < 0 else "tie",
            "iwae_k": iaf.get("iwae_k", vae.get("iwae_k")), "n_faces": iaf.get("n_faces", vae.get("n_faces"))}


def comparison_sentence(c: dict[str, Any]) -> str:
    """One line saying which posterior gave the tighter test bound, and by how many nats."""
    gi, ge = c["iaf_gain_iwae"], c["iaf_gain_elbo"]
    if c["better"] == "tie":
        head = "IAF and diagonal posteriors tie on the IWAE bound"
    else:
        winner = "the IAF posterior" if gi > 0 else "the diagonal posterior"
        head = f"{winner} is better by {abs(gi):.2f} nats/image on the test IWAE-{c['iwae_k']} bound"
    elbo = ("IAF better" if ge > 0 else "diagonal better" if ge < 0 else "tie") + f" by {abs(ge):.2f}"
    target = "met" if gi > IAF_TARGET_NATS else "missed"
    return (f"IAF vs diagonal (tf, same encoder/decoder/data/split/epochs/seed, {c['n_faces']} test faces): "
            f"{head} (-IWAE {c['iaf']['neg_iwae']:.2f} vs {c['vae']['neg_iwae']:.2f}); "
            f"-ELBO {c['iaf']['neg_elbo']:.2f} vs {c['vae']['neg_elbo']:.2f} ({elbo}). "
            f"Target (IAF better by more than {IAF_TARGET_NATS:g} nat on the IWAE bound): {target}.")


def _write_comparison(folder: Path, c: dict[str, Any], s: "DemoSettings") -> None:
    atomic_write_json(folder / "iaf_vs_diagonal.json", {**c, "epochs": s.tf_epochs,
                                                        "kl_warmup_epochs": s.kl_warmup_epochs,
                                                        "flow_steps": s.flow_steps, "flow_hidden": s.flow_hidden,
                                                        "context_dim": s.context_dim})
    def nats(v: Any) -> Optional[str]:  # two decimals: the posteriors differ by tenths of a nat on ~1400
        return None if v is None else f"{float(v):.2f}"

    rows = [[name] + [nats(c[name][k]) for k in ("neg_iwae", "neg_elbo", "rate", "distortion")]
            + [c[name]["n_parameters"]] for name in ("vae", "iaf")]
    table = markdown_table(["posterior", f"-IWAE-{c['iwae_k']}", "-ELBO", "rate", "distortion", "parameters"],
                           rows)
    atomic_write_text(folder / "iaf_vs_diagonal.md",
                      f"# IAF vs diagonal posterior (tf)\n\nNats per image on the test split, lower is better; "
                      f"{s.tf_epochs} epochs each, KL warm-up {s.kl_warmup_epochs} epochs, IAF K={s.flow_steps} "
                      f"hidden={s.flow_hidden} context={s.context_dim}; one seed and a short budget "
                      f"(benchmarks/iaf_vs_diagonal.py compares them over a longer one).\n\n"
                      f"{table}\n{comparison_sentence(c)}\n")


def tf_demo(out: Path, s: "DemoSettings", *, classifier: Optional[Path] = None) -> TFDemo:
    """Train, evaluate and show the tf ``vae``, ``cvae`` and ``iaf`` into ``out/tf/`` (finished runs reused).

    Args:
        out: the demo folder.
        s: the demo's sizes (:data:`shared.demo.FULL` or :data:`shared.demo.QUICK`).
        classifier: a torch CNN run whose features score the Fréchet distance (as for the torch VAE).

    Returns:
        A :class:`TFDemo`; ``skipped`` set (and nothing written) when TensorFlow is not installed.
    """
    from shared.conditional import attribute_grid, edit_attributes, generate
    from shared.demo import common_config, written_paths
    from shared.sweep import ensure_run

    reason = tf_unavailable()
    if reason is not None:
        log.warning("demo: tf part skipped: %s", reason)
        return TFDemo(skipped=reason)
    folder = Path(out) / TF_FOLDER
    shape = dict(latent_dim=s.latent_dim, beta=1.0, epochs=s.tf_epochs, kl_warmup_epochs=s.kl_warmup_epochs,
                 **common_config(s, "tf"))
    flow = dict(flow_steps=s.flow_steps, flow_hidden=s.flow_hidden, context_dim=s.context_dim)
    clf = classifier if classifier is not None and (Path(classifier) / "config.json").is_file() else None
    result = TFDemo()
    for family in ("vae", "iaf", "cvae"):
        config = api.build_config(model=family, **shape, **(flow if family == "iaf" else {}))
        log.info("demo: tf %s (d=%d, %d epochs)", family, s.latent_dim, s.tf_epochs)
        result.evals[family] = ensure_run(config, folder / family, iwae_k=s.iwae_k, classifier=clf)

    result.comparison = iaf_vs_diagonal(result.evals["vae"], result.evals["iaf"])
    _write_comparison(folder, result.comparison, s)
    log.info("%s", comparison_sentence(result.comparison))

    cvae = folder / "cvae"
    studio = [attribute_grid(cvae), edit_attributes(cvae, n=s.n_edit)]
    studio += [generate(cvae, n=s.n_generate, **labels) for labels in GENERATE_LABELS]
    result.paths = written_paths(studio) + [folder / "iaf_vs_diagonal.json", folder / "iaf_vs_diagonal.md"]
    return result
