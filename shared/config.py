"""Validated, frozen configuration dataclasses with a JSON round trip.

A run is described by one :class:`RunConfig` (backend + model + training + data). Both
backends build the same architecture from the same :class:`ModelConfig` (see
:mod:`shared.architecture`), which is what lets weights move between them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from shared.errors import ConfigError
from shared.presets import TRAIN_RECIPES, preset_label_loss, preset_likelihood, preset_shape

__all__ = [
    "BACKENDS", "MODEL_FAMILIES", "PRESETS", "TASKS", "LIKELIHOODS", "SIGMA_MODES",
    "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "DataConfig", "ModelConfig", "TrainConfig", "RunConfig",
    "LABEL_DIM", "preset_shape", "default_train_config",
]

BACKENDS = ("torch", "tf")
MODEL_FAMILIES = ("cnn", "vae", "cvae", "iaf")
PRESETS = ("default", "seed")
TASKS = ("gender", "ethnicity", "age", "all")
LIKELIHOODS = ("bernoulli", "gaussian")
SIGMA_MODES = ("fixed", "learned")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "seed")  # seed: lr / (1 + epoch), the original recipe
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("32", "bf16", "16")  # float32, bfloat16 autocast, float16 autocast + loss scaling
_MIN_AUTO_BATCH = 8  # the smallest batch min_steps_per_epoch shrinks to
LABEL_DIM = 7  # conditional models: gender (1) + ethnicity one-hot (5) + scaled age (1)
MAX_CHANNELS = 4096  # per conv layer; far beyond any face model, small enough to catch typos
MAX_DEVICES = 64    # data-parallel replicas (TrainConfig.devices)
MAX_HIDDEN = 65536   # per dense layer: 10 million would allocate gigabytes of weights before failing

def _or(given: Any, default: tuple[int, ...]) -> Any:
    """``given`` unless it is None or an empty list/tuple (take the preset's); other values go on to be checked."""
    return default if given is None or (isinstance(given, (list, tuple)) and not given) else given


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"`{name}` must be one of {set(choices)}. Received: {name}={value!r}")


def _in_range(name: str, value: Any, lo: float, hi: float, kind: type = float) -> None:
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    # NaN fails every comparison, so `not lo <= nan <= hi` refuses it; isnan says so explicitly
    if not ok_type or (isinstance(value, float) and math.isnan(value)) or not (lo <= value <= hi):
        raise ConfigError(f"`{name}` must be {'an integer' if kind is int else 'a finite number'} "
                          f"in [{lo}, {hi}]. Received: {name}={value!r}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):  # "false" from a hand-edited JSON would otherwise be truthy
        raise ConfigError(f"`{name}` must be true or false. Received: {name}={value!r}")


def _positive_tuple(name: str, value: Any, hi: int, max_len: int) -> tuple[int, ...]:
    """A non-empty list of integers in [1, hi]; floats (even 32.0), bools and strings are refused, never
    truncated."""
    what = f"`{name}` must be a non-empty list of at most {max_len} integers in [1, {hi}]"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what}. Received: {name}={value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 1 <= int(v) <= hi:
            raise ConfigError(f"{what}. Received: {name}={list(value)!r} (bad element {v!r})")
    if not value or len(value) > max_len:
        raise ConfigError(f"{what}. Received: {name}={list(value)!r}")
    return tuple(int(v) for v in value)


def _mapping(name: str, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"`{name}` must be a JSON object of field names and values. "
                          f"Received: a {type(data).__name__} ({_short(data)})")
    return data


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class _JsonMixin:
    """``to_dict`` / ``from_dict`` that reject unknown keys with a message naming them."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        data = _mapping(cls.__name__, data)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} got unknown field(s) {unknown}; known fields: {sorted(names)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class DataConfig(_JsonMixin):
    """Which faces to use and how to split them.

    Attributes:
        spec: ``synthetic``, ``synthetic:N``, a Kaggle-layout ``.csv``/``.csv.gz``/``.parquet`` file,
            a UTKFace image folder, or ``orl``.
            ``run:faces.npz`` names faces stored inside the run folder itself (a run trained on faces
            held in memory, see :func:`shared.api.train`).
        image_size: side of the square grayscale images (≥ 32).
        val_fraction / test_fraction: shares of the faces held out for validation and test.
        split_seed: seed of the stratified split.
        path: provenance, written at train time: the absolute path of a file or folder ``spec``
            (``""`` for synthetic, ORL and in-run faces), so a run still finds its faces after the
            working directory changes.
        fingerprint: provenance, written at train time: :func:`shared.data.content_fingerprint` of the
            loaded faces (sha256 hex, ``""`` when unknown), so faces found elsewhere are checked to be
            the run's own. ``path`` and ``fingerprint`` are not part of a config's identity: two
            configs that differ only in them compare equal. Configs saved before they existed load
            with both empty.
    """

    spec: str = "synthetic:4000"
    image_size: int = 48
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    path: str = field(default="", compare=False)
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec:
            raise ConfigError(f"`spec` must be a non-empty string. Received: spec={self.spec!r}")
        _in_range("image_size", self.image_size, 32, 512, int)
        _in_range("val_fraction", self.val_fraction, 0.0, 0.5)
        _in_range("test_fraction", self.test_fraction, 0.0, 0.5)
        _in_range("split_seed", self.split_seed, 0, 2**32 - 1, int)
        if not isinstance(self.path, str):
            raise ConfigError(f"`path` must be a string (an absolute path or empty). Received: path={self.path!r}")
        if not isinstance(self.fingerprint, str) or (self.fingerprint and not _is_sha256(self.fingerprint)):
            raise ConfigError(f"`fingerprint` must be empty or 64 lowercase hex digits (sha256). "
                              f"Received: fingerprint={_short(self.fingerprint)}")


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Architecture and loss of one model; ``channels``/``hidden_dims`` left empty take the preset's.

    Attributes:
        family: ``cnn`` (classifier/regressor), ``vae``, ``cvae`` (conditional) or ``iaf`` (flow posterior).
        preset: ``seed`` (the original work's layers) or ``default`` (ours); sets the block style.
        image_size: input side; must be divisible by 2**len(channels).
        channels: conv widths, integers in [1, 4096] (one stride-2 block each); hidden_dims: dense
            widths, at most 16 integers in [1, 65536]. Floats such as 32.0 are refused, not truncated.
        latent_dim, beta: VAE latent size, an integer in [1, 1024], and KL weight in [0, 1000].
        likelihood: ``bernoulli`` (BCE summed over pixels) or ``gaussian``; empty takes the preset's
            (``default``: gaussian, ``seed``: bernoulli; :data:`shared.presets.PRESET_LIKELIHOODS`).
        sigma_mode, sigma: Gaussian decoder σ, ``fixed`` at ``sigma`` or ``learned`` per image; an empty
            ``sigma_mode`` takes the preset's (``default``: learned, ``seed``: fixed).
        kl_warmup_epochs: β ramps linearly up to ``beta`` over this many epochs (0: off); see :meth:`beta_at`.
        free_bits: minimum KL per latent dimension in nats (0: off).
        task: CNN target (``gender``, ``ethnicity``, ``age`` or ``all`` = one trunk, three heads).
        flow_steps, flow_hidden: IAF steps and MADE hidden width.
        context_dim: size of the encoder context vector h fed to the IAF.
        label_loss: cvae only: weight, in nats, of label consistency (0: off): an auxiliary
            classifier trained on the real faces must recognise the requested labels in faces generated
            from the prior (:mod:`facevae_tf.label_consistency`); None takes the preset's
            (:data:`shared.presets.PRESET_LABEL_LOSS`: ``default`` 100, ``seed`` 0; 0 for other families).
    """

    family: str = "vae"
    preset: str = "default"
    image_size: int = 48
    latent_dim: int = 32
    beta: float = 1.0
    channels: tuple[int, ...] = ()
    hidden_dims: tuple[int, ...] = ()
    likelihood: str = ""
    sigma_mode: str = ""
    sigma: float = 0.1
    kl_warmup_epochs: int = 0
    free_bits: float = 0.0
    task: str = "gender"
    flow_steps: int = 4
    flow_hidden: int = 256
    context_dim: int = 64
    label_loss: Optional[float] = None

    def __post_init__(self) -> None:
        _choice("family", self.family, MODEL_FAMILIES)
        _choice("preset", self.preset, PRESETS)
        _in_range("image_size", self.image_size, 32, 512, int)
        _in_range("latent_dim", self.latent_dim, 1, 1024, int)
        _in_range("beta", self.beta, 0.0, 1000.0)
        likelihood, sigma_mode = preset_likelihood(self.preset)
        if self.likelihood in ("", None):
            object.__setattr__(self, "likelihood", likelihood)
        if self.sigma_mode in ("", None):
            object.__setattr__(self, "sigma_mode", sigma_mode)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("sigma_mode", self.sigma_mode, SIGMA_MODES)
        _in_range("sigma", self.sigma, 1e-4, 10.0)
        _in_range("kl_warmup_epochs", self.kl_warmup_epochs, 0, 10_000, int)
        _in_range("free_bits", self.free_bits, 0.0, 100.0)
        _choice("task", self.task, TASKS)
        _in_range("flow_steps", self.flow_steps, 0, 64, int)
        _in_range("flow_hidden", self.flow_hidden, 1, 8192, int)
        _in_range("context_dim", self.context_dim, 1, 8192, int)
        if self.label_loss is None:
            object.__setattr__(self, "label_loss", preset_label_loss(self.family, self.preset))
        _in_range("label_loss", self.label_loss, 0.0, 1e6)
        if self.label_loss > 0 and self.family != "cvae":
            raise ConfigError(f"`label_loss` is for the conditional VAE (family 'cvae'). "
                              f"Received: family={self.family!r}, label_loss={self.label_loss!r}")
        channels, hidden = preset_shape(self.family, self.preset)
        object.__setattr__(self, "channels", _positive_tuple("channels", _or(self.channels, channels),
                                                             MAX_CHANNELS, 9))
        object.__setattr__(self, "hidden_dims", _positive_tuple("hidden_dims", _or(self.hidden_dims, hidden),
                                                                MAX_HIDDEN, 16))
        stride = 2 ** len(self.channels)
        if self.image_size % stride:
            raise ConfigError(f"`image_size` must be divisible by 2**len(channels) = {stride} "
                              f"for channels={list(self.channels)}. Received: image_size={self.image_size}")

    def beta_at(self, epoch: int) -> float:
        """KL weight of training epoch ``epoch`` (0-based) under warm-up: ``β·min(1, (epoch+1)/(W+1))``.

        The ramp starts at ``β/(W+1)``, never at 0: with no KL pressure at all an unconstrained
        log-variance runs off to -inf within a few steps, and ``0·inf`` turns the loss into NaN.
        It reaches ``β`` at epoch ``W = kl_warmup_epochs``. Validation always uses ``β``.
        """
        w = self.kl_warmup_epochs
        return float(self.beta) * min(1.0, (epoch + 1) / (w + 1)) if w else float(self.beta)

    @property
    def label_dim(self) -> int:
        """Size of the label vector the model is conditioned on (0 unless ``cvae``)."""
        return LABEL_DIM if self.family == "cvae" else 0


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """How to train; independent of the model.

    Attributes:
        epochs, batch_size, lr, weight_decay, optimizer, schedule: the optimisation recipe.
        early_stopping: stop after this many epochs without a better validation loss (0: off).
        min_steps_per_epoch: on small data, shrink the batch (to no less than 8 faces) so that an epoch
            has at least this many optimiser steps (0: off); see :meth:`batch_size_for`.
        grad_clip: clip the global gradient norm to this value (0: off).
        input_noise: denoising VAE: during training the encoder sees clip(x + s·ε, 0, 1) with
            s ~ U(0, input_noise) per image and ε ~ N(0, 1) per pixel; the likelihood scores the clean x;
            validation, evaluation and inference see clean inputs; 0: off. In [0, 1]; generative
            families only. It may change on resume; configs saved before it existed load with 0.
        label_smoothing, augment: CNN recipe options (augment = random flips and small shifts).
        seed: seeds weights, batch order and sampling.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        compile: ``torch.compile`` (torch) / ``jit_compile`` (tf).
        tensorboard: also write TensorBoard event files (``tensorboard/`` in the run folder), same tags
            on both backends.
        precision: arithmetic of the training and validation steps: ``32`` (float32), ``bf16`` (bfloat16
            autocast on torch, a ``mixed_bfloat16`` policy on tf) or ``16`` (float16 with loss scaling; GPUs
            only, CPUs run it far slower than float32). Weights, losses and checkpoints stay float32, so a
            run may change precision on resume; evaluation and inference always run in float32. The
            integers 32 and 16 are taken as ``"32"`` and ``"16"``.
        devices: data-parallel replicas, an integer in [1, 64]. On the tf backend ``devices > 1`` trains
            under ``tf.distribute.MirroredStrategy`` (the GPUs when there are that many, else as many
            logical CPU devices); each global batch of ``batch_size`` faces is split across them, so the
            run computes what one device would, within float tolerance. torch runs on several GPUs are
            launched with ``torchrun`` instead (``devices`` stays 1 there). It does not change the model,
            so it may change on resume; configs saved before it existed load with 1.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "constant"
    early_stopping: int = 5
    min_steps_per_epoch: int = 0
    grad_clip: float = 0.0
    input_noise: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = False
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    tensorboard: bool = False
    precision: str = "32"
    devices: int = 1

    def __post_init__(self) -> None:
        if type(self.precision) is int and str(self.precision) in PRECISIONS:  # precision=16 from Python or JSON
            object.__setattr__(self, "precision", str(self.precision))
        _choice("precision", self.precision, PRECISIONS)
        _in_range("epochs", self.epochs, 1, 100_000, int)
        _in_range("batch_size", self.batch_size, 1, 1_000_000, int)
        _in_range("lr", self.lr, 0.0, 10.0)
        _in_range("weight_decay", self.weight_decay, 0.0, 10.0)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _in_range("early_stopping", self.early_stopping, 0, 100_000, int)
        _in_range("grad_clip", self.grad_clip, 0.0, 1e6)
        _in_range("input_noise", self.input_noise, 0.0, 1.0)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 0.99)
        _in_range("seed", self.seed, 0, 2**32 - 1, int)
        _choice("device", self.device, DEVICES)
        _in_range("min_steps_per_epoch", self.min_steps_per_epoch, 0, 100_000, int)
        _bool("augment", self.augment)
        _bool("compile", self.compile)
        _bool("tensorboard", self.tensorboard)
        _in_range("devices", self.devices, 1, MAX_DEVICES, int)

    def batch_size_for(self, n_train: int) -> int:
        """The batch size used on ``n_train`` training faces.

        ``batch_size``, at most ``n_train``; with ``min_steps_per_epoch`` the batch shrinks on small data
        so an epoch still takes that many steps, but never below 8 faces (BatchNorm needs a few).
        """
        bs = max(1, min(self.batch_size, n_train))
        if self.min_steps_per_epoch:
            bs = min(bs, max(_MIN_AUTO_BATCH, n_train // self.min_steps_per_epoch))
        return bs

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of ``lr`` in ``epoch`` (0-based), shared by both backends (:mod:`shared.training`).

        ``constant``: 1; ``cosine``: ½(1 + cos(π·epoch/epochs)); ``seed``: 1/(1 + epoch), the original recipe.
        """
        if self.schedule == "seed":
            return 1.0 / (1.0 + epoch)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        return 1.0


@dataclass(frozen=True)
class RunConfig(_JsonMixin):
    """Everything that defines a run; saved as ``config.json`` in the run folder."""

    backend: str = "torch"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        _choice("backend", self.backend, BACKENDS)
        if self.model.image_size != self.data.image_size:
            raise ConfigError(f"`model.image_size` ({self.model.image_size}) must equal "
                              f"`data.image_size` ({self.data.image_size})")
        if self.backend == "torch" and self.model.family in ("cvae", "iaf"):
            raise ConfigError(f"`family` {self.model.family!r} exists only on the tf backend. "
                              f"Received: backend='torch', family={self.model.family!r}")
        if self.backend == "torch" and self.train.devices > 1:
            raise ConfigError(f"`devices` > 1 is for the tf backend; train torch on {self.train.devices} GPUs by "
                              f"launching `torchrun --nproc_per_node={self.train.devices} -m facevae train ...` "
                              f"(with devices 1). Received: backend='torch', devices={self.train.devices}")
        if self.model.family == "cnn" and self.train.input_noise > 0:
            raise ConfigError(f"`input_noise` is for the generative families (vae, cvae, iaf). "
                              f"Received: family='cnn', input_noise={self.train.input_noise!r}")
        if self.backend == "tf" and self.model.family == "cnn":
            raise ConfigError("`family` 'cnn' exists only on the torch backend. Received: backend='tf'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        data = dict(_mapping("config", data))
        unknown = sorted(set(data) - {"backend", "model", "train", "data"})
        if unknown:
            raise ConfigError(f"RunConfig got unknown field(s) {unknown}")
        return cls(backend=data.get("backend", "torch"),
                   model=ModelConfig.from_dict(_mapping("model", data.get("model", {}))),
                   train=TrainConfig.from_dict(_mapping("train", data.get("train", {}))),
                   data=DataConfig.from_dict(_mapping("data", data.get("data", {}))))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # ValueError: also a number of thousands of digits
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        from shared.io import atomic_write_text
        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; expected a JSON config") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def default_train_config(family: str, preset: str, **overrides: Any) -> TrainConfig:
    """The recipe of ``(family, preset)`` (cvae/iaf use the vae recipe), with ``overrides`` applied."""
    _choice("family", family, MODEL_FAMILIES)
    _choice("preset", preset, PRESETS)
    recipe = dict(TRAIN_RECIPES[("cnn" if family == "cnn" else "vae", preset)])
    given = {k: v for k, v in overrides.items() if v is not None}
    if "batch_size" in given:  # a batch size the user chose is used as given
        recipe["min_steps_per_epoch"] = 0
    recipe.update(given)
    return TrainConfig.from_dict(recipe)
