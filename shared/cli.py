"""The ``facevae`` command line: a thin layer over public Python functions.

``facevae``, ``python -m facevae`` and ``python -m facevae_tf`` (the tf backend by default) all run
:func:`main`. Every user error (:class:`shared.errors.FaceVAEError`, a bad flag, a missing framework)
becomes one ``facevae: error: ...`` line on stderr and exit code 2. Frameworks are imported only by
the commands that need them, so ``--help`` and ``--version`` stay fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from shared.cli_options import (SEED, HelpFormatter, Parser, add_config_flags, bounded_int, config_from_args,
                                floats, ints, resume_arguments)
from shared.cli_text import evaluate_summary, examples, one_line, os_error_text, result_lines, version_text
from shared.errors import ConfigError, FaceVAEError

__all__ = ["main", "build_parser"]

_MAX_JOBS = 256  # worker processes of a sweep (shared.sweep_jobs.MAX_JOBS)
_MAX_IWAE_K = 10_000  # importance samples per face; a typo such as 1000000 would only exhaust memory
_DESCRIPTION = """\
Convolutional VAEs on faces, in PyTorch (--backend torch) and TensorFlow (--backend tf).
Every command is a thin layer over a Python function of the same name; `facevae COMMAND --help`
lists its flags with their defaults and a few examples. Flags left unset keep the value of
--config FILE when one is given, else the recipe of --model/--preset."""


def _out_folder(path: str, flag: str = "--out") -> None:
    """Refuse an output folder that is, or sits under, a file before any work (data loading) is done."""
    p = Path(path).expanduser()
    for candidate in (p, *p.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                raise ConfigError(f"{flag} {path}: {candidate} exists and is not a folder; choose a folder path")
            return


def _print(result: Any, *, table: bool = True) -> None:
    for line in result_lines(result, table=table):
        print(line)


def _given(**options: Any) -> dict[str, Any]:
    """Only the options the user gave: functions keep their own defaults for the rest."""
    return {k: v for k, v in options.items() if v is not None}


def _figure_options(a: argparse.Namespace) -> dict[str, Any]:
    return _given(fmt=a.format, dpi=a.dpi, data=getattr(a, "data", None))


# --------------------------------------------------------------------------- commands

def _cmd_inspect(a: argparse.Namespace) -> None:
    from shared.data import inspect
    print(json.dumps(inspect(a.spec, image_size=a.image_size), indent=2))


def _cmd_convert_data(a: argparse.Namespace) -> None:
    from shared.data import convert
    print(f"wrote: {convert(a.src, a.dest, image_size=a.image_size)}")


def _cmd_train(a: argparse.Namespace) -> None:
    from shared.api import train
    from shared.registry import require_backend

    _out_folder(a.out)
    verbose = not a.quiet
    if a.resume:
        from shared.runs import load_run_config

        saved = load_run_config(a.out)  # a folder that is not a run is refused here, as by train()
        run = train(None, a.out, resume=True, verbose=verbose, **resume_arguments(a, saved))
    else:
        config = config_from_args(a, default_backend=a.default_backend)
        require_backend(config.backend)  # before any data is read or folder created
        run = train(config, a.out, verbose=verbose)
    print(f"wrote: {run}")


def _cmd_sweep(a: argparse.Namespace) -> None:
    from shared.registry import require_backend
    from shared.sweep import report, sweep
    from shared.sweep_jobs import parse_shard

    _out_folder(a.out)
    if a.report:
        if a.shard is not None or a.jobs != 1 or a.batched:
            raise ConfigError("--report trains nothing: give it --out (and --format/--dpi) only, "
                              "without --jobs, --shard or --batched")
        _print(report(a.out, **_given(fmt=a.format, dpi=a.dpi)))
        return
    shard = None if a.shard is None else parse_shard(a.shard)  # before any data is read
    base = config_from_args(a, default_backend=a.default_backend, latent_dim=a.latent_dims[0])
    if a.batched:  # before the framework check: --batched on tf is refused whether tf is installed or not
        from shared.sweep_batched import check_batched
        check_batched(base, a.jobs, shard)
    require_backend(base.backend)
    result = sweep(base, a.out, latent_dims=a.latent_dims, betas=a.betas, jobs=a.jobs, shard=shard,
                   batched=a.batched, **_given(fmt=a.format, dpi=a.dpi))
    if shard is None:
        _print(result)
    else:
        print(f"shard {shard[0]}/{shard[1]} done ({len(result.table)} of {result.info['grid_points']} grid points); "
              f"run `facevae sweep --report --out {a.out}` when all shards have finished")


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from shared.api import evaluate

    result = evaluate(a.run_dir, iwae_k=a.iwae_k, classifier=a.classifier, seed=a.seed,
                      **_given(data=a.data, run_data=a.run_data))
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(evaluate_summary(result, result.get("written_to") or Path(a.run_dir) / "eval.json"))


def _cmd_interpolate(a: argparse.Namespace) -> None:
    from shared.studio import interpolate
    _print(interpolate(a.run_dir, grid=a.grid, slerp=a.slerp, corners=a.corners, seed=a.seed, **_figure_options(a)),
           table=False)


def _cmd_denoise(a: argparse.Namespace) -> None:
    from shared.studio import denoise
    _print(denoise(a.run_dir, sigmas=a.sigmas, n=a.n, seed=a.seed, **_figure_options(a)))


def _cmd_inpaint(a: argparse.Namespace) -> None:
    from shared.studio import inpaint
    _print(inpaint(a.run_dir, mask=a.mask, method=a.method, n=a.n, seed=a.seed, iterations=a.iterations,
                   steps=a.steps, **_figure_options(a)))


def _cmd_generate(a: argparse.Namespace) -> None:
    from shared.conditional import attribute_grid, edit_attributes, generate
    wanted = [a.gender, a.ethnicity, a.age]
    options = _figure_options(a)
    if any(v is not None for v in wanted) or not (a.grid or a.edit):
        if any(v is None for v in wanted):
            raise ConfigError("generate needs --gender, --ethnicity and --age (or only --grid / --edit N)")
        _print(generate(a.run_dir, gender=a.gender, ethnicity=a.ethnicity, age=a.age, n=a.n, seed=a.seed, **options),
               table=False)
    if a.grid:
        _print(attribute_grid(a.run_dir, seed=a.seed, **options), table=False)
    if a.edit:
        _print(edit_attributes(a.run_dir, n=a.edit, seed=a.seed, **options), table=False)


def _cmd_convert_run(a: argparse.Namespace) -> None:
    from shared.api import convert
    from shared.config import BACKENDS
    from shared.registry import require_backend
    from shared.runs import load_run_config

    _out_folder(a.out_dir, "OUT_DIR")
    source = load_run_config(a.run_dir).backend
    to = a.to or next(b for b in BACKENDS if b != source)
    require_backend(source)
    require_backend(to)
    print(f"wrote: {convert(a.run_dir, to=to, out=a.out_dir)}")


def _block() -> None:
    """Wait until Ctrl-C (KeyboardInterrupt); the explorer serves from its own thread meanwhile."""
    while True:
        time.sleep(3600)


def _cmd_explore(a: argparse.Namespace) -> None:
    from shared.explorer import server

    if not server.is_loopback(a.host):
        print(f"facevae: warning: --host {a.host} lets other machines reach the explorer, which has no "
              "authentication: anyone who can connect can use the model and upload images", file=sys.stderr)
    # the lines printed here replace the server's own INFO/WARNING records of the same events (-v keeps them)
    quiet, level = not a.verbose, server.log.level
    if quiet:
        server.log.setLevel(logging.ERROR)
    try:
        try:
            explorer = server.Explorer(a.run_dir, host=a.host, port=a.port, data=a.data).start()
        except OSError as exc:
            if exc.filename is not None:  # a file of the run, not the socket: the generic one-line message
                raise
            raise ConfigError(f"cannot listen on --host {a.host} --port {a.port}: {exc.strerror or exc} "
                              "(--port 0 picks a free port)") from None
        print(f"explorer running at {explorer.url}  (Ctrl-C stops)", flush=True)
        try:
            _block()
        except KeyboardInterrupt:  # the way to stop it: a clean exit, not an interruption
            pass
        finally:
            explorer.stop()
        print("explorer stopped", flush=True)
    finally:
        if quiet:
            server.log.setLevel(level)


def _cmd_demo(a: argparse.Namespace) -> None:
    from shared.demo import demo
    _out_folder(a.out)
    _print(demo(a.out, quick=a.quick))


# --------------------------------------------------------------------------- parser

class _Version(argparse.Action):
    """``--version``: computed only when asked (it reads package metadata)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version of facevae and of each backend's frameworks, then exit")

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        print(version_text())  # stdout, as argparse's own version action (exit() would write to stderr)
        parser.exit(0)


def _command(sub: Any, name: str, text: str, *, key: Optional[str] = None,
             more: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + "." + more,
                          epilog=examples(key or name), formatter_class=HelpFormatter)


def _figure_flags(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    p.add_argument("--format", choices=("png", "pdf", "svg"), default=None, help="figure format (default: png)")
    p.add_argument("--dpi", type=bounded_int(10, 1200), default=None, metavar="N",
                   help="figure resolution, 10-1200 (default: 100)")
    if data:
        p.add_argument("--data", metavar="SPEC", default=None,
                       help="where the run's faces are now, when they moved (default: the run's own data spec)")


def _data_commands(sub: Any) -> None:
    group = _command(sub, "data", "inspect or convert face data",
                     more=" `facevae data COMMAND --help` shows a command's flags and their defaults.")
    data = group.add_subparsers(dest="data_command", metavar="{inspect,convert}")
    group.set_defaults(func=lambda a: group.print_help())
    p = _command(data, "inspect", "summary of a data set", key="data inspect")
    p.add_argument("spec", help="synthetic[:N], a Kaggle-layout .csv/.csv.gz/.parquet, a UTKFace folder, or orl")
    p.add_argument("--image-size", type=int, default=48, help="side the faces are resized to")
    p.set_defaults(func=_cmd_inspect)
    p = _command(data, "convert", "UTKFace folder / CSV / parquet -> Kaggle layout", key="data convert")
    p.add_argument("src", help="a data SPEC, as for `data inspect`")
    p.add_argument("dest", help="output .csv, .csv.gz or .parquet")
    p.add_argument("--image-size", type=int, default=48, help="side the faces are resized to")
    p.set_defaults(func=_cmd_convert_data)


def _model_commands(sub: Any) -> None:
    p = _command(sub, "train", "train one model into a run folder",
                 more="\nFlags left unset keep the value of --config FILE when one is given, else the default shown.")
    add_config_flags(p)
    p.add_argument("--out", required=True, help="the run folder (new, empty, or the run to --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; training flags given with it "
                        "(e.g. --epochs 40) change the run, --data points at its faces when they moved")
    p.add_argument("-q", "--quiet", action="store_true", help="no epoch lines and no progress bar")
    p.set_defaults(func=_cmd_train)

    p = _command(sub, "sweep", "train a latent-size x beta grid and compare",
                 more="\nEvery grid point copies the base config (--config and the flags) with latent_dim and beta "
                      "replaced.")
    add_config_flags(p, skip=("latent_dim", "beta"))
    p.add_argument("--out", required=True, help="the sweep folder (one run folder per grid point)")
    p.add_argument("--latent-dims", type=ints, default=(4, 16, 64, 256), metavar="N,N",
                   help="latent sizes (default: 4,16,64,256)")
    p.add_argument("--betas", type=floats, default=(0.01, 0.1, 1.0, 4.0), metavar="B,B",
                   help="KL weights (default: 0.01,0.1,1,4)")
    p.add_argument("--jobs", type=bounded_int(1, _MAX_JOBS), default=1, metavar="N",
                   help="train N grid points at once in N processes, each with cores/N threads (default: 1)")
    p.add_argument("--batched", action="store_true",
                   help="train every beta of a latent size at once as one vectorised model (torch only; the same "
                        "run folders and, up to float rounding, the same numbers; not with --jobs)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="train only the grid points whose index %% N == I (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/8, "
                        "and write no table; then run --report (default: the whole grid)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write the table and figures of every finished run in --out "
                        "(after the shards) and list the missing points")
    _figure_flags(p, data=False)
    p.set_defaults(func=_cmd_sweep)

    p = _command(sub, "evaluate", "metrics of a run on its test split")
    p.add_argument("run_dir", help="a run folder")
    p.add_argument("--data", metavar="SPEC", default=None,
                   help="evaluate every face of SPEC instead of the test split (written to eval_<name>.json; "
                        "default: the run's test split, written to eval.json)")
    p.add_argument("--run-data", metavar="SPEC", default=None,
                   help="where the run's own faces are now, when they moved (default: the run's data spec)")
    p.add_argument("--iwae-k", type=bounded_int(1, _MAX_IWAE_K), default=64, metavar="K",
                   help=f"importance samples per face (1-{_MAX_IWAE_K})")
    p.add_argument("--classifier", metavar="CNN_RUN", default=None,
                   help="a torch CNN run folder for the Frechet distance / label fidelity (default: none)")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds every sampled quantity")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON instead of the summary")
    p.set_defaults(func=_cmd_evaluate)


def _studio_commands(sub: Any) -> None:
    p = _command(sub, "interpolate", "latent interpolation matrix and traversals")
    p.add_argument("run_dir", help="a generative run folder")
    p.add_argument("--grid", type=int, default=9, help="faces per side of the matrix (2-64)")
    p.add_argument("--slerp", action="store_true", help="spherical interpolation instead of linear")
    p.add_argument("--corners", choices=("sample", "encode"), default="sample",
                   help="corners drawn from the prior, or encoded test faces")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="chooses the corners")
    _figure_flags(p)
    p.set_defaults(func=_cmd_interpolate)

    p = _command(sub, "denoise", "VAE vs mean/median filters on noisy test faces")
    p.add_argument("run_dir", help="a generative run folder")
    p.add_argument("--sigmas", type=floats, default=(0.1, 0.2, 0.3, 0.5), metavar="S,S",
                   help="noise levels (default: 0.1,0.2,0.3,0.5)")
    p.add_argument("--n", type=int, default=256, help="test faces used")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds the noise")
    _figure_flags(p)
    p.set_defaults(func=_cmd_denoise)

    p = _command(sub, "inpaint", "fill masked regions of test faces")
    p.add_argument("run_dir", help="a generative run folder")
    p.add_argument("--mask", choices=("box", "random"), default="box", help="what is hidden")
    p.add_argument("--method", choices=("decode", "iterate", "optimize"), default="iterate",
                   help="one-shot decode, iterative projection, or latent optimisation")
    p.add_argument("--iterations", type=int, default=50, help="projection rounds of --method iterate")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps of --method optimize")
    p.add_argument("--n", type=int, default=256, help="test faces used")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds the masks")
    _figure_flags(p)
    p.set_defaults(func=_cmd_inpaint)

    p = _command(sub, "generate", "faces with requested labels (conditional models)")
    p.add_argument("run_dir", help="a cvae run folder")
    p.add_argument("--gender", type=int, choices=(0, 1), help="0 male, 1 female")
    p.add_argument("--ethnicity", type=int, choices=range(5), help="0 White, 1 Black, 2 Asian, 3 Indian, 4 Others")
    p.add_argument("--age", type=float, help="years")
    p.add_argument("--n", type=int, default=16, help="faces generated")
    p.add_argument("--grid", action="store_true", help="also the attribute grid (ethnicity x age band, per gender)")
    p.add_argument("--edit", type=bounded_int(0, 1024), default=0, metavar="N",
                   help="also edit the labels of N (0-1024) real test faces")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds the latent draw")
    _figure_flags(p)
    p.set_defaults(func=_cmd_generate)

    p = _command(sub, "convert", "move a vae run's weights to the other backend")
    p.add_argument("run_dir", help="a trained vae run folder")
    p.add_argument("--to", choices=("torch", "tf"), default=None,
                   help="target backend (default: the other backend than the run's)")
    p.add_argument("out_dir", help="the new run folder (must not exist)")
    p.set_defaults(func=_cmd_convert_run)

    p = _command(sub, "explore", "the latent explorer: a local web page to play with a generative run",
                 more="\nPrints the page's URL and serves it until Ctrl-C. The page has no authentication:\n"
                      "keep the default --host unless every machine that can reach it may use it.")
    p.add_argument("run_dir", help="a generative run folder (vae, cvae or iaf, either backend)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=0, metavar="P",
                   help="TCP port, 0-65535; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1", metavar="H",
                   help="address to listen on; other than 127.0.0.1/localhost/::1 it is reachable from other "
                        "machines (a warning is printed)")
    p.add_argument("--data", metavar="SPEC", default=None,
                   help="where the run's faces are now, when they moved (default: the run's own data spec)")
    p.set_defaults(func=_cmd_explore)

    p = _command(sub, "demo", "the main job on the embedded synthetic faces")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``facevae`` argument parser (every command, with defaults and examples in its help)."""
    parser = Parser(prog="facevae", description=_DESCRIPTION, epilog=examples("facevae"),
                    formatter_class=HelpFormatter)
    parser.add_argument("--version", action=_Version)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _data_commands(sub)
    _model_commands(sub)
    _studio_commands(sub)
    parser.set_defaults(func=lambda a: parser.print_help())
    return parser


def main(argv: Optional[Sequence[str]] = None, *, default_backend: Optional[str] = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 interrupted; Ctrl-C stops ``explore``: 0).

    Bad flags, :class:`~shared.errors.FaceVAEError`, a missing framework and :class:`OSError` (a file
    in the way, a full disk, a missing permission) each become one ``facevae: error: ...`` line and
    exit code 2. ``facevae`` alone prints the help.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        default_backend: the backend of new runs when neither ``--backend`` nor ``--config`` names one
            (``python -m facevae_tf`` passes ``"tf"``); else ``$FACEVAE_BACKEND``, else torch.
    """
    from shared.registry import missing_framework

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one line (or --help / --version)
        return exc.code if isinstance(exc.code, int) else 2
    args.default_backend = default_backend
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except FaceVAEError as exc:
        print(f"facevae: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a framework imported outside the registry (e.g. by convert)
        error = missing_framework(exc)
        if error is None:
            raise
        print(f"facevae: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"facevae: error: {one_line(os_error_text(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facevae: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
