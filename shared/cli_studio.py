"""The ``facevae`` commands that work on a trained run: figures, convert, explore, and the demo.

``interpolate``, ``denoise``, ``inpaint``, ``generate``, ``convert``, ``explore`` and ``demo``:
their handlers and parsers; :mod:`shared.cli` adds them to the ``facevae`` parser
(:func:`add_studio_commands`). Each handler is a thin call of the public function of the same name.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from shared.cli_common import command, figure_flags, figure_options, out_folder, print_result
from shared.cli_options import SEED, bounded_int, floats
from shared.errors import ConfigError
from shared.inference import MAX_REFINE_STEPS
from shared.inpainting import METHODS

__all__ = ["add_studio_commands"]


def _cmd_interpolate(a: argparse.Namespace) -> None:
    from shared.studio import interpolate
    print_result(interpolate(a.run_dir, grid=a.grid, slerp=a.slerp, corners=a.corners, seed=a.seed,
                             **figure_options(a)), table=False)


def _cmd_denoise(a: argparse.Namespace) -> None:
    from shared.studio import denoise
    print_result(denoise(a.run_dir, sigmas=a.sigmas, n=a.n, seed=a.seed, refine_steps=a.refine_steps,
                         blend_pca=a.blend_pca, **figure_options(a)))


def _cmd_inpaint(a: argparse.Namespace) -> None:
    from shared.studio import inpaint
    print_result(inpaint(a.run_dir, mask=a.mask, method=a.method, n=a.n, seed=a.seed, iterations=a.iterations,
                         steps=a.steps, **figure_options(a)))


def _cmd_generate(a: argparse.Namespace) -> None:
    from shared.conditional import attribute_grid, edit_attributes, generate
    wanted = [a.gender, a.ethnicity, a.age]
    options = figure_options(a)
    if any(v is not None for v in wanted) or not (a.grid or a.edit):
        if any(v is None for v in wanted):
            raise ConfigError("generate needs --gender, --ethnicity and --age (or only --grid / --edit N)")
        print_result(generate(a.run_dir, gender=a.gender, ethnicity=a.ethnicity, age=a.age, n=a.n, seed=a.seed,
                              temperature=a.temperature, **options), table=False)
    if a.grid:
        print_result(attribute_grid(a.run_dir, seed=a.seed, temperature=a.temperature, **options), table=False)
    if a.edit:
        print_result(edit_attributes(a.run_dir, n=a.edit, seed=a.seed, **options), table=False)


def _cmd_convert_run(a: argparse.Namespace) -> None:
    from shared.config import BACKENDS
    from shared.convert import convert
    from shared.registry import require_backend
    from shared.runs import load_run_config

    out_folder(a.out_dir, "OUT_DIR")
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
    out_folder(a.out)
    print_result(demo(a.out, quick=a.quick))


# --------------------------------------------------------------------------- parser

def add_studio_commands(sub: Any) -> None:
    """Add the studio commands (figures, convert, explore, demo) to the sub-command parsers ``sub``."""
    p = command(sub, "interpolate", "latent interpolation matrix and traversals")
    p.add_argument("run_dir", help="a generative run folder")
    p.add_argument("--grid", type=int, default=9, help="faces per side of the matrix (2-64)")
    p.add_argument("--slerp", action="store_true", help="spherical interpolation instead of linear")
    p.add_argument("--corners", choices=("sample", "encode"), default="sample",
                   help="corners drawn from the prior, or encoded test faces")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="chooses the corners")
    figure_flags(p)
    p.set_defaults(func=_cmd_interpolate)

    p = command(sub, "denoise", "VAE vs mean/median filters on noisy test faces")
    p.add_argument("run_dir", help="a generative run folder")
    p.add_argument("--sigmas", type=floats, default=(0.1, 0.2, 0.3, 0.5), metavar="S,S",
                   help="noise levels (default: 0.1,0.2,0.3,0.5)")
    p.add_argument("--n", type=int, default=256, help="test faces used")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds the noise")
    p.add_argument("--refine-steps", type=bounded_int(0, MAX_REFINE_STEPS), default=0, metavar="N",
                   help=f"also vae_refined: z refined by N (0-{MAX_REFINE_STEPS}) Adam steps on the noisy face "
                        "(semi-amortized; N decoder passes); 0 skips it")
    p.add_argument("--blend-pca", action="store_true",
                   help="also vae+pca: the VAE blended with PCA projection, PCA fitted on the run's training "
                        "faces, the blend tuned per σ on its validation faces (best on real faces at σ ≥ 0.2)")
    figure_flags(p)
    p.set_defaults(func=_cmd_denoise)

    p = command(sub, "inpaint", "fill masked regions of test faces")
    p.add_argument("run_dir", help="a generative run folder")
    p.add_argument("--mask", choices=("box", "random"), default="box", help="what is hidden")
    p.add_argument("--method", choices=METHODS, default="iterate",
                   help="one-shot decode, iterative projection, latent optimisation, or hybrid (latent "
                        "optimisation + biharmonic continuation of its error on the known pixels)")
    p.add_argument("--iterations", type=int, default=50, help="projection rounds of --method iterate")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps of --method optimize and hybrid")
    p.add_argument("--n", type=int, default=256, help="test faces used")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds the masks")
    figure_flags(p)
    p.set_defaults(func=_cmd_inpaint)

    p = command(sub, "generate", "faces with requested labels (conditional models)")
    p.add_argument("run_dir", help="a cvae run folder")
    p.add_argument("--gender", type=int, choices=(0, 1), help="0 male, 1 female")
    p.add_argument("--ethnicity", type=int, choices=range(5), help="0 White, 1 Black, 2 Asian, 3 Indian, 4 Others")
    p.add_argument("--age", type=float, help="years")
    p.add_argument("--n", type=int, default=16, help="faces generated")
    p.add_argument("--grid", action="store_true", help="also the attribute grid (ethnicity x age band, per gender)")
    p.add_argument("--edit", type=bounded_int(0, 1024), default=0, metavar="N",
                   help="also edit the labels of N (0-1024) real test faces")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seeds the latent draw")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="scales the prior draw (faces and --grid), T in (0, 1]: lower shows the requested labels "
                        "more clearly and varies less (default 1)")
    figure_flags(p)
    p.set_defaults(func=_cmd_generate)

    p = command(sub, "convert", "move a vae run's weights to the other backend")
    p.add_argument("run_dir", help="a trained vae run folder")
    p.add_argument("--to", choices=("torch", "tf"), default=None,
                   help="target backend (default: the other backend than the run's)")
    p.add_argument("out_dir", help="the new run folder (must not exist)")
    p.set_defaults(func=_cmd_convert_run)

    p = command(sub, "explore", "the latent explorer: a local web page to play with a generative run",
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

    p = command(sub, "demo", "the main job on the embedded synthetic faces")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    p.set_defaults(func=_cmd_demo)
