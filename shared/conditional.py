"""Conditional generation with a ``cvae`` run, backend-neutral (numpy protocol only).

* :func:`generate` — ``n`` faces for one requested gender / ethnicity / age;
* :func:`attribute_grid` — one figure per gender: rows ethnicity × columns age bands, the same
  latent draw in every cell, so only the labels change across the grid;
* :func:`edit_attributes` — real test faces encoded with their own labels and decoded with
  changed ones (gender flipped, other ages, every ethnicity).

Labels enter as :func:`shared.faces.label_vectors` does: gender 0/1, ethnicity one-hot, age / 100.
Outputs (``.png`` figures and the ``.npy`` images behind them) go to ``RUN_DIR/generated/``.

Example::

    from shared.conditional import generate, attribute_grid
    generate("runs/cvae", gender=1, ethnicity="Asian", age=30, n=16)
    attribute_grid("runs/cvae")
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from shared.errors import ConfigError, RunError
from shared.faces import AGE_BANDS, ETHNICITY_NAMES, GENDER_NAMES, label_vectors
from shared.runs import atomic_write_bytes

__all__ = ["generate", "attribute_grid", "edit_attributes", "label_matrix", "GRID_AGES", "GENERATED",
           "MAX_AGE"]

log = logging.getLogger(__name__)

GENERATED = "generated"
GRID_AGES = tuple(int((lo + min(hi, 80)) // 2) for lo, hi in AGE_BANDS)  # one age per band: 4, 14, 29, 49, 70
MAX_AGE = 120.0
_PER_ROW = 8


def _code(name: str, value: Union[int, str], names: tuple[str, ...]) -> int:
    """An integer class code from an int or a (case-insensitive) class name."""
    if isinstance(value, str):
        lowered = [n.lower() for n in names]
        if value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        if value.strip().isdigit():
            value = int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(names):
        return int(value)
    raise ConfigError(f"`{name}` must be one of {list(range(len(names)))} or a name in {list(names)}. "
                      f"Received: {name}={value!r}")


def _age(value: Any) -> float:
    try:
        age = float(value)
    except (TypeError, ValueError):
        age = float("nan")
    if not (0.0 <= age <= MAX_AGE):
        raise ConfigError(f"`age` must be a number of years in [0, {MAX_AGE:g}]. Received: age={value!r}")
    return age


def label_matrix(gender: Any, ethnicity: Any, age: Any, n: int = 1) -> np.ndarray:
    """``(n, 7)`` label vectors for one validated gender / ethnicity / age.

    Args:
        gender: 0/1 or ``male``/``female``; ethnicity: 0-4 or a name of :data:`ETHNICITY_NAMES`;
        age: years in [0, 120]; n: rows.

    Raises:
        ConfigError: a value is out of range (the message names the field and allowed values).
    """
    g, e, a = _code("gender", gender, GENDER_NAMES), _code("ethnicity", ethnicity, ETHNICITY_NAMES), _age(age)
    return label_vectors(pd.DataFrame({"gender": [g] * n, "ethnicity": [e] * n, "age": [a] * n}))


def _open_conditional(run_dir: Union[str, Path]) -> tuple[Path, Any, Any]:
    from shared.studio import open_run

    run_dir, config, model = open_run(run_dir)
    if not getattr(model, "conditional", False):
        raise RunError(f"{run_dir}: conditional generation needs a cvae run; this run is a "
                       f"{config.model.family!r} model (train one with --model cvae --backend tf)")
    return run_dir, config, model


def _save(run_dir: Path, stem: str, images: np.ndarray, rows: list[np.ndarray], **titles: Any) -> Path:
    """Write ``stem.npy`` (float32 images) and ``stem.png`` (the grid) into ``generated/``."""
    from shared.plotting import image_grid

    out = Path(run_dir) / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.asarray(images, dtype=np.float32))
    atomic_write_bytes(out / f"{stem}.npy", buf.getvalue())
    return image_grid(rows, out / f"{stem}.png", **titles)


def generate(run_dir: Union[str, Path], *, gender: Any, ethnicity: Any, age: Any, n: int = 16,
             seed: int = 0) -> Path:
    """Generate ``n`` faces with the requested labels from z ~ N(0, I) (seeded).

    Args:
        run_dir: a ``cvae`` run folder.
        gender: 0/1 or ``male``/``female``; ethnicity: 0-4 or a name; age: years in [0, 120].
        n: number of faces (1-1024); seed: seeds the latent draw.

    Returns:
        The figure ``generated/<labels>_seed<seed>.png``; the images are beside it as ``.npy``.

    Raises:
        ConfigError: invalid labels or ``n``; RunError: not a conditional run.
    """
    if not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= 1024:
        raise ConfigError(f"`n` must be an integer in [1, 1024]. Received: n={n!r}")
    labels = label_matrix(gender, ethnicity, age, int(n))
    run_dir, _, model = _open_conditional(run_dir)
    images = model.sample(int(n), int(seed), labels)
    g, e = GENDER_NAMES[int(labels[0, 0])], ETHNICITY_NAMES[int(labels[0, 1:6].argmax())]
    a = float(labels[0, 6] * 100.0)
    stem = f"{g}_{e}_age{a:g}_seed{seed}".lower()
    rows = [images[i:i + _PER_ROW] for i in range(0, len(images), _PER_ROW)]
    path = _save(run_dir, stem, images, rows, title=f"{g}, {e}, age {a:g} (seed {seed})")
    log.info("wrote %d generated faces to %s", len(images), path)
    return path


def attribute_grid(run_dir: Union[str, Path], *, seed: int = 0) -> Path:
    """One figure per gender: rows ethnicity × columns age bands, one shared latent draw.

    Returns:
        The folder ``generated/`` holding ``attribute_grid_<gender>.png`` and ``.npy`` files.

    Raises:
        RunError: not a conditional run.
    """
    run_dir, _, model = _open_conditional(run_dir)
    z_seed = int(seed)
    cells = len(ETHNICITY_NAMES) * len(GRID_AGES)
    band_titles = [f"{lo}-{hi}" if hi < 200 else f"{lo}+" for lo, hi in AGE_BANDS]
    for g, gname in enumerate(GENDER_NAMES):
        labels = np.concatenate([label_matrix(g, e, a) for e in range(len(ETHNICITY_NAMES)) for a in GRID_AGES])
        z = np.random.default_rng(z_seed).standard_normal((1, model.latent_dim)).astype(np.float32)
        images = model.decode(np.repeat(z, cells, axis=0), labels)
        grid = images.reshape(len(ETHNICITY_NAMES), len(GRID_AGES), *images.shape[1:])
        _save(run_dir, f"attribute_grid_{gname}", grid, list(grid), row_titles=list(ETHNICITY_NAMES),
              col_titles=band_titles, title=f"{gname}: ethnicity × age band (seed {seed})")
    out = Path(run_dir) / GENERATED
    log.info("wrote attribute grids to %s", out)
    return out


def edit_attributes(run_dir: Union[str, Path], *, n: int = 4, seed: int = 0) -> Path:
    """Encode ``n`` real test faces with their labels and decode their posterior means with changed labels.

    Columns: original, reconstruction, gender flipped, ages of :data:`GRID_AGES`, every ethnicity.

    Args:
        run_dir: a ``cvae`` run folder (its saved test split is used).
        n: faces to edit (the first ``n`` of the test split); seed: kept for a stable signature
            (the edit is deterministic: posterior means).

    Returns:
        The figure ``generated/attribute_edits.png`` (images beside it as ``.npy``).

    Raises:
        RunError: not a conditional run, or an empty test split; ConfigError: ``n`` not an integer in
            [1, :data:`shared.studio.MAX_FACES`].
    """
    from shared.studio import MAX_FACES, check_int, held_out_faces

    n = check_int("n", n, 1, MAX_FACES)
    run_dir, config, model = _open_conditional(run_dir)
    faces = held_out_faces(run_dir, config, n)
    own = label_vectors(faces.labels)
    mean, _ = model.encode(faces.images, own)
    edits: list[tuple[str, np.ndarray]] = [("reconstruction", own)]
    flipped = own.copy()
    flipped[:, 0] = 1.0 - flipped[:, 0]
    edits.append(("other gender", flipped))
    for a in GRID_AGES:
        lab = own.copy()
        lab[:, 6] = a / 100.0
        edits.append((f"age {a}", lab))
    for e, ename in enumerate(ETHNICITY_NAMES):
        lab = own.copy()
        lab[:, 1:6] = 0.0
        lab[:, 1 + e] = 1.0
        edits.append((ename, lab))
    columns = [faces.floats()] + [model.decode(mean, lab) for _, lab in edits]
    grid = np.stack(columns, axis=1)  # (n, columns, H, W)
    row_titles = [f"{GENDER_NAMES[g]}, {ETHNICITY_NAMES[e]}, {a}"
                  for g, e, a in zip(faces.labels["gender"], faces.labels["ethnicity"], faces.labels["age"])]
    path = _save(run_dir, "attribute_edits", grid, list(grid), row_titles=row_titles,
                 col_titles=["original"] + [name for name, _ in edits], title="attribute editing (cvae)")
    log.info("wrote attribute edits of %d faces to %s", len(grid), path)
    return path
