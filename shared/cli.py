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
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from shared.cli_common import command, figure_flags, given, out_folder, print_result
from shared.cli_options import (SEED, HelpFormatter, Parser, add_config_flags, bounded_int, config_from_args,
                                floats, ints, resume_arguments)
from shared.cli_studio import add_studio_commands
from shared.cli_text import evaluate_summary, examples, one_line, os_error_text, version_text
from shared.errors import ConfigError, FaceVAEError
from shared.inference import MAX_REFINE_STEPS

__all__ = ["main", "build_parser"]

_MAX_JOBS = 256  # worker processes of a sweep (shared.sweep_jobs.MAX_JOBS)
_MAX_IWAE_K = 10_000  # importance samples per face; a typo such as 1000000 would only exhaust memory
_DESCRIPTION = """\
Convolutional VAEs on faces, in PyTorch (--backend torch) and TensorFlow (--backend tf).
Every command is a thin layer over a Python function of the same name; `facevae COMMAND --help`
lists its flags with their defaults and a few examples. Flags left unset keep the value of
--config FILE when one is given, else the recipe of --model/--preset."""


# --------------------------------------------------------------------------- commands

def _cmd_inspect(a: argparse.Namespace) -> None:
    from shared.data import inspect
    print(json.dumps(inspect(a.spec, image_size=a.image_size), indent=2))


def _cmd_convert_data(a: argparse.Namespace) -> None:
    from shared.data import convert
    print(f"wrote: {convert(a.src, a.dest, image_size=a.image_size)}")


def _cmd_train(a: argparse.Namespace) -> None:
    from shared import distributed
    from shared.api import train
    from shared.registry import require_backend

    out_folder(a.out)
    verbose = not a.quiet
    if a.resume:
        from shared.runs import load_run_config

        saved = load_run_config(a.out)  # a folder that is not a run is refused here, as by train()
        run = train(None, a.out, resume=True, verbose=verbose, **resume_arguments(a, saved))
    else:
        config = config_from_args(a, default_backend=a.default_backend)
        require_backend(config.backend)  # before any data is read or folder created
        run = train(config, a.out, verbose=verbose)
    if distributed.is_writer():  # under torchrun every rank returns the run; rank 0 alone wrote it
        print(f"wrote: {run}")


def _cmd_sweep(a: argparse.Namespace) -> None:
    from shared.registry import require_backend
    from shared.sweep import report, sweep
    from shared.sweep_jobs import parse_shard

    out_folder(a.out)
    if a.report:
        if a.shard is not None or a.jobs != 1 or a.batched:
            raise ConfigError("--report trains nothing: give it --out (and --format/--dpi) only, "
                              "without --jobs, --shard or --batched")
        print_result(report(a.out, **given(fmt=a.format, dpi=a.dpi)))
        return
    shard = None if a.shard is None else parse_shard(a.shard)  # before any data is read
    base = config_from_args(a, default_backend=a.default_backend, latent_dim=a.latent_dims[0])
    if a.batched:  # before the framework check: --batched on tf is refused whether tf is installed or not
        from shared.sweep_batched import check_batched
        check_batched(base, a.jobs, shard)
    require_backend(base.backend)
    result = sweep(base, a.out, latent_dims=a.latent_dims, betas=a.betas, jobs=a.jobs, shard=shard,
                   batched=a.batched, **given(fmt=a.format, dpi=a.dpi))
    if shard is None:
        print_result(result)
    else:
        print(f"shard {shard[0]}/{shard[1]} done ({len(result.table)} of {result.info['grid_points']} grid points); "
              f"run `facevae sweep --report --out {a.out}` when all shards have finished")


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from shared.api import evaluate

    result = evaluate(a.run_dir, iwae_k=a.iwae_k, classifier=a.classifier, seed=a.seed, refine_steps=a.refine_steps,
                      **given(data=a.data, run_data=a.run_data))
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(evaluate_summary(result, result.get("written_to") or Path(a.run_dir) / "eval.json"))


# --------------------------------------------------------------------------- parser

class _Version(argparse.Action):
    """``--version``: computed only when asked (it reads package metadata)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version of facevae and of each backend's frameworks, then exit")

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        print(version_text())  # stdout, as argparse's own version action (exit() would write to stderr)
        parser.exit(0)


def _data_commands(sub: Any) -> None:
    group = command(sub, "data", "inspect or convert face data",
                    more=" `facevae data COMMAND --help` shows a command's flags and their defaults.")
    data = group.add_subparsers(dest="data_command", metavar="{inspect,convert}")
    group.set_defaults(func=lambda a: group.print_help())
    p = command(data, "inspect", "summary of a data set", key="data inspect")
    p.add_argument("spec", help="synthetic[:N], a Kaggle-layout .csv/.csv.gz/.parquet, a UTKFace folder, or orl")
    p.add_argument("--image-size", type=int, default=48, help="side the faces are resized to")
    p.set_defaults(func=_cmd_inspect)
    p = command(data, "convert", "UTKFace folder / CSV / parquet -> Kaggle layout", key="data convert")
    p.add_argument("src", help="a data SPEC, as for `data inspect`")
    p.add_argument("dest", help="output .csv, .csv.gz or .parquet")
    p.add_argument("--image-size", type=int, default=48, help="side the faces are resized to")
    p.set_defaults(func=_cmd_convert_data)


def _model_commands(sub: Any) -> None:
    p = command(sub, "train", "train one model into a run folder",
                more="\nFlags left unset keep the value of --config FILE when one is given, else the default shown.")
    add_config_flags(p)
    p.add_argument("--out", required=True, help="the run folder (new, empty, or the run to --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; training flags given with it "
                        "(e.g. --epochs 40) change the run, --data points at its faces when they moved")
    p.add_argument("-q", "--quiet", action="store_true", help="no epoch lines and no progress bar")
    p.set_defaults(func=_cmd_train)

    p = command(sub, "sweep", "train a latent-size x beta grid and compare",
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
    figure_flags(p, data=False)
    p.set_defaults(func=_cmd_sweep)

    p = command(sub, "evaluate", "metrics of a run on its test split")
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
    p.add_argument("--refine-steps", type=bounded_int(0, MAX_REFINE_STEPS), default=0, metavar="N",
                   help=f"generative runs: also the PSNR/SSIM after N (0-{MAX_REFINE_STEPS}) MAP steps on z "
                        "(semi-amortized; N decoder passes per face); 0 skips it")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON instead of the summary")
    p.set_defaults(func=_cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The ``facevae`` argument parser (every command, with defaults and examples in its help)."""
    parser = Parser(prog="facevae", description=_DESCRIPTION, epilog=examples("facevae"),
                    formatter_class=HelpFormatter)
    parser.add_argument("--version", action=_Version)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _data_commands(sub)
    _model_commands(sub)
    add_studio_commands(sub)
    parser.set_defaults(func=lambda a: parser.print_help())
    return parser


def _configure_logging(verbose: bool) -> None:
    """Log records on stderr: INFO (DEBUG with ``-v``) in the process that writes, WARNING elsewhere.

    Under ``torchrun`` the ranks other than 0 would repeat rank 0's INFO lines, so they log warnings
    and errors only (``-v`` still gives every rank's DEBUG records). TensorFlow's own INFO records
    (device placement: some 15 ``Reduce to /device:CPU:0`` lines for ``--devices 2``) are kept
    below WARNING unless ``-v``. Only the CLI does this: the library never configures logging.
    """
    from shared import distributed

    try:
        writer = distributed.is_writer()
    except FaceVAEError:  # a malformed RANK/WORLD_SIZE: the command that uses them says so (exit 2)
        writer = True
    level = logging.DEBUG if verbose else logging.INFO if writer else logging.WARNING
    root = logging.getLogger()
    theirs = list(root.handlers)  # a host's handlers (a notebook, pytest's capture) are not ours to filter
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("tensorflow").setLevel(logging.NOTSET if verbose else logging.WARNING)
    for handler in root.handlers:  # the epoch line is printed already: its DEBUG copy is for log files
        if handler not in theirs:
            handler.addFilter(_not_the_printed_epoch_line)


def _not_the_printed_epoch_line(record: logging.LogRecord) -> bool:
    return not (record.name == "shared.event_log" and record.funcName == "report_epoch")


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
    _configure_logging(args.verbose)
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
