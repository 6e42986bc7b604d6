"""The run behind an explorer: its model, its test faces, its latent ranking, and each endpoint's work.

Every operation goes through the numpy protocol (:class:`shared.protocol.GenerativeModel`), so one
session serves torch and TF runs alike; the only backend call is latent-optimisation inpainting
(``inpaint_optimize``, as :func:`shared.studio.inpaint` does). Models are not thread-safe, so every
model call holds one lock; validation and PNG encoding run outside it. Work per request is bounded
(:data:`MAX_GRID`, :data:`MAX_COUNT`, :data:`ITERATE_ROUNDS`, :data:`OPTIMIZE_STEPS`).

Each ``api_*`` method takes the parsed JSON body of its endpoint and returns a dict (sent as JSON)
or ``bytes`` (a PNG). Bad fields raise :class:`shared.errors.ConfigError` (the server's 400).
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from shared.errors import ConfigError
from shared.explorer import validate as v
from shared.faces import ETHNICITY_NAMES, GENDER_NAMES
from shared.inpainting import METHODS as INPAINT_METHODS

__all__ = ["Session", "MAX_GRID", "MAX_COUNT", "MAX_FACES_PAGE", "ITERATE_ROUNDS", "OPTIMIZE_STEPS", "MAX_BLENDS",
           "TOP_K", "SLIDER_RANGE", "ACTIVITY_FACES", "METRIC_KEYS"]

log = logging.getLogger(__name__)

MAX_GRID = 12            # interpolation matrix side: 144 decodes
MAX_COUNT = 16           # faces per /api/sample and /api/generate
MAX_FACES_PAGE = 64      # faces per /api/faces
ITERATE_ROUNDS = 30      # iterative projection rounds per inpaint request
OPTIMIZE_STEPS = 60      # latent-optimisation steps per inpaint request
MAX_BLENDS = 64          # tuned VAE ⊕ PCA blends kept (one per σ asked for)
TOP_K = 8                # sliders shown (at most latent_dim)
SLIDER_RANGE = 3.0       # sliders span ±3 prior standard deviations
ACTIVITY_FACES = 512     # test faces that rank the latent dimensions (as the traversal figure)
METRIC_KEYS = ("psnr", "ssim", "neg_elbo", "neg_iwae", "rate")
_AGE_MAX = 116


def _finite(x: Any) -> Optional[float]:
    """``float(x)``, or ``None`` when it is NaN/inf (strict JSON has no such numbers)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _read_metrics(run_dir: Path) -> dict[str, float]:
    """The scalar test metrics of ``eval.json`` that the header shows; ``{}`` before evaluation."""
    from shared.runs import EVAL

    try:
        data = json.loads((run_dir / EVAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(data[k]) for k in METRIC_KEYS
            if isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool)
            and math.isfinite(data[k])}


class Session:
    """A generative run opened for the explorer.

    Args:
        run_dir: a run folder of a generative model (torch ``vae``; tf ``vae``, ``cvae``, ``iaf``).
        data: where the run's faces are now, when they moved (see :func:`shared.api.run_faces`).

    Raises:
        RunError: not a generative run, no test faces, or the run's faces cannot be found.
    """

    def __init__(self, run_dir: str | os.PathLike, data: Any = None):
        from shared.studio import held_out_faces, latent_activity, open_run

        self.run_dir, self.config, self.model = open_run(run_dir)
        self.faces = held_out_faces(self.run_dir, self.config, data=data)
        self.size = int(self.config.model.image_size)
        self.dim = int(self.model.latent_dim)
        self.conditional = bool(self.model.conditional)
        self.lock = threading.Lock()
        self._data = data
        self._basis: Any = None  # the VAE ⊕ PCA blend's PCA and validation faces, built on the first denoise
        self._blends: dict[float, Any] = {}  # σ -> its tuned Blend
        self._blend_lock = threading.Lock()
        first = self.faces.subset(np.arange(min(ACTIVITY_FACES, len(self.faces))))
        activity = np.asarray(latent_activity(self.model, first), np.float64)
        order = np.argsort(-activity, kind="stable")
        self.dims = [{"dim": int(d), "kl": _finite(activity[d])} for d in order]
        self.metrics = _read_metrics(self.run_dir)
        self._warm_up()
        log.debug("explorer: %s (%s %s, d=%d) with %d test faces", self.run_dir, self.config.backend,
                  self.config.model.family, self.dim, len(self.faces))

    # ------------------------------------------------------------------ helpers
    def _warm_up(self) -> None:
        """One decode, encode and reconstruct now: TF traces its functions on the first call of each."""
        face = self._clean(0)
        labels = self._reference(1)
        self.model.decode(np.zeros((1, self.dim), np.float32), labels)
        self.model.encode(face, self._own_labels(0))
        self.model.reconstruct(face, self._own_labels(0))

    def _clean(self, index: int) -> np.ndarray:
        """Test face ``index`` as ``(1, S, S)`` float32 in [0, 1] (as ``Faces.floats``, without converting them all)."""
        return self.faces.images[index:index + 1].astype(np.float32) / 255.0

    def _locked(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return fn(*args, **kwargs)

    def _reference(self, n: int) -> Optional[np.ndarray]:
        from shared.studio import reference_labels

        return reference_labels(self.model, n)

    def _own_labels(self, index: int) -> Optional[np.ndarray]:
        from shared.studio import labels_for

        return labels_for(self.model, self.faces.subset(np.asarray([index])))

    def _face(self, body: dict, name: str = "face") -> int:
        return v.get_int(body, name, 0, len(self.faces) - 1)

    def _labels(self, body: dict, n: int) -> Optional[np.ndarray]:
        """Label vectors of ``body["labels"]`` (cvae; default the reference label), ``None`` otherwise."""
        from shared.conditional import label_matrix

        if "labels" not in body:
            return self._reference(n)
        if not self.conditional:
            raise ConfigError(f"`labels` apply to conditional (cvae) runs only; this run is a "
                              f"{self.config.model.family!r} model. Received: labels={body['labels']!r:.60}")
        lab = v.get_labels(body["labels"])
        return label_matrix(lab["gender"], lab["ethnicity"], lab["age"], n)

    def _needs_conditional(self, endpoint: str) -> None:
        if not self.conditional:
            raise ConfigError(f"{endpoint} needs a conditional (cvae) run; this run is a "
                              f"{self.config.model.family!r} model")

    def _face_entry(self, index: int) -> dict[str, Any]:
        """``{"index", "label": "F 34y Asian", "image", "labels"}`` of a test face.

        Unknown labels (-1, data sets without them) read "?" and leave ``labels`` out.
        """
        row = self.faces.labels.iloc[index]
        g, e, a = int(row["gender"]), int(row["ethnicity"]), int(row["age"])
        text = (f"{GENDER_NAMES[g][0].upper() if g in (0, 1) else '?'} {f'{a}y' if 0 <= a <= _AGE_MAX else '?'} "
                f"{ETHNICITY_NAMES[e] if 0 <= e < len(ETHNICITY_NAMES) else '?'}")
        entry = {"index": index, "label": text, "image": v.data_url(self.faces.images[index])}
        if g in (0, 1) and 0 <= e < len(ETHNICITY_NAMES) and 0 <= a <= _AGE_MAX:
            entry["labels"] = {"gender": g, "ethnicity": e, "age": a}
        return entry

    # ------------------------------------------------------------------ GET
    def info(self) -> dict[str, Any]:
        """The run's description: ``GET /api/info``."""
        return {"run": self.run_dir.resolve().name, "backend": self.config.backend,
                "family": self.config.model.family, "latent_dim": self.dim, "image_size": self.size,
                "conditional": self.conditional, "n_test": len(self.faces), "metrics": dict(self.metrics),
                "dims": [dict(d) for d in self.dims], "top_k": min(TOP_K, self.dim), "slider_range": SLIDER_RANGE,
                "methods": list(INPAINT_METHODS), "genders": list(GENDER_NAMES),
                "ethnicities": list(ETHNICITY_NAMES), "age_range": [0, _AGE_MAX],
                "limits": {"max_grid": MAX_GRID, "max_count": MAX_COUNT, "max_upload_bytes": v.MAX_UPLOAD_BYTES}}

    def faces_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """Test faces ``start .. start+count-1`` (fewer at the end): ``GET /api/faces?start=S&count=C``.

        Each has its ``labels`` too (``{"gender", "ethnicity", "age"}``, as ``/api/decode`` takes them).
        """
        unknown = [k for k in query if k not in ("start", "count")]
        if unknown:
            raise ConfigError(f"unknown query parameter `{unknown[0]:.40}`; /api/faces takes start and count")
        start = v.parse_query_int(query, "start", 0, len(self.faces) - 1, 0)
        count = v.parse_query_int(query, "count", 1, MAX_FACES_PAGE, 24)
        stop = min(start + count, len(self.faces))
        return {"faces": [self._face_entry(i) for i in range(start, stop)]}

    # ------------------------------------------------------------------ latent space
    def api_encode(self, body: dict) -> dict[str, Any]:
        """``{"face": i}`` or ``{"image": data URL, "labels"?}`` -> posterior ``{"z", "logvar"}``."""
        v.check_fields(body, ("face", "image", "labels"))
        if ("face" in body) == ("image" in body):
            raise ConfigError("send exactly one of `face` (a test face index) and `image` (a data URL from "
                              f"/api/upload). Received fields: {sorted(body)}")
        if "face" in body:
            if "labels" in body:
                raise ConfigError("`labels` are for an uploaded `image`; test faces are encoded with their own labels")
            index = self._face(body)
            x, labels = self._clean(index), self._own_labels(index)
        else:
            x = v.decode_data_url(body["image"], "image", self.size)[None].astype(np.float32) / 255.0
            labels = self._labels(body, 1)
        mean, logvar = self._locked(self.model.encode, x, labels)
        return {"z": np.asarray(mean[0], np.float64).tolist(), "logvar": np.asarray(logvar[0], np.float64).tolist()}

    def api_decode(self, body: dict) -> bytes:
        """``{"z", "labels"?}`` -> the decoded face as PNG."""
        v.check_fields(body, ("z", "labels"))
        z = v.get_latent(body, "z", self.dim)
        labels = self._labels(body, 1)
        return v.png_bytes(self._locked(self.model.decode, z[None], labels)[0])

    def api_matrix(self, body: dict) -> bytes:
        """``{"corners": [A, B, C, D], "n", "slerp"?, "labels"?}`` -> the n×n mosaic PNG (1-px white gaps)."""
        from shared.grids import interpolation_matrix

        v.check_fields(body, ("corners", "n", "slerp", "labels"))
        corners = v.get_latents(body, "corners", 4, self.dim)
        n = v.get_int(body, "n", 2, MAX_GRID)
        slerp = v.get_bool(body, "slerp", False)
        labels = self._labels(body, n * n)
        z = interpolation_matrix(corners, n, slerp=slerp).reshape(n * n, self.dim).astype(np.float32)
        images = v.to_uint8(self._locked(self.model.decode, z, labels))
        s = self.size
        mosaic = np.full((n * s + n - 1, n * s + n - 1), 255, np.uint8)
        for k, image in enumerate(images):
            i, j = divmod(k, n)
            mosaic[i * (s + 1):i * (s + 1) + s, j * (s + 1):j * (s + 1) + s] = image
        return v.png_bytes(mosaic)

    def api_sample(self, body: dict) -> dict[str, Any]:
        """``{"seed", "count"}`` -> ``{"z": [...]}``, the draws of :func:`shared.protocol.latent_noise`."""
        from shared.protocol import latent_noise

        v.check_fields(body, ("seed", "count"))
        seed = v.get_int(body, "seed", 0, v.MAX_SEED)
        count = v.get_int(body, "count", 1, MAX_COUNT)
        return {"z": np.asarray(latent_noise(count, self.dim, seed), np.float64).tolist()}

    # ------------------------------------------------------------------ corruptions
    def _blend(self, sigma: float) -> tuple[Any, Any]:
        """``(basis, Blend)`` of the VAE ⊕ PCA denoiser at ``sigma``, tuned as ``facevae denoise --blend-pca
        --seed 0`` tunes it for one σ (validation noise seeded 1000; the request's seed only draws the noise
        on the face shown). The PCA is fitted on the first call (seconds for thousands of faces) and each σ
        tuned once, then kept."""
        from types import SimpleNamespace

        from shared.denoise_blend import tune_blend
        from shared.studio_denoise import blend_basis

        # its own lock: loading the training faces and fitting PCA take seconds and touch no model, so the
        # other panels keep answering; only the VAE's pass over the validation faces takes the model's lock
        with self._blend_lock:
            if self._basis is None:
                self._basis = blend_basis(self.run_dir, self.config, self.model, self._data)
            if sigma not in self._blends:
                if len(self._blends) >= MAX_BLENDS:  # any σ in (0, 1] may come: keep the newest
                    self._blends.pop(next(iter(self._blends)))
                locked = SimpleNamespace(reconstruct=lambda x, y=None: self._locked(self.model.reconstruct, x, y))
                self._blends[sigma] = tune_blend(locked, self._basis, sigma, seed=1000)
            return self._basis, self._blends[sigma]

    def api_denoise(self, body: dict) -> dict[str, Any]:
        """``{"face", "sigma", "seed"?}`` -> clean, noisy, 3×3 mean/median filters, VAE and VAE ⊕ PCA with their
        PSNR (and the blend's tuned ``d`` and ``alpha``)."""
        from shared.denoise_blend import apply_blend
        from shared.image_metrics import psnr
        from shared.studio import BLENDED, DENOISERS, denoise_table

        v.check_fields(body, ("face", "sigma", "seed"))
        index = self._face(body)
        sigma = v.get_float(body, "sigma", 0.0, 1.0, open_low=True)
        seed = v.get_int(body, "seed", 0, v.MAX_SEED, 0)
        clean = self._clean(index)
        rows, images = self._locked(denoise_table, self.model, clean, [sigma], seed=seed,
                                    labels=self._own_labels(index))
        outs = images[float(sigma)]
        basis, fit = self._blend(float(sigma))
        blended = apply_blend(fit, outs["vae"], outs["noisy"], basis.pca)
        return {"images": {"clean": v.data_url(self.faces.images[index]),
                           **{m: v.data_url(outs[m][0]) for m in DENOISERS}, BLENDED: v.data_url(blended[0])},
                "psnr": {**{r["method"]: _finite(r["psnr"]) for r in rows},
                         BLENDED: _finite(np.mean(psnr(blended, clean)))},
                "blend": {"d": fit.d, "alpha": fit.alpha}}

    def _mask(self, body: dict, kind: str, seed: int) -> np.ndarray:
        from shared.inpainting import make_mask

        if kind == "drawn":
            if "mask_bits" not in body:
                raise ConfigError("the field `mask_bits` is missing: mask='drawn' needs the drawn mask")
            return v.mask_from_bits(body["mask_bits"], self.size)[None]
        if "mask_bits" in body:
            raise ConfigError(f"`mask_bits` go with mask='drawn' only. Received: mask={kind!r}")
        return make_mask(kind, 1, self.size, seed=seed)

    def api_inpaint(self, body: dict) -> dict[str, Any]:
        """``{"face", "mask", "mask_bits"?, "method", "seed"?}`` -> original, masked, mean fill, result + PSNR."""
        from shared.corruptions import apply_mask, mean_fill
        from shared.inpainting import composite, fill, inpaint_metrics

        v.check_fields(body, ("face", "mask", "mask_bits", "method", "seed"))
        index = self._face(body)
        kind = v.get_choice(body, "mask", ("box", "random", "drawn"))
        method = v.get_choice(body, "method", INPAINT_METHODS)
        seed = v.get_int(body, "seed", 0, v.MAX_SEED, 0)
        holes = self._mask(body, kind, seed)
        clean, labels = self._clean(index), self._own_labels(index)
        masked = np.asarray(apply_mask(clean, holes, fill=0.0), np.float32)
        baseline = composite(masked, np.asarray(mean_fill(masked, holes), np.float32), holes)
        with self.lock:  # iterate starts from the mean fill, as shared.studio.inpaint does
            filled = fill(self.model, masked, holes, method, labels=labels, iterations=ITERATE_ROUNDS,
                          steps=OPTIMIZE_STEPS, seed=seed, start=baseline, progress=False)
        return {"images": {"original": v.data_url(self.faces.images[index]), "masked": v.data_url(masked[0]),
                           "mean_fill": v.data_url(baseline[0]), "result": v.data_url(filled[0])},
                "psnr": {"mean_fill": _finite(inpaint_metrics(baseline, clean, holes)["psnr"]),
                         "result": _finite(inpaint_metrics(filled, clean, holes)["psnr"])},
                "missing_fraction": float(holes.mean())}

    # ------------------------------------------------------------------ conditional runs
    def api_generate(self, body: dict) -> dict[str, Any]:
        """cvae: ``{"gender", "ethnicity", "age", "seed"?, "count"?, "temperature"?}`` -> ``{"images": [...]}``;
        z ~ N(0, T²·I) as ``facevae generate --temperature T`` draws it (default 1)."""
        from shared.conditional import label_matrix
        from shared.protocol import latent_noise

        self._needs_conditional("/api/generate")
        v.check_fields(body, ("gender", "ethnicity", "age", "seed", "count", "temperature"))
        lab = v.get_labels({k: body[k] for k in ("gender", "ethnicity", "age") if k in body}, "")
        seed = v.get_int(body, "seed", 0, v.MAX_SEED, 0)
        count = v.get_int(body, "count", 1, MAX_COUNT, 8)
        temperature = v.get_float(body, "temperature", 0.0, 1.0, open_low=True, default=1.0)
        labels = label_matrix(lab["gender"], lab["ethnicity"], lab["age"], count)
        z = np.float32(temperature) * latent_noise(count, self.dim, seed)
        images = self._locked(self.model.decode, z, labels)
        return {"images": [v.data_url(image) for image in images]}

    def api_edit(self, body: dict) -> dict[str, Any]:
        """cvae: ``{"face", "gender", "ethnicity", "age"}`` -> original, reconstruction and edited face."""
        from shared.conditional import label_matrix

        self._needs_conditional("/api/edit")
        v.check_fields(body, ("face", "gender", "ethnicity", "age"))
        index = self._face(body)
        lab = v.get_labels({k: body[k] for k in ("gender", "ethnicity", "age") if k in body}, "")
        own, new = self._own_labels(index), label_matrix(lab["gender"], lab["ethnicity"], lab["age"], 1)
        with self.lock:
            mean, _ = self.model.encode(self._clean(index), own)
            both = self.model.decode(np.concatenate([mean, mean]), np.concatenate([own, new]))
        return {"images": {"original": v.data_url(self.faces.images[index]), "reconstruction": v.data_url(both[0]),
                           "edited": v.data_url(both[1])}}

    # ------------------------------------------------------------------ uploads
    def api_upload(self, raw: bytes) -> dict[str, Any]:
        """Raw image bytes -> the face converted as the folder loader does and its posterior mean.

        Conditional runs encode it with the reference label (a 30-year-old White male): an upload has none.
        """
        from shared.data.image_folder import to_square_gray

        image = v.decode_image_bytes(raw, "upload")
        try:
            face = to_square_gray(image, self.size)  # (S, S) uint8, exactly as shared.data.image_folder
        finally:
            image.close()
        mean, _ = self._locked(self.model.encode, face[None].astype(np.float32) / 255.0, self._reference(1))
        return {"image": v.data_url(face), "z": np.asarray(mean[0], np.float64).tolist()}
