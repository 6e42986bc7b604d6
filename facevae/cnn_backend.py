"""The ``cnn`` family of the torch backend: ``train``, ``load`` and ``evaluate`` for :class:`FaceCNN`.

:mod:`facevae.backend` dispatches ``family='cnn'`` here. The loaded model is a
:class:`CNNClassifier`: a numpy attribute classifier (``predict``) and feature extractor
(``features``) that later work uses for the Fréchet distance of generated faces and the label
fidelity of conditional generation.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from facevae.cnn import FaceCNN, augment_batch, tasks_of
from facevae.layers import count_parameters
from facevae.engine import fit, load_weights, select_device
from shared.config import RunConfig
from shared.errors import ConfigError
from shared.evaluation import (AGE_BAND_NAMES, classification_metrics, metrics_by_group,
                               regression_metrics)
from shared.faces import ETHNICITY_NAMES, GENDER_NAMES, Faces
from shared.protocol import as_unit_float
from shared.runs import load_run_config

__all__ = ["CNNClassifier", "build_cnn", "train", "load", "evaluate", "CLASS_NAMES"]

log = logging.getLogger(__name__)

CLASS_NAMES = {"gender": GENDER_NAMES, "ethnicity": ETHNICITY_NAMES}
_BATCH = 512


def build_cnn(config: RunConfig) -> FaceCNN:
    """A freshly initialised :class:`FaceCNN` for ``config`` (weights seeded with ``config.train.seed``).

    Raises:
        ConfigError: ``config.model.family`` is not ``cnn``.
    """
    if config.model.family != "cnn":
        raise ConfigError(f"`family` must be 'cnn' here. Received: family={config.model.family!r}")
    torch.manual_seed(config.train.seed)
    return FaceCNN(config.model, label_smoothing=config.train.label_smoothing)


def _arrays(faces: Faces, index: np.ndarray) -> dict[str, np.ndarray]:
    index = np.asarray(index, dtype=np.int64)
    labels = faces.labels.iloc[index]
    # copies: pandas copy-on-write hands out read-only views, which torch.from_numpy warns about
    return {"images": faces.images[index],
            "gender": labels["gender"].to_numpy(dtype=np.int64, copy=True),
            "ethnicity": labels["ethnicity"].to_numpy(dtype=np.int64, copy=True),
            "age": labels["age"].to_numpy(dtype=np.float32, copy=True)}


def train(config: RunConfig, faces: Faces, split: Any, run_dir: Path, *, resume: bool = False) -> dict:
    """Train the CNN of ``config`` on ``faces[split.train]``, validating on ``faces[split.val]``.

    Args:
        config: the run config (family ``cnn``).
        faces: every face of the data set.
        split: a :class:`shared.data.splits.Split`.
        run_dir: the run folder.
        resume: continue from ``checkpoints/last.pt``.

    Returns:
        The best epoch's metrics record (``val_loss``, ``val_<task>_acc``, ``val_age_mae`` …).
    """
    model = build_cnn(config)
    log.info("CNN %s/%s with %d parameters", config.model.preset, config.model.task, count_parameters(model))
    augment = augment_batch if config.train.augment else None
    return fit(model, _arrays(faces, split.train), _arrays(faces, split.val), config, Path(run_dir),
               resume=resume, augment=augment)


class CNNClassifier:
    """A trained :class:`FaceCNN` behind a numpy interface (eval mode, no gradients, batched).

    Attributes:
        config: the run config. task: ``gender``, ``ethnicity``, ``age`` or ``all``.
        tasks: the heads. feature_dim: width of :meth:`features`.
        flip_average: average each prediction with that of the mirrored face (``default`` preset).
    """

    def __init__(self, module: FaceCNN, config: RunConfig, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.module = module.to(self.device).eval()
        self.config = config
        self.task = config.model.task
        self.tasks = tasks_of(self.task)
        self.feature_dim = module.feature_dim
        self.flip_average = config.model.preset == "default"

    def _batches(self, images: np.ndarray):
        x = as_unit_float(images)
        if x.ndim != 3 or x.shape[1:] != (self.config.model.image_size,) * 2:
            size = self.config.model.image_size
            raise ConfigError(f"`images` must be (N, {size}, {size}). Received shape {x.shape}")
        for start in range(0, len(x), _BATCH):
            yield torch.from_numpy(np.ascontiguousarray(x[start:start + _BATCH])).unsqueeze(1).to(self.device)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions for images ``(N, H, W)`` (uint8, or float in [0, 1]).

        The ``default`` preset averages the outputs (logits, age) of each face and its mirror image
        (it was trained with flips); ``seed`` predicts as the original work did, from the face alone.

        Returns:
            Per classification task ``<task>`` (N,) int64 predicted class and ``<task>_proba`` (N, K)
            float32 softmax probabilities; for age, ``age`` (N,) float32 predicted years.
        """
        parts: dict[str, list[np.ndarray]] = {}
        for xb in self._batches(images):
            out = self.module(xb)
            if self.flip_average:
                mirrored = self.module(xb.flip(-1))
                out = {t: (v + mirrored[t]) / 2 for t, v in out.items()}
            for t, v in out.items():
                if t == "age":
                    parts.setdefault("age", []).append(v.float().cpu().numpy())
                else:
                    proba = torch.softmax(v.float(), dim=1)
                    parts.setdefault(f"{t}_proba", []).append(proba.cpu().numpy())
                    parts.setdefault(t, []).append(proba.argmax(1).cpu().numpy().astype(np.int64))
        if not parts:  # no images: empty arrays of the right shapes
            return self._empty()
        return {k: np.concatenate(v) for k, v in parts.items()}

    def _empty(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for t in self.tasks:
            if t == "age":
                out["age"] = np.zeros(0, np.float32)
            else:
                out[t] = np.zeros(0, np.int64)
                out[f"{t}_proba"] = np.zeros((0, len(CLASS_NAMES[t])), np.float32)
        return out

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``(N, feature_dim)`` float32 of images ``(N, H, W)``."""
        feats = [self.module.features(xb).float().cpu().numpy() for xb in self._batches(images)]
        return np.concatenate(feats) if feats else np.zeros((0, self.feature_dim), np.float32)


def load(run_dir: Path, which: str = "best") -> CNNClassifier:
    """The trained CNN of ``run_dir`` as a :class:`CNNClassifier` (CUDA when present, else CPU).

    Raises:
        RunError: not a run folder, or a missing/unsafe checkpoint.
    """
    config = load_run_config(run_dir)
    module = load_weights(FaceCNN(config.model, label_smoothing=config.train.label_smoothing), Path(run_dir), which)
    device = select_device("cpu" if config.train.device == "cpu" else "auto")
    return CNNClassifier(module, config, device)


def _task_metrics(task: str, pred: dict[str, np.ndarray], faces: Faces) -> dict:
    labels = faces.labels
    if task == "age":
        truth = labels["age"].to_numpy(dtype=np.float64)
        compute = lambda idx: regression_metrics(truth[idx], pred["age"][idx])  # noqa: E731
    else:
        truth = labels[task].to_numpy(dtype=np.int64)
        compute = lambda idx: classification_metrics(truth[idx], pred[task][idx], CLASS_NAMES[task])  # noqa: E731
    return {**compute(np.arange(len(faces))), "by_group": metrics_by_group(labels, compute)}


def _figures(task: str, metrics: dict, fig_dir: Path) -> list[str]:
    from shared.plotting import confusion_matrix_figure, metric_by_group_figure

    written = []
    key, ylabel = ("mae", "age MAE (years)") if task == "age" else ("accuracy", f"{task} accuracy")
    bands = {b: metrics["by_group"]["age_band"][b][key] for b in AGE_BAND_NAMES
             if b in metrics["by_group"]["age_band"]}
    bands = {b: v for b, v in bands.items() if np.isfinite(v)}
    if bands:
        path = fig_dir / f"{task}_by_age_band.png"
        metric_by_group_figure(bands, path, ylabel, title=f"{task}: {key} by age band (test)",
                               counts={b: int(metrics["by_group"]["age_band"][b]["n"]) for b in bands})
        written.append(path)
    if task != "age":
        path = fig_dir / f"{task}_confusion.png"
        confusion_matrix_figure(np.asarray(metrics["confusion_matrix"]), CLASS_NAMES[task], path,
                                title=f"{task} (rows: true class, normalised per row)")
        written.append(path)
    return [str(p) for p in written]


def evaluate(model: CNNClassifier, faces: Faces, *, iwae_k: int = 64, classifier: Any = None, seed: int = 0,
             out_dir: Optional[Path] = None) -> dict:
    """Held-out metrics of a trained CNN on ``faces`` (normally the run's test split).

    ``iwae_k``, ``classifier`` and ``seed`` belong to the generative models' signature and are unused.

    Returns:
        ``{"family": "cnn", "task", "preset", "parameters", "<task>": metrics, "figures": [...]}`` where a
        classification task has accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1 and
        the confusion matrix (rows = true class; counts and normalised per true class), age has MAE/RMSE
        in years, and each also has ``by_group`` (per ethnicity, gender and age band).
    """
    del iwae_k, classifier, seed
    if len(faces) == 0:
        raise ConfigError("`faces` is empty: nothing to evaluate")
    pred = model.predict(faces.images)
    result: dict[str, Any] = {"family": "cnn", "task": model.task, "preset": model.config.model.preset,
                              "parameters": count_parameters(model.module)}
    figures: list[str] = []
    for t in model.tasks:
        result[t] = _task_metrics(t, pred, faces)
        if out_dir is not None:
            figures += _figures(t, result[t], Path(out_dir) / "figures")
    result["figures"] = figures
    return result
