"""Data-loading benchmark: vectorised + cached loader vs the naive per-row parse.

Measures ``shared.data.load`` cold (empty cache) and cached (second load) on
``../shared/data/age_gender_part1.csv.gz`` (8,818 rows) and on a 23,705-row file (the public
Kaggle file's size) built by repeating those rows under /tmp, gzipped and plain (the public Kaggle
file is a plain CSV), beside the naive parse ``pd.read_csv`` + ``np.array(s.split(' '))`` per row.
Also the floor no parser can beat: reading the bytes, and inflating the gzip (``gzip.decompress``
and the loader's block-wise ``zlib``). Optionally the UTKFace JPEG folder too.

    .venv/bin/python benchmarks/data_load.py [--repeats 3] [--no-folder]

Prints a Markdown table of wall-clock seconds and of this process's CPU seconds (all threads; on a
machine shared with other jobs the CPU time is the better guide to the unloaded wall time); targets: 23.7 k rows cold <= 3 s
and >= 10x faster than the naive parse, cached <= 0.2 s.
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.data import load_with_report  # noqa: E402
from shared.runs import atomic_write_bytes  # noqa: E402

REAL = Path(os.environ.get("FACEVAE_REAL_DATA", REPO.parent / "shared" / "data"))
BIG_ROWS = 23_705


def naive_load(path: Path) -> np.ndarray:
    """The seed notebooks' parse: one Python split per row."""
    df = pd.read_csv(path)
    return np.stack([np.array(s.split(" "), dtype=np.uint8) for s in df["pixels"]]).reshape(len(df), 48, 48)


def build_big(src: Path, dest: Path, rows: int = BIG_ROWS) -> Path:
    """``rows`` data rows made by repeating the rows of ``src`` (gzip level 1 to keep building quick)."""
    if dest.is_file():
        return dest
    lines = gzip.decompress(src.read_bytes()).decode().splitlines()
    header, data = lines[0], lines[1:]
    body = [data[i % len(data)] for i in range(rows)]
    atomic_write_bytes(dest, gzip.compress(("\n".join([header, *body]) + "\n").encode(), compresslevel=1))
    return dest


def build_plain(src: Path, dest: Path) -> Path:
    """The uncompressed twin of the gzipped ``src`` (the public Kaggle file is a plain CSV)."""
    if not dest.is_file():
        atomic_write_bytes(dest, gzip.decompress(src.read_bytes()))
    return dest


def floor(big_gz: Path, big_csv: Path, repeats: int) -> dict:
    """Seconds (wall, CPU) that no parser can beat: reading, hashing (the cache key) and inflating the bytes."""
    from shared.data.cache import digest_file
    from shared.data.kaggle import _read_bytes
    return {"read .csv": timed(big_csv.read_bytes, repeats)[:2],
            "cache key: SHA-256 of the .csv": timed(lambda: digest_file(big_csv), repeats)[:2],
            "cache key: SHA-256 of the .csv.gz": timed(lambda: digest_file(big_gz), repeats)[:2],
            "read .csv.gz": timed(big_gz.read_bytes, repeats)[:2],
            "gzip.decompress": timed(lambda: gzip.decompress(big_gz.read_bytes()), repeats)[:2],
            "zlib blocks (loader)": timed(lambda: _read_bytes(big_gz, ".csv.gz"), repeats)[:2]}


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU seconds (this process, all threads) of ``repeats`` calls."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu, out


def bench(spec: Path, repeats: int, naive: bool) -> dict:
    cache_root = Path(tempfile.mkdtemp(prefix="facevae-bench-cache-"))
    try:
        def cold():
            shutil.rmtree(cache_root, ignore_errors=True)
            os.environ["FACEVAE_CACHE"] = str(cache_root)
            faces, info = load_with_report(str(spec))
            assert info["cache_hit"] is False
            return faces

        def cached():
            faces, info = load_with_report(str(spec))
            assert info["cache_hit"] is True
            return faces

        t_cold, c_cold, faces = timed(cold, repeats)
        t_cached, c_cached, again = timed(cached, repeats)
        assert np.array_equal(faces.images, again.images)
        t_naive = c_naive = None
        if naive:
            t_naive, c_naive, ref = timed(lambda: naive_load(spec), 1)
            assert np.array_equal(ref, faces.images), "vectorised parse differs from the naive parse"
        return {"n": len(faces), "cold": t_cold, "cached": t_cached, "naive": t_naive,
                "cold_cpu": c_cold, "cached_cpu": c_cached, "naive_cpu": c_naive}
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="best of N for cold and cached loads")
    p.add_argument("--no-folder", action="store_true", help="skip the UTKFace JPEG folder")
    p.add_argument("--workdir", default="/tmp/facevae-bench", help="where the 23,705-row file is built")
    a = p.parse_args()
    from shared.synthetic import generate_faces
    start = time.perf_counter()
    generate_faces(10_000, 48, seed=0)
    print(f"synthetic faces: 10,000 at 48x48 generated in {time.perf_counter() - start:.2f} s (target well under 10 s)")
    csv = REAL / "age_gender_part1.csv.gz"
    if not csv.is_file():
        print(f"real data not found at {REAL}; nothing to benchmark", file=sys.stderr)
        return 1
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    big = build_big(csv, work / f"age_gender_{BIG_ROWS}.csv.gz")
    plain = build_plain(big, work / f"age_gender_{BIG_ROWS}.csv")
    rows = [("age_gender_part1.csv.gz", bench(csv, a.repeats, True)),
            (f"{BIG_ROWS:,} rows .csv.gz (repeated, /tmp)", bench(big, a.repeats, True)),
            (f"{BIG_ROWS:,} rows .csv (same, plain)", bench(plain, a.repeats, True))]
    floors = floor(big, plain, a.repeats)
    if not a.no_folder:
        rows.append(("utkface_part1/ (8,820 JPEGs)", bench(REAL / "utkface_part1", max(1, a.repeats - 1), False)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nshared.data.load, best of {a.repeats}; {os.cpu_count()} CPU cores, load average {load:.1f}, "
          f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}\n")
    print("| source | faces | naive per-row parse (s) | cold load (s) | cached load (s) | naive / cold | naive / cached |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, suffix in (("wall", ""), ("CPU", "_cpu")):
        for name, r in rows:
            naive = r["naive" + suffix]
            cold, cached = r["cold" + suffix], r["cached" + suffix]
            cells = [f"{naive:.2f}" if naive else "—", f"{cold:.2f}", f"{cached:.3f}",
                     f"{naive / cold:.1f}x" if naive else "—", f"{naive / max(cached, 1e-3):.0f}x" if naive else "—"]
            print(f"| {name} ({kind}) | {r['n']:,} | " + " | ".join(cells) + " |")
    print(f"\nfloor for {BIG_ROWS:,} rows (best of {a.repeats}; no parser is faster than its input):\n")
    print("| step | wall (s) | CPU (s) | naive .csv.gz / step (wall) |")
    print("|---|---:|---:|---:|")
    for name, (wall, cpu) in floors.items():
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {rows[1][1]['naive'] / wall:.1f}x |")
    for name, r in rows[1:]:
        print(f"\ntargets ({name}): cold <= 3 s: {'met' if r['cold'] <= 3 else 'MISSED'} ({r['cold']:.2f} s); "
              f"naive / cold >= 10x: {'met' if r['naive'] / r['cold'] >= 10 else 'MISSED'} "
              f"(wall {r['naive'] / r['cold']:.1f}x, CPU {r['naive_cpu'] / r['cold_cpu']:.1f}x); "
              f"cached <= 0.2 s: {'met' if r['cached'] <= 0.2 else 'MISSED'} ({r['cached']:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
