"""The ``facevae`` command line: a thin layer over public Python functions.

Every user error (:class:`shared.errors.FaceVAEError`) becomes one line on stderr and exit code 2.
Frameworks are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from shared.errors import ConfigError, FaceVAEError

__all__ = ["main", "build_parser"]

_MAX_IWAE_K = 10_000  # importance samples per face; a typo such as 1000000 would only exhaust memory
# str.isdigit() is True for '²', which int() refuses, and int() takes other scripts' digits: ASCII only
_INT = re.compile(r"[+-]?[0-9]+")


class _Parser(argparse.ArgumentParser):
    """argparse with one ``facevae: error: ...`` line instead of the usage block (exit 2 as usual)."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.partition(" ")[2]
        self.exit(2, f"facevae: error: {f'{sub}: ' if sub else ''}{message} (see '{self.prog} --help')\n")


def _items(text: str, kind: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind} with no empty item, got {text!r}")
    return items


def _floats(text: str) -> tuple[float, ...]:
    items = _items(text, "numbers")
    try:
        return tuple(float(t) for t in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    items = _items(text, "integers")
    if not all(_INT.fullmatch(t) for t in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return tuple(int(t) for t in items)


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a plain integer in ``[lo, hi]``."""
    def parse(text: str) -> int:
        t = text.strip()
        if not _INT.fullmatch(t) or not lo <= int(t) <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}-{hi}, got {text!r}")
        return int(t)
    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


_SEED = _bounded_int(0, 2**32 - 1)  # what numpy's generators accept


def _out_folder(path: str, flag: str = "--out") -> None:
    """Refuse an output folder that is, or sits under, a file before any work (data loading) is done."""
    p = Path(path).expanduser()
    for candidate in (p, *p.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                raise ConfigError(f"{flag} {path}: {candidate} exists and is not a folder; choose a folder path")
            return


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("torch", "tf"), default=None,
                   help="framework (default: $FACEVAE_BACKEND, else torch)")
    p.add_argument("--model", choices=("cnn", "vae", "cvae", "iaf"), default="vae")
    p.add_argument("--task", choices=("gender", "ethnicity", "age", "all"), default=None, help="CNN target")
    p.add_argument("--data", default="synthetic:4000", help="data SPEC (default: synthetic:4000)")
    p.add_argument("--preset", choices=("default", "seed"), default=None)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="training seed")
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None)
    p.add_argument("--sigma-mode", choices=("fixed", "learned"), default=None)
    p.add_argument("--kl-warmup-epochs", type=int, default=None)
    p.add_argument("--free-bits", type=float, default=None)
    p.add_argument("--flow-steps", type=int, default=None, help="IAF steps (iaf)")
    p.add_argument("--early-stopping", type=int, default=None, help="patience in epochs (0: off)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile / XLA jit_compile")


def _config_kwargs(a: argparse.Namespace) -> dict:
    return dict(backend=a.backend, model=a.model, data=a.data, image_size=a.image_size, preset=a.preset,
                task=a.task, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                split_seed=a.split_seed, beta=a.beta, likelihood=a.likelihood, sigma_mode=a.sigma_mode,
                kl_warmup_epochs=a.kl_warmup_epochs, free_bits=a.free_bits, flow_steps=a.flow_steps,
                early_stopping=a.early_stopping, device=a.device, compile=a.compile)


def _cmd_inspect(a: argparse.Namespace) -> None:
    from shared.data import inspect
    print(json.dumps(inspect(a.spec, image_size=a.image_size), indent=2))


def _cmd_convert_data(a: argparse.Namespace) -> None:
    from shared.data import convert
    print(f"wrote {convert(a.src, a.dest, image_size=a.image_size)}")


def _cmd_train(a: argparse.Namespace) -> None:
    from shared.api import build_config, train
    _out_folder(a.out)
    if a.resume:
        run = train(None, a.out, resume=True)  # type: ignore[arg-type]
    else:
        run = train(build_config(latent_dim=a.latent_dim, **_config_kwargs(a)), a.out)
    print(f"run written to {run}")


def _cmd_sweep(a: argparse.Namespace) -> None:
    from shared.api import build_config
    from shared.sweep import sweep
    _out_folder(a.out)
    base = build_config(latent_dim=a.latent_dims[0], **_config_kwargs(a))  # sweep() checks every grid value
    print(f"sweep written to {sweep(base, a.out, latent_dims=a.latent_dims, betas=a.betas)}")


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from shared.api import evaluate
    result = evaluate(a.run_dir, data=a.data, iwae_k=a.iwae_k, classifier=a.classifier, seed=a.seed)
    print(json.dumps(result, indent=2))
    print(f"metrics written to {Path(a.run_dir) / 'eval.json'}")


def _cmd_interpolate(a: argparse.Namespace) -> None:
    from shared.studio import interpolate
    print(f"figures written to {interpolate(a.run_dir, grid=a.grid, slerp=a.slerp, corners=a.corners, seed=a.seed)}")


def _cmd_denoise(a: argparse.Namespace) -> None:
    from shared.studio import denoise
    print(f"results written to {denoise(a.run_dir, sigmas=a.sigmas, n=a.n, seed=a.seed)}")


def _cmd_inpaint(a: argparse.Namespace) -> None:
    from shared.studio import inpaint
    out = inpaint(a.run_dir, mask=a.mask, method=a.method, n=a.n, seed=a.seed, iterations=a.iterations, steps=a.steps)
    print(f"results written to {out}")


def _cmd_generate(a: argparse.Namespace) -> None:
    from shared.conditional import attribute_grid, edit_attributes, generate
    wanted = [a.gender, a.ethnicity, a.age]
    if any(v is not None for v in wanted) or not (a.grid or a.edit):
        if any(v is None for v in wanted):
            raise ConfigError("generate needs --gender, --ethnicity and --age (or only --grid / --edit N)")
        print(f"faces written to {generate(a.run_dir, gender=a.gender, ethnicity=a.ethnicity, age=a.age, n=a.n, seed=a.seed)}")
    if a.grid:
        print(f"attribute grids written to {attribute_grid(a.run_dir, seed=a.seed)}")
    if a.edit:
        print(f"attribute edits written to {edit_attributes(a.run_dir, n=a.edit, seed=a.seed)}")


def _cmd_convert_run(a: argparse.Namespace) -> None:
    from shared.api import convert
    _out_folder(a.out_dir, "OUT_DIR")
    print(f"converted run written to {convert(a.run_dir, to=a.to, out=a.out_dir)}")


def _cmd_demo(a: argparse.Namespace) -> None:
    from shared.demo import demo
    _out_folder(a.out)
    print(f"demo outputs written to {demo(a.out, quick=a.quick)}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="facevae", description="Convolutional VAEs on faces (PyTorch and TensorFlow).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect or convert face data").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("inspect", help="summary of a data set")
    p.add_argument("spec", help="synthetic[:N], a Kaggle-layout .csv/.csv.gz/.parquet, a UTKFace folder, or orl")
    p.add_argument("--image-size", type=int, default=48)
    p.set_defaults(func=_cmd_inspect)
    p = data.add_parser("convert", help="UTKFace folder / CSV / parquet -> Kaggle layout")
    p.add_argument("src")
    p.add_argument("dest", help="output .csv, .csv.gz or .parquet")
    p.add_argument("--image-size", type=int, default=48)
    p.set_defaults(func=_cmd_convert_data)

    p = sub.add_parser("train", help="train one model into a run folder")
    _add_model_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="train a latent-size x beta grid and compare")
    _add_model_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--latent-dims", type=_ints, default=(4, 16, 64, 256))
    p.add_argument("--betas", type=_floats, default=(0.01, 0.1, 1.0, 4.0))
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("evaluate", help="metrics of a run on its test split")
    p.add_argument("run_dir")
    p.add_argument("--data", default=None, help="evaluate every face of this SPEC instead of the test split")
    p.add_argument("--iwae-k", type=_bounded_int(1, _MAX_IWAE_K), default=64,
                   help=f"importance samples per face (1-{_MAX_IWAE_K})")
    p.add_argument("--classifier", default=None, help="a torch CNN run folder")
    p.add_argument("--seed", type=_SEED, default=0)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("interpolate", help="latent interpolation matrix and traversals")
    p.add_argument("run_dir")
    p.add_argument("--grid", type=int, default=9)
    p.add_argument("--slerp", action="store_true")
    p.add_argument("--corners", choices=("sample", "encode"), default="sample")
    p.add_argument("--seed", type=_SEED, default=0)
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser("denoise", help="VAE vs mean/median filters on noisy test faces")
    p.add_argument("run_dir")
    p.add_argument("--sigmas", type=_floats, default=(0.1, 0.2, 0.3, 0.5))
    p.add_argument("--n", type=int, default=256, help="test faces used")
    p.add_argument("--seed", type=_SEED, default=0)
    p.set_defaults(func=_cmd_denoise)

    p = sub.add_parser("inpaint", help="fill masked regions of test faces")
    p.add_argument("run_dir")
    p.add_argument("--mask", choices=("box", "random"), default="box")
    p.add_argument("--method", choices=("decode", "iterate", "optimize"), default="iterate")
    p.add_argument("--iterations", type=int, default=50, help="projection rounds of --method iterate")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps of --method optimize")
    p.add_argument("--n", type=int, default=256, help="test faces used")
    p.add_argument("--seed", type=_SEED, default=0)
    p.set_defaults(func=_cmd_inpaint)

    p = sub.add_parser("generate", help="faces with requested labels (conditional models)")
    p.add_argument("run_dir")
    p.add_argument("--gender", type=int, choices=(0, 1), help="0 male, 1 female")
    p.add_argument("--ethnicity", type=int, choices=range(5), help="0 White, 1 Black, 2 Asian, 3 Indian, 4 Others")
    p.add_argument("--age", type=float, help="years")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--grid", action="store_true", help="also the attribute grid (ethnicity x age band, per gender)")
    p.add_argument("--edit", type=_bounded_int(0, 1024), default=0, metavar="N",
                   help="also edit the labels of N (0-1024) real test faces")
    p.add_argument("--seed", type=_SEED, default=0)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("convert", help="move a run's weights to the other backend")
    p.add_argument("run_dir")
    p.add_argument("--to", choices=("torch", "tf"), required=True)
    p.add_argument("out_dir")
    p.set_defaults(func=_cmd_convert_run)

    p = sub.add_parser("demo", help="the main job on the embedded synthetic faces")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 interrupted).

    Bad flags, :class:`~shared.errors.FaceVAEError` and :class:`OSError` (a file in the way, a full
    disk, a missing permission) each become one ``facevae: error: ...`` line and exit code 2.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one line (or --help)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except FaceVAEError as exc:
        print(f"facevae: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"facevae: error: {_one_line(_os_message(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facevae: interrupted", file=sys.stderr)
        return 130
    return 0


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(paths)}: {what}" if paths else what


def _one_line(text: str) -> str:
    """The message on one printable line: control characters and stray bytes from data are escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text.replace("\n", " "))


if __name__ == "__main__":
    sys.exit(main())
