"""Latency of the latent explorer over HTTP: p50 / p95 / max per endpoint, and the 50 ms decode target.

Trains (or takes ``--run DIR``) the DEFAULT model — ``vae``, default preset, 48×48, d = 32 — on
``synthetic:2000`` for one epoch (enough for latency: the weights do not change the work), starts
the explorer on an ephemeral port and sends, from one client over one keep-alive connection (as a
browser does), N = 300 ``/api/decode`` requests of one face (its latent nudged along one dimension
each time, as a slider does) and 100 each of ``/api/matrix`` (n = 9), ``/api/denoise`` and
``/api/inpaint`` (box mask, iterate: 30 rounds). The client runs in the server's process, so its
own work shares the interpreter with the server: the figures are an upper bound of what a browser
sees. The bare protocol call (``model.decode`` of one face) is timed too, to show the HTTP share.

    .venv/bin/python benchmarks/explorer_latency.py                   # torch
    .venv/bin/python benchmarks/explorer_latency.py --backend tf
    .venv/bin/python benchmarks/explorer_latency.py --run runs/vae32 --n 300

Prints a markdown table and writes ``latency_<backend>.md`` / ``.json`` (and the trained run, under
``runs/``) into ``--out`` (default ``benchmarks/results/explorer/``, git-ignored).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS = 50.0


def default_run(backend: str, out: Path, data: str) -> Path:
    """The default vae trained for one epoch into ``out/runs/<backend>_vae`` (reused when already there)."""
    from shared import api
    from shared.runs import has_any_checkpoint

    run = out / "runs" / f"{backend}_vae"
    if run.is_dir() and has_any_checkpoint(run):
        print(f"reusing {run}", flush=True)
        return run
    config = api.build_config(backend=backend, model="vae", data=data, image_size=48, latent_dim=32,
                              preset="default", epochs=1)
    started = time.perf_counter()
    api.train(config, run, verbose=False)
    print(f"trained {run} in {time.perf_counter() - started:.0f} s", flush=True)
    return run


def timed(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[float, bytes]:
    """Milliseconds of one POST (request sent to response fully read) and the response body."""
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    ms = 1000 * (time.perf_counter() - t0)
    if resp.status != 200:
        raise SystemExit(f"{path} answered {resp.status}: {payload[:300]!r}")
    return ms, payload


def summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("torch", "tf"), default="torch")
    p.add_argument("--run", type=Path, help="a trained generative run (default: train the default vae)")
    p.add_argument("--data", default="synthetic:2000", help="training data when no --run is given")
    p.add_argument("--n", type=int, default=300, help="decode requests (default 300)")
    p.add_argument("--n-other", type=int, default=100, help="requests of each other endpoint (default 100)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "explorer")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run or default_run(args.backend, args.out, args.data)
    from shared.explorer import Explorer
    from shared.studio import reference_labels

    load = os.getloadavg()
    with Explorer(run) as ex:
        session = ex.session
        backend, dim = session.config.backend, session.dim
        conn = http.client.HTTPConnection("127.0.0.1", ex.port, timeout=60)
        _, raw = timed(conn, "/api/encode", {"face": 0})
        z = [float(x) for x in json.loads(raw)["z"]]
        top = session.dims[0]["dim"]
        corners = np.random.default_rng(0).standard_normal((4, dim)).round(4).tolist()
        requests = {
            "/api/decode": (args.n, lambda k: {"z": [*z[:top], min(3.0, max(-3.0, z[top] + (k % 61 - 30) / 10)),
                                                     *z[top + 1:]]}),
            "/api/matrix (n=9)": (args.n_other, lambda k: {"corners": corners, "n": 9}),
            "/api/denoise": (args.n_other, lambda k: {"face": k % session.faces.images.shape[0], "sigma": 0.3,
                                                      "seed": k}),
            "/api/inpaint (iterate)": (args.n_other, lambda k: {"face": k % session.faces.images.shape[0],
                                                                "mask": "box", "method": "iterate"}),
        }
        results = {}
        one, labels = np.asarray(z, np.float32)[None], reference_labels(session.model, 1)
        bare = []
        for _ in range(args.n):  # the protocol call alone, for the share of HTTP in /api/decode
            t0 = time.perf_counter()
            session.model.decode(one, labels)
            bare.append(1000 * (time.perf_counter() - t0))
        for name, (count, body) in requests.items():
            path = name.split()[0]
            for k in range(5):  # warm-up: TF traces each new batch shape once
                timed(conn, path, body(k))
            results[name] = summary([timed(conn, path, body(k))[0] for k in range(count)])
            print(f"{name}: p50 {results[name]['p50']:.1f} ms  p95 {results[name]['p95']:.1f} ms", flush=True)
        conn.close()
        results["model.decode (no HTTP)"] = summary(bare)

    decode_p95 = results["/api/decode"]["p95"]
    threads = None
    if backend == "torch":
        import torch
        threads = torch.get_num_threads()
    info = {"backend": backend, "run": str(run), "family": session.config.model.family, "latent_dim": dim,
            "image_size": session.size, "cpus": os.cpu_count(), "torch_threads": threads,
            "load_average_before": [round(x, 2) for x in load], "load_average_after":
            [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "decode_p95_ms": decode_p95, "target_ms": TARGET_MS, "meets_target": decode_p95 <= TARGET_MS,
            "results": results}
    rows = [f"| {name} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} |" for name, r in results.items()]
    md = "\n".join([
        f"# Explorer latency — {backend} {session.config.model.family}, {session.size}×{session.size}, d={dim}",
        "",
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) before the "
        f"run{f', torch threads {threads}' if threads else ''}; one client, one keep-alive connection.",
        "",
        "| endpoint | requests | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"decode p95 {decode_p95:.1f} ms ≤ {TARGET_MS:.0f} ms: {'yes' if decode_p95 <= TARGET_MS else 'NO'}",
    ])
    print("\n" + md)
    (args.out / f"latency_{backend}.md").write_text(md + "\n", encoding="utf-8")
    (args.out / f"latency_{backend}.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out / f'latency_{backend}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
