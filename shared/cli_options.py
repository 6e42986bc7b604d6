"""Option parsing of the ``facevae`` CLI: argument types, the help format and the config flags.

Every field of :class:`~shared.config.ModelConfig`, :class:`~shared.config.TrainConfig` and
:class:`~shared.config.DataConfig` gets a flag, derived from ``dataclasses.fields`` so that a new
field cannot be forgotten (:func:`add_config_flags`). Each flag defaults to ``None`` ("not given"):
a flag left unset keeps the value of ``--config FILE`` when one is given, else the preset's recipe.
Values are checked by the configs themselves (a :class:`~shared.errors.ConfigError` becomes exit 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from shared.config import (BACKENDS, DEVICES, LIKELIHOODS, MODEL_FAMILIES, OPTIMIZERS, PRECISIONS, PRESETS,
                           SCHEDULES, SIGMA_MODES, TASKS, DataConfig, ModelConfig, RunConfig, TrainConfig,
                           default_train_config, preset_shape)
from shared.errors import ConfigError
from shared.presets import PRESET_LABEL_LOSS

__all__ = ["Parser", "HelpFormatter", "FieldFlag", "CONFIG_FLAGS", "NOT_FLAGS", "SECTIONS", "add_config_flags",
           "given_fields", "config_from_args", "resume_arguments", "floats", "ints", "integer", "bounded_int",
           "SEED"]

# str.isdigit() is True for '²', which int() refuses, and int() takes other scripts' digits: ASCII only
_INT = re.compile(r"[+-]?[0-9]+")


class Parser(argparse.ArgumentParser):
    """argparse with one ``facevae: error: ...`` line instead of the usage block (exit 2 as usual)."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.partition(" ")[2]
        self.exit(2, f"facevae: error: {f'{sub}: ' if sub else ''}{message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written (raw epilog) and every flag's default shown.

    A flag whose help already says its default (flags that default to "not given") is left alone;
    on/off switches say ``(default: off)``.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"


# --------------------------------------------------------------------------- argument types

def _items(text: str, kind: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind} with no empty item, got {text!r}")
    return items


def floats(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated numbers (ranges are checked by the function that uses them)."""
    items = _items(text, "numbers")
    try:
        return tuple(float(t) for t in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated plain integers (``1e3`` and ``4.0`` are refused)."""
    items = _items(text, "integers")
    if not all(_INT.fullmatch(t) for t in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return tuple(int(t) for t in items)


def integer(text: str) -> int:
    """An argparse type: one plain integer; its range is checked by the config."""
    if not _INT.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(text)


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a plain integer in ``[lo, hi]``."""
    def parse(text: str) -> int:
        t = text.strip()
        if not _INT.fullmatch(t) or not lo <= int(t) <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}-{hi}, got {text!r}")
        return int(t)
    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


SEED = bounded_int(0, 2**32 - 1)  # what numpy's generators accept


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# --------------------------------------------------------------------------- config flags

@dataclasses.dataclass(frozen=True)
class FieldFlag:
    """The flag of one config field: ``--<flag>`` sets ``<section>.<field>``."""

    section: str   # "run", "model", "train" or "data"
    field: str
    flag: str
    help: str


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
# fields whose flag is not --field-name: both sides of the first one are the contract in DESIGN.md
_FLAG_NAMES = {"family": "--model", "spec": "--data"}
# fields that are deliberately not flags, with the reason (a test checks every other field has one)
NOT_FLAGS: dict[str, str] = {
    "path": "provenance that train() records (the data's absolute path), not a setting",
    "fingerprint": "provenance that train() records (the faces' content hash), not a setting",
}
_CHOICES: dict[str, tuple] = {"backend": BACKENDS, "family": MODEL_FAMILIES, "preset": PRESETS, "task": TASKS,
                              "likelihood": LIKELIHOODS, "sigma_mode": SIGMA_MODES, "optimizer": OPTIMIZERS,
                              "schedule": SCHEDULES, "device": DEVICES, "precision": PRECISIONS}
_HELP: dict[str, str] = {
    "backend": "framework (default: $FACEVAE_BACKEND, else torch; `python -m facevae_tf`: tf)",
    "family": "model: cnn (classifier, torch), vae, cvae (conditional, tf), iaf (flow posterior, tf)",
    "preset": "layers and recipe: seed = the original work's, default = ours",
    "image_size": "side of the square grayscale faces; divisible by 2**len(channels)",
    "latent_dim": "VAE latent size",
    "beta": "KL weight",
    "channels": "conv widths, comma-separated, one stride-2 block each, e.g. 8,16",
    "hidden_dims": "dense widths, comma-separated, e.g. 32",
    "likelihood": "decoder likelihood: bernoulli (BCE summed over pixels) or gaussian",
    "sigma_mode": "gaussian decoder sigma: fixed at --sigma or learned per image",
    "sigma": "fixed gaussian decoder sigma",
    "kl_warmup_epochs": "beta ramps up linearly over this many epochs (0: off)",
    "free_bits": "minimum KL per latent dimension in nats (0: off)",
    "task": "CNN target (all: one trunk, three heads)",
    "flow_steps": "IAF steps (iaf)",
    "flow_hidden": "IAF MADE hidden width (iaf)",
    "context_dim": "size of the encoder context vector fed to the IAF (iaf)",
    "label_loss": "cvae: weight (nats) of label consistency: an auxiliary classifier trained on the real faces "
                  "must recognise the requested labels in generated faces (0: off)",
    "epochs": "training epochs",
    "batch_size": "faces per optimiser step",
    "lr": "learning rate",
    "weight_decay": "weight decay (decoupled for adamw)",
    "optimizer": "optimiser",
    "schedule": "learning-rate schedule: constant, cosine, or seed = lr/(1+epoch)",
    "early_stopping": "stop after this many epochs without a better validation loss (0: off)",
    "min_steps_per_epoch": "on small data shrink the batch (to >= 8) so an epoch has this many steps (0: off)",
    "grad_clip": "clip the global gradient norm to this value (0: off)",
    "input_noise": "denoising VAE: max σ of the Gaussian noise added to encoder inputs in training (0: off)",
    "label_smoothing": "CNN label smoothing",
    "augment": "CNN: random flips and small shifts",
    "seed": "seeds weights, batch order and sampling",
    "device": "auto = CUDA when present",
    "compile": "torch.compile (torch) / jit_compile (tf)",
    "tensorboard": "also write TensorBoard event files into RUN/tensorboard/",
    "precision": "training arithmetic: 32 (float32), bf16 (bfloat16 autocast; CUDA or a CPU with avx512_bf16/AMX) "
                 "or 16 (float16 + loss scaling, GPU only); weights and checkpoints stay float32",
    "devices": "tf: train data-parallel on N devices (tf.distribute; N GPUs, else N logical CPU devices), "
               "each batch split across them; torch: launch torchrun --nproc_per_node=N instead",
    "spec": "faces: synthetic[:N], a Kaggle-layout .csv/.csv.gz/.parquet, a UTKFace image folder, or orl",
    "val_fraction": "share of the faces held out for validation",
    "test_fraction": "share of the faces held out for the test split",
    "split_seed": "seed of the stratified split",
}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _train_default(name: str) -> str:
    """The recipe values of a training field, collapsed when every recipe agrees."""
    values = {(fam, pre): _show(getattr(default_train_config(fam, pre), name))
              for pre in ("default", "seed") for fam in ("vae", "cnn")}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    text = f"vae {values['vae', 'default']}, cnn {values['cnn', 'default']}"
    seed = {values["vae", "seed"], values["cnn", "seed"]}
    return text + (f"; --preset seed: {seed.pop()}" if len(seed) == 1 else
                   f"; --preset seed: vae {values['vae', 'seed']}, cnn {values['cnn', 'seed']}")


def _default_text(section: str, f: dataclasses.Field) -> str:
    if f.name == "backend":
        return ""  # said in its help
    if f.name in ("channels", "hidden_dims"):
        i = 0 if f.name == "channels" else 1
        return (f"the preset's: vae {_show(preset_shape('vae', 'default')[i])}, "
                f"cnn {_show(preset_shape('cnn', 'default')[i])}")
    if section == "train":
        return _train_default(f.name)
    if f.name == "label_loss":
        return (f"{_show(PRESET_LABEL_LOSS['default'])} for a cvae of --preset default, "
                f"{_show(PRESET_LABEL_LOSS['seed'])} for seed and other models")
    return _show(f.default)


def _config_flags() -> tuple[FieldFlag, ...]:
    flags: dict[str, FieldFlag] = {}
    fields = [("run", f) for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS]
    fields += [(section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    for section, f in fields:
        if f.name in NOT_FLAGS or f.name in flags:  # image_size is one flag for model and data
            continue
        default = _default_text(section, f)
        text = _HELP.get(f.name, f"{section}.{f.name}")
        flags[f.name] = FieldFlag(section, f.name, _FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-")),
                                  f"{text} (default: {default})" if default else text)
    return tuple(flags.values())


CONFIG_FLAGS: tuple[FieldFlag, ...] = _config_flags()
_BY_FIELD = {f.field: f for f in CONFIG_FLAGS}


def _field_type(name: str) -> Optional[Callable[[str], Any]]:
    """The argparse type of a field, from its annotation (a string: config.py uses postponed annotations)."""
    for cls in (RunConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            if f.name == name:
                kind = str(f.type)
                if kind.startswith("tuple"):
                    return ints
                return {"int": integer, "float": _float, "Optional[float]": _float, "bool": None}.get(kind, str)
    raise KeyError(name)


def add_config_flags(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Add ``--config FILE`` and one flag per config field (all defaulting to ``None``: not given).

    Args:
        parser: the ``train`` or ``sweep`` parser.
        skip: field names the command sets itself (``sweep`` sets ``latent_dim`` and ``beta``).
    """
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="start from this RunConfig JSON (e.g. another run's config.json, or its run folder); "
                             "flags given on the command line override it (default: none)")
    groups = {s: parser.add_argument_group(f"{s} settings" if s != "run" else "backend")
              for s in ("run", "model", "train", "data")}
    for flag in CONFIG_FLAGS:
        if flag.field in skip:
            continue
        kind = _field_type(flag.field)
        kw: dict[str, Any] = dict(dest=flag.field, default=None, help=flag.help)
        if kind is None:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = kind
            if flag.field in _CHOICES:
                kw["choices"] = _CHOICES[flag.field]
            elif flag.field == "spec":
                kw["metavar"] = "SPEC"
            else:
                kw["metavar"] = {ints: "N,N", integer: "N", _float: "X"}.get(kind, flag.field.upper())
        groups[flag.section].add_argument(flag.flag, **kw)


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line (flags left at ``None`` were not given)."""
    return {f.field: getattr(args, f.field) for f in CONFIG_FLAGS
            if getattr(args, f.field, None) is not None}


def _load_config_file(path: str) -> RunConfig:
    p = Path(path).expanduser()
    return RunConfig.load(p / "config.json" if p.is_dir() else p)


def _override(base: RunConfig, given: Mapping[str, Any]) -> RunConfig:
    """``base`` with the given fields replaced; each section is validated again by its own checks."""
    parts: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for name, value in given.items():
        if name == "image_size":
            parts["model"][name] = parts["data"][name] = value
        elif name != "backend":
            parts[_BY_FIELD[name].section][name] = value
    if "batch_size" in parts["train"] and "min_steps_per_epoch" not in parts["train"]:
        parts["train"]["min_steps_per_epoch"] = 0  # a batch size the user chose is used as given
    return RunConfig(backend=given.get("backend", base.backend),
                     **{s: dataclasses.replace(getattr(base, s), **kw) for s, kw in parts.items()})


def config_from_args(args: argparse.Namespace, *, default_backend: Optional[str] = None,
                     **fixed: Any) -> RunConfig:
    """The :class:`RunConfig` of ``train``/``sweep`` flags.

    Precedence: a flag given on the command line, then the ``--config`` file, then ``default_backend``
    (``python -m facevae_tf``) / ``$FACEVAE_BACKEND`` for the backend and the preset's recipe for the rest.

    Args:
        args: the parsed flags.
        default_backend: the program's backend when neither ``--backend`` nor the file names one.
        fixed: fields the command sets itself (e.g. ``latent_dim`` of a sweep's first grid point).

    Raises:
        ConfigError: a value is out of range (the message names the field).
    """
    from shared.api import build_config

    given = {**given_fields(args), **fixed}
    if args.config:
        return _override(_load_config_file(args.config), given)
    backend = given.pop("backend", None) or default_backend
    return build_config(backend=backend, model=given.pop("family", "vae"), data=given.pop("spec", "synthetic:4000"),
                        image_size=given.pop("image_size", 48), **given)


def _saved_value(saved: RunConfig, flag: FieldFlag) -> Any:
    return saved.backend if flag.section == "run" else getattr(getattr(saved, flag.section), flag.field)


def resume_arguments(args: argparse.Namespace, saved: RunConfig) -> dict[str, Any]:
    """Keyword arguments of ``train(..., resume=True)`` from the flags given with ``--resume``.

    Training fields go into ``updates`` (the run is extended, e.g. ``--epochs 40``); ``--data`` points
    at the run's faces when they moved. Backend, model and data flags may be repeated with the run's
    own values (the command that started the run, plus ``--resume``), never changed.

    Args:
        args: the parsed ``train`` flags.
        saved: the config of the run being resumed.

    Raises:
        ConfigError: ``--config`` was given, or a backend, model or data flag differs from the run's value.
    """
    given = given_fields(args)
    if args.config:
        raise ConfigError("--config cannot be used with --resume: a resumed run keeps its saved config; "
                          "give only the training flags to change (e.g. --epochs 40)")
    changed = [f"{flag.flag} {_show(given[flag.field])} (the run has {_show(_saved_value(saved, flag))})"
               for flag in CONFIG_FLAGS if flag.field in given and flag.section != "train" and flag.field != "spec"
               and given[flag.field] != _saved_value(saved, flag)]
    if changed:
        raise ConfigError(f"{'; '.join(changed)}: the backend, model and data of a run cannot change on --resume; "
                          f"only training flags such as --epochs or --lr can (train a new run for the rest)")
    kwargs: dict[str, Any] = {}
    updates = {n: v for n, v in given.items() if _BY_FIELD[n].section == "train"}
    if updates:
        kwargs["updates"] = updates
    if "spec" in given:
        kwargs["data"] = given["spec"]
    return kwargs
